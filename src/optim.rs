//! Optimisers over a network's flat parameter and gradient buffers: Adam, SGD with momentum and
//! RMSProp, each following PyTorch's update (torch.optim, single-tensor implementation) step by
//! step, so runs can be compared with PyTorch to float tolerance.
//!
//! Each step is one pass over the flat slices, eight lanes at a time, split into parallel chunks.
//! Every element's update depends only on that element, so the result does not depend on the
//! thread count. Hyper-parameters are `f64`, like the Python floats PyTorch takes; per-step
//! scalars (bias corrections) are computed in `f64` and rounded to `f32` once. A step with a
//! non-finite gradient is rejected before any parameter changes.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use wide::f32x8;

use crate::error::{check_len, try_zeros, Error, Result};
use crate::layers::elementwise::{
    all_finite, load, load_partial, store, store_partial, LANES, PAR_CHUNK,
};

/// An optimiser that updates a flat parameter buffer from its gradient.
pub trait Optimizer: std::fmt::Debug + Send + Sync {
    /// Applies one update to `params` from `grads` (the same length).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the slices do not have the optimiser's length;
    /// [`Error::NonFinite`] for a NaN or infinite gradient; [`Error::InvalidArgument`] when the
    /// step count is already `u64::MAX`. Nothing is updated then.
    fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<()>;
}

fn check_step(what: &'static str, len: usize, params: &[f32], grads: &[f32]) -> Result<()> {
    check_len("parameters", params.len(), len)?;
    check_len("gradients", grads.len(), len)?;
    if !all_finite(grads) {
        return Err(Error::NonFinite { what: format!("gradients passed to {what}") });
    }
    Ok(())
}

/// Largest learning rate, `eps`, weight decay, momentum or dampening that an optimiser
/// accepts: `f32::MAX`, because the update runs in `f32` and a larger value would become
/// infinite there.
pub const MAX_HYPER_PARAMETER: f64 = f32::MAX as f64;

fn check_hyper(name: &'static str, value: f64, range: std::ops::RangeInclusive<f64>) -> Result<()> {
    if !(value.is_finite() && range.contains(&value)) {
        let (start, end) = (range.start(), range.end());
        let expected = if *end == MAX_HYPER_PARAMETER {
            format!(
                "a finite number of at least {start} and at most f32::MAX ({MAX_HYPER_PARAMETER:e}), \
                 because the update runs in f32"
            )
        } else if *end == 1.0 - f64::EPSILON {
            format!("a number in [{start}, 1)")
        } else {
            format!("a number in [{start}, {end}]")
        };
        return Err(Error::invalid(name, value, expected));
    }
    Ok(())
}

/// Returns the step count after `step`, or an error where it would overflow (only a corrupt
/// restored state gets near it).
fn next_step(step: u64) -> Result<u64> {
    step.checked_add(1).ok_or_else(|| Error::invalid("step", step, "fewer than 2^64 - 1 steps"))
}

/// Checks that a restored state can take another step, and that its running averages of
/// squared gradients (`name`) are not negative.
fn check_restored(step: u64, name: &'static str, squares: &[f32]) -> Result<()> {
    next_step(step)?;
    if let Some(value) = squares.iter().find(|value| **value < 0.0) {
        return Err(Error::invalid(
            name,
            value,
            "values of at least 0, because they average squared gradients",
        ));
    }
    Ok(())
}

/// One parallel work item: chunks of the parameters, the gradients and each state slice.
type LaneChunk<'a, const K: usize> = (&'a mut [f32], &'a [f32], [&'a mut [f32]; K]);

/// Runs `f` on every eight-lane group of `params`, with the matching lanes of `grads` and of
/// each state slice, in parallel chunks. All slices have the same length.
fn for_each_lane<const K: usize>(
    params: &mut [f32],
    grads: &[f32],
    states: [&mut [f32]; K],
    f: impl Fn(&mut f32x8, f32x8, &mut [f32x8; K]) + Sync,
) {
    // Pair each chunk of the parameters with the same chunk of every other slice.
    let mut state_chunks = states.map(|s| s.chunks_mut(PAR_CHUNK));
    let work: Vec<LaneChunk<'_, K>> = params
        .chunks_mut(PAR_CHUNK)
        .zip(grads.chunks(PAR_CHUNK))
        .map(|(p, g)| (p, g, state_chunks.each_mut().map(|it| it.next().expect("same length"))))
        .collect();

    work.into_par_iter().for_each(|(p, g, mut st)| {
        let full = p.len() / LANES * LANES;
        for i in (0..full).step_by(LANES) {
            let (mut pv, gv) = (load(&p[i..]), load(&g[i..]));
            let mut sv = st.each_ref().map(|s| load(&s[i..]));
            f(&mut pv, gv, &mut sv);
            store(&mut p[i..], pv);
            for (s, v) in st.iter_mut().zip(sv) {
                store(&mut s[i..], v);
            }
        }
        if full < p.len() {
            let (mut pv, gv) = (load_partial(&p[full..]), load_partial(&g[full..]));
            let mut sv = st.each_ref().map(|s| load_partial(&s[full..]));
            f(&mut pv, gv, &mut sv);
            store_partial(&mut p[full..], pv);
            for (s, v) in st.iter_mut().zip(sv) {
                store_partial(&mut s[full..], v);
            }
        }
    });
}

/// `start + weight * (end - start)`, computed as PyTorch's `lerp` does: from the nearer end.
#[inline(always)]
fn lerp(start: f32x8, end: f32x8, weight: f32) -> f32x8 {
    if weight.abs() < 0.5 {
        start + f32x8::splat(weight) * (end - start)
    } else {
        end - (end - start) * f32x8::splat(1.0 - weight)
    }
}

/// Adam's hyper-parameters (PyTorch's names and defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment estimates (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the bias-corrected square root of the second moment (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient, `g + weight_decay * p` (default 0).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 }
    }
}

impl AdamConfig {
    /// Returns the DCGAN paper's settings: lr 2e-4, betas (0.5, 0.999).
    pub fn dcgan() -> Self {
        AdamConfig { lr: 2e-4, betas: (0.5, 0.999), ..AdamConfig::default() }
    }

    /// Checks the ranges PyTorch checks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative or non-finite value, one above
    /// [`MAX_HYPER_PARAMETER`], or a beta outside `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        check_hyper("lr", self.lr, 0.0..=MAX_HYPER_PARAMETER)?;
        check_hyper("beta1", self.betas.0, 0.0..=1.0 - f64::EPSILON)?;
        check_hyper("beta2", self.betas.1, 0.0..=1.0 - f64::EPSILON)?;
        check_hyper("eps", self.eps, 0.0..=MAX_HYPER_PARAMETER)?;
        check_hyper("weight_decay", self.weight_decay, 0.0..=MAX_HYPER_PARAMETER)
    }
}

/// Adam's state: the step count and both moment estimates, one value per parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Steps taken.
    pub step: u64,
    /// First moment estimate (PyTorch's `exp_avg`).
    pub exp_avg: Vec<f32>,
    /// Second moment estimate (PyTorch's `exp_avg_sq`).
    pub exp_avg_sq: Vec<f32>,
}

/// Adam (Kingma and Ba), as PyTorch's `torch.optim.Adam` without amsgrad:
///
/// ```text
/// g = grad + weight_decay * p
/// m = lerp(m, g, 1 - beta1)
/// v = beta2 * v + (1 - beta2) * g * g
/// p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
///
/// `eps` is added after the bias-corrected square root.
#[derive(Clone, Debug)]
pub struct Adam {
    config: AdamConfig,
    state: AdamState,
}

impl Adam {
    /// Adam for `len` parameters, with zero moments.
    ///
    /// # Errors
    /// As [`AdamConfig::validate`]; [`Error::OutOfMemory`] when the state cannot be allocated.
    pub fn new(len: usize, config: AdamConfig) -> Result<Self> {
        config.validate()?;
        let exp_avg = try_zeros("Adam's first moments", len)?;
        let exp_avg_sq = try_zeros("Adam's second moments", len)?;
        let state = AdamState { step: 0, exp_avg, exp_avg_sq };
        Ok(Adam { config, state })
    }

    /// Returns the hyper-parameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Returns the state, for saving.
    pub fn state(&self) -> &AdamState {
        &self.state
    }

    /// Replaces the state, for restoring.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the moments do not have this optimiser's length;
    /// [`Error::NonFinite`] for a NaN or infinite moment; [`Error::InvalidArgument`] for a
    /// negative second moment or a step count of `u64::MAX`.
    pub fn set_state(&mut self, state: AdamState) -> Result<()> {
        let len = self.state.exp_avg.len();
        check_len("exp_avg", state.exp_avg.len(), len)?;
        check_len("exp_avg_sq", state.exp_avg_sq.len(), len)?;
        for (name, values) in [("exp_avg", &state.exp_avg), ("exp_avg_sq", &state.exp_avg_sq)] {
            if !all_finite(values) {
                return Err(Error::NonFinite { what: format!("Adam's {name}") });
            }
        }
        check_restored(state.step, "exp_avg_sq", &state.exp_avg_sq)?;
        self.state = state;
        Ok(())
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<()> {
        check_step("Adam", self.state.exp_avg.len(), params, grads)?;
        let c = &self.config;
        self.state.step = next_step(self.state.step)?;
        let t = self.state.step as f64;
        let (beta1, beta2) = c.betas;
        let step_size = (c.lr / (1.0 - beta1.powf(t))) as f32;
        let bias_correction2_sqrt = f32x8::splat((1.0 - beta2.powf(t)).sqrt() as f32);
        let lerp_weight = (1.0 - beta1) as f32;
        let (beta2_v, one_minus_beta2) =
            (f32x8::splat(beta2 as f32), f32x8::splat((1.0 - beta2) as f32));
        let (eps, weight_decay) = (f32x8::splat(c.eps as f32), c.weight_decay as f32);
        let neg_step = f32x8::splat(-step_size);
        let AdamState { exp_avg, exp_avg_sq, .. } = &mut self.state;
        for_each_lane(params, grads, [exp_avg, exp_avg_sq], |p, g, [m, v]| {
            let g = if weight_decay != 0.0 { g + *p * f32x8::splat(weight_decay) } else { g };
            *m = lerp(*m, g, lerp_weight);
            *v = *v * beta2_v + one_minus_beta2 * g * g;
            let denom = v.sqrt() / bias_correction2_sqrt + eps;
            *p += neg_step * *m / denom;
        });
        Ok(())
    }
}

/// SGD's hyper-parameters (PyTorch's names; lr has no default there).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 for plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum's gradient term (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0 }
    }

    /// Checks the ranges PyTorch checks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative or non-finite value, or one above
    /// [`MAX_HYPER_PARAMETER`].
    pub fn validate(&self) -> Result<()> {
        check_hyper("lr", self.lr, 0.0..=MAX_HYPER_PARAMETER)?;
        check_hyper("momentum", self.momentum, 0.0..=MAX_HYPER_PARAMETER)?;
        check_hyper("dampening", self.dampening, 0.0..=MAX_HYPER_PARAMETER)?;
        check_hyper("weight_decay", self.weight_decay, 0.0..=MAX_HYPER_PARAMETER)
    }
}

/// SGD's state: the step count and the momentum buffer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdState {
    /// Steps taken; the momentum buffer is meaningful once it is at least 1.
    pub step: u64,
    /// PyTorch's `momentum_buffer`.
    pub momentum_buffer: Vec<f32>,
}

/// Stochastic gradient descent with momentum, as PyTorch's `torch.optim.SGD` without Nesterov:
///
/// ```text
/// g = grad + weight_decay * p
/// b = g on the first step, else momentum * b + (1 - dampening) * g   (when momentum > 0)
/// p = p - lr * b
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
    state: SgdState,
}

impl Sgd {
    /// SGD for `len` parameters.
    ///
    /// # Errors
    /// As [`SgdConfig::validate`]; [`Error::OutOfMemory`] when the state cannot be allocated.
    pub fn new(len: usize, config: SgdConfig) -> Result<Self> {
        config.validate()?;
        let momentum_buffer = try_zeros("SGD's momentum", len)?;
        Ok(Sgd { config, state: SgdState { step: 0, momentum_buffer } })
    }

    /// Returns the hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Returns the state, for saving.
    pub fn state(&self) -> &SgdState {
        &self.state
    }

    /// Replaces the state, for restoring.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for a buffer of the wrong length; [`Error::NonFinite`] for a
    /// NaN or infinite value; [`Error::InvalidArgument`] for a step count of `u64::MAX`.
    pub fn set_state(&mut self, state: SgdState) -> Result<()> {
        check_len(
            "momentum_buffer",
            state.momentum_buffer.len(),
            self.state.momentum_buffer.len(),
        )?;
        if !all_finite(&state.momentum_buffer) {
            return Err(Error::NonFinite { what: "SGD's momentum_buffer".into() });
        }
        next_step(state.step)?;
        self.state = state;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<()> {
        check_step("SGD", self.state.momentum_buffer.len(), params, grads)?;
        let c = self.config;
        let first = self.state.step == 0;
        self.state.step = next_step(self.state.step)?;
        let (momentum, damped) =
            (f32x8::splat(c.momentum as f32), f32x8::splat((1.0 - c.dampening) as f32));
        let (neg_lr, weight_decay) = (f32x8::splat(-c.lr as f32), c.weight_decay as f32);
        let decay = |p: f32x8, g: f32x8| {
            if weight_decay != 0.0 {
                g + p * f32x8::splat(weight_decay)
            } else {
                g
            }
        };
        if c.momentum == 0.0 {
            for_each_lane(params, grads, [], |p, g, []| *p += neg_lr * decay(*p, g));
        } else {
            let buffer = &mut self.state.momentum_buffer;
            for_each_lane(params, grads, [buffer], |p, g, [b]| {
                let g = decay(*p, g);
                *b = if first { g } else { *b * momentum + damped * g };
                *p += neg_lr * *b;
            });
        }
        Ok(())
    }
}

/// RMSProp's hyper-parameters (PyTorch's names and defaults; `centered` is not supported).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RmsPropConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Decay rate of the squared-gradient average (default 0.99).
    pub alpha: f64,
    /// Added after the square root (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig { lr: 1e-2, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0 }
    }
}

impl RmsPropConfig {
    /// Checks the ranges PyTorch checks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative or non-finite value, one above
    /// [`MAX_HYPER_PARAMETER`], or an alpha above 1.
    pub fn validate(&self) -> Result<()> {
        check_hyper("lr", self.lr, 0.0..=MAX_HYPER_PARAMETER)?;
        check_hyper("alpha", self.alpha, 0.0..=1.0)?;
        check_hyper("eps", self.eps, 0.0..=MAX_HYPER_PARAMETER)?;
        check_hyper("weight_decay", self.weight_decay, 0.0..=MAX_HYPER_PARAMETER)?;
        check_hyper("momentum", self.momentum, 0.0..=MAX_HYPER_PARAMETER)
    }
}

/// RMSProp's state: the step count, the squared-gradient average and the momentum buffer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RmsPropState {
    /// Steps taken.
    pub step: u64,
    /// PyTorch's `square_avg`.
    pub square_avg: Vec<f32>,
    /// PyTorch's `momentum_buffer` (zeros while momentum is 0).
    pub momentum_buffer: Vec<f32>,
}

/// RMSProp, as PyTorch's `torch.optim.RMSprop` with `centered=False`:
///
/// ```text
/// g = grad + weight_decay * p
/// s = alpha * s + (1 - alpha) * g * g
/// a = sqrt(s) + eps
/// p = p - lr * g / a                          (momentum = 0)
/// b = momentum * b + g / a; p = p - lr * b    (momentum > 0)
/// ```
#[derive(Clone, Debug)]
pub struct RmsProp {
    config: RmsPropConfig,
    state: RmsPropState,
}

impl RmsProp {
    /// RMSProp for `len` parameters.
    ///
    /// # Errors
    /// As [`RmsPropConfig::validate`]; [`Error::OutOfMemory`] when the state cannot be allocated.
    pub fn new(len: usize, config: RmsPropConfig) -> Result<Self> {
        config.validate()?;
        let square_avg = try_zeros("RMSProp's square averages", len)?;
        let momentum_buffer = try_zeros("RMSProp's momentum", len)?;
        let state = RmsPropState { step: 0, square_avg, momentum_buffer };
        Ok(RmsProp { config, state })
    }

    /// Returns the hyper-parameters.
    pub fn config(&self) -> &RmsPropConfig {
        &self.config
    }

    /// Returns the state, for saving.
    pub fn state(&self) -> &RmsPropState {
        &self.state
    }

    /// Replaces the state, for restoring.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for a buffer of the wrong length; [`Error::NonFinite`] for a
    /// NaN or infinite value; [`Error::InvalidArgument`] for a negative `square_avg` or a step
    /// count of `u64::MAX`.
    pub fn set_state(&mut self, state: RmsPropState) -> Result<()> {
        let len = self.state.square_avg.len();
        check_len("square_avg", state.square_avg.len(), len)?;
        check_len("momentum_buffer", state.momentum_buffer.len(), len)?;
        let vectors =
            [("square_avg", &state.square_avg), ("momentum_buffer", &state.momentum_buffer)];
        for (name, values) in vectors {
            if !all_finite(values) {
                return Err(Error::NonFinite { what: format!("RMSProp's {name}") });
            }
        }
        check_restored(state.step, "square_avg", &state.square_avg)?;
        self.state = state;
        Ok(())
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<()> {
        check_step("RMSProp", self.state.square_avg.len(), params, grads)?;
        let c = self.config;
        self.state.step = next_step(self.state.step)?;
        let (alpha, one_minus_alpha) =
            (f32x8::splat(c.alpha as f32), f32x8::splat((1.0 - c.alpha) as f32));
        let (eps, neg_lr, momentum) = (
            f32x8::splat(c.eps as f32),
            f32x8::splat(-c.lr as f32),
            f32x8::splat(c.momentum as f32),
        );
        let (weight_decay, use_momentum) = (c.weight_decay as f32, c.momentum > 0.0);
        let RmsPropState { square_avg, momentum_buffer, .. } = &mut self.state;
        for_each_lane(params, grads, [square_avg, momentum_buffer], |p, g, [s, b]| {
            let g = if weight_decay != 0.0 { g + *p * f32x8::splat(weight_decay) } else { g };
            *s = *s * alpha + one_minus_alpha * g * g;
            let avg = s.sqrt() + eps;
            if use_momentum {
                *b = *b * momentum + g / avg;
                *p += neg_lr * *b;
            } else {
                *p += neg_lr * g / avg;
            }
        });
        Ok(())
    }
}
