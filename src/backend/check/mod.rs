//! The op checks that `gradcam selftest` and tests/backends.rs both run: every op of
//! [`Backend`] against an f64 reference, on seeded random inputs with odd shapes, strides,
//! padding and batch > 1, one table of cases per op [`Family`] ([`cases`]). Generic over the
//! backend, so cpu, wgpu and cuda get the same checks; backends are created with output
//! poisoning on, so an element a kernel fails to write is NaN and fails.
//!
//! One rule for every output element: |out − ref| ≤ atol + rtol·|ref| (+ `terms`·Σ|terms| for
//! convolutions), with the [`Tol`] the table gives the op at the configuration's
//! [`Precision`]; NaN, ±∞ and a wrong length fail.

pub mod cases;
mod families;
mod reference;

use crate::backend::{Backend, ConvKernel};

/// The error an output element may have: atol + rtol·|ref| + terms·Σ|terms|.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
    /// Factor of Σ|terms|, the sum of the magnitudes of the products an output of a
    /// convolution sums: the scale of the sum's rounding error, which an output that cancels
    /// to near zero does not show. 0 for the other ops.
    pub terms: f64,
}

impl Tol {
    pub const EXACT: Tol = Tol::new(0.0, 0.0);

    pub const fn new(atol: f64, rtol: f64) -> Tol {
        Tol {
            atol,
            rtol,
            terms: 0.0,
        }
    }

    pub const fn with_terms(self, terms: f64) -> Tol {
        Tol { terms, ..self }
    }

    fn allowed(&self, want: f64, terms: f64) -> f64 {
        self.atol + self.rtol * want.abs() + self.terms * terms
    }
}

/// The arithmetic a backend configuration convolves in, which picks the conv ops' tolerances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// FP32: the CPU, wgpu, CUDA conv v1 and v3 (3xTF32 products are FP32-accurate).
    Fp32,
    /// Convolutions on TF32 tensor cores (10-bit mantissa inputs, FP32 accumulation): CUDA
    /// conv v2 and v4.
    Tf32Conv,
}

impl Precision {
    /// A GPU backend with conv kernel `k`.
    pub fn of_conv(k: ConvKernel) -> Self {
        match k {
            ConvKernel::V1 | ConvKernel::V3 => Precision::Fp32,
            ConvKernel::V2 | ConvKernel::V4 => Precision::Tf32Conv,
        }
    }
}

/// One checked op and case.
#[derive(Clone, Debug)]
pub struct Line {
    pub kernel: String,
    /// The error of the element nearest its bound (the largest error / allowed), and that
    /// bound; infinite for NaN, ±∞, a wrong length or an error from the backend.
    pub max_err: f64,
    pub tol: f64,
    pub ok: bool,
    /// Why it failed when the backend returned an error instead of a result.
    pub note: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:4}  {:58} max err {:9.2e}  tol {:7.1e}",
            if self.ok { "ok" } else { "FAIL" },
            self.kernel,
            self.max_err,
            self.tol
        )?;
        if !self.note.is_empty() {
            write!(f, "  ({})", self.note)?;
        }
        Ok(())
    }
}

/// The element of `got` nearest its bound: (its error, its bound).
fn worst(got: &[f32], want: &[f64], terms: &[f64], tol: Tol) -> (f64, f64) {
    if got.len() != want.len() || (tol.terms != 0.0 && terms.len() != want.len()) {
        return (f64::INFINITY, tol.atol);
    }
    let mut worst = (0.0, tol.atol, -1.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let allowed = tol.allowed(w, terms.get(i).copied().unwrap_or(0.0));
        let err = if g.is_finite() {
            (g as f64 - w).abs()
        } else {
            f64::INFINITY
        };
        let ratio = if err == 0.0 { 0.0 } else { err / allowed };
        if ratio > worst.2 {
            worst = (err, allowed, ratio);
        }
    }
    (worst.0, worst.1)
}

/// Collects the lines of a family's checks.
#[derive(Default)]
struct Checker {
    lines: Vec<Line>,
}

impl Checker {
    fn check(&mut self, kernel: String, tol: Tol, got: crate::Result<Vec<f32>>, want: &[f64]) {
        self.check_sum(kernel, tol, got, want, &[]);
    }

    /// [`Checker::check`] of a sum whose outputs' Σ|terms| are `terms`.
    fn check_sum(
        &mut self,
        kernel: String,
        tol: Tol,
        got: crate::Result<Vec<f32>>,
        want: &[f64],
        terms: &[f64],
    ) {
        let ((max_err, tol), note) = match got {
            Ok(got) => (worst(&got, want, terms, tol), String::new()),
            Err(e) => ((f64::INFINITY, tol.atol), e.to_string()),
        };
        self.lines.push(Line {
            kernel,
            ok: max_err <= tol,
            max_err,
            tol,
            note,
        });
    }
}

/// The op families, each with its table in [`cases`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Dense and grouped conv2d, with and without bias, and conv2d_grad_input.
    Conv,
    /// conv2d_fused: BatchNorm, residual and activation applied by the conv.
    ConvFused,
    /// Every pooling op ([`crate::ops::PoolParams`]), forward and input gradient.
    Pool,
    /// relu, add, channel_affine.
    Elementwise,
    /// The activation table.
    Activation,
    /// Broadcast add and mul.
    Binary,
    StridedCopy,
    Linear,
    LayerNorm,
    SqueezeExcitation,
    ClassSeed,
    GradCam,
    ScoreCamMasks,
}

impl Family {
    pub const ALL: [Family; 13] = [
        Family::Conv,
        Family::ConvFused,
        Family::Pool,
        Family::Elementwise,
        Family::Activation,
        Family::Binary,
        Family::StridedCopy,
        Family::Linear,
        Family::LayerNorm,
        Family::SqueezeExcitation,
        Family::ClassSeed,
        Family::GradCam,
        Family::ScoreCamMasks,
    ];

    /// Runs the family's table on `b`: one line per op and case.
    pub fn check<B: Backend>(self, b: &B, precision: Precision) -> Vec<Line> {
        use families as f;
        let check: fn(&B, Precision, &mut Checker) = match self {
            Family::Conv => f::conv,
            Family::ConvFused => f::conv_fused,
            Family::Pool => f::pool,
            Family::Elementwise => f::elementwise,
            Family::Activation => f::activation,
            Family::Binary => f::binary,
            Family::StridedCopy => f::strided_copy,
            Family::Linear => f::linear,
            Family::LayerNorm => f::layer_norm,
            Family::SqueezeExcitation => f::squeeze_excitation,
            Family::ClassSeed => f::class_seed,
            Family::GradCam => f::grad_cam,
            Family::ScoreCamMasks => f::score_cam_masks,
        };
        let mut c = Checker::default();
        check(b, precision, &mut c);
        c.lines
    }
}

/// Every family's table on `b`.
pub fn run<B: Backend>(b: &B, precision: Precision) -> Vec<Line> {
    Family::ALL
        .iter()
        .flat_map(|f| f.check(b, precision))
        .collect()
}
