//! GAN losses on the discriminator's logits, with their gradients.
//!
//! [`bce_with_logits`] is PyTorch's `binary_cross_entropy_with_logits` with mean reduction,
//! evaluated per element as `max(x, 0) - x t + log1p(exp(-|x|))`, which stays finite for any
//! finite logit (no `exp` of a positive argument). Its gradient is `(sigmoid(x) - t) / n`.
//! The loss accumulates in `f64`.
//!
//! [`GanLoss`] groups the terms of one GAN objective: the discriminator's loss on real and on
//! generated samples, and the generator's loss. Every term is a mean over the logits `v` of a
//! per-logit function, evaluated in `f64` in a form that does not overflow where the function
//! itself is finite: `softplus(v) = max(v, 0) + log1p(exp(-|v|))` in place of `log(1 + e^v)`, and
//! `-softplus(v)` in place of `log(1 - sigmoid(v))`. Terms that grow like `e^v` (the KL and
//! squared-Hellinger f-GANs) return [`Error::NonFinite`] once the loss or an `f32` gradient
//! overflows, at a logit of about 88 or more.

mod fgan;

use ndarray::Array4;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use fgan::{Divergence, FGanGenerator};

/// A loss value and its gradient w.r.t. the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct LossGrad {
    /// The loss, accumulated in `f64`.
    pub loss: f64,
    /// `d loss / d logits`, shaped like the logits.
    pub grad: Array4<f32>,
}

/// Computes the logistic function in `f64` without overflow.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Computes `log(1 + e^x)` in `f64` without overflow.
pub(crate) fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn check_logits(logits: &Array4<f32>) -> Result<()> {
    if logits.is_empty() {
        return Err(Error::invalid(
            "logits shape",
            format!("{:?}", logits.shape()),
            "at least one logit",
        ));
    }
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: format!("logit {i} of the discriminator's output") });
    }
    Ok(())
}

/// Averages `term(v) = (value, derivative)` over the logits: the loss is the mean value and the
/// gradient `derivative / n`.
///
/// # Errors
/// [`Error::InvalidArgument`] for no logits; [`Error::NonFinite`] for a NaN or infinite logit,
/// or when the loss or a gradient overflows (`what` names the term in the message).
fn mean_term(
    logits: &Array4<f32>,
    what: &str,
    term: impl Fn(f64) -> (f64, f64),
) -> Result<LossGrad> {
    check_logits(logits)?;
    let n = logits.len() as f64;
    let mut loss = 0.0f64;
    let grad = logits.mapv(|v| {
        let (value, derivative) = term(v as f64);
        loss += value;
        (derivative / n) as f32
    });
    let loss = loss / n;
    if !loss.is_finite() {
        return Err(Error::NonFinite { what: format!("{what}: the loss overflows") });
    }
    if let Some(i) = grad.iter().position(|g| !g.is_finite()) {
        let v = logits.iter().nth(i).copied().unwrap_or(f32::NAN);
        return Err(Error::NonFinite {
            what: format!("{what}: the gradient at logit {i} = {v} overflows f32"),
        });
    }
    Ok(LossGrad { loss, grad })
}

/// Binary cross-entropy between `sigmoid(logits)` and the constant target `target`, averaged
/// over all elements, and its gradient.
///
/// # Errors
/// [`Error::InvalidArgument`] for a target outside `[0, 1]` or no logits;
/// [`Error::NonFinite`] for a NaN or infinite logit.
pub fn bce_with_logits(logits: &Array4<f32>, target: f32) -> Result<LossGrad> {
    if !(0.0..=1.0).contains(&target) {
        return Err(Error::invalid("BCE target", target, "a number in [0, 1]"));
    }
    check_logits(logits)?;
    let n = logits.len() as f64;
    let t = target as f64;
    let mut loss = 0.0f64;
    let grad = logits.mapv(|x| {
        let x = x as f64;
        loss += x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
        ((sigmoid(x) - t) / n) as f32
    });
    Ok(LossGrad { loss: loss / n, grad })
}

/// Computes the mean of `sigmoid(logits)`, the discriminator's average probability that its
/// inputs are real (`D(x)` and `D(G(z))` in the DCGAN example's log).
pub fn mean_probability(logits: &Array4<f32>) -> f64 {
    if logits.is_empty() {
        return f64::NAN;
    }
    logits.iter().map(|&x| sigmoid(x as f64)).sum::<f64>() / logits.len() as f64
}

/// A GAN objective: what the discriminator minimises on real and generated samples, and what
/// the generator minimises. `v` is the discriminator's logit (its raw output, no sigmoid) and
/// every expectation `E` is a mean over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum GanLoss {
    /// The DCGAN objective with the non-saturating generator loss:
    /// the discriminator minimises `BCE(D(x), real_label) + BCE(D(G(z)), 0)` and the generator
    /// `BCE(D(G(z)), 1)`. A `real_label` below 1 (0.9) is one-sided label smoothing. With
    /// `real_label` 1 it is [`GanLoss::NonSaturating`].
    Bce {
        /// The target for real samples in the discriminator's loss.
        real_label: f32,
    },
    /// Goodfellow et al.'s minimax game (saturating generator loss): the discriminator
    /// minimises `E_real[softplus(-v)] + E_fake[softplus(v)]` (BCE with targets 1 and 0), and
    /// the generator minimises `E_fake[log(1 - sigmoid(v))] = -E_fake[softplus(v)]`.
    Minimax,
    /// The minimax discriminator loss with the non-saturating generator loss
    /// `E_fake[softplus(-v)] = BCE(D(G(z)), 1)`, as in the DCGAN paper.
    NonSaturating,
    /// Least squares GAN (Mao et al. 2017): the discriminator minimises
    /// `E_real[(v - b)^2] / 2 + E_fake[(v - a)^2] / 2` and the generator
    /// `E_fake[(v - c)^2] / 2`. [`GanLoss::least_squares`] gives a = 0, b = 1, c = 1.
    LeastSquares {
        /// `a`, the discriminator's target for generated samples.
        fake_target: f32,
        /// `b`, the discriminator's target for real samples.
        real_target: f32,
        /// `c`, the value the generator wants the discriminator to output on its samples.
        generator_target: f32,
    },
    /// Wasserstein GAN (Arjovsky et al. 2017): the critic minimises `E_fake[v] - E_real[v]`, the
    /// generator `-E_fake[v]`. The critic must be kept Lipschitz, here by weight clipping
    /// (`Tricks::weight_clip` in [`crate::train`]); [`crate::train::TrainConfig::wgan`] has the
    /// paper's settings.
    Wasserstein,
    /// Hinge loss (Lim and Ye 2017; Miyato et al. 2018): the discriminator minimises
    /// `E_real[max(0, 1 - v)] + E_fake[max(0, 1 + v)]`, the generator `-E_fake[v]`. At a kink
    /// the gradient is 0.
    Hinge,
    /// f-GAN (Nowozin et al. 2016) for the divergence `divergence`: with its output activation
    /// `g_f` and convex conjugate `f*`, the discriminator minimises
    /// `-(E_real[g_f(v)] - E_fake[f*(g_f(v))])`; the generator's loss is chosen by `generator`.
    FGan {
        /// The f-divergence.
        divergence: Divergence,
        /// The generator's loss.
        generator: FGanGenerator,
    },
}

impl Default for GanLoss {
    fn default() -> Self {
        GanLoss::Bce { real_label: 1.0 }
    }
}

impl GanLoss {
    /// Returns LSGAN with Mao et al.'s 0-1 coding: a = 0, b = 1, c = 1.
    pub fn least_squares() -> Self {
        GanLoss::LeastSquares { fake_target: 0.0, real_target: 1.0, generator_target: 1.0 }
    }

    /// Returns the f-GAN for `divergence` with Nowozin et al.'s alternative generator loss.
    pub fn f_gan(divergence: Divergence) -> Self {
        GanLoss::FGan { divergence, generator: FGanGenerator::Alternative }
    }

    /// Returns a short name for logs and command lines (`non-saturating`, `lsgan`, `fgan-kl`).
    pub fn name(&self) -> String {
        match self {
            GanLoss::Bce { .. } => "bce".into(),
            GanLoss::Minimax => "minimax".into(),
            GanLoss::NonSaturating => "non-saturating".into(),
            GanLoss::LeastSquares { .. } => "lsgan".into(),
            GanLoss::Wasserstein => "wasserstein".into(),
            GanLoss::Hinge => "hinge".into(),
            GanLoss::FGan { divergence, .. } => format!("fgan-{}", divergence.name()),
        }
    }

    /// Returns whether the real term is a cross-entropy with a target that one-sided label
    /// smoothing can lower ([`GanLoss::Bce`], [`GanLoss::Minimax`], [`GanLoss::NonSaturating`]).
    pub fn supports_label_smoothing(&self) -> bool {
        matches!(self, GanLoss::Bce { .. } | GanLoss::Minimax | GanLoss::NonSaturating)
    }

    /// Checks the loss's options.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a `real_label` outside `(0, 1]`, a non-finite least-squares
    /// target, or equal least-squares targets for real and generated samples.
    pub fn validate(&self) -> Result<()> {
        match *self {
            GanLoss::Bce { real_label } => {
                if !(real_label > 0.0 && real_label <= 1.0) {
                    return Err(Error::invalid("real_label", real_label, "a number in (0, 1]"));
                }
            }
            GanLoss::LeastSquares { fake_target, real_target, generator_target } => {
                for (name, value) in [
                    ("fake_target", fake_target),
                    ("real_target", real_target),
                    ("generator_target", generator_target),
                ] {
                    if !value.is_finite() {
                        return Err(Error::invalid(name, value, "a finite number"));
                    }
                }
                if fake_target == real_target {
                    return Err(Error::invalid(
                        "real_target",
                        real_target,
                        format!("a value other than fake_target = {fake_target}"),
                    ));
                }
            }
            GanLoss::Minimax
            | GanLoss::NonSaturating
            | GanLoss::Wasserstein
            | GanLoss::Hinge
            | GanLoss::FGan { .. } => {}
        }
        Ok(())
    }

    /// Computes the discriminator's loss term on real samples from its logits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no logits; [`Error::NonFinite`] for a NaN or infinite
    /// logit, or a loss or gradient that overflows.
    pub fn discriminator_real(&self, logits: &Array4<f32>) -> Result<LossGrad> {
        match *self {
            GanLoss::Bce { real_label } => bce_with_logits(logits, real_label),
            GanLoss::Minimax | GanLoss::NonSaturating => bce_with_logits(logits, 1.0),
            GanLoss::LeastSquares { real_target, .. } => {
                let b = real_target as f64;
                mean_term(logits, "least-squares loss on real samples", |v| {
                    (0.5 * (v - b) * (v - b), v - b)
                })
            }
            GanLoss::Wasserstein => {
                mean_term(logits, "Wasserstein loss on real samples", |v| (-v, -1.0))
            }
            GanLoss::Hinge => mean_term(logits, "hinge loss on real samples", |v| {
                if v < 1.0 {
                    (1.0 - v, -1.0)
                } else {
                    (0.0, 0.0)
                }
            }),
            GanLoss::FGan { divergence, .. } => {
                let what = format!("{} f-GAN loss on real samples", divergence.name());
                mean_term(logits, &what, |v| {
                    let (g, dg) = divergence.activation(v);
                    (-g, -dg)
                })
            }
        }
    }

    /// Computes the discriminator's loss term on real samples with the target `real_label` in
    /// place of 1: one-sided label smoothing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the loss is not a cross-entropy loss (see
    /// [`supports_label_smoothing`](GanLoss::supports_label_smoothing)) or `real_label` is
    /// outside `[0, 1]`; otherwise as [`bce_with_logits`].
    pub fn discriminator_real_smoothed(
        &self,
        logits: &Array4<f32>,
        real_label: f32,
    ) -> Result<LossGrad> {
        if !self.supports_label_smoothing() {
            return Err(Error::invalid(
                "label_smoothing",
                real_label,
                format!(
                    "no label smoothing with the {} loss: it applies to the cross-entropy losses \
                     (minimax, non-saturating)",
                    self.name()
                ),
            ));
        }
        bce_with_logits(logits, real_label)
    }

    /// Computes the discriminator's loss term on generated samples from its logits.
    ///
    /// # Errors
    /// As [`discriminator_real`](GanLoss::discriminator_real).
    pub fn discriminator_fake(&self, logits: &Array4<f32>) -> Result<LossGrad> {
        match *self {
            GanLoss::Bce { .. } | GanLoss::Minimax | GanLoss::NonSaturating => {
                bce_with_logits(logits, 0.0)
            }
            GanLoss::LeastSquares { fake_target, .. } => {
                let a = fake_target as f64;
                mean_term(logits, "least-squares loss on generated samples", |v| {
                    (0.5 * (v - a) * (v - a), v - a)
                })
            }
            GanLoss::Wasserstein => {
                mean_term(logits, "Wasserstein loss on generated samples", |v| (v, 1.0))
            }
            GanLoss::Hinge => mean_term(logits, "hinge loss on generated samples", |v| {
                if v > -1.0 {
                    (1.0 + v, 1.0)
                } else {
                    (0.0, 0.0)
                }
            }),
            GanLoss::FGan { divergence, .. } => {
                let what = format!("{} f-GAN loss on generated samples", divergence.name());
                mean_term(logits, &what, |v| divergence.conjugate_of_activation(v))
            }
        }
    }

    /// Computes the generator's loss from the discriminator's logits on generated samples.
    ///
    /// # Errors
    /// As [`discriminator_real`](GanLoss::discriminator_real).
    pub fn generator(&self, logits: &Array4<f32>) -> Result<LossGrad> {
        match *self {
            GanLoss::Bce { .. } | GanLoss::NonSaturating => bce_with_logits(logits, 1.0),
            GanLoss::Minimax => {
                mean_term(logits, "minimax generator loss", |v| (-softplus(v), -sigmoid(v)))
            }
            GanLoss::LeastSquares { generator_target, .. } => {
                let c = generator_target as f64;
                mean_term(logits, "least-squares generator loss", |v| {
                    (0.5 * (v - c) * (v - c), v - c)
                })
            }
            GanLoss::Wasserstein | GanLoss::Hinge => {
                mean_term(logits, "generator loss", |v| (-v, -1.0))
            }
            GanLoss::FGan { divergence, generator } => {
                let what = format!("{} f-GAN generator loss", divergence.name());
                match generator {
                    FGanGenerator::Alternative => mean_term(logits, &what, |v| {
                        let (g, dg) = divergence.activation(v);
                        (-g, -dg)
                    }),
                    FGanGenerator::Saturating => mean_term(logits, &what, |v| {
                        let (f, df) = divergence.conjugate_of_activation(v);
                        (-f, -df)
                    }),
                }
            }
        }
    }
}

/// Computes the softmax cross-entropy of `logits` (`[n, classes, 1, 1]`) against the class
/// indices `labels`, averaged over the batch, and its gradient `(softmax(x) - onehot) / n`.
///
/// Each sample's loss is `logsumexp(x) - x[label]`, evaluated in `f64` after subtracting the
/// largest logit, so it stays finite for any finite logits (PyTorch's `cross_entropy` with mean
/// reduction).
///
/// # Errors
/// [`Error::InvalidArgument`] for a shape other than `[n, classes, 1, 1]` with `n, classes >= 1`,
/// or a label not below `classes`; [`Error::LengthMismatch`] unless there is one label per
/// sample; [`Error::NonFinite`] for a NaN or infinite logit.
pub fn softmax_cross_entropy(logits: &Array4<f32>, labels: &[usize]) -> Result<LossGrad> {
    let shape = logits.shape();
    let (n, classes) = (shape[0], shape[1]);
    if n == 0 || classes == 0 || shape[2] != 1 || shape[3] != 1 {
        return Err(Error::invalid(
            "logits shape",
            format!("{shape:?}"),
            "[n, classes, 1, 1] with at least one sample and one class",
        ));
    }
    crate::error::check_len("labels", labels.len(), n)?;
    if let Some(i) = labels.iter().position(|&label| label >= classes) {
        return Err(Error::invalid(
            "label",
            labels[i],
            format!("a class index below {classes} (sample {i})"),
        ));
    }
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: format!("logit {i} of the classifier's output") });
    }

    // Per sample: shift by the largest logit, then loss = log(sum exp) - shifted[label].
    let mut loss = 0.0f64;
    let mut grad = Array4::<f32>::zeros([n, classes, 1, 1]);
    for ((row, grad_row), &label) in logits.outer_iter().zip(grad.outer_iter_mut()).zip(labels) {
        let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&v| (v - max).exp()).sum();
        let log_sum = sum.ln();
        loss += log_sum - (row[label] - max);
        for (class, (g, &v)) in grad_row.into_iter().zip(&row).enumerate() {
            let p = (v - max - log_sum).exp();
            let target = if class == label { 1.0 } else { 0.0 };
            *g = ((p - target) / n as f64) as f32;
        }
    }
    Ok(LossGrad { loss: loss / n as f64, grad })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(values: &[f32]) -> Array4<f32> {
        Array4::from_shape_vec([values.len(), 1, 1, 1], values.to_vec()).unwrap()
    }

    #[test]
    fn bce_matches_direct_formula_for_moderate_logits() {
        // -[t ln s + (1 - t) ln(1 - s)] with s = sigmoid(x), safe to evaluate directly here.
        let xs = [-3.0f32, -0.5, 0.0, 0.25, 2.0];
        let t = 0.9f32 as f64;
        let expected: f64 = xs
            .iter()
            .map(|&x| {
                let s = 1.0 / (1.0 + (-(x as f64)).exp());
                -(t * s.ln() + (1.0 - t) * (1.0 - s).ln())
            })
            .sum::<f64>()
            / xs.len() as f64;
        let out = bce_with_logits(&logits(&xs), 0.9).unwrap();
        assert!((out.loss - expected).abs() < 1e-12, "{} vs {expected}", out.loss);
    }

    #[test]
    fn rejects_nan_logit_and_bad_target() {
        assert!(matches!(bce_with_logits(&logits(&[f32::NAN]), 1.0), Err(Error::NonFinite { .. })));
        assert!(bce_with_logits(&logits(&[0.0]), 1.5).is_err());
    }
}
