//! Settings of [`GanTrainer`](super::GanTrainer): the loss, the schedule, both optimisers and
//! the tricks, in one serde-serialisable value that a run records with its checkpoints.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loss::GanLoss;
use crate::optim::{
    Adam, AdamConfig, AdamState, Optimizer, RmsProp, RmsPropConfig, RmsPropState, Sgd, SgdConfig,
    SgdState,
};
use crate::tricks::{
    FeatureMatching, HistoricalAveraging, InstanceNoise, MinibatchDiscriminationOptions,
    VirtualBatchNormOptions,
};

/// An optimiser and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerConfig {
    /// Adam.
    Adam(AdamConfig),
    /// RMSProp.
    RmsProp(RmsPropConfig),
    /// SGD with momentum.
    Sgd(SgdConfig),
}

impl OptimizerConfig {
    /// Checks the hyper-parameters.
    ///
    /// # Errors
    /// As the optimiser's own `validate`.
    pub fn validate(&self) -> Result<()> {
        match self {
            OptimizerConfig::Adam(c) => c.validate(),
            OptimizerConfig::RmsProp(c) => c.validate(),
            OptimizerConfig::Sgd(c) => c.validate(),
        }
    }

    /// Returns the learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Adam(c) => c.lr,
            OptimizerConfig::RmsProp(c) => c.lr,
            OptimizerConfig::Sgd(c) => c.lr,
        }
    }

    /// Builds the optimiser for `len` parameters, with empty state.
    ///
    /// # Errors
    /// As [`validate`](OptimizerConfig::validate).
    pub fn build(&self, len: usize) -> Result<GanOptimizer> {
        Ok(match *self {
            OptimizerConfig::Adam(c) => GanOptimizer::Adam(Adam::new(len, c)?),
            OptimizerConfig::RmsProp(c) => GanOptimizer::RmsProp(RmsProp::new(len, c)?),
            OptimizerConfig::Sgd(c) => GanOptimizer::Sgd(Sgd::new(len, c)?),
        })
    }
}

/// One of the crate's optimisers.
#[derive(Clone, Debug)]
pub enum GanOptimizer {
    /// Adam.
    Adam(Adam),
    /// RMSProp.
    RmsProp(RmsProp),
    /// SGD with momentum.
    Sgd(Sgd),
}

/// The state of a [`GanOptimizer`], for checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerState {
    /// Adam's step count and moments.
    Adam(AdamState),
    /// RMSProp's step count, squared-gradient average and momentum buffer.
    RmsProp(RmsPropState),
    /// SGD's step count and momentum buffer.
    Sgd(SgdState),
}

impl GanOptimizer {
    /// Returns a copy of the state.
    pub fn state(&self) -> OptimizerState {
        match self {
            GanOptimizer::Adam(o) => OptimizerState::Adam(o.state().clone()),
            GanOptimizer::RmsProp(o) => OptimizerState::RmsProp(o.state().clone()),
            GanOptimizer::Sgd(o) => OptimizerState::Sgd(o.state().clone()),
        }
    }

    /// Replaces the state.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the state belongs to another optimiser; otherwise as
    /// the optimiser's own `set_state`.
    pub fn set_state(&mut self, state: OptimizerState) -> Result<()> {
        match (self, state) {
            (GanOptimizer::Adam(o), OptimizerState::Adam(s)) => o.set_state(s),
            (GanOptimizer::RmsProp(o), OptimizerState::RmsProp(s)) => o.set_state(s),
            (GanOptimizer::Sgd(o), OptimizerState::Sgd(s)) => o.set_state(s),
            (o, s) => Err(Error::invalid(
                "optimiser state",
                format!("a state of {}", variant_name(&s)),
                format!("a state of {}", o.name()),
            )),
        }
    }

    /// Returns the optimiser's name (`Adam`, `RMSProp`, `SGD`).
    pub fn name(&self) -> &'static str {
        match self {
            GanOptimizer::Adam(_) => "Adam",
            GanOptimizer::RmsProp(_) => "RMSProp",
            GanOptimizer::Sgd(_) => "SGD",
        }
    }
}

fn variant_name(state: &OptimizerState) -> &'static str {
    match state {
        OptimizerState::Adam(_) => "Adam",
        OptimizerState::RmsProp(_) => "RMSProp",
        OptimizerState::Sgd(_) => "SGD",
    }
}

impl Optimizer for GanOptimizer {
    fn step(&mut self, params: &mut [f32], grads: &[f32]) -> Result<()> {
        match self {
            GanOptimizer::Adam(o) => o.step(params, grads),
            GanOptimizer::RmsProp(o) => o.step(params, grads),
            GanOptimizer::Sgd(o) => o.step(params, grads),
        }
    }
}

/// The tricks, each off (`None`) by default. Field names match the flags of
/// `examples/tricks_mnist.rs` (`label_smoothing` is `--label-smoothing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tricks {
    /// One-sided label smoothing: the discriminator's target for real samples, in (0, 1]
    /// (0.9 is usual); generated samples keep target 0. Cross-entropy losses only.
    pub label_smoothing: Option<f32>,
    /// Annealed Gaussian noise on the discriminator's real and generated inputs.
    pub instance_noise: Option<InstanceNoise>,
    /// The generator matches a discriminator layer's mean activations instead of its loss.
    pub feature_matching: Option<FeatureMatching>,
    /// A minibatch discrimination layer before the discriminator's output.
    pub minibatch_discrimination: Option<MinibatchDiscriminationOptions>,
    /// A penalty pulling each player's parameters towards their running mean.
    pub historical_averaging: Option<HistoricalAveraging>,
    /// Virtual batch normalisation in place of the generator's BatchNorm.
    pub virtual_batch_norm: Option<VirtualBatchNormOptions>,
    /// Clips every discriminator parameter to `[-c, c]` after each of its updates (WGAN).
    pub weight_clip: Option<f32>,
}

/// The maximum number of discriminator steps per generator step that
/// [`TrainConfig::validate`] accepts, 20 times WGAN's 5. Each discriminator step takes its own real batch, so an epoch of `b`
/// batches makes only `b / d_steps` generator updates.
pub const MAX_D_STEPS: usize = 100;

/// Everything that defines a training run besides the model sizes and the seed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The GAN objective.
    pub loss: GanLoss,
    /// Discriminator (critic) updates per generator update, each on a fresh real batch and
    /// fresh noise (`k` in Goodfellow et al.'s algorithm 1, `n_critic` in WGAN).
    pub d_steps: usize,
    /// The generator's optimiser.
    pub g_optimizer: OptimizerConfig,
    /// The discriminator's optimiser.
    pub d_optimizer: OptimizerConfig,
    /// The tricks.
    pub tricks: Tricks,
}

impl Default for TrainConfig {
    /// Returns the DCGAN paper's settings: the non-saturating loss, one discriminator step per
    /// generator step, Adam with lr 2e-4 and betas (0.5, 0.999) for both, no tricks.
    fn default() -> Self {
        TrainConfig {
            loss: GanLoss::NonSaturating,
            d_steps: 1,
            g_optimizer: OptimizerConfig::Adam(AdamConfig::dcgan()),
            d_optimizer: OptimizerConfig::Adam(AdamConfig::dcgan()),
            tricks: Tricks::default(),
        }
    }
}

impl TrainConfig {
    /// Returns the WGAN paper's settings (Arjovsky et al. 2017, algorithm 1): the Wasserstein
    /// loss, 5 critic steps per generator step, weights clipped to `[-0.01, 0.01]`, and RMSProp
    /// with lr 5e-5 for both players.
    pub fn wgan() -> Self {
        let rmsprop = OptimizerConfig::RmsProp(RmsPropConfig { lr: 5e-5, ..Default::default() });
        TrainConfig {
            loss: GanLoss::Wasserstein,
            d_steps: 5,
            g_optimizer: rmsprop,
            d_optimizer: rmsprop,
            tricks: Tricks { weight_clip: Some(0.01), ..Tricks::default() },
        }
    }

    /// Checks every setting that does not depend on the networks. The feature matching
    /// layer is checked against the discriminator when the trainer is built.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the setting. It rejects `d_steps` outside
    /// `1..=MAX_D_STEPS`, a label smoothing value outside (0, 1] or with a loss that has no
    /// cross-entropy target, and a negative noise standard deviation. It also rejects
    /// minibatch discrimination and virtual batch normalisation sizes outside their ranges
    /// ([`MinibatchDiscriminationOptions::validate`], [`VirtualBatchNormOptions::validate`]),
    /// and a non-positive historical averaging weight or weight clip. So is anything that the loss or
    /// the optimisers reject.
    pub fn validate(&self) -> Result<()> {
        self.loss.validate()?;
        if !(1..=MAX_D_STEPS).contains(&self.d_steps) {
            return Err(Error::invalid(
                "d_steps",
                self.d_steps,
                format!("1 to {MAX_D_STEPS} discriminator steps per generator step"),
            ));
        }
        self.g_optimizer.validate()?;
        self.d_optimizer.validate()?;

        // Tricks.
        let t = &self.tricks;
        if let Some(label) = t.label_smoothing {
            if !(label > 0.0 && label <= 1.0) {
                return Err(Error::invalid("label_smoothing", label, "a number in (0, 1]"));
            }
            if !self.loss.supports_label_smoothing() {
                return Err(Error::invalid(
                    "label_smoothing",
                    label,
                    format!(
                        "no label smoothing with the {} loss: it needs a cross-entropy loss \
                         (minimax or non-saturating)",
                        self.loss.name()
                    ),
                ));
            }
            if let GanLoss::Bce { real_label } = self.loss {
                if real_label != 1.0 {
                    return Err(Error::invalid(
                        "label_smoothing",
                        label,
                        format!(
                            "unset, because the loss already sets real_label = {real_label}; \
                             set one of the two"
                        ),
                    ));
                }
            }
        }

        if let Some(noise) = &t.instance_noise {
            noise.validate()?;
        }
        if let Some(options) = &t.minibatch_discrimination {
            options.validate()?;
        }
        if let Some(averaging) = &t.historical_averaging {
            averaging.validate()?;
        }
        if let Some(options) = &t.virtual_batch_norm {
            options.validate()?;
        }
        if let Some(clip) = t.weight_clip {
            if !(clip.is_finite() && clip > 0.0) {
                return Err(Error::invalid("weight_clip", clip, "a finite number above 0"));
            }
        }
        Ok(())
    }
}
