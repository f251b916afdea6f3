//! A global allocator for tests that bound the largest single allocation of their binary.
//! A test binary that declares `mod alloc_support;` allocates through it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Forwards to the system allocator and records the largest single allocation.
struct MaxAllocationTracker;

static MAX_ALLOCATION_SIZE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the counter only observes sizes.
unsafe impl GlobalAlloc for MaxAllocationTracker {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        MAX_ALLOCATION_SIZE.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        MAX_ALLOCATION_SIZE.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: MaxAllocationTracker = MaxAllocationTracker;

/// Returns the largest single allocation, in bytes, since the binary started or since the
/// last [`reset_max_allocation`]. It covers every thread of the binary.
pub fn max_allocation() -> usize {
    MAX_ALLOCATION_SIZE.load(Ordering::Relaxed)
}

/// Starts a new [`max_allocation`] measurement.
#[allow(dead_code)]
pub fn reset_max_allocation() {
    MAX_ALLOCATION_SIZE.store(0, Ordering::Relaxed);
}
