//! The float types the CPU kernels are generic over: f32 for running models, f64 for the
//! finite-difference checks of every backward kernel.

use std::cell::RefCell;
use std::thread::LocalKey;

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
    /// This thread's pool of scratch buffers of this type (see [`super::scratch`]).
    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static F32_POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static F64_POOL: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
        &F32_POOL
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
    fn scratch_pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
        &F64_POOL
    }
}
