//! The float types the CPU kernels are generic over: f32 for running models, f64 for the
//! finite-difference checks of every backward kernel.

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

pub trait Real:
    num_traits::Float
    + crate::ops::ActReal
    + std::fmt::Debug
    + std::iter::Sum
    + std::ops::AddAssign
    + Default
    + Send
    + Sync
    + 'static
    + sealed::Sealed
{
    fn of(v: f64) -> Self;
    fn f64(self) -> f64;
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
}
