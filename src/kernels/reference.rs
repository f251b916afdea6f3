//! Direct-loop convolutions: no lowering, no blocking, no threads. They are the ground truth
//! for tests and fuzzing, generic over `f32` and `f64` so that finite differences can run in
//! double precision.
//!
//! Every function walks the same set of (sample, image channel, grid channel, grid position,
//! tap) tuples that [`ConvGeometry`] defines and applies one multiply-add per tuple whose image
//! pixel lies inside the image. Output buffers are returned freshly allocated, so the caller
//! sees exactly what was written.
//!
//! NOTE: skipping the padding makes the reference differ from the fast kernels on infinite
//! weights. The kernels multiply a padded tap by its zero, so an infinite weight there gives
//! NaN (`0 * inf`, as in any im2col lowering), where the reference stays finite. On finite
//! inputs the two agree within rounding.

use std::ops::{Add, AddAssign, Mul};

use super::geometry::{Conv2dGeometry, ConvGeometry, ConvTranspose2dGeometry};

/// The scalar types the reference runs on.
pub trait Real: Copy + Default + Add<Output = Self> + AddAssign + Mul<Output = Self> {}
impl Real for f32 {}
impl Real for f64 {}

/// Calls `tap(image_index, weight_index, grid_index)` for every tap that reads inside the image.
fn for_each_tap(g: &ConvGeometry, mut tap: impl FnMut(usize, usize, usize)) {
    for b in 0..g.n {
        for co in 0..g.c_out {
            for ci in 0..g.c_in {
                for ky in 0..g.k_h {
                    for kx in 0..g.k_w {
                        let wi = ((co * g.c_in + ci) * g.k_h + ky) * g.k_w + kx;
                        for oy in 0..g.out_h {
                            let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                - g.pad[0] as isize;
                            if iy < 0 || iy >= g.h as isize {
                                continue;
                            }
                            for ox in 0..g.out_w {
                                let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                    - g.pad[1] as isize;
                                if ix < 0 || ix >= g.w as isize {
                                    continue;
                                }
                                let ii =
                                    ((b * g.c_in + ci) * g.h + iy as usize) * g.w + ix as usize;
                                let gi = ((b * g.c_out + co) * g.out_h + oy) * g.out_w + ox;
                                tap(ii, wi, gi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `grid[b, co, p] = sum over taps of weight[co, ci, ky, kx] * image[b, ci, pixel]` (+ bias).
fn image_to_grid<T: Real>(
    g: &ConvGeometry,
    image: &[T],
    weight: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    let mut grid = vec![T::default(); g.grid_len()];
    for_each_tap(g, |ii, wi, gi| grid[gi] += weight[wi] * image[ii]);
    add_bias(&mut grid, bias, g.c_out, g.positions());
    grid
}

/// `image[b, ci, pixel] = sum over taps of weight[co, ci, ky, kx] * grid[b, co, p]` (+ bias).
fn grid_to_image<T: Real>(
    g: &ConvGeometry,
    grid: &[T],
    weight: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    let mut image = vec![T::default(); g.image_len()];
    for_each_tap(g, |ii, wi, gi| image[ii] += weight[wi] * grid[gi]);
    add_bias(&mut image, bias, g.c_in, g.h * g.w);
    image
}

/// `dweight[co, ci, ky, kx] = sum over taps of grid[b, co, p] * image[b, ci, pixel]`.
fn weight_product<T: Real>(g: &ConvGeometry, image: &[T], grid: &[T]) -> Vec<T> {
    let mut dweight = vec![T::default(); g.weight_len()];
    for_each_tap(g, |ii, wi, gi| dweight[wi] += grid[gi] * image[ii]);
    dweight
}

fn add_bias<T: Real>(out: &mut [T], bias: Option<&[T]>, channels: usize, plane: usize) {
    if let Some(bias) = bias {
        for (i, v) in out.iter_mut().enumerate() {
            *v += bias[(i / plane) % channels];
        }
    }
}

/// Sums `dy[b, c, y, x]` over the batch and the plane into one value per channel.
fn channel_sums<T: Real>(dy: &[T], channels: usize, plane: usize) -> Vec<T> {
    let mut sums = vec![T::default(); channels];
    for (i, &v) in dy.iter().enumerate() {
        sums[(i / plane) % channels] += v;
    }
    sums
}

/// Conv2d forward: `y [n, c_out, out_h, out_w]` from `x [n, c_in, h, w]`,
/// `weight [c_out, c_in, k_h, k_w]` and an optional `bias [c_out]`.
pub fn conv2d_forward<T: Real>(
    g: &Conv2dGeometry,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    image_to_grid(&g.lowering, x, weight, bias)
}

/// Conv2d gradient w.r.t. the input: `dx [n, c_in, h, w]` from `dy [n, c_out, out_h, out_w]`.
pub fn conv2d_grad_input<T: Real>(g: &Conv2dGeometry, weight: &[T], dy: &[T]) -> Vec<T> {
    grid_to_image(&g.lowering, dy, weight, None)
}

/// Conv2d gradient w.r.t. the weight: `dweight [c_out, c_in, k_h, k_w]`, summed over the batch.
pub fn conv2d_grad_weight<T: Real>(g: &Conv2dGeometry, x: &[T], dy: &[T]) -> Vec<T> {
    weight_product(&g.lowering, x, dy)
}

/// Conv2d gradient w.r.t. the bias: `dbias [c_out]`, `dy` summed over batch and positions.
pub fn conv2d_grad_bias<T: Real>(g: &Conv2dGeometry, dy: &[T]) -> Vec<T> {
    channel_sums(dy, g.lowering.c_out, g.lowering.positions())
}

/// ConvTranspose2d forward: `y [n, c_out, out_h, out_w]` from `x [n, c_in, h, w]`,
/// `weight [c_in, c_out, k_h, k_w]` and an optional `bias [c_out]`.
pub fn conv_transpose2d_forward<T: Real>(
    g: &ConvTranspose2dGeometry,
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    grid_to_image(&g.lowering, x, weight, bias)
}

/// ConvTranspose2d gradient w.r.t. the input: `dx [n, c_in, h, w]`.
pub fn conv_transpose2d_grad_input<T: Real>(
    g: &ConvTranspose2dGeometry,
    weight: &[T],
    dy: &[T],
) -> Vec<T> {
    image_to_grid(&g.lowering, dy, weight, None)
}

/// ConvTranspose2d gradient w.r.t. the weight: `dweight [c_in, c_out, k_h, k_w]`.
pub fn conv_transpose2d_grad_weight<T: Real>(
    g: &ConvTranspose2dGeometry,
    x: &[T],
    dy: &[T],
) -> Vec<T> {
    weight_product(&g.lowering, dy, x)
}

/// ConvTranspose2d gradient w.r.t. the bias: `dbias [c_out]`.
pub fn conv_transpose2d_grad_bias<T: Real>(g: &ConvTranspose2dGeometry, dy: &[T]) -> Vec<T> {
    let l = &g.lowering;
    channel_sums(dy, l.c_in, l.h * l.w)
}
