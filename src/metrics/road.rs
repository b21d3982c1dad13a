//! ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
//! Methods"): remove a percentile of the pixels, fill them with the noisy linear imputer, and
//! score the result. Follows pytorch-grad-cam's `metrics/road.py` and
//! `metrics/perturbation_confidence.py`.

use crate::error::{Error, Result};
use faer::linalg::solvers::Solve;
use faer::sparse::{SparseColMat, Triplet};
use faer::Mat;
use rand::Rng;
use rand_distr::StandardNormal;

/// Which end of the CAM ROAD removes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// `ROADMostRelevantFirst`: removes the pixels whose CAM is at or above its percentile.
    MostRelevantFirst,
    /// `ROADLeastRelevantFirst`: the same on 1 − CAM, i.e. removes the least relevant pixels.
    LeastRelevantFirst,
}

/// The percentiles ROAD's `*Average` classes and `ROADCombined` average over by default.
pub const PERCENTILES: [u32; 9] = [10, 20, 30, 40, 50, 60, 70, 80, 90];

/// The imputer's noise in pytorch-grad-cam (`NoisyLinearImputer(noise=0.01)`, which its ROAD
/// classes always use): the standard deviation of the Gaussian added to each imputed value.
pub const NOISE: f32 = 0.01;

/// The neighbours of a pixel and their weights (row offset, column offset, weight), in road.py's
/// order: 1/6 for the four direct neighbours, 1/12 for the diagonals (they sum to 1).
const NEIGHBOURS: [(isize, isize, f64); 8] = [
    (1, 1, 1.0 / 12.0),
    (0, 1, 1.0 / 6.0),
    (-1, 1, 1.0 / 12.0),
    (1, -1, 1.0 / 12.0),
    (0, -1, 1.0 / 6.0),
    (-1, -1, 1.0 / 12.0),
    (1, 0, 1.0 / 6.0),
    (-1, 0, 1.0 / 6.0),
];

/// `numpy.percentile(values, p)` (method "linear") for a finite, non-empty slice, in numpy's
/// arithmetic for an f32 array and an integer `p`: the virtual index in f64, the interpolation in
/// f32, from the upper neighbour when the fraction is ≥ 0.5.
fn percentile(values: &[f32], p: u32) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    let virtual_index = (n - 1) as f64 * (p as f64 / 100.0);
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    let below = virtual_index.floor();
    let gamma = virtual_index - below;
    let (a, b) = (sorted[below as usize], sorted[below as usize + 1]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma) as f32
    } else {
        a + diff * gamma as f32
    }
}

/// The pixels ROAD removes from a CAM [H·W] at percentile `p` (0..=100): road.py keeps the
/// pixels strictly below the percentile (of the CAM, or of 1 − CAM for least relevant first) and
/// removes the rest, so ties at the threshold are removed and at least one pixel always is.
pub fn removed_pixels(cam: &[f32], p: u32, order: Order) -> Result<Vec<bool>> {
    if p > 100 {
        return Err(Error::Usage(format!(
            "ROAD percentile {p} is out of range 0..=100"
        )));
    }
    if cam.is_empty() {
        return Err(Error::Usage("ROAD: the cam is empty".into()));
    }
    super::check_finite("cam", cam, &[cam.len()])?;
    let mask: Vec<f32> = match order {
        Order::MostRelevantFirst => cam.to_vec(),
        Order::LeastRelevantFirst => cam.iter().map(|&c| 1.0 - c).collect(),
    };
    let threshold = percentile(&mask, p);
    // kept: m < threshold (road.py); the values are finite, so removed is m ≥ threshold
    Ok(mask.iter().map(|&m| m >= threshold).collect())
}

/// The noisy linear imputer (road.py's `NoisyLinearImputer`) on an image `x` [C, H, W] with
/// `removed` [H, W]: every removed pixel becomes the weighted mean of its in-image neighbours
/// (`NEIGHBOURS`; removed neighbours are unknowns too), one sparse linear system over all removed
/// pixels with a right-hand side per channel, solved in f64 by sparse LU. Then `noise` times a
/// standard normal draw from `rng` is added to each imputed value (channel-major, removed pixels
/// in raster order); the draws are not torch's. Known pixels are returned unchanged.
///
/// When every pixel is removed the system is singular (it has no known values; its null space is
/// the constant images): the imputed image is 0 + noise, the minimum-norm solution, which is what
/// scipy's `spsolve` returns there.
pub fn impute<R: Rng + ?Sized>(
    x: &[f32],
    removed: &[bool],
    h: usize,
    w: usize,
    noise: f32,
    rng: &mut R,
) -> Result<Vec<f32>> {
    let hw = h * w;
    if hw == 0 || removed.len() != hw || x.is_empty() || !x.len().is_multiple_of(hw) {
        return Err(Error::Usage(format!(
            "ROAD imputer: an image of {} values and a mask of {} pixels do not make [C, {h}, {w}] and [{h}, {w}]",
            x.len(),
            removed.len()
        )));
    }
    if !(noise.is_finite() && noise >= 0.0) {
        return Err(Error::Usage(format!(
            "ROAD imputer: the noise must be a finite standard deviation ≥ 0, not {noise}"
        )));
    }
    super::check_finite("image", x, &[x.len() / hw, h, w])?;
    let channels = x.len() / hw;
    let unknowns: Vec<usize> = (0..hw).filter(|&i| removed[i]).collect();
    let mut out = x.to_vec();
    if unknowns.is_empty() {
        return Ok(out);
    }
    let values = if unknowns.len() == hw {
        vec![0.0; hw * channels]
    } else {
        solve_system(x, removed, &unknowns, h, w)?
    };
    for c in 0..channels {
        for (k, &i) in unknowns.iter().enumerate() {
            let mut v = values[c * unknowns.len() + k];
            if noise > 0.0 {
                v += noise * rng.sample::<f32, _>(StandardNormal);
            }
            out[c * hw + i] = v;
        }
    }
    Ok(out)
}

/// Builds road.py's system (row k: −Σ valid weights · x_k + Σ removed neighbours w · x_j =
/// −Σ known neighbours w · value_j) and solves it; the values [C, unknowns] as f32.
fn solve_system(
    x: &[f32],
    removed: &[bool],
    unknowns: &[usize],
    h: usize,
    w: usize,
) -> Result<Vec<f32>> {
    let (n, hw) = (unknowns.len(), h * w);
    let channels = x.len() / hw;
    let mut index = vec![usize::MAX; hw];
    for (k, &i) in unknowns.iter().enumerate() {
        index[i] = k;
    }
    let mut entries = Vec::with_capacity(n * (NEIGHBOURS.len() + 1));
    let mut rhs = Mat::<f64>::zeros(n, channels);
    for (k, &i) in unknowns.iter().enumerate() {
        let (row, col) = ((i / w) as isize, (i % w) as isize);
        let mut diagonal = 1.0;
        for &(dr, dc, weight) in &NEIGHBOURS {
            let (r, c) = (row + dr, col + dc);
            if r < 0 || c < 0 || r >= h as isize || c >= w as isize {
                diagonal -= weight;
                continue;
            }
            let j = r as usize * w + c as usize;
            if removed[j] {
                entries.push(Triplet::new(k, index[j], weight));
            } else {
                // numpy forms `weight * img` in f32 (img's dtype), then subtracts in f64
                for ch in 0..channels {
                    rhs[(k, ch)] -= (weight as f32 * x[ch * hw + j]) as f64;
                }
            }
        }
        entries.push(Triplet::new(k, k, -diagonal));
    }
    let solver_error = |what: String| Error::Backend {
        backend: "ROAD imputer (faer sparse LU)".into(),
        reason: format!("{what} for {n} removed pixels of a {h}×{w} image"),
    };
    let a = SparseColMat::<usize, f64>::try_new_from_triplets(n, n, &entries)
        .map_err(|e| solver_error(format!("cannot build the system: {e:?}")))?;
    let lu = a
        .sp_lu()
        .map_err(|e| solver_error(format!("LU factorization failed: {e:?}")))?;
    let solution = lu.solve(&rhs);
    let mut values = Vec::with_capacity(n * channels);
    for ch in 0..channels {
        for k in 0..n {
            let v = solution[(k, ch)];
            if !v.is_finite() {
                return Err(solver_error(format!("the solve produced {v}")));
            }
            values.push(v as f32);
        }
    }
    Ok(values)
}

/// ROAD's scores of one image: `morf[i]` / `lerf[i]` are score(imputed) − score(x) at
/// `percentiles[i]`, as `ROADMostRelevantFirst(p)` / `ROADLeastRelevantFirst(p)` return them.
#[derive(Clone, Debug, PartialEq)]
pub struct Road {
    pub percentiles: Vec<u32>,
    pub morf: Vec<f32>,
    pub lerf: Vec<f32>,
    /// `ROADMostRelevantFirstAverage`: the mean of `morf` (f32, as numpy's mean of f32).
    pub morf_average: f32,
    /// `ROADLeastRelevantFirstAverage`: the mean of `lerf`.
    pub lerf_average: f32,
    /// `ROADCombined`: (lerf_average − morf_average) / 2.
    pub combined: f32,
}

impl Road {
    /// From the score of the unperturbed image and of the imputed images.
    pub fn from_scores(percentiles: &[u32], base: f32, morf: &[f32], lerf: &[f32]) -> Self {
        let diff = |s: &[f32]| s.iter().map(|&v| v - base).collect::<Vec<f32>>();
        let (morf, lerf) = (diff(morf), diff(lerf));
        let (morf_average, lerf_average) = (mean(&morf), mean(&lerf));
        Road {
            percentiles: percentiles.to_vec(),
            morf,
            lerf,
            morf_average,
            lerf_average,
            combined: (lerf_average - morf_average) / 2.0,
        }
    }
}

/// numpy's `mean(axis=0)` of an f32 stack: a running f32 sum, divided by the count.
fn mean(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |s, &x| s + x) / v.len() as f32
}

/// The imputed images [C·H·W] of every percentile, most relevant first, then least relevant
/// first.
pub(super) fn perturbations<R: Rng + ?Sized>(
    x: &[f32],
    cam: &[f32],
    (h, w): (usize, usize),
    percentiles: &[u32],
    noise: f32,
    rng: &mut R,
) -> Result<Vec<Vec<f32>>> {
    if percentiles.is_empty() {
        return Err(Error::Usage("ROAD needs at least one percentile".into()));
    }
    let mut images = Vec::with_capacity(2 * percentiles.len());
    for order in [Order::MostRelevantFirst, Order::LeastRelevantFirst] {
        for &p in percentiles {
            let removed = removed_pixels(cam, p, order)?;
            images.push(impute(x, &removed, h, w, noise, rng)?);
        }
    }
    Ok(images)
}
