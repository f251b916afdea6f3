//! Convolution kernels on raw slices: no layers, no random numbers.
//!
//! Both convolutions share one lowering ([`ConvGeometry`]). Per sample, the column matrix
//! `cols [c_in * k_h * k_w, out_h * out_w]` contains every input window as a column, and the
//! weight is the matrix `W [c_out, c_in * k_h * k_w]`. Conv2d forward is `W * cols` (im2col,
//! then GEMM), its grad-input `col2im(W^T * dY)` and its grad-weight `dY * cols^T`.
//! ConvTranspose2d runs the same three products with its input and output exchanged. The
//! products run on the backend [`gemm`](mod@gemm) selects. The crate's own [`packed_gemm`] is
//! the default on AVX2 + FMA and AVX-512 builds. On it, im2col writes straight into the GEMM's
//! packed panels, col2im adds the GEMM's finished tiles straight into the image, and the weight
//! is packed once per call. There, the 4x4 stride-2 layers of DCGAN run as Winograd F(2x2, 2x2)
//! products on the image's phase planes instead, with 9/16 of the multiplications (see
//! [`winograd`](mod@winograd); [`set_winograd`] selects where), and a forward product whose
//! reduction is short (a first layer reading 1 or 3 channels) runs as a direct convolution over
//! the image rows (see [`shallow`]). On matrixmultiply's sgemm (the
//! reference path), `cols` is packed and consumed one cache-sized tile at a time. Either way `cols` is never built whole, and rayon
//! runs independent samples, tiles and channel blocks.
//! Every reduction runs in a fixed order, so results do not depend on the thread count.
//! [`elementwise`] holds the SIMD loops and [`reference`](mod@reference) direct loops that are
//! the ground truth for tests and fuzzing.

mod col2im;
pub mod conv;
pub mod conv_transpose;
mod disjoint;
pub mod elementwise;
mod fused_col2im;
mod fused_forward;
mod fused_weight;
pub mod gemm;
pub mod geometry;
mod im2col;
mod lowering;
pub mod packed_gemm;
mod phases;
pub mod reference;
pub mod shallow;
pub mod winograd;

pub use conv::{conv2d_forward, conv2d_grad_bias, conv2d_grad_input, conv2d_grad_weight};
pub use conv_transpose::{
    conv_transpose2d_forward, conv_transpose2d_grad_bias, conv_transpose2d_grad_input,
    conv_transpose2d_grad_weight,
};
pub use geometry::{
    Conv2dGeometry, Conv2dSpec, ConvGeometry, ConvTranspose2dGeometry, ConvTranspose2dSpec,
    MAX_TENSOR_ELEMENTS,
};
pub use winograd::{set_winograd, winograd, winograd_applies, Product, Winograd};
