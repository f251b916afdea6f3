//! Feature matching (Salimans et al. 2016, section 3.1): the generator matches the mean of an
//! intermediate discriminator layer's activations on real data instead of maximising the
//! discriminator's output:
//!
//! ```text
//! L = || mean_i f(x_i) - mean_i f(G(z_i)) ||_2^2
//! dL / df(G(z_i)) = -2 (mean f(x) - mean f(G(z))) / n
//! ```
//!
//! The real features are constants. The trainer back-propagates the gradient through the
//! discriminator's lower layers without forming their parameter gradients, then through the
//! generator.

use ndarray::Array4;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loss::LossGrad;

/// Settings of feature matching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureMatching {
    /// Index of the discriminator layer whose output is matched; `None` takes the last hidden
    /// layer (the input of the final layer).
    pub layer: Option<usize>,
}

/// Computes the per-feature batch mean of `x` (`[n, ...]`) in `f64`, summing samples in order.
fn batch_mean(x: &Array4<f32>) -> Vec<f64> {
    let n = x.shape()[0];
    let width = x.len() / n;
    let mut mean = vec![0.0f64; width];
    for sample in x.as_standard_layout().as_slice().expect("standard layout").chunks(width) {
        for (m, &v) in mean.iter_mut().zip(sample) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    mean
}

/// Computes the feature matching loss and its gradient w.r.t. `fake_features`.
///
/// `real_features` and `fake_features` are one layer's outputs on a real and a generated batch;
/// the batch sizes may differ, the per-sample shapes may not.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty batch or per-sample shapes that differ.
pub fn feature_matching_loss(
    real_features: &Array4<f32>,
    fake_features: &Array4<f32>,
) -> Result<LossGrad> {
    let (real_shape, fake_shape) = (real_features.shape(), fake_features.shape());
    if real_shape[0] == 0 || fake_shape[0] == 0 {
        return Err(Error::invalid(
            "feature batch size",
            format!("{} real, {} generated", real_shape[0], fake_shape[0]),
            "at least one sample of each",
        ));
    }
    if real_shape[1..] != fake_shape[1..] {
        return Err(Error::invalid(
            "generated feature shape",
            format!("{fake_shape:?}"),
            format!("[n, {:?}] as the real features", &real_shape[1..]),
        ));
    }
    let (real_mean, fake_mean) = (batch_mean(real_features), batch_mean(fake_features));
    let diff: Vec<f64> = real_mean.iter().zip(&fake_mean).map(|(r, f)| r - f).collect();
    let loss = diff.iter().map(|d| d * d).sum();

    let n = fake_shape[0] as f64;
    let per_sample: Vec<f32> = diff.iter().map(|d| (-2.0 * d / n) as f32).collect();
    let mut grad = Array4::<f32>::zeros(fake_features.raw_dim());
    for sample in grad.as_slice_mut().expect("standard layout").chunks_mut(per_sample.len()) {
        sample.copy_from_slice(&per_sample);
    }
    Ok(LossGrad { loss, grad })
}
