//! Elementwise activations, declared once in one table: each row gives the function, its
//! derivative, and which saved value the derivative is written in (the op's input, or its
//! output where PyTorch's own backward reads the output). The CPU kernels in f32 and f64 come
//! from this table; a backend without a kernel for a row reports it by name.
//!
//! Derivatives follow PyTorch at the breakpoints (measured against its autograd): relu'(0) = 0,
//! relu6' and hardtanh' are 1 on the open interval only, hardswish' is 0 for x ≤ −3, 1 for
//! x ≥ 3 and x/3 + ½ between, hardsigmoid' is 1/6 on (−3, 3) only, leaky_relu'(0) = slope,
//! elu'(0) = alpha.

use num_traits::Float;

/// Which value an activation's backward reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Saved {
    Input,
    Output,
}

/// Reals the activation table is evaluated in (f32 to run models, f64 for finite differences).
///
/// f64 uses libm's correctly rounded-or-nearly functions: it is the oracle. f32, which runs the
/// models, uses branch-free approximations of eˣ and erf that the compiler vectorizes (libm's are
/// scalar calls, which made SiLU and GELU half of EfficientNet's and ConvNeXt's time), accurate
/// to a few f32 ulps (`tests::f32_approximations_are_accurate` states the bounds). PyTorch's own
/// CPU kernels use vectorized approximations (Sleef) too, not libm.
pub trait ActReal: Float {
    fn c(v: f64) -> Self;
    fn erf(self) -> Self;
    /// eˣ.
    fn exp_(self) -> Self;
}

impl ActReal for f32 {
    fn c(v: f64) -> Self {
        v as f32
    }

    #[allow(clippy::excessive_precision)]
    /// Numerical Recipes' erfc (a Chebyshev fit in t = 1/(1 + |x|/2), fractional error below
    /// 1.2e-7 in exact arithmetic), folded to erf by symmetry.
    #[inline(always)]
    fn erf(self) -> Self {
        let z = self.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let poly = [
            0.170_872_77,
            -0.822_152_23,
            1.488_515_87,
            -1.135_203_98,
            0.278_868_07,
            -0.186_288_06,
            0.096_784_18,
            0.374_091_96,
            1.000_023_68,
            -1.265_512_23,
        ]
        .iter()
        .fold(0.0f32, |acc, &k| acc * t + k);
        let erfc = t * (poly - z * z).exp_();
        if self >= 0.0 {
            1.0 - erfc
        } else if self < 0.0 {
            erfc - 1.0
        } else {
            self // NaN
        }
    }

    #[allow(clippy::excessive_precision)]
    /// Cephes' expf: x = n·ln 2 + r with |r| ≤ ln 2 / 2 (ln 2 in two parts), eʳ by a degree-7
    /// polynomial, 2ⁿ from the exponent bits. Inputs are clamped to [−87, 88], where 2ⁿ stays a
    /// normal number: e⁻⁸⁷ ≈ 1.6e-38 stands for anything smaller, e⁸⁸ ≈ 1.7e38 for anything
    /// larger (NaN fails both comparisons and stays NaN). n is rounded by adding 1.5·2²³, which
    /// leaves it in the low mantissa bits: no float→int conversion, so every level vectorizes it.
    #[inline(always)]
    fn exp_(self) -> Self {
        const ROUND: f32 = 12_582_912.0;
        let x = self.clamp(-87.0, 88.0);
        let t = x * std::f32::consts::LOG2_E + ROUND;
        let n = t - ROUND;
        let r = x - n * 0.693_359_375 - n * -2.121_944_4e-4;
        let p = [
            1.987_569_2e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ]
        .iter()
        .fold(0.0f32, |acc, &k| acc * r + k);
        let er = p * r * r + r + 1.0;
        let scale = (t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23;
        er * f32::from_bits(scale)
    }
}

impl ActReal for f64 {
    fn c(v: f64) -> Self {
        v
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn exp_(self) -> Self {
        self.exp()
    }
}

macro_rules! activations {
    ($(
        $(#[$doc:meta])*
        $name:ident = $label:literal, saved $saved:ident,
        f = $f:expr,
        df = $df:expr,
        gpu f = $gf:literal, df = $gdf:literal;
    )*) => {
        /// The activations of the table. `alpha` and `beta` of [`ActivationParams`] carry the
        /// parameters of those that have them (see each row).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Activation {
            $( $(#[$doc])* $name, )*
        }

        impl Activation {
            pub const ALL: &'static [Activation] = &[$(Activation::$name),*];
            /// Every row's [`Activation::name`], in the order of [`Activation::ALL`].
            pub const NAMES: &'static [&'static str] = &[$($label),*];

            /// PyTorch's functional name.
            pub fn name(self) -> &'static str {
                match self { $(Activation::$name => $label,)* }
            }

            pub fn saved(self) -> Saved {
                match self { $(Activation::$name => Saved::$saved,)* }
            }

            /// y = f(x). Always inlined, so that a kernel with the row fixed at compile time
            /// keeps only that row's formula and its loop vectorizes.
            #[allow(unused_variables)]
            #[inline(always)]
            pub fn forward<T: ActReal>(self, x: T, alpha: T, beta: T) -> T {
                match self { $(Activation::$name => ($f as fn(T, T, T) -> T)(x, alpha, beta),)* }
            }

            /// dy/dx, written in the saved value `s` (the input or the output, per `saved`).
            #[allow(unused_variables)]
            #[inline(always)]
            pub fn derivative<T: ActReal>(self, s: T, alpha: T, beta: T) -> T {
                match self { $(Activation::$name => ($df as fn(T, T, T) -> T)(s, alpha, beta),)* }
            }

            /// f and f' as f32 expressions of the GPU kernels (see [`GPU_HELPERS`]): `x`
            /// (or `y` where the saved value is the output), `a` = alpha, `b` = beta.
            pub fn gpu(self) -> (&'static str, &'static str) {
                match self { $(Activation::$name => ($gf, $gdf),)* }
            }
        }
    };
}

fn c<T: ActReal>(v: f64) -> T {
    T::c(v)
}

fn step<T: Float>(cond: bool) -> T {
    if cond {
        T::one()
    } else {
        T::zero()
    }
}

#[inline(always)]
fn sigmoid<T: ActReal>(x: T) -> T {
    T::one() / (T::one() + (-x).exp_())
}

activations! {
    /// max(x, 0). Its backward reads the output, which guided backpropagation needs.
    Relu = "relu", saved Output,
        f = |x, a, b| if x > c(0.0) || x.is_nan() { x } else { c(0.0) },
        df = |y, a, b| step(y > c(0.0)),
        gpu f = "sel(x <= 0.0f, 0.0f, x)",
            df = "sel(y > 0.0f, 1.0f, 0.0f)";
    /// min(max(x, 0), 6).
    Relu6 = "relu6", saved Input,
        f = |x, a, b| if x.is_nan() { x } else { x.max(c(0.0)).min(c(6.0)) },
        df = |x, a, b| step(x > c(0.0) && x < c(6.0)),
        gpu f = "sel(x <= 0.0f, 0.0f, sel(x >= 6.0f, 6.0f, x))",
            df = "sel(x > 0.0f && x < 6.0f, 1.0f, 0.0f)";
    /// min(max(x, alpha), beta).
    Hardtanh = "hardtanh", saved Input,
        f = |x, a, b| if x.is_nan() { x } else { x.max(a).min(b) },
        df = |x, a, b| step(x > a && x < b),
        gpu f = "sel(x <= a, a, sel(x >= b, b, x))",
            df = "sel(x > a && x < b, 1.0f, 0.0f)";
    /// x for x > 0, alpha·x otherwise.
    LeakyRelu = "leaky_relu", saved Input,
        f = |x, a, b| if x > c(0.0) { x } else { x * a },
        df = |x, a, b| if x > c(0.0) { c(1.0) } else { a },
        gpu f = "sel(x > 0.0f, x, x * a)",
            df = "sel(x > 0.0f, 1.0f, a)";
    /// x for x > 0, alpha·(eˣ − 1) otherwise.
    Elu = "elu", saved Input,
        f = |x, a, b| if x > c(0.0) { x } else { a * x.exp_m1() },
        df = |x, a, b| if x > c(0.0) { c(1.0) } else { a * x.exp() },
        gpu f = "sel(x > 0.0f, x, a * expm1_(x))",
            df = "sel(x > 0.0f, 1.0f, a * exp_(x))";
    /// x·relu6(x + 3)/6.
    Hardswish = "hardswish", saved Input,
        f = |x, a, b| if x.is_nan() { x } else { x * (x + c(3.0)).max(c(0.0)).min(c(6.0)) / c(6.0) },
        df = |x, a, b| if x <= c(-3.0) { c(0.0) } else if x >= c(3.0) { c(1.0) } else { x / c(3.0) + c(0.5) },
        gpu f = "x * sel(x <= -3.0f, 0.0f, sel(x >= 3.0f, 6.0f, x + 3.0f)) / 6.0f",
            df = "sel(x <= -3.0f, 0.0f, sel(x >= 3.0f, 1.0f, x / 3.0f + 0.5f))";
    /// relu6(x + 3)/6.
    Hardsigmoid = "hardsigmoid", saved Input,
        f = |x, a, b| if x.is_nan() { x } else { (x + c(3.0)).max(c(0.0)).min(c(6.0)) / c(6.0) },
        df = |x, a, b| step::<T>(x > c(-3.0) && x < c(3.0)) / c(6.0),
        gpu f = "sel(x <= -3.0f, 0.0f, sel(x >= 3.0f, 6.0f, x + 3.0f)) / 6.0f",
            df = "sel(x > -3.0f && x < 3.0f, 1.0f / 6.0f, 0.0f)";
    /// x·σ(x) (swish).
    Silu = "silu", saved Input,
        f = |x, a, b| x * sigmoid(x),
        df = |x, a, b| {
            let s = sigmoid(x);
            s * (c::<T>(1.0) + x * (c::<T>(1.0) - s))
        },
        gpu f = "x * sigmoid_(x)",
            df = "sigmoid_(x) * (1.0f + x * (1.0f - sigmoid_(x)))";
    /// σ(x) = 1/(1 + e⁻ˣ).
    Sigmoid = "sigmoid", saved Output,
        f = |x, a, b| sigmoid(x),
        df = |y, a, b| y * (c::<T>(1.0) - y),
        gpu f = "sigmoid_(x)",
            df = "y * (1.0f - y)";
    Tanh = "tanh", saved Output,
        f = |x, a, b| x.tanh(),
        df = |y, a, b| c::<T>(1.0) - y * y,
        gpu f = "tanh_(x)",
            df = "1.0f - y * y";
    /// x·Φ(x) with the exact (erf) normal CDF, `nn.GELU(approximate='none')`.
    Gelu = "gelu", saved Input,
        f = |x, a, b| x * c(0.5) * (c::<T>(1.0) + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf()),
        df = |x, a, b| {
            let cdf = c::<T>(0.5) * (c::<T>(1.0) + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf());
            let pdf = (-(x * x) * c(0.5)).exp_() * c(0.398_942_280_401_432_7);
            cdf + x * pdf
        },
        gpu f = "x * 0.5f * (1.0f + erf_(x * 0.70710678f))",
            df = "0.5f * (1.0f + erf_(x * 0.70710678f)) + x * exp_(-(x * x) * 0.5f) * 0.39894228f";
}

/// The GPU languages the table's kernel expressions are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuLang {
    Wgsl,
    Cuda,
}

/// The helpers the GPU expressions of the table call, in WGSL and CUDA: the expressions are
/// written in the subset both languages share (calls, arithmetic, comparisons, `&&`, f32
/// literals with an `f` suffix), so one string serves both. WGSL has no erf and no expm1:
/// erf is Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-7), expm1 a cubic Taylor polynomial
/// below |x| = 1e-2; tanh is written through exp so that large |x| gives ±1, not inf/inf.
const GPU_HELPERS: [(GpuLang, &str); 2] = [
    (
        GpuLang::Wgsl,
        "fn sel(c: bool, yes: f32, no: f32) -> f32 { return select(no, yes, c); }
fn exp_(x: f32) -> f32 { return exp(x); }
fn expm1_(x: f32) -> f32 { return select(exp(x) - 1.0, x * (1.0 + x * (0.5 + x / 6.0)), abs(x) < 1e-2); }
fn sigmoid_(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn tanh_(x: f32) -> f32 { return sign(x) * (1.0 - 2.0 / (exp(2.0 * abs(x)) + 1.0)); }
fn erf_(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-z * z));
}
",
    ),
    (
        GpuLang::Cuda,
        "__device__ __forceinline__ float sel(bool c, float yes, float no) { return c ? yes : no; }
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ float expm1_(float x) { return expm1f(x); }
__device__ __forceinline__ float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ float erf_(float x) { return erff(x); }
",
    ),
];

/// The whole table as two GPU functions, `act_fwd(id, x, a, b)` = f(x) and
/// `act_df(id, s, a, b)` = f'(saved value s), with `id` the row's index in
/// [`Activation::ALL`] (the kernels pass it in their uniforms / arguments), after the helpers.
/// Adding a row to the table adds it to every GPU kernel.
pub fn gpu_source(lang: GpuLang) -> String {
    let helpers = GPU_HELPERS
        .iter()
        .find(|(l, _)| *l == lang)
        .map(|(_, h)| *h)
        .unwrap_or_default();
    let (fwd, df, case, bind) = match lang {
        GpuLang::Wgsl => (
            "fn act_fwd(id: u32, x: f32, a: f32, b: f32) -> f32 {",
            "fn act_df(id: u32, s: f32, a: f32, b: f32) -> f32 {",
            "u",
            "let",
        ),
        GpuLang::Cuda => (
            "__device__ __forceinline__ float act_fwd(unsigned id, float x, float a, float b) {",
            "__device__ __forceinline__ float act_df(unsigned id, float s, float a, float b) {",
            "u",
            "const float",
        ),
    };
    let mut src = String::from(helpers);
    let default = match lang {
        GpuLang::Wgsl => "        default: { return x; }\n",
        GpuLang::Cuda => "        default: return x;\n",
    };
    src += &format!("{fwd}\n    switch (id) {{\n");
    for (i, act) in Activation::ALL.iter().enumerate() {
        src += &format!("        case {i}{case}: {{ return {}; }}\n", act.gpu().0);
    }
    src += &format!("{default}    }}\n}}\n");
    src += &format!("{df}\n    switch (id) {{\n");
    for (i, act) in Activation::ALL.iter().enumerate() {
        let name = match act.saved() {
            Saved::Input => "x",
            Saved::Output => "y",
        };
        src += &format!(
            "        case {i}{case}: {{ {bind} {name} = s; return {}; }}\n",
            act.gpu().1
        );
    }
    src += &default.replace("x;", "s;");
    src += "    }\n}\n";
    src
}

impl Activation {
    /// The row's index in [`Activation::ALL`]: its id in the GPU kernels ([`gpu_source`]).
    pub fn index(self) -> usize {
        Activation::ALL
            .iter()
            .position(|&r| r == self)
            .expect("activation in the table")
    }
}

/// One activation over `len` elements, with its parameters (`alpha`: hardtanh's min,
/// leaky_relu's slope, elu's alpha; `beta`: hardtanh's max; unused otherwise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationParams {
    pub act: Activation,
    pub alpha: f32,
    pub beta: f32,
    pub len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 approximations against libm in f64, on a dense grid: eˣ within 2 ulp (relative
    /// 2.4e-7; measured 8.1e-8) over [−87, 88]; erf within 4e-7 absolute (the fit's 1.2e-7 on
    /// erfc plus f32 rounding; measured 3.4e-7, a few ulps of values near 1) over [−10, 10];
    /// and the ends: huge inputs saturate, NaN stays NaN.
    #[test]
    fn f32_approximations_are_accurate() {
        let (mut exp_err, mut erf_err) = (0f64, 0f64);
        for i in 0..=175_000 {
            let x = -87.0 + i as f64 * 1e-3;
            let got = (x as f32).exp_() as f64;
            let want = (x as f32 as f64).exp();
            exp_err = exp_err.max(((got - want) / want).abs());
        }
        for i in 0..=200_000 {
            let x = (-10.0 + i as f64 * 1e-4) as f32;
            erf_err = erf_err.max((ActReal::erf(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(exp_err <= 2.4e-7, "exp relative error {exp_err:e}");
        assert!(erf_err <= 4e-7, "erf absolute error {erf_err:e}");
        assert_eq!(1000f32.exp_(), 88f32.exp_());
        assert!(88f32.exp_().is_finite() && (-1000f32).exp_() >= 0.0);
        assert!(f32::NAN.exp_().is_nan() && ActReal::erf(f32::NAN).is_nan());
        assert_eq!((ActReal::erf(30f32), ActReal::erf(-30f32)), (1.0, -1.0));
    }

    /// Every row in f32 (the approximations above) against the same row in f64 (libm), on a
    /// dense grid over [−12, 12]: within 1e-6·max(1, |value|), a few f32 ulps of values near 1
    /// (PyTorch's own f32 GELU is 1.2e-6 off f64 at |x| ≈ 6).
    #[test]
    fn f32_rows_follow_f64() {
        for &act in Activation::ALL {
            let (a, b) = (0.125, 0.875); // exact in f32: breakpoints agree
            let (mut fwd, mut df) = (0f64, 0f64);
            for i in 0..=240_000 {
                let x = (-12.0 + i as f64 * 1e-4) as f32;
                let err = |got: f32, want: f64| (got as f64 - want).abs() / want.abs().max(1.0);
                let y = act.forward(x, a as f32, b as f32);
                let y64 = act.forward(x as f64, a, b);
                fwd = fwd.max(err(y, y64));
                let (s, s64) = match act.saved() {
                    Saved::Input => (x, x as f64),
                    Saved::Output => (y, y64),
                };
                df = df.max(err(
                    act.derivative(s, a as f32, b as f32),
                    act.derivative(s64, a, b),
                ));
            }
            assert!(fwd <= 1e-6, "{} forward off by {fwd:e}", act.name());
            assert!(df <= 1e-6, "{} derivative off by {df:e}", act.name());
        }
    }

    #[test]
    fn breakpoints_follow_pytorch() {
        let d = |a: Activation, x: f64| a.derivative(a_saved(a, x), 0.01, 0.0);
        fn a_saved(a: Activation, x: f64) -> f64 {
            match a.saved() {
                Saved::Input => x,
                Saved::Output => a.forward(x, 0.01, 0.0),
            }
        }
        assert_eq!(d(Activation::Relu, 0.0), 0.0);
        assert_eq!(d(Activation::Relu6, 0.0), 0.0);
        assert_eq!(d(Activation::Relu6, 6.0), 0.0);
        assert_eq!(d(Activation::Relu6, 3.0), 1.0);
        assert_eq!(d(Activation::Hardswish, -3.0), 0.0);
        assert_eq!(d(Activation::Hardswish, 3.0), 1.0);
        assert_eq!(d(Activation::Hardswish, 0.0), 0.5);
        assert_eq!(d(Activation::Hardsigmoid, -3.0), 0.0);
        assert_eq!(d(Activation::Hardsigmoid, 3.0), 0.0);
        assert_eq!(d(Activation::Hardsigmoid, 0.0), 1.0 / 6.0);
        assert_eq!(d(Activation::LeakyRelu, 0.0), 0.01);
        assert!(Activation::Relu.forward(f64::NAN, 0.0, 0.0).is_nan());
        assert!(Activation::Relu6.forward(f64::NAN, 0.0, 0.0).is_nan());
    }
}
