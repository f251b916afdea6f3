//! Memory of fitting a Gaussian to many feature vectors: no buffer grows with the number of
//! rows beyond the features themselves, and the covariance keeps its sample-order sums.
//!
//! The allocation tracker covers the whole test binary, so this file has one test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dcgan::eval::frechet::GaussianStats;
use dcgan::rng::Rng;

/// Records the largest single allocation of this test binary.
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

/// The covariance as a plain double loop: each entry one sum over the rows in sample order.
fn reference_covariance(features: &[f32], dim: usize, mean: &[f64]) -> Vec<f64> {
    let count = features.len() / dim;
    let mut covariance = vec![0.0; dim * dim];
    for i in 0..dim {
        for j in 0..dim {
            let (a, b) = (i.min(j), i.max(j));
            let sum: f64 = features
                .chunks_exact(dim)
                .map(|row| (row[a] as f64 - mean[a]) * (row[b] as f64 - mean[b]))
                .sum();
            covariance[i * dim + j] = sum / (count - 1) as f64;
        }
    }
    covariance
}

#[test]
fn gaussian_fit_allocates_below_feature_size() {
    let (count, dim) = (20_000, 64);
    let mut rng = Rng::from_seed(11);
    let features: Vec<f32> = (0..count * dim).map(|_| rng.uniform()).collect();
    let feature_bytes = std::mem::size_of_val(features.as_slice());

    MAX_ALLOCATION_SIZE.store(0, Ordering::Relaxed);
    let stats = GaussianStats::from_features(&features, dim).unwrap();
    let largest = MAX_ALLOCATION_SIZE.load(Ordering::Relaxed);
    assert!(
        largest < feature_bytes / 4,
        "largest allocation {largest} bytes, features {feature_bytes} bytes"
    );

    assert_eq!(stats.count(), count);
    let expected = reference_covariance(&features, dim, stats.mean());
    let differing =
        stats.covariance().iter().zip(&expected).filter(|(a, b)| a.to_bits() != b.to_bits());
    assert_eq!(differing.count(), 0, "covariance entries that differ from sample-order sums");
}
