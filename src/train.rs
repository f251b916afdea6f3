//! One GAN training step, as the PyTorch DCGAN example takes it.
//!
//! [`Trainer::step`] draws `z` from the noise stream, generates `fake = G(z)` in training mode,
//! then:
//!
//! 1. Discriminator step: zero D's gradients, then score `D(real)` against the real target and
//!    `D(fake)` against the fake target. Each forward pass is followed at once by its backward
//!    pass into D's gradients, because the layers cache one forward pass at a time. Adam
//!    updates D.
//! 2. Generator step: zero G's gradients, then score `D(fake)` with the updated D against the
//!    generator's target. The gradient flows back through D without forming D's weight
//!    gradients, then through G into G's gradients. Adam updates G.
//!
//! The two halves are public ([`Trainer::discriminator_step`], [`Trainer::generator_step`]) so
//! that schedules with several discriminator steps per generator step can be built from them.
//!
//! [`GanTrainer`] is the general loop: any [`GanLoss`], several discriminator steps per
//! generator step, Adam, RMSProp or SGD, and the tricks of [`crate::tricks`], all set by one
//! [`TrainConfig`]. With its defaults it takes the same steps as [`Trainer`], bit for bit.

mod config;
mod gan;
mod state;

pub use config::{GanOptimizer, OptimizerConfig, OptimizerState, TrainConfig, Tricks, MAX_D_STEPS};
pub use gan::GanTrainer;

use ndarray::Array4;

use crate::error::{Error, Result};
use crate::layers::{recycle, InputGrad, Mode, Network, ParamGrads};
use crate::loss::{mean_probability, GanLoss};
use crate::models::DcganConfig;
use crate::optim::{Adam, AdamConfig, Optimizer};
use crate::rng::{Rng, Stream};

/// Losses and discriminator outputs of one training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// The discriminator's loss, real term plus fake term.
    pub d_loss: f64,
    /// The generator's loss.
    pub g_loss: f64,
    /// Mean of `sigmoid(D(x))` over the real batch.
    pub d_real: f64,
    /// Mean of `sigmoid(D(G(z)))` before the discriminator's update.
    pub d_fake: f64,
    /// Mean of `sigmoid(D(G(z)))` after the discriminator's update (the generator's step).
    pub d_fake_after: f64,
}

/// Loss and outputs of one discriminator step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiscriminatorStats {
    /// Real term plus fake term of the discriminator's loss.
    pub loss: f64,
    /// Mean of `sigmoid(D(x))` over the real batch.
    pub d_real: f64,
    /// Mean of `sigmoid(D(G(z)))`.
    pub d_fake: f64,
}

/// Loss and discriminator output of one generator step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeneratorStats {
    /// The generator's loss.
    pub loss: f64,
    /// Mean of `sigmoid(D(G(z)))`.
    pub d_fake: f64,
}

/// A generator, a discriminator, their Adam optimisers, the loss and the noise stream.
#[derive(Debug)]
pub struct Trainer {
    config: DcganConfig,
    generator: Network,
    discriminator: Network,
    g_optimizer: Adam,
    d_optimizer: Adam,
    loss: GanLoss,
    noise: Rng,
}

fn check_shape(what: &'static str, actual: &[usize], expected: [usize; 4]) -> Result<()> {
    if actual != expected {
        return Err(Error::invalid(what, format!("{actual:?}"), format!("{expected:?}")));
    }
    Ok(())
}

impl Trainer {
    /// Creates a DCGAN trainer. The networks come from [`DcganConfig::build`] with `seed`, both
    /// optimisers are Adam with the DCGAN settings (lr 2e-4, betas (0.5, 0.999)), and the noise
    /// comes from `Rng::stream(seed, Stream::Noise)`.
    ///
    /// # Errors
    /// As [`DcganConfig::validate`] and [`GanLoss::validate`].
    pub fn new(config: DcganConfig, seed: u64, loss: GanLoss) -> Result<Self> {
        let (generator, discriminator) = config.build(seed)?;
        let g_optimizer = Adam::new(generator.num_params(), AdamConfig::dcgan())?;
        let d_optimizer = Adam::new(discriminator.num_params(), AdamConfig::dcgan())?;
        let noise = Rng::stream(seed, Stream::Noise);
        Trainer::from_parts(config, generator, discriminator, g_optimizer, d_optimizer, loss, noise)
    }

    /// Creates a trainer from existing parts, for resuming a run.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the generator does not map `config`'s noise shape to its
    /// image shape, the discriminator does not map images to one logit per sample, or the loss
    /// is invalid. [`Error::LengthMismatch`] when an optimiser's length differs from its
    /// network's parameter count.
    pub fn from_parts(
        config: DcganConfig,
        generator: Network,
        discriminator: Network,
        g_optimizer: Adam,
        d_optimizer: Adam,
        loss: GanLoss,
        noise: Rng,
    ) -> Result<Self> {
        config.validate()?;
        loss.validate()?;
        check_shape(
            "generator output shape",
            &generator.output_shape(config.noise_shape(2))?,
            config.image_shape(2),
        )?;
        check_shape(
            "discriminator output shape",
            &discriminator.output_shape(config.image_shape(2))?,
            [2, 1, 1, 1],
        )?;
        crate::error::check_len(
            "generator optimiser state",
            g_optimizer.state().exp_avg.len(),
            generator.num_params(),
        )?;
        crate::error::check_len(
            "discriminator optimiser state",
            d_optimizer.state().exp_avg.len(),
            discriminator.num_params(),
        )?;
        Ok(Trainer { config, generator, discriminator, g_optimizer, d_optimizer, loss, noise })
    }

    /// Returns the model sizes.
    pub fn config(&self) -> &DcganConfig {
        &self.config
    }

    /// Returns the generator.
    pub fn generator(&self) -> &Network {
        &self.generator
    }

    /// Returns the generator, mutable (for loading weights or sampling in evaluation mode).
    pub fn generator_mut(&mut self) -> &mut Network {
        &mut self.generator
    }

    /// Returns the discriminator.
    pub fn discriminator(&self) -> &Network {
        &self.discriminator
    }

    /// Returns the discriminator, mutable.
    pub fn discriminator_mut(&mut self) -> &mut Network {
        &mut self.discriminator
    }

    /// Returns the generator's optimiser.
    pub fn g_optimizer(&self) -> &Adam {
        &self.g_optimizer
    }

    /// Returns the generator's optimiser, mutable (for restoring its state).
    pub fn g_optimizer_mut(&mut self) -> &mut Adam {
        &mut self.g_optimizer
    }

    /// Returns the discriminator's optimiser.
    pub fn d_optimizer(&self) -> &Adam {
        &self.d_optimizer
    }

    /// Returns the discriminator's optimiser, mutable (for restoring its state).
    pub fn d_optimizer_mut(&mut self) -> &mut Adam {
        &mut self.d_optimizer
    }

    /// Returns the loss.
    pub fn loss(&self) -> &GanLoss {
        &self.loss
    }

    /// Returns the noise stream, for saving a run's state.
    pub fn noise_rng(&self) -> &Rng {
        &self.noise
    }

    /// Replaces the noise stream, for restoring a run's state.
    pub fn set_noise_rng(&mut self, noise: Rng) {
        self.noise = noise;
    }

    /// Draws a batch of `n` latent vectors from N(0, 1), `[n, nz, 1, 1]`.
    ///
    /// # Errors
    /// As [`Rng::standard_normal_tensor`], for a batch too large to allocate.
    pub fn sample_noise(&mut self, n: usize) -> Result<Array4<f32>> {
        self.noise.standard_normal_tensor(self.config.noise_shape(n))
    }

    /// Runs one training step on the batch `real` (`[n, channels, image_size, image_size]`, values
    /// in `[-1, 1]`), with fresh noise.
    ///
    /// # Errors
    /// As [`step_with_noise`](Trainer::step_with_noise).
    pub fn step(&mut self, real: Array4<f32>) -> Result<StepStats> {
        let z = self.sample_noise(real.shape()[0])?;
        self.step_with_noise(real, z)
    }

    /// Runs one training step on `real` with the latent batch `z` (`[n, nz, 1, 1]`).
    ///
    /// An error part-way leaves the step half done (a discriminator update without the
    /// generator's); the networks stay usable.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty batch or a batch or noise of the wrong shape;
    /// [`Error::NonFinite`] for NaN or infinity in the inputs, a logit or a gradient.
    pub fn step_with_noise(&mut self, real: Array4<f32>, z: Array4<f32>) -> Result<StepStats> {
        let n = real.shape()[0];
        check_shape("real batch shape", real.shape(), self.config.image_shape(n))?;
        check_shape("noise shape", z.shape(), self.config.noise_shape(n))?;

        let fake = self.generator.forward(z, Mode::Train)?;
        let d = self.discriminator_step(real, recycle::copy_of(&fake))?;
        let g = self.generator_step(fake)?;
        Ok(StepStats {
            d_loss: d.loss,
            g_loss: g.loss,
            d_real: d.d_real,
            d_fake: d.d_fake,
            d_fake_after: g.d_fake,
        })
    }

    /// Updates the discriminator on `real` and `fake` (treated as constants: nothing reaches
    /// the generator).
    ///
    /// # Errors
    /// As [`step_with_noise`](Trainer::step_with_noise).
    pub fn discriminator_step(
        &mut self,
        real: Array4<f32>,
        fake: Array4<f32>,
    ) -> Result<DiscriminatorStats> {
        let d = &mut self.discriminator;
        d.zero_grad();

        // Real batch: forward, loss, backward into D's gradients.
        let logits = d.forward(real, Mode::Train)?;
        let d_real = mean_probability(&logits);
        let real_term = self.loss.discriminator_real(&logits)?;
        d.backward(real_term.grad, ParamGrads::Accumulate, InputGrad::Skip)?;

        // Generated batch: the same, adding to the gradients.
        let logits = d.forward(fake, Mode::Train)?;
        let d_fake = mean_probability(&logits);
        let fake_term = self.loss.discriminator_fake(&logits)?;
        d.backward(fake_term.grad, ParamGrads::Accumulate, InputGrad::Skip)?;

        let (params, grads) = d.params_and_grads_mut();
        self.d_optimizer.step(params, grads)?;
        Ok(DiscriminatorStats { loss: real_term.loss + fake_term.loss, d_real, d_fake })
    }

    /// Updates the generator through the discriminator's judgement of `fake`, which must be
    /// the output of the generator's last forward pass (its layers back-propagate from their
    /// cached activations).
    ///
    /// # Errors
    /// As [`step_with_noise`](Trainer::step_with_noise).
    pub fn generator_step(&mut self, fake: Array4<f32>) -> Result<GeneratorStats> {
        self.generator.zero_grad();
        let logits = self.discriminator.forward(fake, Mode::Train)?;
        let d_fake = mean_probability(&logits);
        let term = self.loss.generator(&logits)?;
        let dfake = self
            .discriminator
            .backward(term.grad, ParamGrads::Skip, InputGrad::Compute)?
            .expect("input gradient requested");
        self.generator.backward(dfake, ParamGrads::Accumulate, InputGrad::Skip)?;
        let (params, grads) = self.generator.params_and_grads_mut();
        self.g_optimizer.step(params, grads)?;
        Ok(GeneratorStats { loss: term.loss, d_fake })
    }
}
