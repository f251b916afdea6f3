//! Memory of a steady-state training step: once every buffer has been sized by earlier steps,
//! a step on the packed GEMM backend allocates no large buffer.
//!
//! The GEMM backend and the Winograd setting are process-wide, so this file has one test, which
//! runs the settings one after another.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::kernels::{set_winograd, Winograd};
use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::rng::Rng;
use dcgan::train::Trainer;
use ndarray::Array4;

/// Allocations of at least this many bytes count as large (64 KiB).
const LARGE: usize = 1 << 16;

/// Counts the large allocations of this test binary and their bytes.
struct LargeAllocationCounter;

static LARGE_COUNT: AtomicUsize = AtomicUsize::new(0);
static LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);

fn record(size: usize) {
    if size >= LARGE {
        LARGE_COUNT.fetch_add(1, Ordering::Relaxed);
        LARGE_BYTES.fetch_add(size, Ordering::Relaxed);
    }
}

// SAFETY: every call forwards to the system allocator unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for LargeAllocationCounter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: LargeAllocationCounter = LargeAllocationCounter;

/// Runs `f` and returns the number and total bytes of the large allocations it made.
fn large_allocations(f: impl FnOnce()) -> (usize, usize) {
    let (count, bytes) = (LARGE_COUNT.load(Ordering::Relaxed), LARGE_BYTES.load(Ordering::Relaxed));
    f();
    (LARGE_COUNT.load(Ordering::Relaxed) - count, LARGE_BYTES.load(Ordering::Relaxed) - bytes)
}

#[test]
fn steady_step_allocates_no_large_buffer() {
    set_gemm_backend(GemmBackend::Packed);
    // With Winograd products on every layer that fits (here the 32- and 64-channel layers), and
    // with the direct lowering only. One setting after the other: it is process-wide.
    for winograd in [Winograd::Always, Winograd::Off] {
        set_winograd(winograd);
        check_steady_step(winograd);
    }
    set_winograd(Winograd::default());
}

fn check_steady_step(winograd: Winograd) {
    let config = DcganConfig { nz: 16, ngf: 16, ndf: 16, channels: 1, image_size: 32 };
    // One worker thread. With more, scheduling decides which thread first runs which tile and
    // sizes its scratch for it, so a late first use could allocate in any step.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let mut rng = Rng::from_seed(3);
    let real = Array4::from_shape_simple_fn(config.image_shape(16), || 2.0 * rng.uniform() - 1.0);
    let mut trainer = Trainer::new(config, 0, GanLoss::default()).unwrap();

    // Each step consumes its batch; the copy is made outside the measured call.
    let mut step = |batch: Array4<f32>| {
        large_allocations(|| {
            pool.install(|| trainer.step(batch)).unwrap();
        })
    };
    let (first_count, first_bytes) = step(real.clone());
    assert!(first_count > 0, "the first step made no large allocation, so the counter is broken");
    for _ in 0..3 {
        step(real.clone());
    }
    let (count, bytes) = step(real.clone());
    assert_eq!(
        count, 0,
        "{winograd:?}: a steady-state step made {count} large allocations ({bytes} bytes); the \
         first step made {first_count} ({first_bytes} bytes)"
    );
}
