//! Batch normalisation with PyTorch's semantics, optionally fused with a following ReLU or
//! LeakyReLU.
//!
//! Training normalises each channel with its batch mean and biased variance and moves the
//! running statistics towards the batch mean and *unbiased* variance by `momentum` (0.1).
//! Evaluation normalises with the running statistics. Both apply the affine map
//! `gamma * x_hat + beta`.
//!
//! Statistics accumulate in `f64` over fixed chunks, one `(sample, channel)` plane each: a plane's
//! mean and sum of squared deviations are computed in two passes over the plane, and the planes
//! of a channel merge in sample order by Chan's formula. The chunking never depends on the thread
//! count (threads split the channels), so results are bit-identical for any pool size. The
//! normalisation subtracts the mean as an `f32` pair `hi + lo`, so a channel of values near 1000
//! with a spread of 0.01 keeps nearly full `f32` precision in `x_hat`.
//!
//! The backward pass in training mode is
//! `dx = gamma * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat))`, with the channel means
//! reduced in the same fixed order; `dgamma += sum(dy * x_hat)` and `dbeta += sum(dy)`.

use ndarray::Array4;
use rayon::prelude::*;
use wide::f32x8;

use super::activation::{activate, activation_grad, negative_slope};
use super::elementwise::{load, load_partial, store, store_partial, LANES};
use super::recycle;
use super::{
    check_grad_shape, no_forward_error, shape4, standard, Activation, Buffer, BufferData, Init,
    Layer, Mode, ParamSpec,
};
use crate::error::{check_len, Error, Result};
use crate::rng::Rng;

/// Count, mean and sum of squared deviations of a set of values.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    count: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Computes the moments of one plane in two passes over it.
    fn of_plane(xs: &[f32]) -> Moments {
        let count = xs.len() as f64;
        let mean = lane_sum(xs, |x| x as f64) / count;
        let m2 = lane_sum(xs, |x| {
            let d = x as f64 - mean;
            d * d
        });
        Moments { count, mean, m2 }
    }

    /// Merges two sets (Chan, Golub and LeVeque's pairwise update).
    fn merge(self, other: Moments) -> Moments {
        if self.count == 0.0 {
            return other;
        }
        let count = self.count + other.count;
        let delta = other.mean - self.mean;
        Moments {
            count,
            mean: self.mean + delta * (other.count / count),
            m2: self.m2 + other.m2 + delta * delta * (self.count * other.count / count),
        }
    }
}

/// Sums `f(x)` over `xs` in `f64`, in eight interleaved lanes reduced in a fixed order.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            lanes[j] += f(c[j]);
        }
    }
    for (j, &x) in chunks.remainder().iter().enumerate() {
        lanes[j] += f(x);
    }
    reduce_lanes(lanes)
}

/// Adds eight lanes pairwise, in a fixed order.
#[inline(always)]
fn reduce_lanes(l: [f64; LANES]) -> f64 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// Per-channel constants of one forward pass.
#[derive(Clone, Copy, Debug)]
struct ChannelNorm {
    /// The mean as `hi + lo`, `hi` its nearest `f32`.
    mean_hi: f32,
    mean_lo: f32,
    /// `1 / sqrt(var + eps)`.
    invstd: f32,
    gamma: f32,
    beta: f32,
}

/// Values cached by the forward pass for the backward pass.
#[derive(Debug)]
struct BnCache {
    /// The normalised input, `(x - mean) * invstd`.
    x_hat: Array4<f32>,
    channels: Vec<ChannelNorm>,
    mode: Mode,
    activation: Option<Activation>,
}

/// Batch normalisation over the channels of `[n, c, h, w]` (PyTorch's `nn.BatchNorm2d`), or over
/// the features of `[n, features, 1, 1]` (`nn.BatchNorm1d`).
///
/// Parameters: `weight` (gamma) `[c]`, then `bias` (beta) `[c]`. Buffers: `running_mean` `[c]`,
/// `running_var` `[c]` and `num_batches_tracked` `[]` (int64).
#[derive(Debug)]
pub struct BatchNorm {
    features: usize,
    one_d: bool,
    eps: f64,
    momentum: Option<f64>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    num_batches_tracked: i64,
    cache: Option<BnCache>,
}

impl BatchNorm {
    /// `nn.BatchNorm2d(channels)`: eps 1e-5, momentum 0.1, running mean 0 and variance 1.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero channels.
    pub fn new2d(channels: usize) -> Result<Self> {
        Self::with_layout(channels, false)
    }

    /// `nn.BatchNorm1d(features)` on `[n, features, 1, 1]`, with the defaults of
    /// [`new2d`](BatchNorm::new2d).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero features.
    pub fn new1d(features: usize) -> Result<Self> {
        Self::with_layout(features, true)
    }

    fn with_layout(features: usize, one_d: bool) -> Result<Self> {
        if features == 0 {
            return Err(Error::invalid("num_features", features, "at least 1"));
        }
        Ok(BatchNorm {
            features,
            one_d,
            eps: 1e-5,
            momentum: Some(0.1),
            running_mean: vec![0.0; features],
            running_var: vec![1.0; features],
            num_batches_tracked: 0,
            cache: None,
        })
    }

    /// Sets eps, the constant added to the variance before the square root.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `eps` is finite and positive.
    pub fn eps(mut self, eps: f64) -> Result<Self> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::invalid("eps", eps, "a finite number above 0"));
        }
        self.eps = eps;
        Ok(self)
    }

    /// Sets the running statistics' momentum; `None` makes them a cumulative average over all
    /// batches, as in PyTorch.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a momentum outside `[0, 1]`.
    pub fn momentum(mut self, momentum: Option<f64>) -> Result<Self> {
        if let Some(m) = momentum {
            if !(0.0..=1.0).contains(&m) {
                return Err(Error::invalid("momentum", m, "a number in [0, 1]"));
            }
        }
        self.momentum = momentum;
        Ok(self)
    }

    /// Returns the running mean, one value per channel.
    pub fn running_mean(&self) -> &[f32] {
        &self.running_mean
    }

    /// Returns the running (unbiased) variance, one value per channel.
    pub fn running_var(&self) -> &[f32] {
        &self.running_var
    }

    /// Returns the number of training batches seen.
    pub fn num_batches_tracked(&self) -> i64 {
        self.num_batches_tracked
    }

    fn name(&self) -> &'static str {
        if self.one_d {
            "BatchNorm1d"
        } else {
            "BatchNorm2d"
        }
    }

    /// Per-channel batch moments, each channel reduced plane by plane in sample order.
    fn batch_moments(&self, xs: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<Moments> {
        let plane = h * w;
        (0..c)
            .into_par_iter()
            .map(|ch| {
                (0..n).fold(Moments::default(), |acc, b| {
                    let start = (b * c + ch) * plane;
                    acc.merge(Moments::of_plane(&xs[start..start + plane]))
                })
            })
            .collect()
    }

    /// Normalisation constants from the batch, updating the running statistics.
    fn train_constants(
        &mut self,
        xs: &[f32],
        shape: [usize; 4],
        gamma: &[f32],
        beta: &[f32],
    ) -> Result<Vec<ChannelNorm>> {
        let moments = self.batch_moments(xs, shape);
        if let Some(ch) = moments.iter().position(|m| !(m.mean.is_finite() && m.m2.is_finite())) {
            return Err(Error::NonFinite {
                what: format!(
                    "{} input (channel {ch} has a non-finite mean or variance)",
                    self.name()
                ),
            });
        }

        // Running statistics, computed in f64 and stored as f32 as PyTorch does.
        self.num_batches_tracked += 1;
        let factor = self.momentum.unwrap_or(1.0 / self.num_batches_tracked as f64);
        for (ch, m) in moments.iter().enumerate() {
            let unbiased = m.m2 / (m.count - 1.0);
            let rm = &mut self.running_mean[ch];
            *rm = (factor * m.mean + (1.0 - factor) * *rm as f64) as f32;
            let rv = &mut self.running_var[ch];
            *rv = (factor * unbiased + (1.0 - factor) * *rv as f64) as f32;
        }

        Ok(moments
            .iter()
            .enumerate()
            .map(|(ch, m)| {
                let mean_hi = m.mean as f32;
                ChannelNorm {
                    mean_hi,
                    mean_lo: (m.mean - mean_hi as f64) as f32,
                    invstd: (1.0 / (m.m2 / m.count + self.eps).sqrt()) as f32,
                    gamma: gamma[ch],
                    beta: beta[ch],
                }
            })
            .collect())
    }

    /// Normalisation constants from the running statistics.
    fn eval_constants(&self, gamma: &[f32], beta: &[f32]) -> Vec<ChannelNorm> {
        (0..self.features)
            .map(|ch| ChannelNorm {
                mean_hi: self.running_mean[ch],
                mean_lo: 0.0,
                invstd: (1.0 / (self.running_var[ch] as f64 + self.eps).sqrt()) as f32,
                gamma: gamma[ch],
                beta: beta[ch],
            })
            .collect()
    }

    fn check_input(&self, input: [usize; 4]) -> Result<()> {
        let [_, c, h, w] = input;
        if c != self.features || (self.one_d && (h, w) != (1, 1)) {
            let expected = if self.one_d {
                format!("[n, {}, 1, 1] for {}", self.features, self.name())
            } else {
                format!("[n, {}, h, w] for {}", self.features, self.name())
            };
            return Err(Error::invalid("input shape", format!("{input:?}"), expected));
        }
        if h == 0 || w == 0 {
            return Err(Error::invalid(
                "input shape",
                format!("{input:?}"),
                format!("a height and width of at least 1 for {}", self.name()),
            ));
        }
        Ok(())
    }

    fn forward_impl(
        &mut self,
        params: &[f32],
        x: Array4<f32>,
        mode: Mode,
        activation: Option<Activation>,
    ) -> Result<Array4<f32>> {
        // Check shapes.
        let shape = shape4(&x);
        self.check_input(shape)?;
        check_len("layer parameters", params.len(), 2 * self.features)?;
        let [n, c, h, w] = shape;
        let plane = h * w;
        if mode == Mode::Train && n * plane <= 1 {
            return Err(Error::invalid(
                "input shape",
                format!("{shape:?}"),
                format!(
                    "more than 1 value per channel when training {} (batch x height x width of \
                     at least 2)",
                    self.name()
                ),
            ));
        }
        let (gamma, beta) = params.split_at(c);
        let mut x = standard(x);

        // Per-channel constants.
        let channels = match mode {
            Mode::Train => {
                self.train_constants(x.as_slice().expect("standard layout"), shape, gamma, beta)?
            }
            Mode::Eval => self.eval_constants(gamma, beta),
        };

        // Normalise in place (x becomes x_hat) and write the affine output, one sample per task.
        let mut y = recycle::take(shape);
        let xs = x.as_slice_mut().expect("standard layout");
        let ys = y.as_slice_mut().expect("standard layout");
        xs.par_chunks_mut(c * plane).zip(ys.par_chunks_mut(c * plane)).for_each(|(xs, ys)| {
            for ((xp, yp), k) in xs.chunks_mut(plane).zip(ys.chunks_mut(plane)).zip(&channels) {
                normalize_plane(xp, yp, k, activation);
            }
        });

        let old = self.cache.replace(BnCache { x_hat: x, channels, mode, activation });
        recycle::give_opt(old.map(|cache| cache.x_hat));
        Ok(y)
    }
}

/// Writes `x_hat = ((x - mean_hi) - mean_lo) * invstd` over `x` and
/// `activation(gamma * x_hat + beta)` into `y`.
#[inline(always)]
fn normalize_plane(x: &mut [f32], y: &mut [f32], k: &ChannelNorm, activation: Option<Activation>) {
    let (hi, lo) = (f32x8::splat(k.mean_hi), f32x8::splat(k.mean_lo));
    let (invstd, gamma, beta) =
        (f32x8::splat(k.invstd), f32x8::splat(k.gamma), f32x8::splat(k.beta));
    let step = |v: f32x8| {
        let x_hat = ((v - hi) - lo) * invstd;
        let pre = x_hat * gamma + beta;
        (x_hat, activation.map_or(pre, |a| activate(pre, a)))
    };
    let mut xc = x.chunks_exact_mut(LANES);
    let mut yc = y.chunks_exact_mut(LANES);
    for (xv, yv) in (&mut xc).zip(&mut yc) {
        let (x_hat, out) = step(load(xv));
        store(xv, x_hat);
        store(yv, out);
    }
    let (x_tail, y_tail) = (xc.into_remainder(), yc.into_remainder());
    if !x_tail.is_empty() {
        let (x_hat, out) = step(load_partial(x_tail));
        store_partial(x_tail, x_hat);
        store_partial(y_tail, out);
    }
}

/// Applies the fused activation's derivative to eight lanes of `dy`, recomputing its input
/// `gamma * x_hat + beta` exactly as the forward pass did.
#[inline(always)]
fn effective_grad(
    x_hat: f32x8,
    dy: f32x8,
    k: &ChannelNorm,
    activation: Option<Activation>,
) -> f32x8 {
    match activation {
        None => dy,
        Some(a) => {
            let pre = x_hat * f32x8::splat(k.gamma) + f32x8::splat(k.beta);
            activation_grad(pre, dy, f32x8::splat(negative_slope(a)))
        }
    }
}

/// `(sum(dy'), sum(dy' * x_hat))` over one plane in `f64`, `dy'` the gradient at the
/// normalisation's output.
fn plane_grad_sums(
    x_hat: &[f32],
    dy: &[f32],
    k: &ChannelNorm,
    activation: Option<Activation>,
) -> (f64, f64) {
    let mut sum = [0.0f64; LANES];
    let mut dot = [0.0f64; LANES];
    for (xc, dc) in x_hat.chunks(LANES).zip(dy.chunks(LANES)) {
        let (xv, dv) = if xc.len() == LANES {
            (load(xc), load(dc))
        } else {
            (load_partial(xc), load_partial(dc))
        };
        let g = effective_grad(xv, dv, k, activation).to_array();
        let xa = xv.to_array();
        for j in 0..xc.len() {
            sum[j] += g[j] as f64;
            dot[j] += g[j] as f64 * xa[j] as f64;
        }
    }
    (reduce_lanes(sum), reduce_lanes(dot))
}

/// Writes the input gradient of one plane over `dy`: `(dy' - mean_dy - x_hat * mean_dot) * scale`.
fn plane_grad_input(
    x_hat: &[f32],
    dy: &mut [f32],
    k: &ChannelNorm,
    activation: Option<Activation>,
    [mean_dy, mean_dot, scale]: [f32; 3],
) {
    let (mean_dy, mean_dot, scale) =
        (f32x8::splat(mean_dy), f32x8::splat(mean_dot), f32x8::splat(scale));
    let step = |xv: f32x8, dv: f32x8| {
        let g = effective_grad(xv, dv, k, activation);
        ((g - mean_dy) - xv * mean_dot) * scale
    };
    let mut dc = dy.chunks_exact_mut(LANES);
    let mut xc = x_hat.chunks_exact(LANES);
    for (dv, xv) in (&mut dc).zip(&mut xc) {
        store(dv, step(load(xv), load(dv)));
    }
    let (d_tail, x_tail) = (dc.into_remainder(), xc.remainder());
    if !d_tail.is_empty() {
        store_partial(d_tail, step(load_partial(x_tail), load_partial(d_tail)));
    }
}

impl Layer for BatchNorm {
    fn describe(&self) -> String {
        let momentum = self.momentum.map_or("None".to_string(), |m| m.to_string());
        format!("{}({}, eps={}, momentum={momentum})", self.name(), self.features, self.eps)
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
        self.check_input(input)?;
        Ok(input)
    }

    fn forward(&mut self, params: &[f32], x: Array4<f32>, mode: Mode) -> Result<Array4<f32>> {
        self.forward_impl(params, x, mode, None)
    }

    fn backward(
        &mut self,
        params: &[f32],
        grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let name = self.name();
        let cache = self.cache.as_ref().ok_or_else(|| no_forward_error(name))?;
        let shape = shape4(&cache.x_hat);
        check_grad_shape(&dy, shape)?;
        check_len("layer parameters", params.len(), 2 * self.features)?;
        let [n, c, h, w] = shape;
        let plane = h * w;
        let count = (n * plane) as f64;
        let x_hat = cache.x_hat.as_slice().expect("standard layout");
        let mut dy = standard(dy);
        let activation = cache.activation;

        // Channel sums of dy' and dy' * x_hat, plane by plane in sample order.
        let need_sums = grads.is_some() || (input_grad && cache.mode == Mode::Train);
        let sums: Vec<(f64, f64)> = if need_sums {
            let dys = dy.as_slice().expect("standard layout");
            (0..c)
                .into_par_iter()
                .map(|ch| {
                    (0..n).fold((0.0, 0.0), |(s, d), b| {
                        let r = (b * c + ch) * plane..(b * c + ch + 1) * plane;
                        let k = &cache.channels[ch];
                        let (ps, pd) = plane_grad_sums(&x_hat[r.clone()], &dys[r], k, activation);
                        (s + ps, d + pd)
                    })
                })
                .collect()
        } else {
            Vec::new()
        };

        // Parameter gradients: dgamma += sum(dy' * x_hat), dbeta += sum(dy').
        if let Some(grads) = grads {
            check_len("layer gradients", grads.len(), 2 * c)?;
            let (dgamma, dbeta) = grads.split_at_mut(c);
            for (ch, &(sum, dot)) in sums.iter().enumerate() {
                dgamma[ch] += dot as f32;
                dbeta[ch] += sum as f32;
            }
        }
        if !input_grad {
            recycle::give(dy);
            return Ok(None);
        }

        // Input gradient, written over dy. In evaluation mode the statistics are constants.
        let coefficients: Vec<[f32; 3]> = (0..c)
            .map(|ch| {
                let k = &cache.channels[ch];
                let scale = k.gamma * k.invstd;
                match cache.mode {
                    Mode::Train => {
                        let (sum, dot) = sums[ch];
                        [(sum / count) as f32, (dot / count) as f32, scale]
                    }
                    Mode::Eval => [0.0, 0.0, scale],
                }
            })
            .collect();
        let dys = dy.as_slice_mut().expect("standard layout");
        dys.par_chunks_mut(c * plane).zip(x_hat.par_chunks(c * plane)).for_each(|(d, x)| {
            for (ch, (dp, xp)) in d.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
                plane_grad_input(xp, dp, &cache.channels[ch], activation, coefficients[ch]);
            }
        });
        Ok(Some(dy))
    }

    fn buffers(&self) -> Vec<Buffer<'_>> {
        vec![
            Buffer {
                name: "running_mean",
                shape: vec![self.features],
                data: BufferData::F32(&self.running_mean),
            },
            Buffer {
                name: "running_var",
                shape: vec![self.features],
                data: BufferData::F32(&self.running_var),
            },
            Buffer {
                name: "num_batches_tracked",
                shape: vec![],
                data: BufferData::I64(std::slice::from_ref(&self.num_batches_tracked)),
            },
        ]
    }

    fn set_buffer(&mut self, name: &str, data: BufferData<'_>) -> Result<()> {
        match (name, data) {
            ("running_mean", BufferData::F32(values)) => {
                check_len("running_mean", values.len(), self.features)?;
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(Error::NonFinite { what: "running_mean".into() });
                }
                self.running_mean.copy_from_slice(values);
            }
            ("running_var", BufferData::F32(values)) => {
                check_len("running_var", values.len(), self.features)?;
                if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                    return Err(Error::invalid("running_var", v, "finite values of at least 0"));
                }
                self.running_var.copy_from_slice(values);
            }
            ("num_batches_tracked", BufferData::I64(values)) => {
                check_len("num_batches_tracked", values.len(), 1)?;
                self.num_batches_tracked = values[0];
            }
            ("running_mean" | "running_var" | "num_batches_tracked", data) => {
                let dtype = match data {
                    BufferData::F32(_) => "f32",
                    BufferData::I64(_) => "i64",
                };
                return Err(Error::invalid(
                    "buffer dtype",
                    format!("{dtype} for {name}"),
                    "f32 for running_mean and running_var, i64 for num_batches_tracked",
                ));
            }
            _ => {
                return Err(Error::invalid(
                    "buffer name",
                    name,
                    "running_mean, running_var or num_batches_tracked",
                ))
            }
        }
        Ok(())
    }

    fn fuses_activation(&self) -> bool {
        true
    }

    fn forward_fused(
        &mut self,
        params: &[f32],
        x: Array4<f32>,
        mode: Mode,
        activation: Activation,
    ) -> Result<Array4<f32>> {
        self.forward_impl(params, x, mode, Some(activation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chan_merge_matches_one_pass() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 3.0 + 1000.0).collect();
        let whole = Moments::of_plane(&xs);
        let merged =
            xs.chunks(5).fold(Moments::default(), |acc, c| acc.merge(Moments::of_plane(c)));
        assert_eq!(whole.count, merged.count);
        assert!((whole.mean - merged.mean).abs() < 1e-12, "{} vs {}", whole.mean, merged.mean);
        assert!((whole.m2 - merged.m2).abs() < 1e-9 * whole.m2, "{} vs {}", whole.m2, merged.m2);
    }
}
