//! The mean of each metric per CAM method over a folder of images, as a table to rank methods.

use super::{MetricsRecord, Score};
use serde_json::{json, Value};
use std::fmt::Write;

/// A summarized metric: its name, which direction is better, its value in a record.
type Column = (&'static str, &'static str, fn(&MetricsRecord) -> f32);

const COLUMNS: [Column; 6] = [
    ("cam_mult_image_confidence_change", "higher", |r| {
        r.metrics.cam_mult_image.confidence_change
    }),
    ("drop_in_confidence", "lower", |r| {
        r.metrics.cam_mult_image.drop_in_confidence
    }),
    ("increase_in_confidence", "higher", |r| {
        r.metrics.cam_mult_image.increase_in_confidence
    }),
    ("road_morf_average", "lower", |r| {
        r.metrics.road.morf_average
    }),
    ("road_lerf_average", "higher", |r| {
        r.metrics.road.lerf_average
    }),
    ("road_combined", "higher", |r| r.metrics.road.combined),
];

/// Records aggregated per (method, score), in the order methods first appear.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    rows: Vec<Row>,
}

#[derive(Clone, Debug)]
struct Row {
    method: String,
    score: Score,
    count: usize,
    /// Sums in f64, one per column.
    sums: [f64; COLUMNS.len()],
}

impl Row {
    fn means(&self) -> impl Iterator<Item = f64> + '_ {
        self.sums.iter().map(|s| s / self.count as f64)
    }
}

impl Summary {
    pub fn add(&mut self, record: &MetricsRecord) {
        let at = self
            .rows
            .iter()
            .position(|r| r.method == record.method && r.score == record.score);
        let row = match at {
            Some(i) => &mut self.rows[i],
            None => {
                self.rows.push(Row {
                    method: record.method.clone(),
                    score: record.score,
                    count: 0,
                    sums: [0.0; COLUMNS.len()],
                });
                self.rows.last_mut().expect("just pushed")
            }
        };
        row.count += 1;
        for (sum, (_, _, value)) in row.sums.iter_mut().zip(COLUMNS) {
            *sum += value(record) as f64;
        }
    }

    /// The mean of `metric` (a column name, e.g. "road_combined") for `method` and `score`.
    pub fn mean(&self, method: &str, score: Score, metric: &str) -> Option<f64> {
        let row = self
            .rows
            .iter()
            .find(|r| r.method == method && r.score == score)?;
        let col = COLUMNS.iter().position(|(name, _, _)| *name == metric)?;
        row.means().nth(col)
    }

    /// `[{method, score, images, <metric>: mean, …}, …]`.
    pub fn to_json(&self) -> Value {
        let rows = self.rows.iter().map(|r| {
            let mut row = json!({"method": r.method, "score": r.score.name(), "images": r.count});
            for ((name, _, _), mean) in COLUMNS.iter().zip(r.means()) {
                row[*name] = json!(mean);
            }
            row
        });
        Value::Array(rows.collect())
    }

    /// A plain-text table: a row per method and score, a column per metric mean, and a last line
    /// saying which direction is better for each.
    pub fn table(&self) -> String {
        let mut head = vec!["method".to_string(), "score".into(), "images".into()];
        head.extend(COLUMNS.iter().map(|(name, _, _)| name.to_string()));
        let mut lines = vec![head];
        for r in &self.rows {
            let mut line = vec![r.method.clone(), r.score.name().into(), r.count.to_string()];
            line.extend(r.means().map(|m| format!("{m:.6}")));
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for line in &lines {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, &w))| {
                    if c < 2 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            writeln!(out, "{}", cells.join("  ").trim_end()).expect("write to a String");
        }
        let better: Vec<String> = COLUMNS
            .iter()
            .map(|(name, dir, _)| format!("{name} {dir}"))
            .collect();
        writeln!(out, "better: {}", better.join(", ")).expect("write to a String");
        out
    }
}
