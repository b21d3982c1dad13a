//! The activation table (`crate::ops::Activation`) as elementwise kernels: y = f(x), and
//! dx = dy · f'(saved) with the saved value the row names (the op's input or its output).
//!
//! The formulas are the table's own (`Activation::forward` / `derivative`); each kernel is
//! instantiated once per table row with the row fixed at compile time, so the per-element
//! `match` over the table folds away and the loop vectorizes where the formula allows.

use super::pages::prefer_huge_pages;
use super::real::Real;
use super::simd;
use crate::ops::{Activation, ActivationParams};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// `run::<T>(…)` as `run::<T, I>(…)` with I the row of `act` in the table, so that
/// each row gets its own kernel; rows past the 16 specialized ones take I = usize::MAX and are
/// read at run time (see [`row`]).
macro_rules! by_row {
    ($run:ident::<$t:ty> $args:tt, $act:expr) => {
        by_row!(@ $run, $t, $args, $act, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    };
    (@ $run:ident, $t:ty, $args:tt, $act:expr, $($i:literal)*) => {
        match row_index($act) {
            $($i => $run::<$t, $i> $args,)*
            _ => $run::<$t, { usize::MAX }> $args,
        }
    };
}

/// y = act(x, alpha, beta) elementwise. x, y: \[len\].
pub fn activation_forward<T: Real>(p: &ActivationParams, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), p.len);
    assert_eq!(y.len(), p.len);
    prefer_huge_pages(y);
    let (a, b) = (T::of(p.alpha as f64), T::of(p.beta as f64));
    fn run<T: Real, const I: usize>(act: Activation, a: T, b: T, x: &[T], y: &mut [T]) {
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| {
                simd::dispatch(
                    #[inline(always)]
                    || {
                        let act = row::<I>(act);
                        for (o, &v) in yc.iter_mut().zip(xc) {
                            *o = act.forward(v, a, b);
                        }
                    },
                )
            });
    }
    by_row!(run::<T>(p.act, a, b, x, y), p.act);
}

/// v = act(v, alpha, beta) over `v`, on the calling thread: a fused convolution's epilogue runs
/// it on each output row while the row is in cache. `p.len` is not used.
pub fn activation_in_place<T: Real>(p: &ActivationParams, v: &mut [T]) {
    let (a, b) = (T::of(p.alpha as f64), T::of(p.beta as f64));
    fn run<T: Real, const I: usize>(act: Activation, a: T, b: T, v: &mut [T]) {
        simd::dispatch(
            #[inline(always)]
            || {
                let act = row::<I>(act);
                // A `for` loop: `for_each` is a call LLVM may leave outside the dispatched
                // function, compiled for the baseline.
                for v in v.iter_mut() {
                    *v = act.forward(*v, a, b);
                }
            },
        )
    }
    by_row!(run::<T>(p.act, a, b, v), p.act);
}

/// dx = dy · act'(saved, alpha, beta) elementwise, where `saved` is the op's input or output
/// as `p.act.saved()` says. saved, dy, dx: \[len\].
pub fn activation_backward_input<T: Real>(
    p: &ActivationParams,
    saved: &[T],
    dy: &[T],
    dx: &mut [T],
) {
    assert_eq!(saved.len(), p.len);
    assert_eq!(dy.len(), p.len);
    assert_eq!(dx.len(), p.len);
    prefer_huge_pages(dx);
    let (a, b) = (T::of(p.alpha as f64), T::of(p.beta as f64));
    fn run<T: Real, const I: usize>(
        act: Activation,
        a: T,
        b: T,
        (s, dy): (&[T], &[T]),
        dx: &mut [T],
    ) {
        dx.par_chunks_mut(CHUNK)
            .zip(s.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(|(dc, (sc, gc))| {
                simd::dispatch(
                    #[inline(always)]
                    || {
                        let act = row::<I>(act);
                        for ((o, &v), &g) in dc.iter_mut().zip(sc).zip(gc) {
                            *o = g * act.derivative(v, a, b);
                        }
                    },
                )
            });
    }
    by_row!(run::<T>(p.act, a, b, (saved, dy), dx), p.act);
}

/// The activation's position in the table.
fn row_index(act: Activation) -> usize {
    Activation::ALL
        .iter()
        .position(|&r| r == act)
        .expect("activation in the table")
}

/// Row I of the table, a constant after inlining; rows beyond the specialized ones (a table
/// grown past 16 rows) are taken at run time. Call it inside the dispatched closure: a row
/// captured from outside is a value in memory to the `target_feature` function that runs the
/// loop, and the per-element `match` on it stays (a jump table per element, no vectors).
#[inline(always)]
fn row<const I: usize>(act: Activation) -> Activation {
    Activation::ALL.get(I).copied().unwrap_or(act)
}
