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
        df = $df:expr;
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
        df = |y, a, b| step(y > c(0.0));
    /// min(max(x, 0), 6).
    Relu6 = "relu6", saved Input,
        f = |x, a, b| if x.is_nan() { x } else { x.max(c(0.0)).min(c(6.0)) },
        df = |x, a, b| step(x > c(0.0) && x < c(6.0));
    /// min(max(x, alpha), beta).
    Hardtanh = "hardtanh", saved Input,
        f = |x, a, b| if x.is_nan() { x } else { x.max(a).min(b) },
        df = |x, a, b| step(x > a && x < b);
    /// x for x > 0, alpha·x otherwise.
    LeakyRelu = "leaky_relu", saved Input,
        f = |x, a, b| if x > c(0.0) { x } else { x * a },
        df = |x, a, b| if x > c(0.0) { c(1.0) } else { a };
    /// x for x > 0, alpha·(eˣ − 1) otherwise.
    Elu = "elu", saved Input,
        f = |x, a, b| if x > c(0.0) { x } else { a * x.exp_m1() },
        df = |x, a, b| if x > c(0.0) { c(1.0) } else { a * x.exp() };
    /// x·relu6(x + 3)/6.
    Hardswish = "hardswish", saved Input,
        f = |x, a, b| if x.is_nan() { x } else { x * (x + c(3.0)).max(c(0.0)).min(c(6.0)) / c(6.0) },
        df = |x, a, b| if x <= c(-3.0) { c(0.0) } else if x >= c(3.0) { c(1.0) } else { x / c(3.0) + c(0.5) };
    /// relu6(x + 3)/6.
    Hardsigmoid = "hardsigmoid", saved Input,
        f = |x, a, b| if x.is_nan() { x } else { (x + c(3.0)).max(c(0.0)).min(c(6.0)) / c(6.0) },
        df = |x, a, b| step::<T>(x > c(-3.0) && x < c(3.0)) / c(6.0);
    /// x·σ(x) (swish).
    Silu = "silu", saved Input,
        f = |x, a, b| x * sigmoid(x),
        df = |x, a, b| {
            let s = sigmoid(x);
            s * (c::<T>(1.0) + x * (c::<T>(1.0) - s))
        };
    /// σ(x) = 1/(1 + e⁻ˣ).
    Sigmoid = "sigmoid", saved Output,
        f = |x, a, b| sigmoid(x),
        df = |y, a, b| y * (c::<T>(1.0) - y);
    Tanh = "tanh", saved Output,
        f = |x, a, b| x.tanh(),
        df = |y, a, b| c::<T>(1.0) - y * y;
    /// x·Φ(x) with the exact (erf) normal CDF, `nn.GELU(approximate='none')`.
    Gelu = "gelu", saved Input,
        f = |x, a, b| x * c(0.5) * (c::<T>(1.0) + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf()),
        df = |x, a, b| {
            let cdf = c::<T>(0.5) * (c::<T>(1.0) + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf());
            let pdf = (-(x * x) * c(0.5)).exp() * c(0.398_942_280_401_432_7);
            cdf + x * pdf
        };
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
