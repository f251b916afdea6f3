//! Convolution kernels on raw slices: no layers, no random numbers.
//!
//! Conv2d is lowered to im2col + GEMM and ConvTranspose2d to GEMM + col2im, over the shared
//! geometry of [`ConvGeometry`]. [`mod@reference`] holds direct loops used as the ground truth.

pub mod conv;
pub mod conv_transpose;
pub mod geometry;
pub mod packed_gemm;
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
