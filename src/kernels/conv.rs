//! Conv2d forward and backward on raw NCHW slices.
//!
//! Per sample, the forward pass is one matrix product `Y [c_out, out_h * out_w] = W [c_out, k] *
//! cols [k, out_h * out_w]` with `k = c_in * k_h * k_w`, where `cols` holds every input window
//! as a column (im2col). The backward passes are the other two products of the same lowering:
//! `dX = col2im(W^T * dY)` scatters each column back onto the pixels it came from, and
//! `dW += dY * cols^T` re-packs the columns. `cols` is never stored whole: each pass packs a
//! tile of it that fits in cache, multiplies, and moves on (see `lowering.rs`), samples with
//! small grids share one product, and rayon runs samples, tiles and channel blocks in parallel.
//!
//! Forward, grad-input, grad-weight and grad-bias are separate calls, so a caller computes only
//! the gradients it needs. Outputs of the forward and grad-input passes are overwritten;
//! grad-weight and grad-bias add into their buffers, so gradients of several passes accumulate
//! as in PyTorch. Every result is bit-identical whatever the number of rayon threads.

use rayon::prelude::*;

use super::elementwise::channel_sum;
use super::geometry::{Conv2dGeometry, Conv2dSpec};
use super::lowering::{grid_to_image, image_to_grid, weight_product};
use crate::error::{check_len, Error, Result};

/// Checks that `g` is what [`Conv2dSpec::geometry`] returns for its own parameters, so that a
/// geometry assembled by hand cannot smuggle inconsistent sizes into the kernels.
fn check_geometry(g: &Conv2dGeometry) -> Result<()> {
    let l = &g.lowering;
    let spec = Conv2dSpec {
        c_in: l.c_in,
        c_out: l.c_out,
        kernel: [l.k_h, l.k_w],
        stride: l.stride,
        padding: l.pad,
        dilation: l.dilation,
    };
    if spec.geometry(l.n, l.h, l.w)? != *g {
        return Err(Error::invalid(
            "geometry",
            format!("{g:?}"),
            "the value Conv2dSpec::geometry returns for these parameters",
        ));
    }
    Ok(())
}

/// Computes `y[b, co, oy, ox] = bias[co] + sum over (ci, ky, kx) of weight[co, ci, ky, kx] *
/// x[b, ci, oy * stride_h + ky * dilation_h - pad_h, ox * stride_w + kx * dilation_w - pad_w]`,
/// where pixels outside `x` read zero.
///
/// `x` is `[n, c_in, h, w]`, `weight` `[c_out, c_in, k_h, k_w]`, `bias` `[c_out]` and `y`
/// `[n, c_out, out_h, out_w]`, all C-contiguous; `y` is overwritten and never read.
///
/// # Errors
/// [`Error::LengthMismatch`] when a buffer's length does not match the geometry;
/// [`Error::InvalidArgument`] or [`Error::Overflow`] when `g` is not what
/// [`Conv2dSpec::geometry`] returns for its parameters.
///
/// # Example
/// ```
/// use dcgan::kernels::{conv2d_forward, Conv2dSpec};
///
/// // One 3x3 single-channel image, a 2x2 kernel of ones: each output sums one window.
/// let g = Conv2dSpec::new(1, 1, 2).geometry(1, 3, 3)?;
/// let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
/// let mut y = vec![0.0; 4];
/// conv2d_forward(&g, &x, &[1.0; 4], Some(&[0.5]), &mut y)?;
/// assert_eq!(y, [12.5, 16.5, 24.5, 28.5]);
/// # Ok::<(), dcgan::Error>(())
/// ```
pub fn conv2d_forward(
    g: &Conv2dGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    check_geometry(g)?;
    let l = &g.lowering;
    check_len("input", x.len(), l.image_len())?;
    check_len("weight", weight.len(), l.weight_len())?;
    if let Some(bias) = bias {
        check_len("bias", bias.len(), l.c_out)?;
    }
    check_len("output", y.len(), l.grid_len())?;
    image_to_grid(l, x, weight, bias, y);
    Ok(())
}

/// Computes `dx = col2im(weight^T * dy)`, the gradient of the loss w.r.t. the input from `dy`
/// (w.r.t. the output): `dx[b, ci, iy, ix]` sums `weight[co, ci, ky, kx] * dy[b, co, oy, ox]`
/// over every output position and tap that read pixel `(iy, ix)` in [`conv2d_forward`].
///
/// `weight` is `[c_out, c_in, k_h, k_w]`, `dy` `[n, c_out, out_h, out_w]`, `dx`
/// `[n, c_in, h, w]`; `dx` is overwritten and never read. Pixels no window reaches get zero.
///
/// # Errors
/// [`Error::LengthMismatch`] when a buffer's length does not match the geometry;
/// [`Error::InvalidArgument`] or [`Error::Overflow`] for a geometry not built by
/// [`Conv2dSpec::geometry`].
pub fn conv2d_grad_input(
    g: &Conv2dGeometry,
    weight: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    check_geometry(g)?;
    let l = &g.lowering;
    check_len("weight", weight.len(), l.weight_len())?;
    check_len("grad_output", dy.len(), l.grid_len())?;
    check_len("grad_input", dx.len(), l.image_len())?;
    grid_to_image(l, dy, weight, None, dx);
    Ok(())
}

/// Adds `dweight += sum over the batch of dy * im2col(x)^T`, the gradient w.r.t. the weight:
/// `dweight[co, ci, ky, kx]` gains `dy[b, co, oy, ox] * x[b, ci, iy, ix]` for every sample and
/// output position, with `(iy, ix)` the pixel tap `(ky, kx)` reads in [`conv2d_forward`].
///
/// `x` is `[n, c_in, h, w]`, `dy` `[n, c_out, out_h, out_w]`, `dweight`
/// `[c_out, c_in, k_h, k_w]`. The batch is summed in chunks fixed by the geometry and added in
/// a fixed order, so the result does not depend on the number of threads.
///
/// # Errors
/// [`Error::LengthMismatch`] when a buffer's length does not match the geometry;
/// [`Error::InvalidArgument`] or [`Error::Overflow`] for a geometry not built by
/// [`Conv2dSpec::geometry`].
pub fn conv2d_grad_weight(
    g: &Conv2dGeometry,
    x: &[f32],
    dy: &[f32],
    dweight: &mut [f32],
) -> Result<()> {
    check_geometry(g)?;
    let l = &g.lowering;
    check_len("input", x.len(), l.image_len())?;
    check_len("grad_output", dy.len(), l.grid_len())?;
    check_len("grad_weight", dweight.len(), l.weight_len())?;
    weight_product(l, x, dy, dweight);
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
/// [`Conv2dSpec::geometry`].
pub fn conv2d_grad_bias(g: &Conv2dGeometry, dy: &[f32], dbias: &mut [f32]) -> Result<()> {
    check_geometry(g)?;
    let l = &g.lowering;
    check_len("grad_output", dy.len(), l.grid_len())?;
    check_len("grad_bias", dbias.len(), l.c_out)?;
    let plane = l.positions();
    dbias.par_iter_mut().enumerate().for_each(|(c, d)| *d += channel_sum(dy, l.c_out, plane, c));
    Ok(())
}
