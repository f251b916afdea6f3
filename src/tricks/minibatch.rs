//! Minibatch discrimination (Salimans et al. 2016, "Improved techniques for training GANs",
//! section 3.2): a layer that lets the discriminator compare each sample with the rest of its
//! batch, so that a generator collapsed onto a few modes is easy to spot.
//!
//! For features `f` (`[n, A]`) and a learned tensor `T` (`[A, B, C]`), each sample gets
//! `M_i = f_i T` (`[B, C]`). For each of the `B` kernels,
//!
//! ```text
//! c_b(i, j) = exp(-||M_i,b - M_j,b||_1)
//! o(x_i)_b  = sum over j != i of c_b(i, j)        (+ 1 when include_self: the j = i term)
//! ```
//!
//! and the output is `[f_i, o(x_i)]`, `A + B` features. The paper sums over all `j`, which adds
//! `exp(0) = 1` to every output; `include_self` selects that form. The constant does not change
//! any gradient.
//!
//! Backward, with `g` the gradient w.r.t. `o`: sample `i` enters `o_i` and every `o_j`, so
//!
//! ```text
//! dM_i,b,k = -sum over j != i of (g_i,b + g_j,b) c_b(i, j) sign(M_i,b,k - M_j,b,k)
//! dT      += f^T dM        df = g_f + dM T^T
//! ```
//!
//! using `sign(0) = 0` where the L1 norm has a kink. `M` goes through `matrixmultiply`'s
//! single-threaded sgemm. The pairwise sums run in parallel over `i`, and each is accumulated in
//! `f64` in the order of `j`, so the results do not depend on the thread count.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array4, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::error::{check_len, checked_product, Error, Result};
use crate::kernels::MAX_TENSOR_ELEMENTS;
use crate::layers::{
    check_grad_shape, fill_uniform, no_forward_error, shape4, standard, Init, Layer, Mode,
    ParamSpec,
};
use crate::rng::Rng;

/// The forward pass's input and products, kept for the backward pass.
#[derive(Debug)]
struct MinibatchCache {
    /// `f`, `[n, A, 1, 1]`.
    input: Array4<f32>,
    /// `M = f T`, `[n, B * C]` row-major.
    projected: Vec<f32>,
    /// `c_b(i, j)` at `(i * n + j) * B + b`.
    similarity: Vec<f32>,
}

/// Minibatch discrimination on vectors `[n, A, 1, 1]`, giving `[n, A + B, 1, 1]`.
///
/// Parameter: `weight`, the tensor `T` of shape `[A, B, C]` (`in_features`, `kernels`,
/// `kernel_dim`).
#[derive(Debug)]
pub struct MinibatchDiscrimination {
    in_features: usize,
    kernels: usize,
    kernel_dim: usize,
    include_self: bool,
    cache: Option<MinibatchCache>,
}

impl MinibatchDiscrimination {
    /// Creates the layer for `in_features` (A) input features, `kernels` (B) outputs and
    /// `kernel_dim` (C) rows of each kernel's projection. With `include_self` each output also
    /// counts the sample itself (`+1`), as the paper's sum over all `j` does.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when A, B or C is zero or `T` has more than
    /// [`MAX_TENSOR_ELEMENTS`] elements; [`Error::Overflow`] when `T`'s size or `A + B` does
    /// not fit in `usize`.
    pub fn new(
        in_features: usize,
        kernels: usize,
        kernel_dim: usize,
        include_self: bool,
    ) -> Result<Self> {
        for (name, value) in [
            ("in_features (A)", in_features),
            ("kernels (B)", kernels),
            ("kernel_dim (C)", kernel_dim),
        ] {
            if value == 0 {
                return Err(Error::invalid(name, value, "at least 1"));
            }
        }
        let len = checked_product(
            "minibatch discrimination tensor",
            &[in_features, kernels, kernel_dim],
        )?;
        if len > MAX_TENSOR_ELEMENTS {
            return Err(Error::invalid(
                "minibatch discrimination tensor T",
                format!("[{in_features}, {kernels}, {kernel_dim}]"),
                format!(
                    "at most {MAX_TENSOR_ELEMENTS} elements: fewer kernels (B) or a shorter \
                     kernel_dim (C) for {in_features} input features (A)"
                ),
            ));
        }
        in_features.checked_add(kernels).ok_or(Error::Overflow { what: "output features" })?;
        Ok(MinibatchDiscrimination { in_features, kernels, kernel_dim, include_self, cache: None })
    }

    /// Returns the number of outputs `B` appended to the features.
    pub fn kernels(&self) -> usize {
        self.kernels
    }

    /// Returns whether each output counts the sample itself.
    pub fn include_self(&self) -> bool {
        self.include_self
    }

    fn width(&self) -> usize {
        self.kernels * self.kernel_dim
    }

    /// Returns `T` as the matrix `[A, B * C]`.
    fn weight<'a>(&self, params: &'a [f32]) -> Result<ArrayView2<'a, f32>> {
        check_len("layer parameters", params.len(), self.in_features * self.width())?;
        Ok(ArrayView2::from_shape((self.in_features, self.width()), params)
            .expect("length checked"))
    }
}

/// Returns `sum_k |a_k - b_k|` in `f64`.
fn l1_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum()
}

impl Layer for MinibatchDiscrimination {
    fn describe(&self) -> String {
        format!(
            "MinibatchDiscrimination(in_features={}, kernels={}, kernel_dim={}, include_self={})",
            self.in_features, self.kernels, self.kernel_dim, self.include_self
        )
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "weight",
            shape: vec![self.in_features, self.kernels, self.kernel_dim],
        }]
    }

    fn init_params(&self, params: &mut [f32], rng: &mut Rng, init: Init) {
        match init {
            Init::PyTorch => fill_uniform(params, rng, 1.0 / (self.in_features as f32).sqrt()),
            Init::Dcgan => rng.fill_normal(params, 0.0, 0.02),
        }
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        let [n, c, h, w] = input;
        if c != self.in_features || (h, w) != (1, 1) {
            return Err(Error::invalid(
                "input shape",
                format!("{input:?}"),
                format!(
                    "[n, {}, 1, 1] for MinibatchDiscrimination (flatten images first)",
                    self.in_features
                ),
            ));
        }
        Ok([n, self.in_features + self.kernels, 1, 1])
    }

    fn forward(&mut self, params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let [n, out_features, _, _] = self.output_shape(shape4(&x))?;
        let weight = self.weight(params)?;
        let (a, b, c, width) = (self.in_features, self.kernels, self.kernel_dim, self.width());
        let x = standard(x);
        let xs = x.as_slice().expect("standard layout");

        // M = f T: [n, B * C] = [n, A] * [A, B * C].
        let mut projected = vec![0.0f32; n * width];
        let x2 = ArrayView2::from_shape((n, a), xs).expect("shape checked");
        let mut m2 = ArrayViewMut2::from_shape((n, width), &mut projected[..]).expect("shape");
        general_mat_mul(1.0, &x2, &weight, 0.0, &mut m2);

        // c_b(i, j) for every pair, one row i per work item.
        let mut similarity = vec![0.0f32; n * n * b];
        similarity.par_chunks_mut(n * b).enumerate().for_each(|(i, row)| {
            let mi = &projected[i * width..(i + 1) * width];
            for j in 0..n {
                let mj = &projected[j * width..(j + 1) * width];
                for k in 0..b {
                    let range = k * c..(k + 1) * c;
                    row[j * b + k] = (-l1_distance(&mi[range.clone()], &mj[range])).exp() as f32;
                }
            }
        });

        // Output [f_i, o_i] with o_i,b = sum over j != i of c_b(i, j) (+ 1 with include_self).
        let self_term = if self.include_self { 1.0 } else { 0.0 };
        let mut y = Array4::<f32>::zeros([n, out_features, 1, 1]);
        let ys = y.as_slice_mut().expect("standard layout");
        ys.par_chunks_mut(out_features).enumerate().for_each(|(i, out)| {
            out[..a].copy_from_slice(&xs[i * a..(i + 1) * a]);
            for k in 0..b {
                let mut sum = self_term;
                for j in (0..n).filter(|&j| j != i) {
                    sum += similarity[(i * n + j) * b + k] as f64;
                }
                out[a + k] = sum as f32;
            }
        });
        self.cache = Some(MinibatchCache { input: x, projected, similarity });
        Ok(y)
    }

    fn backward(
        &mut self,
        params: &[f32],
        grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let cache =
            self.cache.as_ref().ok_or_else(|| no_forward_error("MinibatchDiscrimination"))?;
        let n = cache.input.shape()[0];
        let (a, b, c, width) = (self.in_features, self.kernels, self.kernel_dim, self.width());
        check_grad_shape(&dy, [n, a + b, 1, 1])?;
        let weight = self.weight(params)?;
        let dy = standard(dy);
        let dys = dy.as_slice().expect("standard layout");
        let g = |i: usize, k: usize| dys[i * (a + b) + a + k] as f64;

        // dM_i,k,l = -sum over j != i of (g_i,k + g_j,k) c_k(i, j) sign(M_i,k,l - M_j,k,l).
        let (projected, similarity) = (&cache.projected, &cache.similarity);
        let mut dm = vec![0.0f32; n * width];
        dm.par_chunks_mut(width).enumerate().for_each(|(i, dmi)| {
            let mi = &projected[i * width..(i + 1) * width];
            for k in 0..b {
                for l in 0..c {
                    let col = k * c + l;
                    let mut sum = 0.0f64;
                    for j in (0..n).filter(|&j| j != i) {
                        let diff = mi[col] - projected[j * width + col];
                        let sign = if diff > 0.0 {
                            1.0
                        } else if diff < 0.0 {
                            -1.0
                        } else {
                            0.0
                        };
                        sum += (g(i, k) + g(j, k)) * similarity[(i * n + j) * b + k] as f64 * sign;
                    }
                    dmi[col] = -sum as f32;
                }
            }
        });
        let dm2 = ArrayView2::from_shape((n, width), &dm[..]).expect("shape");

        // dT += f^T dM: [A, B * C] = [A, n] * [n, B * C].
        if let Some(grads) = grads {
            check_len("layer gradients", grads.len(), params.len())?;
            let x2 = ArrayView2::from_shape((n, a), cache.input.as_slice().expect("standard"))
                .expect("shape checked");
            let mut dw2 = ArrayViewMut2::from_shape((a, width), grads).expect("length checked");
            general_mat_mul(1.0, &x2.t(), &dm2, 1.0, &mut dw2);
        }

        // df = g_f + dM T^T: [n, A] = [n, B * C] * [B * C, A], starting from the pass-through.
        if !input_grad {
            return Ok(None);
        }
        let mut dx = Array4::<f32>::zeros([n, a, 1, 1]);
        let dxs = dx.as_slice_mut().expect("standard layout");
        for (i, row) in dxs.chunks_mut(a).enumerate() {
            row.copy_from_slice(&dys[i * (a + b)..i * (a + b) + a]);
        }
        let mut dx2 = ArrayViewMut2::from_shape((n, a), dxs).expect("shape");
        general_mat_mul(1.0, &dm2, &weight.t(), 1.0, &mut dx2);
        Ok(Some(dx))
    }
}
