//! Sample quality: the Frechet distance between Gaussians fitted to feature vectors.

pub mod frechet;

pub use frechet::{frechet_distance, sqrtm_psd, symmetric_eigen, GaussianStats, SymmetricEigen};
