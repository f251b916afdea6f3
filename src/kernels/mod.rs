//! Convolution kernels on raw slices: no layers, no random numbers.
//!
//! Conv2d is lowered to im2col + GEMM and ConvTranspose2d to GEMM + col2im, over the shared
//! geometry of [`ConvGeometry`]. [`mod@reference`] holds direct loops used as the ground truth.

mod col2im;
pub mod conv;
pub mod conv_transpose;
mod disjoint;
pub mod elementwise;
pub mod gemm;
pub mod geometry;
mod im2col;
mod lowering;
mod phases;
pub mod reference;

pub use conv::{conv2d_forward, conv2d_grad_bias, conv2d_grad_input, conv2d_grad_weight};
pub use conv_transpose::{
    conv_transpose2d_forward, conv_transpose2d_grad_bias, conv_transpose2d_grad_input,
    conv_transpose2d_grad_weight,
};
pub use geometry::{
    Conv2dGeometry, Conv2dSpec, ConvGeometry, ConvTranspose2dGeometry, ConvTranspose2dSpec,
    MAX_TENSOR_ELEMENTS,
};
