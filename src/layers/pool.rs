//! Max pooling (PyTorch's `nn.MaxPool2d` without dilation or `ceil_mode`).
//!
//! Each output element is the maximum of a `k_h x k_w` window of its `(sample, channel)` plane,
//! with windows `stride` apart and the plane padded by `padding` on each side with `-inf`. The
//! forward pass records, for each output, the input position of its maximum. On ties that is the
//! first in row-major window order, and a NaN in the window becomes the output, as in PyTorch.
//! The backward pass adds each `dy` to the input gradient at that position, so overlapping
//! windows accumulate.
//!
//! Planes run in parallel, and each plane is computed by one thread in a fixed order, so the
//! result does not depend on the thread count.

use ndarray::Array4;
use rayon::prelude::*;

use super::{check_grad_shape, no_forward_error, recycle, shape4, standard, Layer, Mode};
use crate::error::{checked_product, Error, Result};
use crate::kernels::MAX_TENSOR_ELEMENTS;

/// Output shape and argmax positions of the last forward pass, cached for the backward pass.
#[derive(Debug)]
struct PoolCache {
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    /// For each output element, the index of its maximum within the input plane.
    argmax: Vec<usize>,
}

/// 2-D max pooling over each channel of `[n, c, h, w]`.
#[derive(Debug)]
pub struct MaxPool2d {
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    cache: Option<PoolCache>,
}

impl MaxPool2d {
    /// Creates a max pooling layer with window `kernel` (`[k_h, k_w]`), window step `stride` and
    /// `-inf` padding `padding` on each side.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero kernel size or stride, or a padding larger than
    /// half the kernel size of its axis (PyTorch's limit: it keeps every window on the image).
    pub fn new(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Result<Self> {
        if kernel.contains(&0) {
            return Err(Error::invalid(
                "kernel_size",
                format!("{kernel:?}"),
                "sizes of at least 1",
            ));
        }
        if stride.contains(&0) {
            return Err(Error::invalid("stride", format!("{stride:?}"), "steps of at least 1"));
        }
        if padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2 {
            return Err(Error::invalid(
                "padding",
                format!("{padding:?}"),
                format!("at most half the kernel size {kernel:?} on each axis"),
            ));
        }
        Ok(MaxPool2d { kernel, stride, padding, cache: None })
    }

    /// Creates the common square pooling with stride equal to the window and no padding, e.g.
    /// `MaxPool2d::square(2)` halves the height and width.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero `size`.
    pub fn square(size: usize) -> Result<Self> {
        MaxPool2d::new([size, size], [size, size], [0, 0])
    }

    /// Returns the window size `[k_h, k_w]`.
    pub fn kernel(&self) -> [usize; 2] {
        self.kernel
    }

    /// Returns the window step `[stride_h, stride_w]`.
    pub fn stride(&self) -> [usize; 2] {
        self.stride
    }

    /// Returns the padding `[pad_h, pad_w]`.
    pub fn padding(&self) -> [usize; 2] {
        self.padding
    }

    /// Returns the output length along one axis: `(size + 2 pad - k) / stride + 1`.
    fn out_len(&self, axis: usize, size: usize) -> Option<usize> {
        let padded = size.checked_add(2 * self.padding[axis])?;
        let span = padded.checked_sub(self.kernel[axis])?;
        Some(span / self.stride[axis] + 1)
    }
}

impl Layer for MaxPool2d {
    fn describe(&self) -> String {
        format!(
            "MaxPool2d(kernel_size={:?}, stride={:?}, padding={:?})",
            self.kernel, self.stride, self.padding
        )
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        let [n, c, h, w] = input;
        let (out_h, out_w) = match (self.out_len(0, h), self.out_len(1, w)) {
            (Some(out_h), Some(out_w)) if h > 0 && w > 0 => (out_h, out_w),
            _ => {
                return Err(Error::invalid(
                    "input shape",
                    format!("{input:?}"),
                    format!(
                        "a non-empty image at least as large as the kernel {:?} after padding \
                         {:?}",
                        self.kernel, self.padding
                    ),
                ))
            }
        };
        let output = [n, c, out_h, out_w];
        for shape in [input, output] {
            let len = checked_product("pooling tensor", &shape)?;
            if len > MAX_TENSOR_ELEMENTS {
                return Err(Error::invalid(
                    "input shape",
                    format!("{input:?}"),
                    format!("tensors of at most {MAX_TENSOR_ELEMENTS} elements"),
                ));
            }
        }
        Ok(output)
    }

    fn forward(&mut self, _params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let input_shape = shape4(&x);
        let output_shape = self.output_shape(input_shape)?;
        let [_, _, h, w] = input_shape;
        let [_, _, out_h, out_w] = output_shape;
        let x = standard(x);
        let xs = x.as_slice().expect("standard layout");
        let mut y = Array4::<f32>::zeros(output_shape);
        let mut argmax = vec![0usize; y.len()];
        let out_plane = out_h * out_w;
        if out_plane == 0 || h * w == 0 {
            // An empty batch or channel list: nothing to pool.
            self.cache = Some(PoolCache { input_shape, output_shape, argmax });
            return Ok(y);
        }

        // One (sample, channel) plane per work item.
        let ys = y.as_slice_mut().expect("standard layout");
        ys.par_chunks_mut(out_plane)
            .zip(argmax.par_chunks_mut(out_plane))
            .zip(xs.par_chunks(h * w))
            .for_each(|((y_plane, arg_plane), x_plane)| {
                self.pool_plane(x_plane, [h, w], [out_h, out_w], y_plane, arg_plane);
            });
        self.cache = Some(PoolCache { input_shape, output_shape, argmax });
        Ok(y)
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let cache = self.cache.as_ref().ok_or_else(|| no_forward_error("MaxPool2d"))?;
        check_grad_shape(&dy, cache.output_shape)?;
        if !input_grad {
            return Ok(None);
        }
        let [_, _, h, w] = cache.input_shape;
        let [_, _, out_h, out_w] = cache.output_shape;
        let mut dx = recycle::zeros(cache.input_shape);
        let (in_plane, out_plane) = (h * w, out_h * out_w);
        if in_plane == 0 || out_plane == 0 {
            return Ok(Some(dx));
        }

        // Scatter each plane's gradients to its argmax positions, in output order.
        let dy = standard(dy);
        let dys = dy.as_slice().expect("standard layout");
        dx.as_slice_mut()
            .expect("standard layout")
            .par_chunks_mut(in_plane)
            .zip(dys.par_chunks(out_plane))
            .zip(cache.argmax.par_chunks(out_plane))
            .for_each(|((dx_plane, dy_plane), arg_plane)| {
                for (&g, &index) in dy_plane.iter().zip(arg_plane) {
                    dx_plane[index] += g;
                }
            });
        Ok(Some(dx))
    }
}

impl MaxPool2d {
    /// Pools one plane `x` (`[h, w]`) into `y` (`[out_h, out_w]`), recording in `argmax` the
    /// index into `x` of each maximum.
    fn pool_plane(
        &self,
        x: &[f32],
        [h, w]: [usize; 2],
        [out_h, out_w]: [usize; 2],
        y: &mut [f32],
        argmax: &mut [usize],
    ) {
        let [k_h, k_w] = self.kernel;
        let [stride_h, stride_w] = self.stride;
        let [pad_h, pad_w] = self.padding;
        for oy in 0..out_h {
            // The window's rows clipped to the image; padding is -inf and never wins.
            let top = oy * stride_h;
            let rows = top.saturating_sub(pad_h)..(top + k_h - pad_h).min(h);
            for ox in 0..out_w {
                let left = ox * stride_w;
                let cols = left.saturating_sub(pad_w)..(left + k_w - pad_w).min(w);
                let mut best = f32::NEG_INFINITY;
                let mut best_index = rows.start * w + cols.start;
                'window: for row in rows.clone() {
                    for col in cols.clone() {
                        let index = row * w + col;
                        let v = x[index];
                        if v.is_nan() {
                            best = v;
                            best_index = index;
                            break 'window;
                        }
                        if v > best {
                            best = v;
                            best_index = index;
                        }
                    }
                }
                y[oy * out_w + ox] = best;
                argmax[oy * out_w + ox] = best_index;
            }
        }
    }
}
