//! ConvTranspose2d forward and backward on raw NCHW slices.
//!
//! A transposed convolution is the adjoint of the convolution with the same parameters, so it
//! runs on the same lowering with the roles swapped: its input is the convolution's output grid
//! and its output the convolution's image. The forward pass is `col2im(W^T * x)`, the
//! convolution's grad-input; grad-input is `W * im2col(dy)`, the convolution's forward; and
//! grad-weight is `x * im2col(dy)^T`, the convolution's grad-weight with input and output grad
//! exchanged. Tiling, threading and determinism are those of `conv.rs`.
//!
//! Forward, grad-input, grad-weight and grad-bias are separate calls, so a caller computes only
//! the gradients it needs. Outputs of the forward and grad-input passes are overwritten;
//! grad-weight and grad-bias add into their buffers, so gradients of several passes accumulate
//! as in PyTorch. Every result is bit-identical whatever the number of rayon threads.

use rayon::prelude::*;

use super::elementwise::channel_sum;
use super::geometry::{ConvTranspose2dGeometry, ConvTranspose2dSpec};
use super::lowering::{grid_to_image, image_to_grid, weight_product};
use crate::error::{check_len, Error, Result};

/// Checks that `g` is what [`ConvTranspose2dSpec::geometry`] returns for its own parameters
/// (the output padding is recovered from the sizes), so that a geometry assembled by hand cannot
/// smuggle inconsistent sizes into the kernels.
fn check_geometry(g: &ConvTranspose2dGeometry) -> Result<()> {
    let l = &g.lowering;
    let mismatch = || {
        Error::invalid(
            "geometry",
            format!("{g:?}"),
            "the value ConvTranspose2dSpec::geometry returns for these parameters",
        )
    };
    let mut output_padding = [0usize; 2];
    let axes = [(l.out_h, l.h, l.k_h), (l.out_w, l.w, l.k_w)];
    for (axis, (input, output, kernel)) in axes.into_iter().enumerate() {
        // output = (input - 1) * stride + dilation * (kernel - 1) + 1 + output_padding - 2 * pad
        let uncropped = input
            .checked_sub(1)
            .and_then(|i| i.checked_mul(l.stride[axis]))
            .and_then(|v| kernel.checked_sub(1)?.checked_mul(l.dilation[axis])?.checked_add(v))
            .and_then(|v| v.checked_add(1))
            .ok_or_else(mismatch)?;
        output_padding[axis] = l.pad[axis]
            .checked_mul(2)
            .and_then(|crop| output.checked_add(crop))
            .and_then(|full| full.checked_sub(uncropped))
            .ok_or_else(mismatch)?;
    }
    let spec = ConvTranspose2dSpec {
        c_in: l.c_out,
        c_out: l.c_in,
        kernel: [l.k_h, l.k_w],
        stride: l.stride,
        padding: l.pad,
        output_padding,
        dilation: l.dilation,
    };
    if spec.geometry(l.n, l.out_h, l.out_w)? != *g {
        return Err(mismatch());
    }
    Ok(())
}

/// Computes `y = col2im(weight^T * x) + bias`: every input pixel `x[b, ci, iy, ix]` adds
/// `weight[ci, co, ky, kx] * x[b, ci, iy, ix]` to output pixel `(iy * stride_h + ky *
/// dilation_h - pad_h, ix * stride_w + kx * dilation_w - pad_w)` of channel `co`, for every tap
/// whose pixel lies inside `y`; then `bias[co]` is added to channel `co`.
///
/// `x` is `[n, c_in, h, w]`, `weight` `[c_in, c_out, k_h, k_w]`, `bias` `[c_out]` and `y`
/// `[n, c_out, out_h, out_w]`, all C-contiguous; `y` is overwritten and never read.
///
/// # Errors
/// [`Error::LengthMismatch`] when a buffer's length does not match the geometry;
/// [`Error::InvalidArgument`] or [`Error::Overflow`] when `g` is not what
/// [`ConvTranspose2dSpec::geometry`] returns for its parameters.
pub fn conv_transpose2d_forward(
    g: &ConvTranspose2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    check_geometry(g)?;
    let l = &g.lowering;
    check_len("input", x.len(), l.grid_len())?;
    check_len("weight", weight.len(), l.weight_len())?;
    if let Some(bias) = bias {
        check_len("bias", bias.len(), l.c_in)?;
    }
    check_len("output", y.len(), l.image_len())?;
    grid_to_image(l, x, weight, bias, y);
    Ok(())
}

/// Computes `dx = weight * im2col(dy)`, the gradient of the loss w.r.t. the input from `dy`
/// (w.r.t. the output): `dx[b, ci, iy, ix]` sums `weight[ci, co, ky, kx] * dy[b, co, py, px]`
/// over the output pixels `(py, px)` that input pixel `(iy, ix)` reached through tap `(ky, kx)`
/// in [`conv_transpose2d_forward`].
///
/// `weight` is `[c_in, c_out, k_h, k_w]`, `dy` `[n, c_out, out_h, out_w]`, `dx`
/// `[n, c_in, h, w]`; `dx` is overwritten and never read.
///
/// # Errors
/// [`Error::LengthMismatch`] when a buffer's length does not match the geometry;
/// [`Error::InvalidArgument`] or [`Error::Overflow`] for a geometry not built by
/// [`ConvTranspose2dSpec::geometry`].
pub fn conv_transpose2d_grad_input(
    g: &ConvTranspose2dGeometry,
    weight: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    check_geometry(g)?;
    let l = &g.lowering;
    check_len("weight", weight.len(), l.weight_len())?;
    check_len("grad_output", dy.len(), l.image_len())?;
    check_len("grad_input", dx.len(), l.grid_len())?;
    image_to_grid(l, dy, weight, None, dx);
    Ok(())
}

/// Adds `dweight += sum over the batch of x * im2col(dy)^T`, the gradient w.r.t. the weight:
/// `dweight[ci, co, ky, kx]` gains `x[b, ci, iy, ix] * dy[b, co, py, px]` for every sample and
/// input pixel, with `(py, px)` the output pixel tap `(ky, kx)` reaches from `(iy, ix)`.
///
/// `x` is `[n, c_in, h, w]`, `dy` `[n, c_out, out_h, out_w]`, `dweight`
/// `[c_in, c_out, k_h, k_w]`. The batch is summed in chunks fixed by the geometry and added in
/// a fixed order, so the result does not depend on the number of threads.
///
/// # Errors
/// [`Error::LengthMismatch`] when a buffer's length does not match the geometry;
/// [`Error::InvalidArgument`] or [`Error::Overflow`] for a geometry not built by
/// [`ConvTranspose2dSpec::geometry`].
pub fn conv_transpose2d_grad_weight(
    g: &ConvTranspose2dGeometry,
    x: &[f32],
    dy: &[f32],
    dweight: &mut [f32],
) -> Result<()> {
    check_geometry(g)?;
    let l = &g.lowering;
    check_len("input", x.len(), l.grid_len())?;
    check_len("grad_output", dy.len(), l.image_len())?;
    check_len("grad_weight", dweight.len(), l.weight_len())?;
    weight_product(l, dy, x, dweight);
    Ok(())
}

/// Adds `dbias[c] += sum of dy[:, c, :, :]`, the gradient w.r.t. the bias.
///
/// `dy` is `[n, c_out, out_h, out_w]` and `dbias` `[c_out]`. Each channel is summed by one task
/// in a fixed order (see [`channel_sum`]).
///
/// # Errors
/// [`Error::LengthMismatch`] when a buffer's length does not match the geometry;
/// [`Error::InvalidArgument`] or [`Error::Overflow`] for a geometry not built by
/// [`ConvTranspose2dSpec::geometry`].
pub fn conv_transpose2d_grad_bias(
    g: &ConvTranspose2dGeometry,
    dy: &[f32],
    dbias: &mut [f32],
) -> Result<()> {
    check_geometry(g)?;
    let l = &g.lowering;
    check_len("grad_output", dy.len(), l.image_len())?;
    check_len("grad_bias", dbias.len(), l.c_in)?;
    let plane = l.h * l.w;
    dbias.par_iter_mut().enumerate().for_each(|(c, d)| *d += channel_sum(dy, l.c_in, plane, c));
    Ok(())
}
