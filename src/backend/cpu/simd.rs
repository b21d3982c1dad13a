//! Runtime choice of the vector extension the hand-written loops are compiled for.
//!
//! The crate is built for baseline x86-64 (SSE2), so a binary built in CI runs on any x86-64
//! machine. The loops written for LLVM to vectorize (Winograd transforms, im2col, the conv
//! epilogue, activations, the depthwise row kernel) are instead compiled several times, once
//! per [`Level`], and [`dispatch`] runs the widest one this CPU has, detected once. The matrix
//! products get the same from the `gemm` crate's own dispatch (its `x86-v4` feature adds
//! AVX-512).
//!
//! Only the instruction set changes, not the arithmetic: Rust never contracts a·b + c into an
//! FMA by itself, so every level gives the same bits (tests below). Code that asks for FMA
//! explicitly (`grouped_conv`'s row kernel, built per level) gives the same bits at every
//! level that has it, and differs by rounding at the baseline.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// What the binary is built for: SSE2 on x86-64, NEON on aarch64.
    Baseline = 1,
    /// AVX2 + FMA (Haswell and later, Zen).
    Avx2 = 2,
    /// AVX-512 F/BW/DQ/VL on top of AVX2 (Skylake-X and later servers, Zen 4).
    Avx512 = 3,
}

impl Level {
    fn detect() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
                return Level::Avx512;
            }
            if avx2 {
                return Level::Avx2;
            }
        }
        Level::Baseline
    }
}

/// 0: not yet detected; otherwise a `Level`.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level [`dispatch`] runs at: the CPU's best, unless [`set_level`] capped it.
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        1 => Level::Baseline,
        2 => Level::Avx2,
        3 => Level::Avx512,
        _ => {
            let l = Level::detect();
            LEVEL.store(l as u8, Ordering::Relaxed);
            l
        }
    }
}

/// Runs at `l` or the CPU's best, whichever is lower (tests and benchmarks compare levels).
pub fn set_level(l: Level) {
    LEVEL.store(l.min(Level::detect()) as u8, Ordering::Relaxed);
}

/// Runs `f` compiled for the current [`level`]. `f` and what it calls must inline into it
/// (`#[inline(always)]` on the loop's function) for the wider instructions to reach the loop.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    match level() {
        // SAFETY: `level()` is never above what `Level::detect` found on this CPU.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { avx2(f) },
        _ => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::activation::{activation_backward_input, activation_forward};
    use crate::backend::cpu::epilogue::Epilogue;
    use crate::backend::cpu::{conv, grouped_conv, winograd};
    use crate::ops::{Activation, ActivationParams, Conv2dParams};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// The dispatched loops give the same bits at every level this CPU has (the grouped
    /// row kernel at every level with FMA).
    #[test]
    fn every_level_gives_the_same_bits() {
        let mut rng = StdRng::seed_from_u64(7);
        let p = Conv2dParams::dense(2, 19, (13, 11), 5, (3, 3), (1, 1), (1, 1));
        let x: Vec<f32> = (0..p.input_len())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let w: Vec<f32> = (0..p.weight_len())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let b: Vec<f32> = (0..p.c_out).map(|_| rng.random_range(-1.0..1.0)).collect();
        // Every row of the activation table, on inputs spread over [-8, 8].
        let xa: Vec<f32> = x.iter().map(|v| v * 8.0).collect();
        // The fused epilogue (BatchNorm, residual, ReLU) and a stride-2 conv's im2col.
        let (scale, shift) = (&b[..], &w[..p.c_out]);
        let epi = Epilogue {
            bn: Some((scale, shift)),
            residual: Some(&x[..p.output_len()]),
            act: Some(ActivationParams {
                act: Activation::Relu,
                len: p.output_len(),
                alpha: 0.0,
                beta: 0.0,
            }),
        };
        let s2 = Conv2dParams::dense(2, 5, (13, 11), 5, (3, 3), (2, 2), (1, 1));
        let run = || {
            let u = winograd::filters(&p, &w);
            let mut y = vec![f32::NAN; p.output_len()];
            winograd::conv2d_forward(&p, &x, &u, Some(&b), None, &mut y);
            let mut fused = vec![f32::NAN; p.output_len()];
            winograd::conv2d_forward(&p, &x, &u, Some(&b), Some(epi), &mut fused);
            let mut strided = vec![f32::NAN; s2.output_len()];
            let (xs, ws) = (&x[..s2.input_len()], &w[..s2.weight_len()]);
            let epi2 = Epilogue {
                residual: None,
                ..epi
            };
            conv::conv2d_forward_fused(&s2, xs, ws, None, Some(epi2), &mut strided);
            y.extend(fused);
            y.extend(strided);
            let acts: Vec<(Vec<f32>, Vec<f32>)> = Activation::ALL
                .iter()
                .map(|&act| {
                    let a = ActivationParams {
                        act,
                        len: xa.len(),
                        alpha: -0.7,
                        beta: 0.9,
                    };
                    let mut h = vec![f32::NAN; xa.len()];
                    activation_forward(&a, &xa, &mut h);
                    let mut dx = vec![f32::NAN; xa.len()];
                    activation_backward_input(&a, &xa, &x, &mut dx);
                    (h, dx)
                })
                .collect();
            // The grouped row kernel asks for FMA, so only the levels that have it agree: 8
            // channels per group (16-pixel tiles at AVX-512, 8 at AVX2), rows of 23.
            let g = Conv2dParams::dense(2, 24, (19, 23), 24, (3, 3), (1, 1), (1, 1)).with_groups(3);
            let xg: Vec<f32> = (0..g.input_len()).map(|i| x[i % x.len()]).collect();
            let wg: Vec<f32> = (0..g.weight_len()).map(|i| w[i % w.len()]).collect();
            let mut yg = vec![f32::NAN; g.output_len()];
            grouped_conv::conv2d_forward(&g, &xg, &wg, None, &mut yg);
            (y, acts, yg)
        };
        let best = Level::detect();
        let want = {
            set_level(Level::Baseline);
            run()
        };
        let mut grouped_fma: Option<Vec<f32>> = None;
        for l in [Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|&l| l <= best)
        {
            set_level(l);
            assert_eq!(level(), l);
            let got = run();
            assert!(want.0.iter().all(|v| v.is_finite()));
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same(&want.0, &got.0),
                "convs (winograd, fused, strided) at {l:?}"
            );
            for (act, (w, g)) in Activation::ALL.iter().zip(want.1.iter().zip(&got.1)) {
                assert!(same(&w.0, &g.0), "{} forward at {l:?}", act.name());
                assert!(same(&w.1, &g.1), "{} backward at {l:?}", act.name());
            }
            assert!(got.2.iter().all(|v| v.is_finite()));
            match &grouped_fma {
                None => grouped_fma = Some(got.2),
                Some(first) => assert!(same(first, &got.2), "grouped conv at {l:?}"),
            }
        }
        set_level(best);
    }
}
