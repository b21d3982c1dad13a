//! Freed output buffers, kept for the next op's output.
//!
//! Every op writes a fresh buffer (VGG16 touches about 1 GB of new memory per batch). Large
//! allocations come straight from mmap and go back to the system when freed, so each one
//! costs a page fault per page and the kernel's zeroing of every page, and a smaller one that
//! malloc reuses is filled again: perf showed `clear_page`, page faults and `memset` at ~13%
//! of a ConvNeXt batch. A buffer handed out again keeps its old contents (initialized f32s,
//! not zeros): for outputs that their kernel overwrites entirely, as every CPU kernel does
//! (the backend's `poison` mode, which the tests run, checks it).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Buffers below this many f32 (256 KiB) come from malloc's own free lists; not worth keeping.
const MIN_LEN: usize = 1 << 16;

/// A bounded set of freed buffers. The process has one ([`RECYCLER`]); tests make their own.
pub struct Recycler {
    free: Mutex<VecDeque<Vec<f32>>>,
    /// At most this many f32 kept in all: a bound on the memory held between passes.
    max_len: usize,
}

/// The process's recycler, holding at most 512 MiB: what it adds to a process's peak memory
/// at most (measured: VGG16, batch 8, 747 → 927 MB; ResNet-50 206 → 241 MB). Giving kept
/// buffers back before each new allocation held the peak at 747 MB but cost 10% of the
/// speed.
pub static RECYCLER: Recycler = Recycler::new(1 << 27);

impl Recycler {
    pub const fn new(max_len: usize) -> Self {
        Recycler {
            free: Mutex::new(VecDeque::new()),
            max_len,
        }
    }

    /// A buffer of `len` f32s with unspecified contents: a kept one when one fits (capacity
    /// len to 2·len, the smallest such), else a new zeroed one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        if len >= MIN_LEN {
            let mut free = self.lock();
            let fits = (0..free.len())
                .filter(|&i| (len..=2 * len).contains(&free[i].capacity()))
                .min_by_key(|&i| free[i].capacity());
            if let Some(mut v) = fits.and_then(|i| free.remove(i)) {
                drop(free);
                // Shorter than `len`: its new tail is zeroed.
                v.resize(len, 0.0);
                return v;
            }
        }
        vec![0.0; len]
    }

    /// Keeps `v` for [`Recycler::take`], dropping the oldest kept buffers beyond the bound.
    pub fn put(&self, v: Vec<f32>) {
        if v.capacity() < MIN_LEN || v.capacity() > self.max_len {
            return;
        }
        let mut free = self.lock();
        free.push_back(v);
        let mut held: usize = free.iter().map(Vec::capacity).sum();
        while held > self.max_len {
            held -= free.pop_front().map_or(0, |old| old.capacity());
        }
    }

    /// A panic while the lock is held leaves only a list of buffers, still valid.
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<f32>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_is_handed_out_again() {
        let r = Recycler::new(1 << 22);
        let mut v = r.take(MIN_LEN * 2);
        assert!(v.iter().all(|&x| x == 0.0), "a new buffer is zeroed");
        v.iter_mut().for_each(|x| *x = 7.0);
        v.truncate(MIN_LEN);
        let ptr = v.as_ptr();
        r.put(v);
        // A larger request that still fits its capacity reuses it: the old contents, then a
        // zeroed tail.
        let w = r.take(MIN_LEN + 5);
        assert_eq!(w.as_ptr(), ptr);
        assert_eq!(w.len(), MIN_LEN + 5);
        assert!(w[..MIN_LEN].iter().all(|&x| x == 7.0));
        assert!(w[MIN_LEN..].iter().all(|&x| x == 0.0));
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn buffers_that_do_not_fit_are_not_used() {
        let r = Recycler::new(1 << 22);
        r.put(vec![1.0; MIN_LEN * 4]);
        // Too small, and too large (more than twice the request): fresh buffers.
        let small = r.take(MIN_LEN * 5);
        let large = r.take(MIN_LEN);
        assert!(small.iter().chain(&large).all(|&x| x == 0.0));
        assert_eq!(r.held(), MIN_LEN * 4);
        // The smallest that fits is taken.
        r.put(vec![2.0; MIN_LEN * 3]);
        let v = r.take(MIN_LEN * 2);
        assert_eq!(v.capacity(), MIN_LEN * 3);
        assert_eq!(r.held(), MIN_LEN * 4);
    }

    #[test]
    fn small_buffers_are_not_kept_and_the_bound_drops_the_oldest() {
        let r = Recycler::new(MIN_LEN * 5);
        r.put(vec![0.0; MIN_LEN - 1]);
        assert_eq!(r.held(), 0);
        r.put(vec![0.0; MIN_LEN * 2]);
        r.put(vec![0.0; MIN_LEN * 3]);
        assert_eq!(r.held(), MIN_LEN * 5);
        r.put(vec![0.0; MIN_LEN]);
        assert_eq!(r.held(), MIN_LEN * 4, "the oldest (2·MIN_LEN) went");
        r.put(vec![0.0; MIN_LEN * 6]);
        assert_eq!(r.held(), MIN_LEN * 4, "larger than the bound: not kept");
    }
}
