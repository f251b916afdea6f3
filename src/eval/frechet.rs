//! The Frechet distance between two Gaussians fitted to feature vectors, and the symmetric
//! eigendecomposition and matrix square root it needs.
//!
//! For `N(mu1, S1)` and `N(mu2, S2)` the distance is
//! `||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))`. `S1 S2` is not symmetric, so the
//! trace of its root is taken from the similar symmetric matrix `M = S1^(1/2) S2 S1^(1/2)`, which
//! has the same eigenvalues: `Tr((S1 S2)^(1/2)) = sum sqrt(eig(M))`. Both `S1^(1/2)` and the
//! eigenvalues of `M` come from cyclic Jacobi rotations in `f64`, which stay accurate for
//! singular and near-singular covariances (fewer samples than features, dead features), where
//! the Newton-Schulz iteration or a general `sqrtm` can fail. Eigenvalues at roundoff level
//! (slightly negative, or positive below `dim * f64::EPSILON` times the largest) are taken as
//! zero.
//!
//! Everything runs single-threaded, or in parallel with one fixed summation order per output,
//! so results do not depend on the thread count.

use rayon::prelude::*;

use crate::error::{check_len, checked_product, Error, Result};

/// Maximum number of Jacobi sweeps. Cyclic Jacobi converges quadratically, so sweeps in the
/// tens are never reached for matrices of a few hundred rows; the cap only bounds the loop.
const MAX_SWEEPS: usize = 100;

/// Eigenvalues more negative than this fraction of the largest absolute eigenvalue mean the
/// matrix is not positive semi-definite. Smaller negative ones are roundoff and become zero.
const PSD_TOLERANCE: f64 = 1e-9;

/// Largest matrix dimension accepted, so that a `dim * dim` buffer and the `O(dim^3)` work stay
/// bounded (4096 x 4096 doubles are 128 MiB).
pub const MAX_DIM: usize = 4096;

/// Feature rows centred at once while a covariance accumulates (256 KiB of `f64` at 128
/// features).
const COVARIANCE_BLOCK_ROWS: usize = 256;

/// Mean and covariance of a set of feature vectors.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GaussianStats {
    dim: usize,
    count: usize,
    mean: Vec<f64>,
    covariance: Vec<f64>,
}

impl GaussianStats {
    /// Fits a Gaussian to `features`, `count` rows of `dim` values each (row-major): the sample
    /// mean and the unbiased sample covariance (divided by `count - 1`, as `numpy.cov`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `dim` of 0 or above [`MAX_DIM`], a length that is not a
    /// multiple of `dim`, or fewer than two rows; [`Error::NonFinite`] for NaN or infinity.
    pub fn from_features(features: &[f32], dim: usize) -> Result<Self> {
        check_dim(dim)?;
        if !features.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "feature length",
                features.len(),
                format!("a multiple of the feature dimension {dim}"),
            ));
        }
        let count = features.len() / dim;
        if count < 2 {
            return Err(Error::invalid(
                "feature rows",
                count,
                "at least 2 to estimate a covariance",
            ));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("feature {} of row {}", i % dim, i / dim),
            });
        }

        // Mean, summed in row order.
        let mut mean = vec![0.0f64; dim];
        for row in features.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        for m in &mut mean {
            *m /= count as f64;
        }

        // Centred features, transposed to [dim, rows] one block of rows at a time, so each
        // covariance entry adds a dot product of two contiguous rows. Each entry continues one
        // sum in sample order across the blocks, so the result does not depend on the block size,
        // and the buffer stays at `dim * COVARIANCE_BLOCK_ROWS` values whatever `count` is.
        // The sums start at -0.0, the identity of f64 addition.
        let mut covariance = vec![-0.0f64; dim * dim];
        let mut centred = vec![0.0f64; dim * count.min(COVARIANCE_BLOCK_ROWS)];
        for block in features.chunks(dim * COVARIANCE_BLOCK_ROWS) {
            let rows = block.len() / dim;
            for (k, row) in block.chunks_exact(dim).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    centred[i * rows + k] = v as f64 - mean[i];
                }
            }
            let centred = &centred[..dim * rows];
            covariance.par_chunks_mut(dim).enumerate().for_each(|(i, cov_row)| {
                let a = &centred[i * rows..][..rows];
                for (j, c) in cov_row.iter_mut().enumerate().skip(i) {
                    let b = &centred[j * rows..][..rows];
                    *c = a.iter().zip(b).fold(*c, |sum, (x, y)| sum + x * y);
                }
            });
        }
        for c in &mut covariance {
            *c /= (count - 1) as f64;
        }
        mirror_upper(&mut covariance, dim);
        Ok(GaussianStats { dim, count, mean, covariance })
    }

    /// Builds the statistics from a mean and a covariance (`dim x dim`, row-major), e.g. those of
    /// a known Gaussian. `count` is 0.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty mean or one longer than [`MAX_DIM`], or a
    /// covariance that is not symmetric; [`Error::LengthMismatch`] for a covariance that is not
    /// `dim x dim`; [`Error::NonFinite`] for NaN or infinity.
    pub fn from_moments(mean: Vec<f64>, covariance: Vec<f64>) -> Result<Self> {
        let dim = mean.len();
        check_dim(dim)?;
        check_len("covariance", covariance.len(), dim * dim)?;
        if mean.iter().chain(&covariance).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: "mean or covariance".into() });
        }
        check_symmetric("covariance", &covariance, dim)?;
        Ok(GaussianStats { dim, count: 0, mean, covariance })
    }

    /// Returns the feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Returns the number of feature vectors fitted (0 for [`from_moments`](Self::from_moments)).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Returns the mean, `dim` values.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Returns the covariance, `dim x dim` row-major.
    pub fn covariance(&self) -> &[f64] {
        &self.covariance
    }
}

/// Computes the Frechet distance `||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))` between two
/// Gaussians (see the module documentation for the method). A result that roundoff makes
/// slightly negative (equal inputs) is returned as 0.
///
/// # Errors
/// [`Error::InvalidArgument`] when the dimensions differ or a covariance is not positive
/// semi-definite.
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<f64> {
    if a.dim != b.dim {
        return Err(Error::invalid(
            "feature dimension",
            b.dim,
            format!("{}, the dimension of the first Gaussian", a.dim),
        ));
    }
    let dim = a.dim;
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace = |m: &[f64]| (0..dim).map(|i| m[i * dim + i]).sum::<f64>();

    // M = S1^(1/2) S2 S1^(1/2), symmetric positive semi-definite.
    let root = sqrtm_psd(&a.covariance, dim)?;
    let mut m = matmul(&matmul(&root, &b.covariance, dim), &root, dim);
    symmetrise(&mut m, dim);
    let eigen = symmetric_eigen(&m, dim)?;
    let root_trace: f64 =
        clamp_psd(&eigen.values, "S1^(1/2) S2 S1^(1/2)")?.iter().map(|v| v.sqrt()).sum();

    let distance = mean_term + trace(&a.covariance) + trace(&b.covariance) - 2.0 * root_trace;
    Ok(distance.max(0.0))
}

/// Eigenvalues and eigenvectors of a symmetric matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct SymmetricEigen {
    /// The eigenvalues, in ascending order.
    pub values: Vec<f64>,
    /// The eigenvectors as the columns of a `dim x dim` row-major matrix, in the order of
    /// `values`: column `j` belongs to `values[j]`.
    pub vectors: Vec<f64>,
}

/// Decomposes the symmetric `matrix` (`dim x dim`, row-major) as `V diag(values) V^T` with the
/// cyclic Jacobi eigenvalue algorithm in `f64`.
///
/// Each rotation zeroes one off-diagonal pair. Sweeps over all pairs repeat until every
/// off-diagonal entry is below `f64::EPSILON` times the matrix's Frobenius norm divided by
/// `dim`. The eigenvalues then have an absolute error of a few `f64::EPSILON` times that norm.
///
/// # Errors
/// [`Error::InvalidArgument`] for `dim` of 0 or above [`MAX_DIM`], or a matrix that is not
/// symmetric (to a relative `1e-9`); [`Error::LengthMismatch`] for a matrix that is not
/// `dim x dim`; [`Error::NonFinite`] for NaN or infinity.
pub fn symmetric_eigen(matrix: &[f64], dim: usize) -> Result<SymmetricEigen> {
    check_dim(dim)?;
    check_len("matrix", matrix.len(), dim * dim)?;
    if matrix.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: "matrix for the eigendecomposition".into() });
    }
    check_symmetric("matrix", matrix, dim)?;

    let mut a = matrix.to_vec();
    symmetrise(&mut a, dim);
    let mut v = identity(dim);
    let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let threshold = f64::EPSILON * norm / dim as f64;

    // Sweeps of rotations over every pair (p, q), p < q, until none is needed.
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..dim {
            for q in p + 1..dim {
                if a[p * dim + q].abs() > threshold {
                    rotate(&mut a, &mut v, dim, p, q);
                    rotated = true;
                }
            }
        }
        if !rotated {
            break;
        }
    }

    // Sort ascending, carrying the eigenvector columns along.
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&i, &j| a[i * dim + i].total_cmp(&a[j * dim + j]));
    let values = order.iter().map(|&i| a[i * dim + i]).collect();
    let mut vectors = vec![0.0; dim * dim];
    for (new, &old) in order.iter().enumerate() {
        for row in 0..dim {
            vectors[row * dim + new] = v[row * dim + old];
        }
    }
    Ok(SymmetricEigen { values, vectors })
}

/// Computes the principal square root of a symmetric positive semi-definite matrix (`dim x dim`,
/// row-major): `V diag(sqrt(values)) V^T` from [`symmetric_eigen`], the unique symmetric positive
/// semi-definite `R` with `R R = matrix`. Eigenvalues at roundoff level (slightly negative, or
/// positive below `dim * f64::EPSILON` times the largest) are taken as zero.
///
/// # Errors
/// As [`symmetric_eigen`], and [`Error::InvalidArgument`] when an eigenvalue is below
/// `-1e-9` times the largest absolute eigenvalue (the matrix is not positive semi-definite).
pub fn sqrtm_psd(matrix: &[f64], dim: usize) -> Result<Vec<f64>> {
    let eigen = symmetric_eigen(matrix, dim)?;
    let roots: Vec<f64> = clamp_psd(&eigen.values, "matrix")?.iter().map(|v| v.sqrt()).collect();

    // R = V diag(roots) V^T, computed as (V diag(roots)) V^T.
    let vectors = &eigen.vectors;
    let mut scaled = vectors.clone();
    for row in scaled.chunks_exact_mut(dim) {
        for (x, r) in row.iter_mut().zip(&roots) {
            *x *= r;
        }
    }
    let mut root = vec![0.0; dim * dim];
    root.par_chunks_mut(dim).enumerate().for_each(|(i, out_row)| {
        let a = &scaled[i * dim..][..dim];
        for (j, out) in out_row.iter_mut().enumerate() {
            let b = &vectors[j * dim..][..dim];
            *out = a.iter().zip(b).map(|(x, y)| x * y).sum();
        }
    });
    symmetrise(&mut root, dim);
    Ok(root)
}

/// Applies the Jacobi rotation in the `(p, q)` plane that zeroes `a[p][q]`: `a = J^T a J` and
/// `v = v J`, with `J` the identity except `J[p][p] = J[q][q] = c`, `J[p][q] = s`,
/// `J[q][p] = -s`.
fn rotate(a: &mut [f64], v: &mut [f64], dim: usize, p: usize, q: usize) {
    let (app, aqq, apq) = (a[p * dim + p], a[q * dim + q], a[p * dim + q]);

    // t = tan(angle), the smaller root of t^2 + 2 theta t - 1 = 0, for stability.
    let theta = (aqq - app) / (2.0 * apq);
    let t = if theta.abs() > 1e150 {
        0.5 / theta
    } else {
        theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
    };
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;

    // Columns p and q (a J), then rows p and q (J^T a J).
    for k in 0..dim {
        let (akp, akq) = (a[k * dim + p], a[k * dim + q]);
        a[k * dim + p] = c * akp - s * akq;
        a[k * dim + q] = s * akp + c * akq;
    }
    for k in 0..dim {
        let (apk, aqk) = (a[p * dim + k], a[q * dim + k]);
        a[p * dim + k] = c * apk - s * aqk;
        a[q * dim + k] = s * apk + c * aqk;
    }
    // The rotation zeroes the pair exactly; storing 0 keeps roundoff of the diagonal out of it.
    a[p * dim + q] = 0.0;
    a[q * dim + p] = 0.0;

    for k in 0..dim {
        let (vkp, vkq) = (v[k * dim + p], v[k * dim + q]);
        v[k * dim + p] = c * vkp - s * vkq;
        v[k * dim + q] = s * vkp + c * vkq;
    }
}

/// Returns the eigenvalues with those at roundoff level set to zero: negative ones, and positive
/// ones below `dim * f64::EPSILON` times the largest, which the Jacobi method cannot tell from
/// zero. Without the second rule a singular matrix's null space would add about
/// `sqrt(f64::EPSILON)` per dimension to a trace of square roots.
fn clamp_psd(values: &[f64], what: &str) -> Result<Vec<f64>> {
    let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if let Some(&low) = values.iter().find(|&&v| v < -PSD_TOLERANCE * largest) {
        return Err(Error::invalid(
            "eigenvalue",
            low,
            format!(
                "a non-negative eigenvalue of {what} (up to -{PSD_TOLERANCE:e} times the largest, \
                 {largest:e}): the matrix is not positive semi-definite"
            ),
        ));
    }
    let noise = values.len() as f64 * f64::EPSILON * largest;
    Ok(values.iter().map(|&v| if v <= noise { 0.0 } else { v }).collect())
}

fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 || dim > MAX_DIM {
        return Err(Error::invalid("matrix dimension", dim, format!("1 to {MAX_DIM}")));
    }
    checked_product("matrix", &[dim, dim])?;
    Ok(())
}

/// Rejects a matrix whose asymmetry exceeds `1e-9` times its largest absolute entry.
fn check_symmetric(what: &'static str, m: &[f64], dim: usize) -> Result<()> {
    let largest = m.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
    for i in 0..dim {
        for j in i + 1..dim {
            let (x, y) = (m[i * dim + j], m[j * dim + i]);
            if (x - y).abs() > 1e-9 * largest {
                return Err(Error::invalid(
                    what,
                    format!("entries ({i}, {j}) = {x:e} and ({j}, {i}) = {y:e}"),
                    "a symmetric matrix",
                ));
            }
        }
    }
    Ok(())
}

/// Replaces `m` by `(m + m^T) / 2`.
fn symmetrise(m: &mut [f64], dim: usize) {
    for i in 0..dim {
        for j in i + 1..dim {
            let mean = 0.5 * (m[i * dim + j] + m[j * dim + i]);
            m[i * dim + j] = mean;
            m[j * dim + i] = mean;
        }
    }
}

/// Copies the upper triangle of `m` onto the lower one.
fn mirror_upper(m: &mut [f64], dim: usize) {
    for i in 0..dim {
        for j in i + 1..dim {
            m[j * dim + i] = m[i * dim + j];
        }
    }
}

fn identity(dim: usize) -> Vec<f64> {
    let mut m = vec![0.0; dim * dim];
    for i in 0..dim {
        m[i * dim + i] = 1.0;
    }
    m
}

/// Returns the product of two `dim x dim` row-major matrices, each entry summed in index order.
fn matmul(a: &[f64], b: &[f64], dim: usize) -> Vec<f64> {
    let mut out = vec![0.0; dim * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(i, out_row)| {
        for (k, &aik) in a[i * dim..][..dim].iter().enumerate() {
            for (o, &bkj) in out_row.iter_mut().zip(&b[k * dim..][..dim]) {
                *o += aik * bkj;
            }
        }
    });
    out
}
