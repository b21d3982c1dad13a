//! Scratch buffers kept per thread across calls.
//!
//! A kernel that allocated its working memory afresh on every call (Winograd's transformed
//! tiles: up to ~20 MB per block) would get new pages from the kernel each time: a page fault
//! and a zeroed page per 4 KiB, which measured as a third more page faults over a resnet50
//! batch and its 3×3 convs twice as slow inside the engine as alone. Buffers taken here go back
//! to the taking thread's pool when dropped, so the next call finds them already mapped.

use super::real::Real;
use std::ops::{Deref, DerefMut};

/// At most this many buffers are kept per thread and type (a kernel takes a few; a thread
/// that steals work while waiting may hold a few more).
const KEEP: usize = 8;

/// A buffer from this thread's pool; its length is whatever the last user left, so resize it.
pub struct Buffer<T: Real>(Vec<T>);

pub fn buffer<T: Real>() -> Buffer<T> {
    Buffer(
        T::scratch_pool()
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_default(),
    )
}

impl<T: Real> Drop for Buffer<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        T::scratch_pool().with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEEP {
                p.push(v);
            }
        });
    }
}

impl<T: Real> Deref for Buffer<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: Real> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}
