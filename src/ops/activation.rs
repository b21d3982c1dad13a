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
pub trait ActReal: Float {
    fn c(v: f64) -> Self;
    fn erf(self) -> Self;
}

impl ActReal for f32 {
    fn c(v: f64) -> Self {
        v as f32
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
}

impl ActReal for f64 {
    fn c(v: f64) -> Self {
        v
    }
    fn erf(self) -> Self {
        libm::erf(self)
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

            /// PyTorch's functional name.
            pub fn name(self) -> &'static str {
                match self { $(Activation::$name => $label,)* }
            }

            pub fn saved(self) -> Saved {
                match self { $(Activation::$name => Saved::$saved,)* }
            }

            /// y = f(x).
            #[allow(unused_variables)]
            pub fn forward<T: ActReal>(self, x: T, alpha: T, beta: T) -> T {
                match self { $(Activation::$name => ($f as fn(T, T, T) -> T)(x, alpha, beta),)* }
            }

            /// dy/dx, written in the saved value `s` (the input or the output, per `saved`).
            #[allow(unused_variables)]
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

fn sigmoid<T: ActReal>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
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
            let pdf = (-(x * x) * c(0.5)).exp() * c(0.398_942_280_401_432_7);
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
