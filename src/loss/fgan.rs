//! The f-divergences of f-GAN (Nowozin, Cseke and Tomioka 2016, table 2): for each, the output
//! activation `g_f`, which maps a logit `v` into the domain of the convex conjugate `f*`, and
//! the composition `f*(g_f(v))`, each with its derivative in `v`.
//!
//! | divergence | `g_f(v)` | `f*(t)` | `f*(g_f(v))` |
//! | --- | --- | --- | --- |
//! | Kullback-Leibler | `v` | `exp(t - 1)` | `exp(v - 1)` |
//! | reverse KL | `-exp(-v)` | `-1 - log(-t)` | `v - 1` |
//! | Pearson chi-squared | `v` | `t^2 / 4 + t` | `v^2 / 4 + v` |
//! | squared Hellinger | `1 - exp(-v)` | `t / (1 - t)` | `exp(v) - 1` |
//! | Jensen-Shannon | `log 2 - softplus(-v)` | `-log(2 - exp(t))` | `softplus(v) - log 2` |
//!
//! The right column is simplified by hand so that it is evaluated without forming `t`, which
//! keeps it finite where it can be: `f*(g_f(v))` for Jensen-Shannon is
//! `-log(2 - 2 sigmoid(v)) = softplus(v) - log 2`, finite for every logit.

use serde::{Deserialize, Serialize};

use super::{sigmoid, softplus};

/// An f-divergence that an f-GAN minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Divergence {
    /// Kullback-Leibler, `f(u) = u log u`.
    KullbackLeibler,
    /// Reverse Kullback-Leibler, `f(u) = -log u`.
    ReverseKullbackLeibler,
    /// Pearson chi-squared, `f(u) = (u - 1)^2`.
    PearsonChiSquared,
    /// Squared Hellinger, `f(u) = (sqrt(u) - 1)^2`.
    SquaredHellinger,
    /// Jensen-Shannon, `f(u) = -(u + 1) log((1 + u) / 2) + u log u`.
    JensenShannon,
}

/// The generator's loss in an f-GAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FGanGenerator {
    /// Nowozin et al.'s alternative (non-saturating) loss, `-E_fake[g_f(v)]`: the generator
    /// maximises the activation rather than minimising the saddle objective.
    Alternative,
    /// The saddle objective's own generator term, `-E_fake[f*(g_f(v))]`, which saturates when
    /// the discriminator rejects the samples confidently.
    Saturating,
}

impl Divergence {
    /// Every divergence, in the table's order.
    pub const ALL: [Divergence; 5] = [
        Divergence::KullbackLeibler,
        Divergence::ReverseKullbackLeibler,
        Divergence::PearsonChiSquared,
        Divergence::SquaredHellinger,
        Divergence::JensenShannon,
    ];

    /// Returns the short name used in loss names (`kl`, `reverse-kl`, `pearson`, `hellinger`,
    /// `js`).
    pub fn name(&self) -> &'static str {
        match self {
            Divergence::KullbackLeibler => "kl",
            Divergence::ReverseKullbackLeibler => "reverse-kl",
            Divergence::PearsonChiSquared => "pearson",
            Divergence::SquaredHellinger => "hellinger",
            Divergence::JensenShannon => "js",
        }
    }

    /// Returns `(g_f(v), g_f'(v))`.
    pub fn activation(&self, v: f64) -> (f64, f64) {
        match self {
            Divergence::KullbackLeibler | Divergence::PearsonChiSquared => (v, 1.0),
            Divergence::ReverseKullbackLeibler => {
                let e = (-v).exp();
                (-e, e)
            }
            Divergence::SquaredHellinger => {
                let e = (-v).exp();
                (1.0 - e, e)
            }
            Divergence::JensenShannon => (std::f64::consts::LN_2 - softplus(-v), sigmoid(-v)),
        }
    }

    /// Returns `(f*(g_f(v)), d/dv f*(g_f(v)))`.
    pub fn conjugate_of_activation(&self, v: f64) -> (f64, f64) {
        match self {
            Divergence::KullbackLeibler => {
                let e = (v - 1.0).exp();
                (e, e)
            }
            Divergence::ReverseKullbackLeibler => (v - 1.0, 1.0),
            Divergence::PearsonChiSquared => (0.25 * v * v + v, 0.5 * v + 1.0),
            Divergence::SquaredHellinger => {
                let e = v.exp();
                (e - 1.0, e)
            }
            Divergence::JensenShannon => (softplus(v) - std::f64::consts::LN_2, sigmoid(v)),
        }
    }
}
