//! Huge pages for fresh output buffers.
//!
//! The backend allocates a new buffer for every op's output (VGG16 touches about 1 GB of new
//! memory per batch). Large allocations come straight from mmap, so the kernel that first
//! writes a buffer takes one page fault per 4 KiB page: a quarter of a million faults per
//! forward pass, a sizeable share of the run time. Advising the kernel to back the buffer
//! with transparent huge pages before the first write turns that into one fault per 2 MiB.
//! The advice never changes the buffer's contents, and is ignored where THP is disabled.

/// Smaller buffers are not worth a system call (and cannot hold an aligned huge page anyway).
const MIN_BYTES: usize = 4 << 20;

/// Asks for transparent huge pages on the 2 MiB-aligned interior of `buf` (Linux only; a
/// no-op elsewhere). Call it before the buffer's first write.
pub fn prefer_huge_pages<T>(buf: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE_PAGE: usize = 2 << 20;
        const MADV_HUGEPAGE: i32 = 14;
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let bytes = std::mem::size_of_val(buf);
        if bytes < MIN_BYTES {
            return;
        }
        let start = buf.as_mut_ptr() as usize;
        let first = start.next_multiple_of(HUGE_PAGE);
        let end = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
        if first < end {
            // SAFETY: [first, end) lies inside `buf`, which we borrow mutably, and
            // MADV_HUGEPAGE only changes how its pages are backed, never their contents.
            // Failure (THP unsupported) is harmless, so the result is ignored.
            unsafe {
                madvise(first as *mut std::ffi::c_void, end - first, MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}
