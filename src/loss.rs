//! GAN losses on the discriminator's logits, with their gradients.
//!
//! [`bce_with_logits`] is PyTorch's `binary_cross_entropy_with_logits` with mean reduction,
//! evaluated per element as `max(x, 0) - x t + log1p(exp(-|x|))`, which stays finite for any
//! finite logit (no `exp` of a positive argument). Its gradient is `(sigmoid(x) - t) / n`.
//! The loss accumulates in `f64`.
//!
//! [`GanLoss`] groups the terms of one GAN objective: the discriminator's loss on real and on
//! generated samples, and the generator's loss.

use ndarray::Array4;

use crate::error::{Error, Result};

/// A loss value and its gradient w.r.t. the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct LossGrad {
    /// The loss, accumulated in `f64`.
    pub loss: f64,
    /// `d loss / d logits`, shaped like the logits.
    pub grad: Array4<f32>,
}

/// Computes the logistic function in `f64` without overflow.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
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
/// the generator minimises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GanLoss {
    /// The DCGAN objective with the non-saturating generator loss:
    /// the discriminator minimises `BCE(D(x), real_label) + BCE(D(G(z)), 0)` and the generator
    /// `BCE(D(G(z)), 1)`. A `real_label` below 1 (0.9) is one-sided label smoothing.
    Bce {
        /// The target for real samples in the discriminator's loss.
        real_label: f32,
    },
}

impl Default for GanLoss {
    fn default() -> Self {
        GanLoss::Bce { real_label: 1.0 }
    }
}

impl GanLoss {
    /// Checks the loss's options.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a label outside `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            GanLoss::Bce { real_label } => {
                if !(0.0..=1.0).contains(&real_label) {
                    return Err(Error::invalid("real_label", real_label, "a number in [0, 1]"));
                }
            }
        }
        Ok(())
    }

    /// Computes the discriminator's loss term on real samples from its logits.
    ///
    /// # Errors
    /// As [`bce_with_logits`].
    pub fn discriminator_real(&self, logits: &Array4<f32>) -> Result<LossGrad> {
        match *self {
            GanLoss::Bce { real_label } => bce_with_logits(logits, real_label),
        }
    }

    /// Computes the discriminator's loss term on generated samples from its logits.
    ///
    /// # Errors
    /// As [`bce_with_logits`].
    pub fn discriminator_fake(&self, logits: &Array4<f32>) -> Result<LossGrad> {
        match *self {
            GanLoss::Bce { .. } => bce_with_logits(logits, 0.0),
        }
    }

    /// Computes the generator's loss from the discriminator's logits on generated samples.
    ///
    /// # Errors
    /// As [`bce_with_logits`].
    pub fn generator(&self, logits: &Array4<f32>) -> Result<LossGrad> {
        match *self {
            GanLoss::Bce { .. } => bce_with_logits(logits, 1.0),
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
