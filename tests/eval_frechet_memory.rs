//! Memory of fitting a Gaussian to many feature vectors: no buffer grows with the number of
//! rows beyond the features themselves, and the covariance keeps its sample-order sums.
//!
//! The allocation tracker covers the whole test binary, so this file has one test.

mod alloc_support;

use dcgan::eval::frechet::GaussianStats;
use dcgan::rng::Rng;

/// Computes the covariance in a plain double loop, each entry one sum over the rows in sample
/// order.
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

    alloc_support::reset_max_allocation();
    let stats = GaussianStats::from_features(&features, dim).unwrap();
    let largest = alloc_support::max_allocation();
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
