//! Historical averaging (Salimans et al. 2016, section 3.3): each player's cost gets the term
//! `lambda * ||theta - theta_avg||^2`, with `theta_avg` the running mean of the player's
//! parameters over its updates so far. The mean is a constant of the cost, so the term adds
//! `2 lambda (theta - theta_avg)` to the gradient.
//!
//! At each update the current parameters join the mean first (so the first update has no
//! penalty), then the term is added. The mean is kept in `f32`, updated per element as
//! `avg += (theta - avg) / count` in `f64` and rounded once, so a checkpoint stores it exactly.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{check_len, Error, Result};

/// Elements per parallel chunk; the penalty's partial sums are added in chunk order.
const CHUNK: usize = 1 << 14;

/// Settings of historical averaging.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoricalAveraging {
    /// The weight `lambda` of the penalty, above 0.
    pub weight: f64,
}

impl HistoricalAveraging {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `weight` is finite and above 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(Error::invalid(
                "historical_averaging.weight",
                self.weight,
                "a finite number above 0",
            ));
        }
        Ok(())
    }
}

/// The running mean of one player's parameters: the trick's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoricalAverage {
    /// Number of parameter vectors averaged so far.
    pub count: u64,
    /// The mean, one value per parameter.
    pub average: Vec<f32>,
}

impl HistoricalAverage {
    /// Creates an empty average over `len` parameters.
    pub fn new(len: usize) -> Self {
        HistoricalAverage { count: 0, average: vec![0.0; len] }
    }

    /// Adds `params` to the mean, then adds `2 weight (params - mean)` to `grads` and returns
    /// the penalty `weight * ||params - mean||^2`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `params` or `grads` does not have the average's length.
    pub fn apply(&mut self, params: &[f32], grads: &mut [f32], weight: f64) -> Result<f64> {
        check_len("parameters", params.len(), self.average.len())?;
        check_len("gradients", grads.len(), self.average.len())?;
        self.count += 1;
        let count = self.count as f64;
        let partial: Vec<f64> = self
            .average
            .par_chunks_mut(CHUNK)
            .zip(params.par_chunks(CHUNK))
            .zip(grads.par_chunks_mut(CHUNK))
            .map(|((avg, p), g)| {
                let mut sum = 0.0f64;
                for ((a, &p), g) in avg.iter_mut().zip(p).zip(g) {
                    *a = (*a as f64 + (p as f64 - *a as f64) / count) as f32;
                    let d = p as f64 - *a as f64;
                    *g = (*g as f64 + 2.0 * weight * d) as f32;
                    sum += d * d;
                }
                sum
            })
            .collect();
        Ok(weight * partial.iter().sum::<f64>())
    }

    /// Replaces the state after checking its length.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for a wrong length; [`Error::NonFinite`] for NaN or infinity.
    pub fn restore(&mut self, state: HistoricalAverage) -> Result<()> {
        check_len("historical average", state.average.len(), self.average.len())?;
        if state.average.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: "historical average".into() });
        }
        *self = state;
        Ok(())
    }
}
