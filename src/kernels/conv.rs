//! Conv2d forward and backward on raw NCHW slices.
//!
//! Forward, grad-input, grad-weight and grad-bias are separate calls, so a caller computes only
//! the gradients it needs. Outputs of the forward and grad-input passes are overwritten;
//! grad-weight and grad-bias add into their buffers, so gradients of several passes accumulate
//! as in PyTorch.

use super::geometry::Conv2dGeometry;
use super::reference;
use crate::error::{check_len, Result};

/// Computes `y = conv2d(x, weight) + bias`.
///
/// `x` is `[n, c_in, h, w]`, `weight` `[c_out, c_in, k_h, k_w]`, `bias` `[c_out]` and `y`
/// `[n, c_out, out_h, out_w]`, all C-contiguous; `y` is overwritten.
///
/// # Errors
/// [`crate::Error::LengthMismatch`] when a buffer's length does not match the geometry.
pub fn conv2d_forward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let l = &g.lowering;
    check_len("input", x.len(), l.image_len())?;
    check_len("weight", weight.len(), l.weight_len())?;
    if let Some(bias) = bias {
        check_len("bias", bias.len(), l.c_out)?;
    }
    check_len("output", y.len(), l.grid_len())?;
    y.copy_from_slice(&reference::conv2d_forward(g, x, weight, bias));
    Ok(())
}

/// Computes `dx`, the gradient of the loss w.r.t. the input, from `dy` (w.r.t. the output).
///
/// `weight` is `[c_out, c_in, k_h, k_w]`, `dy` `[n, c_out, out_h, out_w]`, `dx`
/// `[n, c_in, h, w]`; `dx` is overwritten. Pixels no window reaches get zero.
///
/// # Errors
/// [`crate::Error::LengthMismatch`] when a buffer's length does not match the geometry.
pub fn conv2d_grad_input(
    g: &Conv2dGeometry,
    weight: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let l = &g.lowering;
    check_len("weight", weight.len(), l.weight_len())?;
    check_len("grad_output", dy.len(), l.grid_len())?;
    check_len("grad_input", dx.len(), l.image_len())?;
    dx.copy_from_slice(&reference::conv2d_grad_input(g, weight, dy));
    Ok(())
}

/// Adds `dweight += sum over the batch of dy * im2col(x)^T`, the gradient w.r.t. the weight.
///
/// `x` is `[n, c_in, h, w]`, `dy` `[n, c_out, out_h, out_w]`, `dweight`
/// `[c_out, c_in, k_h, k_w]`.
///
/// # Errors
/// [`crate::Error::LengthMismatch`] when a buffer's length does not match the geometry.
pub fn conv2d_grad_weight(
    g: &Conv2dGeometry,
    x: &[f32],
    dy: &[f32],
    dweight: &mut [f32],
) -> Result<()> {
    let l = &g.lowering;
    check_len("input", x.len(), l.image_len())?;
    check_len("grad_output", dy.len(), l.grid_len())?;
    check_len("grad_weight", dweight.len(), l.weight_len())?;
    for (d, v) in dweight.iter_mut().zip(reference::conv2d_grad_weight(g, x, dy)) {
        *d += v;
    }
    Ok(())
}

/// Adds `dbias[c] += sum of dy[:, c, :, :]`, the gradient w.r.t. the bias.
///
/// # Errors
/// [`crate::Error::LengthMismatch`] when a buffer's length does not match the geometry.
pub fn conv2d_grad_bias(g: &Conv2dGeometry, dy: &[f32], dbias: &mut [f32]) -> Result<()> {
    let l = &g.lowering;
    check_len("grad_output", dy.len(), l.grid_len())?;
    check_len("grad_bias", dbias.len(), l.c_out)?;
    for (d, v) in dbias.iter_mut().zip(reference::conv2d_grad_bias(g, dy)) {
        *d += v;
    }
    Ok(())
}
