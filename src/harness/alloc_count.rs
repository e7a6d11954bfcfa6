//! A counting global allocator: the system allocator plus two counters per
//! thread (allocations and bytes asked for).
//!
//! Per-thread counters attribute allocations to the stage that made them
//! even when stages run on different threads at once; they are plain
//! `Cell`s in a `const` thread-local, which needs no lazy registration and
//! so never allocates itself. In steady state the pipeline makes no allocation, so none of this costs
//! anything on the hot path.
//!
//! The binary installs it with `#[global_allocator]`; so does the
//! zero-allocation test, in its own test binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

thread_local! {
    static THREAD: Cell<AllocCount> = const { Cell::new(AllocCount { allocs: 0, bytes: 0 }) };
}

/// Allocations (a `realloc` counts as one) and bytes requested.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AllocCount {
    /// Number of allocations.
    pub allocs: u64,
    /// Bytes requested by them.
    pub bytes: u64,
}

impl AllocCount {
    /// What was counted since `earlier`.
    pub fn since(self, earlier: AllocCount) -> AllocCount {
        AllocCount {
            allocs: self.allocs - earlier.allocs,
            bytes: self.bytes - earlier.bytes,
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: AllocCount) {
        self.allocs += other.allocs;
        self.bytes += other.bytes;
    }
}

#[inline]
fn record(bytes: usize) {
    // try_with: the thread-local may already be gone while a thread exits.
    let _ = THREAD.try_with(|c| {
        let mut n = c.get();
        n.allocs += 1;
        n.bytes += bytes as u64;
        c.set(n);
    });
}

/// This thread's counters so far.
pub fn thread_count() -> AllocCount {
    THREAD.try_with(Cell::get).unwrap_or_default()
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; counting touches no memory
// the allocator hands out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}
