//! Safe wrapper around the `gemm` crate's matrix product (a BLIS-style kernel with AVX2/AVX-512
//! and NEON paths, pure Rust). Convolutions and linear layers reduce to it.

use super::real::Real;
pub use gemm::Parallelism;

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    pub fn row_major(data: &'a [T], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// dst[m×n, row-major] (+)= a[m×k] · b[k×n].
pub fn matmul<T: Real>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    a: View<T>,
    b: View<T>,
    accumulate: bool,
    par: Parallelism,
) {
    matmul_strided(dst, n, (m, n, k), a, b, accumulate, par);
}

/// Like [`matmul`], but row i of dst starts at `dst[i * dst_rs]`: the product can fill a
/// column block of a wider row-major matrix (the conv kernels write a few hundred output
/// pixels of every channel at a time).
pub fn matmul_strided<T: Real>(
    dst: &mut [T],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    a: View<T>,
    b: View<T>,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst_rs >= n, "matmul destination rows overlap");
    let dst_len = if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * dst_rs + n
    };
    assert!(dst.len() >= dst_len, "matmul destination too small");
    assert!(a.fits(m, k) && b.fits(k, n), "matmul operand too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_rs)
                .take(m)
                .for_each(|row| row[..n].fill(T::zero()));
        }
        return;
    }
    // SAFETY: the asserts above keep every index the kernel touches inside the slices, and
    // `Real` is sealed to f32/f64, the types `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// Parallelise over images when there are enough of them to keep every thread busy, inside
/// each matrix product otherwise.
pub fn split_batch(n: usize) -> bool {
    n >= rayon::current_num_threads()
}

pub fn inner_parallelism(batch_parallel: bool) -> Parallelism {
    if batch_parallel {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}
