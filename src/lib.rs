//! Deep convolutional GANs trained on the CPU, fast and bit-reproducibly.
//!
//! Every layer is differentiated by hand on one lowering: im2col + GEMM for convolution and
//! GEMM + col2im for transposed convolution ([`kernels`]).
#![warn(missing_docs)]

pub mod atomic;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod image;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod models;
pub mod optim;
pub mod rng;
pub mod run;
pub mod train;
pub mod tricks;

pub use error::{Error, Result};
/// The `ndarray` crate whose `Array4<f32>` the layers and trainers take and return, so a
/// caller builds batches with the same version without a dependency of its own.
pub use ndarray;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
