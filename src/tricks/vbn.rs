//! Virtual batch normalisation (Salimans et al. 2016, section 3.4): batch normalisation whose
//! statistics come from a reference batch fixed at the start of training, so that a sample's
//! output does not depend on the other samples of its batch.
//!
//! The layer's input is the reference batch's activations (the first `m` rows) followed by the
//! batch's (`n` rows). Per channel, with `P = h * w` values per row:
//!
//! * reference rows are normalised with the reference batch's own mean `mu` and biased
//!   variance `var_ref` over its `m * P` values, as batch normalisation in training mode;
//! * an example row `x_i` is normalised with the statistics of the reference batch together
//!   with `x_i`, each of the `m + 1` samples weighted `1 / (m + 1)`:
//!   `mean_i = (m mu + a_i) / (m + 1)` and
//!   `var_i = (m var_ref + v_i) / (m + 1) + m (a_i - mu)^2 / (m + 1)^2`,
//!   with `a_i` and `v_i` the mean and biased variance of `x_i`'s `P` values.
//!
//! Then `y = gamma (x - mean) / sqrt(var + eps) + beta`. Both statistics are merged from
//! per-row two-pass moments in `f64` (Chan's formula), so no `E[x^2] - E[x]^2` cancellation
//! occurs.
//!
//! The backward pass is the exact gradient of this map w.r.t. every input row: an example's
//! gradient includes the path through its own share `1 / (m + 1)` of its statistics, and the
//! reference rows receive the gradient through `mu` and `var_ref` from every example and from
//! their own outputs. A network that runs the reference batch and the batch through the same
//! layers in one pass therefore gets, from an ordinary backward pass, the full gradient w.r.t.
//! its parameters, including the path through the reference batch's activations.
//!
//! With the batch equal to the reference batch, the reference rows' output is exactly
//! [`BatchNorm`](crate::layers::BatchNorm)'s training-mode output on that batch. Row `i` of the
//! examples is BatchNorm's output for `x_i` on the `m + 1` samples `[reference; x_i]`, which
//! are the batch statistics with `x_i` counted twice.
//!
//! Training and evaluation behave the same: there are no running statistics.

use ndarray::Array4;
use rayon::prelude::*;

use crate::error::{check_len, Error, Result};
use crate::layers::{
    check_grad_shape, no_forward_error, shape4, standard, Init, Layer, Mode, ParamSpec,
};
use crate::rng::Rng;

/// The forward pass's normalised output and per-plane statistics, kept for the backward pass.
#[derive(Debug)]
struct VbnCache {
    /// `(x - mean) * invstd`, shaped like the input.
    x_hat: Array4<f32>,
    /// The mean each plane was normalised with, at `row * c + channel`. The reference rows'
    /// entries are the reference mean `mu`.
    mean: Vec<f64>,
    /// `1 / sqrt(var + eps)`, indexed as `mean`.
    invstd: Vec<f64>,
}

/// Virtual batch normalisation over the channels of `[m + n, c, h, w]` (or the features of
/// `[m + n, features, 1, 1]`), the first `m` rows being the reference batch.
///
/// Parameters: `weight` (gamma) `[c]`, then `bias` (beta) `[c]`, initialised as BatchNorm's.
#[derive(Debug)]
pub struct VirtualBatchNorm {
    features: usize,
    reference_size: usize,
    eps: f64,
    cache: Option<VbnCache>,
}

impl VirtualBatchNorm {
    /// Creates the layer for `features` channels and a reference batch of `reference_size`
    /// rows, with eps 1e-5 (BatchNorm's default).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero features or a zero reference size.
    pub fn new(features: usize, reference_size: usize) -> Result<Self> {
        if features == 0 {
            return Err(Error::invalid("num_features", features, "at least 1"));
        }
        if reference_size == 0 {
            return Err(Error::invalid("reference_size", reference_size, "at least 1"));
        }
        Ok(VirtualBatchNorm { features, reference_size, eps: 1e-5, cache: None })
    }

    /// Returns the number of reference rows `m` at the start of every input.
    pub fn reference_size(&self) -> usize {
        self.reference_size
    }
}

/// Returns the mean and biased variance of `xs`, two passes in `f64`.
fn plane_moments(xs: &[f32]) -> (f64, f64) {
    let count = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / count;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / count;
    (mean, var)
}

/// Returns `(sum of a, sum of a * b)` over two planes, in `f64`.
fn plane_sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(s, sb), (&x, &y)| (s + x as f64, sb + x as f64 * y as f64))
}

impl Layer for VirtualBatchNorm {
    fn describe(&self) -> String {
        format!(
            "VirtualBatchNorm({}, reference_size={}, eps={})",
            self.features, self.reference_size, self.eps
        )
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec { name: "weight", shape: vec![self.features] },
            ParamSpec { name: "bias", shape: vec![self.features] },
        ]
    }

    fn init_params(&self, params: &mut [f32], rng: &mut Rng, init: Init) {
        let (gamma, beta) = params.split_at_mut(self.features);
        match init {
            Init::PyTorch => gamma.fill(1.0),
            Init::Dcgan => rng.fill_normal(gamma, 1.0, 0.02),
        }
        beta.fill(0.0);
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        let [rows, c, h, w] = input;
        if h == 0 || w == 0 {
            return Err(Error::invalid(
                "input shape",
                format!("{input:?}"),
                format!("a height and width of at least 1 for VirtualBatchNorm({})", self.features),
            ));
        }
        if c != self.features {
            return Err(Error::invalid(
                "input channels",
                c,
                format!("{} for VirtualBatchNorm({})", self.features, self.features),
            ));
        }
        if rows <= self.reference_size {
            return Err(Error::invalid(
                "input rows",
                rows,
                format!(
                    "more than the {} reference rows: the reference batch followed by at least \
                     one example",
                    self.reference_size
                ),
            ));
        }
        Ok(input)
    }

    fn forward(&mut self, params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let shape @ [rows, c, h, w] = self.output_shape(shape4(&x))?;
        check_len("layer parameters", params.len(), 2 * c)?;
        let (gamma, beta) = params.split_at(c);
        let (m, plane) = (self.reference_size, h * w);
        let x = standard(x);
        let xs = x.as_slice().expect("standard layout");

        // Mean and variance of every (row, channel) plane.
        let moments: Vec<(f64, f64)> = xs.par_chunks(plane).map(plane_moments).collect();

        // Reference statistics per channel: Chan's merge of m equal-sized planes, in row order.
        let reference: Vec<(f64, f64)> = (0..c)
            .map(|ch| {
                let mu = (0..m).map(|r| moments[r * c + ch].0).sum::<f64>() / m as f64;
                let var = (0..m)
                    .map(|r| {
                        let (a, v) = moments[r * c + ch];
                        v + (a - mu) * (a - mu)
                    })
                    .sum::<f64>()
                    / m as f64;
                (mu, var)
            })
            .collect();

        // Each plane's mean and invstd: the reference's own, or merged with the example.
        let (s, u) = (1.0 / (m as f64 + 1.0), m as f64 / (m as f64 + 1.0));
        let stats: Vec<(f64, f64)> = (0..rows * c)
            .map(|index| {
                let (row, ch) = (index / c, index % c);
                let (mu, var_ref) = reference[ch];
                let (mean, var) = if row < m {
                    (mu, var_ref)
                } else {
                    let (a, v) = moments[index];
                    (u * mu + s * a, u * var_ref + s * v + s * u * (a - mu) * (a - mu))
                };
                (mean, 1.0 / (var + self.eps).sqrt())
            })
            .collect();

        // Normalise and apply the affine map.
        let mut x_hat = Array4::<f32>::zeros(shape);
        let mut y = Array4::<f32>::zeros(shape);
        let (x_hat_s, ys) =
            (x_hat.as_slice_mut().expect("standard"), y.as_slice_mut().expect("standard"));
        x_hat_s.par_chunks_mut(plane).zip(ys.par_chunks_mut(plane)).enumerate().for_each(
            |(index, (xh, yp))| {
                let ch = index % c;
                let (mean, invstd) = stats[index];
                let (g, b) = (gamma[ch], beta[ch]);
                for ((xh, yv), &xv) in xh.iter_mut().zip(yp.iter_mut()).zip(&xs[index * plane..]) {
                    *xh = ((xv as f64 - mean) * invstd) as f32;
                    *yv = g * *xh + b;
                }
            },
        );
        let (mean, invstd) = stats.into_iter().unzip();
        self.cache = Some(VbnCache { x_hat, mean, invstd });
        Ok(y)
    }

    fn backward(
        &mut self,
        params: &[f32],
        grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let cache = self.cache.as_ref().ok_or_else(|| no_forward_error("VirtualBatchNorm"))?;
        let shape @ [rows, c, h, w] = shape4(&cache.x_hat);
        check_grad_shape(&dy, shape)?;
        check_len("layer parameters", params.len(), 2 * c)?;
        let gamma = &params[..c];
        let (m, plane) = (self.reference_size, h * w);
        let dy = standard(dy);
        let dys = dy.as_slice().expect("standard layout");
        let x_hat = cache.x_hat.as_slice().expect("standard layout");

        // Per plane: sum(dy) and sum(dy * x_hat).
        let sums: Vec<(f64, f64)> = dys
            .par_chunks(plane)
            .zip(x_hat.par_chunks(plane))
            .map(|(d, xh)| plane_sums(d, xh))
            .collect();

        // Parameter gradients: dgamma += sum(dy * x_hat), dbeta += sum(dy), rows in order.
        if let Some(grads) = grads {
            check_len("layer gradients", grads.len(), params.len())?;
            let (dgamma, dbeta) = grads.split_at_mut(c);
            for ch in 0..c {
                let (sum_dy, sum_dy_xhat) = (0..rows).fold((0.0, 0.0), |(a, b), r| {
                    let (s1, s2) = sums[r * c + ch];
                    (a + s1, b + s2)
                });
                dgamma[ch] += sum_dy_xhat as f32;
                dbeta[ch] += sum_dy as f32;
            }
        }
        if !input_grad {
            return Ok(None);
        }

        // Notation per channel: gh = gamma * dy, r = invstd, s = 1 / (m + 1), u = 1 - s, and
        // per plane S1 = sum(gh), S2 = sum(gh x_hat), dvar = -r^2 S2 / 2. An example row's own
        // path gives dx = r (gh - (s / P) S1 - (s / P) x_hat S2). Through the reference
        // statistics it sends E1 = u (-r S1 - 2 dvar (mean_i - mu)) and DQ = u dvar; the
        // reference rows add E1 = -r_ref S1 and DQ = dvar_ref from their own outputs. Each
        // reference row then gets dx = r_ref gh + (E1 + 2 DQ x_hat / r_ref) / (m P).
        let (s, u) = (1.0 / (m as f64 + 1.0), m as f64 / (m as f64 + 1.0));
        let p = plane as f64;
        let mut e1 = vec![0.0f64; c];
        let mut dq = vec![0.0f64; c];
        for row in 0..rows {
            for ch in 0..c {
                let index = row * c + ch;
                let g = gamma[ch] as f64;
                let (s1, s2) = (g * sums[index].0, g * sums[index].1);
                let r = cache.invstd[index];
                let dvar = -0.5 * r * r * s2;
                if row < m {
                    e1[ch] += -r * s1;
                    dq[ch] += dvar;
                } else {
                    let offset = cache.mean[index] - cache.mean[ch]; // mean_i - mu
                    e1[ch] += u * (-r * s1 - 2.0 * dvar * offset);
                    dq[ch] += u * dvar;
                }
            }
        }

        let ref_count = (m * plane) as f64;
        let mut dx = Array4::<f32>::zeros(shape);
        let dxs = dx.as_slice_mut().expect("standard layout");
        dxs.par_chunks_mut(plane).enumerate().for_each(|(index, dxp)| {
            let (row, ch) = (index / c, index % c);
            let g = gamma[ch] as f64;
            let r = cache.invstd[index];
            let start = index * plane;
            let (dyp, xhp) = (&dys[start..start + plane], &x_hat[start..start + plane]);
            if row < m {
                let (a, b) = (e1[ch] / ref_count, 2.0 * dq[ch] / (r * ref_count));
                for ((d, &dyv), &xh) in dxp.iter_mut().zip(dyp).zip(xhp) {
                    *d = (r * g * dyv as f64 + a + b * xh as f64) as f32;
                }
            } else {
                let (s1, s2) = (g * sums[index].0, g * sums[index].1);
                let (a, b) = (s * s1 / p, s * s2 / p);
                for ((d, &dyv), &xh) in dxp.iter_mut().zip(dyp).zip(xhp) {
                    *d = (r * (g * dyv as f64 - a - b * xh as f64)) as f32;
                }
            }
        });
        Ok(Some(dx))
    }
}
