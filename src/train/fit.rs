//! The training loop: epochs of shuffled mini-batches (optionally augmented), each epoch
//! reporting the mean training loss, the training accuracy seen during the epoch and the test
//! accuracy after it, like the article's loop.

use super::trainer::Trainer;
use crate::backend::TrainBackend;
use crate::data::{augment, Dataset};
use crate::error::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub augment: bool,
    /// Shuffling and augmentation seed.
    pub seed: u64,
    /// Show a progress bar on stderr (callers pass whether stderr is a terminal).
    pub progress: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

/// Trains for `opts.epochs` epochs, calling `on_epoch` after each.
pub fn fit<B: TrainBackend>(
    trainer: &mut Trainer<B>,
    train: &Dataset,
    test: &Dataset,
    opts: &FitOptions,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>> {
    if train.is_empty() {
        return Err(Error::Usage("the training set is empty".into()));
    }
    if opts.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    let classes = trainer.model.num_classes;
    if let Some(&bad) = train
        .labels
        .iter()
        .chain(&test.labels)
        .find(|&&l| l >= classes)
    {
        return Err(Error::Usage(format!(
            "the data has label {bad} but the model has {classes} classes; use --replace-head {}",
            train.classes().max(bad + 1)
        )));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut reports = vec![];
    for epoch in 1..=opts.epochs {
        order.shuffle(&mut rng);
        let batches = train.len().div_ceil(opts.batch_size);
        let bar = opts.progress.then(|| {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {msg} [{bar:30}] {pos}/{len} batches, {eta} left",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(format!("{epoch}/{}", opts.epochs));
            bar
        });
        let (mut loss_sum, mut correct) = (0.0, 0);
        for chunk in order.chunks(opts.batch_size) {
            let (mut x, labels) = train.batch(chunk);
            if opts.augment {
                augment::crop_and_flip(&mut x.data, &mut rng);
            }
            let s = trainer.step(&x, &labels)?;
            loss_sum += s.loss * chunk.len() as f64;
            correct += s.correct;
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let report = EpochReport {
            epoch,
            loss: loss_sum / train.len() as f64,
            train_accuracy: correct as f64 / train.len() as f64,
            test_accuracy: accuracy(trainer, test, opts.batch_size.max(64))?,
        };
        on_epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// Eval-mode top-1 accuracy on `set` (0 for an empty set).
pub fn accuracy<B: TrainBackend>(trainer: &Trainer<B>, set: &Dataset, batch: usize) -> Result<f64> {
    if set.is_empty() {
        return Ok(0.0);
    }
    let classes = trainer.model.num_classes;
    let mut correct = 0;
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(batch) {
        let (x, labels) = set.batch(chunk);
        let logits = trainer.predict(&x)?;
        for (row, &l) in logits.chunks(classes).zip(&labels) {
            correct += usize::from(crate::engine::argmax(row) == l);
        }
    }
    Ok(correct as f64 / set.len() as f64)
}
