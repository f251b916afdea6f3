//! Instance noise (Sønderby et al. 2017; Arjovsky and Bottou 2017): Gaussian noise added to
//! every input of the discriminator, real and generated alike, so that the two distributions
//! overlap early in training. Its standard deviation is annealed to zero.

use ndarray::Array4;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// The decay of the noise's standard deviation from `std` at step 0 to 0 at `anneal_steps`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum NoiseSchedule {
    /// `std * (1 - t / anneal_steps)`.
    Linear,
    /// `std * final_fraction^(t / anneal_steps)`: geometric decay that reaches
    /// `std * final_fraction` just before `anneal_steps`, where the noise stops.
    Exponential {
        /// The fraction of `std` left at the end of the schedule, in (0, 1).
        final_fraction: f32,
    },
}

/// Settings of instance noise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceNoise {
    /// Standard deviation at step 0, in the units of the images (which lie in [-1, 1]).
    pub std: f32,
    /// Generator steps after which the noise is off.
    pub anneal_steps: u64,
    /// The decay from `std` to 0.
    pub schedule: NoiseSchedule,
}

impl InstanceNoise {
    /// Returns linearly annealed noise: `std` at step 0, zero from `anneal_steps` on.
    pub fn linear(std: f32, anneal_steps: u64) -> Self {
        InstanceNoise { std, anneal_steps, schedule: NoiseSchedule::Linear }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative or non-finite `std`, zero `anneal_steps`, or a
    /// `final_fraction` outside (0, 1).
    pub fn validate(&self) -> Result<()> {
        if !(self.std.is_finite() && self.std >= 0.0) {
            return Err(Error::invalid("instance_noise.std", self.std, "a finite number >= 0"));
        }
        if self.anneal_steps == 0 {
            return Err(Error::invalid("instance_noise.anneal_steps", 0, "at least 1"));
        }
        if let NoiseSchedule::Exponential { final_fraction } = self.schedule {
            if !(final_fraction > 0.0 && final_fraction < 1.0) {
                return Err(Error::invalid(
                    "instance_noise.final_fraction",
                    final_fraction,
                    "a number in (0, 1)",
                ));
            }
        }
        Ok(())
    }

    /// Returns the standard deviation at generator step `step` (0 for the first step).
    pub fn std_at(&self, step: u64) -> f32 {
        if step >= self.anneal_steps {
            return 0.0;
        }
        let progress = step as f64 / self.anneal_steps as f64;
        let factor = match self.schedule {
            NoiseSchedule::Linear => 1.0 - progress,
            NoiseSchedule::Exponential { final_fraction } => (final_fraction as f64).powf(progress),
        };
        (self.std as f64 * factor) as f32
    }
}

/// Adds `N(0, std^2)` noise to every element of `x`, drawn in order from `rng`. Nothing is
/// drawn when `std` is 0.
pub fn add_instance_noise(x: &mut Array4<f32>, std: f32, rng: &mut Rng) {
    if std == 0.0 {
        return;
    }
    for v in x.iter_mut() {
        *v += rng.normal(0.0, std);
    }
}
