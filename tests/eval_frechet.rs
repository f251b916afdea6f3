//! The symmetric eigendecomposition, the matrix square root and the Frechet distance against
//! matrices built from known eigenpairs and against closed forms.
//!
//! Test matrices are `Q diag(values) Q^T` with `Q` a random orthogonal matrix (Gram-Schmidt on
//! seeded Gaussian columns), so their eigenvalues and square roots `Q diag(sqrt(values)) Q^T`
//! are known by construction. Tolerances are absolute, scaled by the largest eigenvalue: the
//! Jacobi method is accurate to a few `f64::EPSILON` times the matrix norm.

use dcgan::eval::{frechet_distance, sqrtm_psd, symmetric_eigen, GaussianStats};
use dcgan::rng::Rng;
use dcgan::Error;

/// Returns a random `dim x dim` orthogonal matrix, row-major.
fn random_orthogonal(dim: usize, rng: &mut Rng) -> Vec<f64> {
    // Columns by modified Gram-Schmidt, stored as rows of `cols` first.
    let mut cols: Vec<Vec<f64>> = Vec::with_capacity(dim);
    while cols.len() < dim {
        let mut v: Vec<f64> = (0..dim).map(|_| rng.normal_f64()).collect();
        for c in &cols {
            let d: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
            for (x, y) in v.iter_mut().zip(c) {
                *x -= d * y;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-6 {
            cols.push(v.iter().map(|x| x / norm).collect());
        }
    }
    let mut q = vec![0.0; dim * dim];
    for (j, c) in cols.iter().enumerate() {
        for i in 0..dim {
            q[i * dim + j] = c[i];
        }
    }
    q
}

/// Returns `Q diag(values) Q^T`.
fn compose(q: &[f64], values: &[f64]) -> Vec<f64> {
    let dim = values.len();
    let mut m = vec![0.0; dim * dim];
    for i in 0..dim {
        for j in 0..dim {
            m[i * dim + j] = (0..dim).map(|k| q[i * dim + k] * values[k] * q[j * dim + k]).sum();
        }
    }
    m
}

fn matmul(a: &[f64], b: &[f64], dim: usize) -> Vec<f64> {
    let mut m = vec![0.0; dim * dim];
    for i in 0..dim {
        for j in 0..dim {
            m[i * dim + j] = (0..dim).map(|k| a[i * dim + k] * b[k * dim + j]).sum();
        }
    }
    m
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Eigenvalue sets: well spread, repeated, near-singular, singular, tiny scale and huge scale.
fn spectra(dim: usize, rng: &mut Rng) -> Vec<(&'static str, Vec<f64>)> {
    let spread: Vec<f64> = (0..dim).map(|_| 0.1 + 5.0 * rng.uniform_f64()).collect();
    let near_singular: Vec<f64> =
        (0..dim).map(|i| if i % 3 == 0 { 1e-12 } else { 1.0 + i as f64 }).collect();
    let singular: Vec<f64> = (0..dim).map(|i| if i < dim / 2 { 0.0 } else { 2.0 }).collect();
    vec![
        ("spread", spread.clone()),
        ("repeated", vec![4.0; dim]),
        ("near-singular", near_singular),
        ("singular", singular),
        ("scaled down", spread.iter().map(|v| v * 1e-8).collect()),
        ("scaled up", spread.iter().map(|v| v * 1e6).collect()),
    ]
}

#[test]
fn eigen_recovers_known_spectra() {
    let mut rng = Rng::from_seed(1);
    for dim in [1, 2, 5, 16, 64] {
        let q = random_orthogonal(dim, &mut rng);
        for (name, values) in spectra(dim, &mut rng) {
            let m = compose(&q, &values);
            let eigen = symmetric_eigen(&m, dim).unwrap();
            let scale = values.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(f64::MIN_POSITIVE);
            let tol = 1e-12 * scale * dim as f64;

            let mut expected = values.clone();
            expected.sort_by(f64::total_cmp);
            assert!(
                max_abs_diff(&eigen.values, &expected) <= tol,
                "dim {dim} {name}: eigenvalues {:?}, expected {expected:?}",
                eigen.values
            );

            // The vectors are orthonormal and rebuild the matrix.
            let v = &eigen.vectors;
            let mut vt_v = vec![0.0; dim * dim];
            for i in 0..dim {
                for j in 0..dim {
                    vt_v[i * dim + j] = (0..dim).map(|k| v[k * dim + i] * v[k * dim + j]).sum();
                }
            }
            let identity = diag(&vec![1.0; dim]);
            assert!(
                max_abs_diff(&vt_v, &identity) <= 1e-12 * dim as f64,
                "dim {dim} {name}: V^T V"
            );
            let rebuilt = compose(v, &eigen.values);
            assert!(max_abs_diff(&rebuilt, &m) <= tol, "dim {dim} {name}: V diag V^T");
        }
    }
}

#[test]
fn sqrtm_matches_known_roots() {
    let mut rng = Rng::from_seed(2);
    for dim in [1, 3, 8, 32, 128] {
        let q = random_orthogonal(dim, &mut rng);
        for (name, values) in spectra(dim, &mut rng) {
            let m = compose(&q, &values);
            let roots: Vec<f64> = values.iter().map(|v| v.sqrt()).collect();
            let expected = compose(&q, &roots);
            let root = sqrtm_psd(&m, dim).unwrap();
            let largest = values.iter().fold(0.0f64, |a, &v| a.max(v));

            // A root's error is about the eigenvalue error divided by the root of the smallest
            // eigenvalue, so it is checked where the spectrum is far from zero, and its square
            // is checked everywhere.
            if values.iter().all(|&v| v >= 0.1 * largest) {
                let tol = 1e-10 * largest.sqrt();
                let err = max_abs_diff(&root, &expected);
                assert!(err <= tol, "dim {dim} {name}: root off by {err:e}");
            }
            let squared = matmul(&root, &root, dim);
            let err = max_abs_diff(&squared, &m);
            assert!(err <= 1e-11 * largest * dim as f64, "dim {dim} {name}: R R off by {err:e}");
            let asymmetry = (0..dim * dim)
                .fold(0.0f64, |a, k| a.max((root[k] - root[(k % dim) * dim + k / dim]).abs()));
            assert_eq!(asymmetry, 0.0, "dim {dim} {name}: root not symmetric");
        }
    }
}

#[test]
fn sqrtm_matches_two_by_two_closed_form() {
    // For a 2x2 positive semi-definite M, sqrt(M) = (M + sqrt(det M) I) / sqrt(tr M + 2 sqrt(det M)).
    let cases: [[f64; 3]; 5] =
        [[4.0, 1.0, 3.0], [2.0, -1.5, 1.5], [1.0, 1.0, 1.0], [1e-9, 0.0, 5.0], [9.0, 0.0, 9.0]];
    for [a, b, c] in cases {
        let m = [a, b, b, c];
        let s = (a * c - b * b).max(0.0).sqrt();
        let t = (a + c + 2.0 * s).sqrt();
        let expected = [(a + s) / t, b / t, b / t, (c + s) / t];
        let root = sqrtm_psd(&m, 2).unwrap();
        let err = max_abs_diff(&root, &expected);
        assert!(err <= 1e-12 * t, "[[{a}, {b}], [{b}, {c}]]: root {root:?}, expected {expected:?}");
    }
}

#[test]
fn sqrtm_rejects_bad_matrices() {
    let indefinite = [1.0, 0.0, 0.0, -1.0];
    assert!(matches!(sqrtm_psd(&indefinite, 2), Err(Error::InvalidArgument { .. })));
    let asymmetric = [1.0, 0.5, 0.0, 1.0];
    assert!(matches!(sqrtm_psd(&asymmetric, 2), Err(Error::InvalidArgument { .. })));
    assert!(matches!(sqrtm_psd(&[1.0, f64::NAN, f64::NAN, 1.0], 2), Err(Error::NonFinite { .. })));
    assert!(matches!(sqrtm_psd(&[1.0; 3], 2), Err(Error::LengthMismatch { .. })));
    assert!(matches!(sqrtm_psd(&[], 0), Err(Error::InvalidArgument { .. })));
    // Roundoff-sized negative eigenvalues are clamped, not rejected.
    let nearly = [1.0, 0.0, 0.0, -1e-14];
    let root = sqrtm_psd(&nearly, 2).unwrap();
    assert_eq!(root, vec![1.0, 0.0, 0.0, 0.0]);
}

fn diag(values: &[f64]) -> Vec<f64> {
    let dim = values.len();
    let mut m = vec![0.0; dim * dim];
    for (i, &v) in values.iter().enumerate() {
        m[i * dim + i] = v;
    }
    m
}

#[test]
fn frechet_of_diagonal_gaussians_matches_closed_form() {
    // ||mu1 - mu2||^2 + sum (sqrt s1 - sqrt s2)^2 for diagonal covariances, and the same after
    // rotating both by one orthogonal Q (they still commute).
    let mut rng = Rng::from_seed(3);
    for dim in [1, 4, 32, 128] {
        let mu1: Vec<f64> = (0..dim).map(|_| rng.normal_f64()).collect();
        let mu2: Vec<f64> = (0..dim).map(|_| rng.normal_f64()).collect();
        let s1: Vec<f64> = (0..dim).map(|_| 0.01 + 3.0 * rng.uniform_f64()).collect();
        let mut s2: Vec<f64> = (0..dim).map(|_| 0.01 + 3.0 * rng.uniform_f64()).collect();
        s2[0] = 0.0; // one degenerate direction
        let expected: f64 = mu1.iter().zip(&mu2).map(|(a, b)| (a - b) * (a - b)).sum::<f64>()
            + s1.iter().zip(&s2).map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2)).sum::<f64>();

        let a = GaussianStats::from_moments(mu1.clone(), diag(&s1)).unwrap();
        let b = GaussianStats::from_moments(mu2.clone(), diag(&s2)).unwrap();
        let d = frechet_distance(&a, &b).unwrap();
        assert!((d - expected).abs() <= 1e-9 * expected, "dim {dim}: {d} vs {expected}");
        let d_swapped = frechet_distance(&b, &a).unwrap();
        assert!((d_swapped - expected).abs() <= 1e-9 * expected, "dim {dim}: swapped {d_swapped}");

        let q = random_orthogonal(dim, &mut rng);
        let a = GaussianStats::from_moments(mu1, compose(&q, &s1)).unwrap();
        let b = GaussianStats::from_moments(mu2, compose(&q, &s2)).unwrap();
        let d = frechet_distance(&a, &b).unwrap();
        assert!((d - expected).abs() <= 1e-8 * expected, "dim {dim} rotated: {d} vs {expected}");
    }
}

#[test]
fn frechet_non_commuting_closed_form() {
    // For 2x2 covariances, Tr((S1 S2)^(1/2)) = sqrt(Tr(S1 S2) + 2 sqrt(det S1 det S2)), because
    // the eigenvalues of S1 S2 have that sum and product.
    let cases: [([f64; 3], [f64; 3]); 2] =
        [([2.0, 0.5, 1.0], [1.0, -0.7, 3.0]), ([1.0, 0.99, 1.0], [4.0, 0.0, 0.25])];
    for ([a, b, c], [d, e, f]) in cases {
        let s1 = vec![a, b, b, c];
        let s2 = vec![d, e, e, f];
        let tr_prod = a * d + 2.0 * b * e + c * f;
        let det = ((a * c - b * b) * (d * f - e * e)).sqrt();
        let expected = a + c + d + f - 2.0 * (tr_prod + 2.0 * det).sqrt() + 0.25;
        let g1 = GaussianStats::from_moments(vec![0.0, 0.5], s1).unwrap();
        let g2 = GaussianStats::from_moments(vec![0.0, 0.0], s2).unwrap();
        let distance = frechet_distance(&g1, &g2).unwrap();
        assert!(
            (distance - expected).abs() <= 1e-12 * expected.max(1.0),
            "{distance} vs {expected}"
        );
    }
}

#[test]
fn frechet_of_equal_singular_covariances_is_mean_term() {
    // Rank 3 of 16: the trace term cancels to roundoff, leaving ||mu1 - mu2||^2.
    let mut rng = Rng::from_seed(4);
    let dim = 16;
    let q = random_orthogonal(dim, &mut rng);
    let values: Vec<f64> = (0..dim).map(|i| if i < 3 { 1.0 + i as f64 } else { 0.0 }).collect();
    let s = compose(&q, &values);
    let a = GaussianStats::from_moments(vec![0.0; dim], s.clone()).unwrap();
    let b = GaussianStats::from_moments(vec![0.1; dim], s).unwrap();
    let d = frechet_distance(&a, &b).unwrap();
    assert!((d - 0.16).abs() <= 1e-10, "{d}");
    let same = frechet_distance(&a, &a).unwrap();
    assert!(same.abs() <= 1e-10, "{same}");
}

#[test]
fn frechet_rejects_mismatched_dimensions() {
    let a = GaussianStats::from_moments(vec![0.0; 2], diag(&[1.0, 1.0])).unwrap();
    let b = GaussianStats::from_moments(vec![0.0; 3], diag(&[1.0, 1.0, 1.0])).unwrap();
    assert!(matches!(frechet_distance(&a, &b), Err(Error::InvalidArgument { .. })));
}

#[test]
fn stats_match_two_pass_formulas() {
    let mut rng = Rng::from_seed(5);
    let (n, dim) = (37, 6);
    let features: Vec<f32> = (0..n * dim).map(|_| rng.normal(0.5, 2.0)).collect();
    let stats = GaussianStats::from_features(&features, dim).unwrap();
    assert_eq!(stats.count(), n);
    for i in 0..dim {
        let mean = (0..n).map(|k| features[k * dim + i] as f64).sum::<f64>() / n as f64;
        assert!((stats.mean()[i] - mean).abs() <= 1e-12, "mean {i}");
    }
    for i in 0..dim {
        for j in 0..dim {
            let cov = (0..n)
                .map(|k| {
                    (features[k * dim + i] as f64 - stats.mean()[i])
                        * (features[k * dim + j] as f64 - stats.mean()[j])
                })
                .sum::<f64>()
                / (n - 1) as f64;
            assert!((stats.covariance()[i * dim + j] - cov).abs() <= 1e-12, "cov ({i}, {j})");
        }
    }
}

#[test]
fn stats_reject_bad_features() {
    assert!(matches!(
        GaussianStats::from_features(&[1.0; 6], 4),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        GaussianStats::from_features(&[1.0; 4], 4),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        GaussianStats::from_features(&[1.0; 4], 0),
        Err(Error::InvalidArgument { .. })
    ));
    let mut nan = vec![0.0f32; 8];
    nan[5] = f32::NAN;
    assert!(matches!(GaussianStats::from_features(&nan, 4), Err(Error::NonFinite { .. })));
}

#[test]
fn stats_do_not_depend_on_thread_count() {
    let mut rng = Rng::from_seed(6);
    let (n, dim) = (300, 40);
    let features: Vec<f32> = (0..n * dim).map(|_| rng.normal(0.0, 1.0)).collect();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let stats = GaussianStats::from_features(&features, dim).unwrap();
            let root = sqrtm_psd(stats.covariance(), dim).unwrap();
            (stats, root)
        })
    };
    assert_eq!(run(1), run(3));
}
