//! The general training loop: [`GanTrainer::step`] runs `d_steps` discriminator updates, each on
//! a fresh real batch and fresh noise, then one generator update, with the loss, optimisers and
//! tricks of a [`TrainConfig`].
//!
//! One step, in order (every random draw is listed, so a run can be replayed):
//!
//! 1. The instance noise standard deviation for this step, `sigma = std_at(step)`.
//! 2. `d_steps` times: take a real batch from the caller, draw `z` (`n x nz` normals from the
//!    noise stream), generate `fake = G(z)` in training mode, and update D. Zero its gradients.
//!    Forward and back-propagate the real batch (plus `sigma` noise, drawn first) against the
//!    real target (the label-smoothed one when set), then the generated batch (plus its noise)
//!    against the fake target. Add historical averaging's gradient, step D's optimiser, and
//!    clip D's weights.
//! 3. Update G on the generated batch of the last discriminator update (G has not changed
//!    since, as in the PyTorch DCGAN example): zero G's gradients; score `fake` (plus fresh
//!    noise) with the updated D. The gradient of G's loss, or with feature matching of
//!    `||mean f(real) - mean f(fake)||^2` at D's layer `f` on the last real batch (plus fresh
//!    noise, drawn after the generated batch's), flows back through D without forming D's
//!    parameter gradients, then through G. Add historical averaging's gradient; step G's
//!    optimiser.
//!
//! With every trick off, `d_steps` 1, the non-saturating loss and Adam, a step does exactly
//! what [`Trainer::step`](super::Trainer::step) does, bit for bit.
//!
//! With virtual batch normalisation the generator always runs on the reference latent batch
//! (drawn once from `Stream::Setup`) followed by the batch, and only the batch's rows are
//! returned; the backward pass feeds zeros for the reference rows' output, so G's gradients
//! include the path through the reference batch's statistics.

use std::ops::Range;

use ndarray::{concatenate, s, Array4, Axis};

use super::config::{GanOptimizer, TrainConfig};
use super::{check_shape, DiscriminatorStats, GeneratorStats, StepStats};
use crate::error::{Error, Result};
use crate::layers::{recycle, InputGrad, Mode, Network, ParamGrads};
use crate::loss::mean_probability;
use crate::models::DcganConfig;
use crate::optim::Optimizer;
use crate::rng::{Rng, Stream};
use crate::tricks::{
    add_instance_noise, feature_matching_loss, minibatch_discriminator, vbn_generator,
    HistoricalAverage,
};

/// A generator, a discriminator, their optimisers and every trick's state.
#[derive(Debug)]
pub struct GanTrainer {
    pub(super) model: DcganConfig,
    pub(super) config: TrainConfig,
    pub(super) seed: u64,
    pub(super) generator: Network,
    pub(super) discriminator: Network,
    pub(super) g_optimizer: GanOptimizer,
    pub(super) d_optimizer: GanOptimizer,
    pub(super) noise: Rng,
    pub(super) instance_noise: Rng,
    /// Generator updates completed.
    pub(super) step: u64,
    pub(super) g_history: Option<HistoricalAverage>,
    pub(super) d_history: Option<HistoricalAverage>,
    /// The virtual batch normalisation reference batch, `[m, nz, 1, 1]`.
    pub(super) reference_noise: Option<Array4<f32>>,
    /// The layers of D whose output feature matching compares, `0..layer + 1`.
    feature_layers: Option<Range<usize>>,
}

impl GanTrainer {
    /// Creates a trainer for `model` with the settings `config`.
    ///
    /// Both networks are initialised from `Rng::stream(seed, Stream::Init)`, generator first,
    /// so with neither minibatch discrimination nor virtual batch normalisation they equal
    /// [`DcganConfig::build`]'s. The latent noise comes from `Stream::Noise`, instance noise
    /// from `Stream::InstanceNoise`, the reference batch from `Stream::Setup`.
    ///
    /// # Errors
    /// As [`DcganConfig::validate`] and [`TrainConfig::validate`]; [`Error::InvalidArgument`]
    /// for a feature matching layer that is not a hidden layer of the discriminator.
    pub fn new(model: DcganConfig, config: TrainConfig, seed: u64) -> Result<Self> {
        model.validate()?;
        config.validate()?;
        let tricks = &config.tricks;

        let mut init = Rng::stream(seed, Stream::Init);
        let generator = match &tricks.virtual_batch_norm {
            Some(options) => vbn_generator(&model, options.reference_size, &mut init)?,
            None => model.generator(&mut init)?,
        };
        let discriminator = match &tricks.minibatch_discrimination {
            Some(options) => minibatch_discriminator(&model, options, &mut init)?,
            None => model.discriminator(&mut init)?,
        };
        let feature_layers = match &tricks.feature_matching {
            Some(options) => Some(feature_layers(&discriminator, options.layer)?),
            None => None,
        };
        let reference_noise = match tricks.virtual_batch_norm {
            Some(options) => {
                let mut setup = Rng::stream(seed, Stream::Setup);
                Some(setup.standard_normal_tensor(model.noise_shape(options.reference_size))?)
            }
            None => None,
        };
        let history = |net: &Network| {
            tricks.historical_averaging.map(|_| HistoricalAverage::new(net.num_params()))
        };
        Ok(GanTrainer {
            g_optimizer: config.g_optimizer.build(generator.num_params())?,
            d_optimizer: config.d_optimizer.build(discriminator.num_params())?,
            g_history: history(&generator),
            d_history: history(&discriminator),
            model,
            config,
            seed,
            generator,
            discriminator,
            noise: Rng::stream(seed, Stream::Noise),
            instance_noise: Rng::stream(seed, Stream::InstanceNoise),
            step: 0,
            reference_noise,
            feature_layers,
        })
    }

    /// Returns the model sizes.
    pub fn model(&self) -> &DcganConfig {
        &self.model
    }

    /// Returns the training settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Returns the seed the run started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Returns the number of completed steps (generator updates).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Returns the generator. With virtual batch normalisation its input must start with the
    /// reference batch; [`generate`](GanTrainer::generate) handles that.
    pub fn generator(&self) -> &Network {
        &self.generator
    }

    /// Returns the generator, mutable (for loading weights).
    pub fn generator_mut(&mut self) -> &mut Network {
        &mut self.generator
    }

    /// Takes the generator out of the trainer, dropping the rest.
    pub fn into_generator(self) -> Network {
        self.generator
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
    pub fn g_optimizer(&self) -> &GanOptimizer {
        &self.g_optimizer
    }

    /// Returns the discriminator's optimiser.
    pub fn d_optimizer(&self) -> &GanOptimizer {
        &self.d_optimizer
    }

    /// Returns the latent noise stream.
    pub fn noise_rng(&self) -> &Rng {
        &self.noise
    }

    /// Returns the instance noise stream.
    pub fn instance_noise_rng(&self) -> &Rng {
        &self.instance_noise
    }

    /// Returns the historical averages of the generator's and the discriminator's parameters,
    /// when historical averaging is on.
    pub fn histories(&self) -> (Option<&HistoricalAverage>, Option<&HistoricalAverage>) {
        (self.g_history.as_ref(), self.d_history.as_ref())
    }

    /// Returns the virtual batch normalisation reference batch `[m, nz, 1, 1]`, when on.
    pub fn reference_noise(&self) -> Option<&Array4<f32>> {
        self.reference_noise.as_ref()
    }

    /// Returns the discriminator layer whose output feature matching compares, when on.
    pub fn feature_layer(&self) -> Option<usize> {
        self.feature_layers.as_ref().map(|range| range.end - 1)
    }

    /// Returns the instance noise standard deviation of the next step (0 when off).
    pub fn instance_noise_std(&self) -> f32 {
        self.config.tricks.instance_noise.map_or(0.0, |noise| noise.std_at(self.step))
    }

    /// Draws a batch of `n` latent vectors from N(0, 1), `[n, nz, 1, 1]`.
    ///
    /// # Errors
    /// As [`Rng::standard_normal_tensor`], for a batch too large to allocate.
    pub fn sample_noise(&mut self, n: usize) -> Result<Array4<f32>> {
        self.noise.standard_normal_tensor(self.model.noise_shape(n))
    }

    /// Runs the generator on `z` (`[n, nz, 1, 1]`) in `mode`, with the reference batch in
    /// front when virtual batch normalisation is on, and returns the images of `z`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty batch or a shape other than `[n, nz, 1, 1]`; as
    /// [`Network::forward`].
    pub fn generate(&mut self, z: Array4<f32>, mode: Mode) -> Result<Array4<f32>> {
        let n = z.shape()[0];
        if n == 0 {
            return Err(Error::invalid("noise batch size", 0, "at least 1"));
        }
        check_shape("noise shape", z.shape(), self.model.noise_shape(n))?;
        let Some(reference) = &self.reference_noise else {
            return self.generator.forward(z, mode);
        };
        let m = reference.shape()[0];
        let input = concatenate(Axis(0), &[reference.view(), z.view()]).map_err(|e| {
            Error::invalid("noise shape", format!("{:?}", z.shape()), e.to_string())
        })?;
        let images = self.generator.forward(input, mode)?;
        Ok(images.slice_move(s![m.., .., .., ..]))
    }

    /// Back-propagates the gradient w.r.t. the last [`generate`](GanTrainer::generate)'s
    /// output into G's gradients, feeding zeros for the reference rows.
    fn generator_backward(&mut self, dfake: Array4<f32>) -> Result<()> {
        let dy = match &self.reference_noise {
            None => dfake,
            Some(reference) => {
                let mut shape = dfake.raw_dim();
                shape[0] = reference.shape()[0];
                let zeros = Array4::<f32>::zeros(shape);
                concatenate(Axis(0), &[zeros.view(), dfake.view()]).map_err(|e| {
                    Error::invalid(
                        "generator gradient",
                        format!("{:?}", dfake.shape()),
                        e.to_string(),
                    )
                })?
            }
        };
        self.generator.backward(dy, ParamGrads::Accumulate, InputGrad::Skip)?;
        Ok(())
    }

    /// Runs one training step: `d_steps` discriminator updates, each on a batch from
    /// `real_batches` (`[n, channels, image_size, image_size]`, values in `[-1, 1]`) and fresh
    /// noise, then one generator update. The returned discriminator statistics are means over
    /// the `d_steps` updates; `d_fake_after` is from the generator's update.
    ///
    /// An error part-way leaves the step half done; the networks stay usable.
    ///
    /// # Errors
    /// Any error of `real_batches`; [`Error::InvalidArgument`] for an empty batch or one of the
    /// wrong shape; [`Error::NonFinite`] for NaN or infinity in a batch, a logit, a loss or a
    /// gradient.
    pub fn step(
        &mut self,
        mut real_batches: impl FnMut() -> Result<Array4<f32>>,
    ) -> Result<StepStats> {
        let sigma = self.instance_noise_std();
        let d_steps = self.config.d_steps;
        let mut sums = DiscriminatorStats { loss: 0.0, d_real: 0.0, d_fake: 0.0 };
        let mut last = None;
        for _ in 0..d_steps {
            let real = real_batches()?;
            let n = real.shape()[0];
            if n == 0 {
                return Err(Error::invalid("real batch size", 0, "at least 1"));
            }
            check_shape("real batch shape", real.shape(), self.model.image_shape(n))?;
            let z = self.sample_noise(n)?;
            let fake = self.generate(z, Mode::Train)?;
            let kept_real = self.feature_layers.is_some().then(|| real.clone());
            let d = self.discriminator_update(real, recycle::copy_of(&fake), sigma)?;
            sums.loss += d.loss;
            sums.d_real += d.d_real;
            sums.d_fake += d.d_fake;
            last = Some((kept_real, fake));
        }
        let (real, fake) = last.expect("d_steps is at least 1");
        let g = self.generator_update(real, fake, sigma)?;
        self.step += 1;
        let k = d_steps as f64;
        Ok(StepStats {
            d_loss: sums.loss / k,
            g_loss: g.loss,
            d_real: sums.d_real / k,
            d_fake: sums.d_fake / k,
            d_fake_after: g.d_fake,
        })
    }

    /// Updates the discriminator on `real` and `fake`, both treated as constants.
    fn discriminator_update(
        &mut self,
        mut real: Array4<f32>,
        mut fake: Array4<f32>,
        sigma: f32,
    ) -> Result<DiscriminatorStats> {
        let (loss, tricks) = (self.config.loss, self.config.tricks);
        let d = &mut self.discriminator;
        d.zero_grad();

        // Real batch: forward, loss against the (smoothed) real target, backward.
        add_instance_noise(&mut real, sigma, &mut self.instance_noise);
        let logits = d.forward(real, Mode::Train)?;
        let d_real = mean_probability(&logits);
        let real_term = match tricks.label_smoothing {
            Some(label) => loss.discriminator_real_smoothed(&logits, label)?,
            None => loss.discriminator_real(&logits)?,
        };
        d.backward(real_term.grad, ParamGrads::Accumulate, InputGrad::Skip)?;

        // Generated batch: the same, adding to the gradients.
        add_instance_noise(&mut fake, sigma, &mut self.instance_noise);
        let logits = d.forward(fake, Mode::Train)?;
        let d_fake = mean_probability(&logits);
        let fake_term = loss.discriminator_fake(&logits)?;
        d.backward(fake_term.grad, ParamGrads::Accumulate, InputGrad::Skip)?;

        let mut total = real_term.loss + fake_term.loss;
        if let (Some(history), Some(averaging)) = (&mut self.d_history, tricks.historical_averaging)
        {
            let params = d.params().to_vec();
            total += history.apply(&params, d.grads_mut(), averaging.weight)?;
        }
        let (params, grads) = d.params_and_grads_mut();
        self.d_optimizer.step(params, grads)?;
        if let Some(clip) = tricks.weight_clip {
            d.params_mut().iter_mut().for_each(|p| *p = p.clamp(-clip, clip));
        }
        Ok(DiscriminatorStats { loss: total, d_real, d_fake })
    }

    /// Updates the generator through the discriminator's judgement of `fake`, the output of
    /// the generator's last forward pass. `real` is the last real batch, kept only for
    /// feature matching.
    fn generator_update(
        &mut self,
        real: Option<Array4<f32>>,
        mut fake: Array4<f32>,
        sigma: f32,
    ) -> Result<GeneratorStats> {
        self.generator.zero_grad();
        add_instance_noise(&mut fake, sigma, &mut self.instance_noise);
        let d = &mut self.discriminator;
        let missing_grad = || {
            Error::invalid(
                "discriminator input gradient",
                "none returned",
                "the gradient w.r.t. the generated batch",
            )
        };

        let (mut loss, d_fake, dfake) = match self.feature_layers.clone() {
            None => {
                let logits = d.forward(fake, Mode::Train)?;
                let d_fake = mean_probability(&logits);
                let term = self.config.loss.generator(&logits)?;
                let dfake = d.backward(term.grad, ParamGrads::Skip, InputGrad::Compute)?;
                (term.loss, d_fake, dfake.ok_or_else(missing_grad)?)
            }
            Some(layers) => {
                // Real features first, so that the layers cache the generated batch's pass.
                let mut real = real.ok_or_else(|| {
                    Error::invalid("real batch", "none kept", "the last real batch")
                })?;
                add_instance_noise(&mut real, sigma, &mut self.instance_noise);
                let real_features = d.forward_range(layers.clone(), real, Mode::Train)?;
                let fake_features = d.forward_range(layers.clone(), fake, Mode::Train)?;
                let term = feature_matching_loss(&real_features, &fake_features)?;
                // The rest of D only reports D(G(z)); nothing back-propagates through it.
                let logits = d.forward_range(layers.end..d.len(), fake_features, Mode::Train)?;
                let d_fake = mean_probability(&logits);
                let dfake =
                    d.backward_range(layers, term.grad, ParamGrads::Skip, InputGrad::Compute)?;
                (term.loss, d_fake, dfake.ok_or_else(missing_grad)?)
            }
        };
        self.generator_backward(dfake)?;

        let g = &mut self.generator;
        if let (Some(history), Some(averaging)) =
            (&mut self.g_history, self.config.tricks.historical_averaging)
        {
            let params = g.params().to_vec();
            loss += history.apply(&params, g.grads_mut(), averaging.weight)?;
        }
        let (params, grads) = g.params_and_grads_mut();
        self.g_optimizer.step(params, grads)?;
        Ok(GeneratorStats { loss, d_fake })
    }
}

/// Returns the layers `0..layer + 1` of `discriminator` whose output feature matching compares;
/// `None` takes the last hidden layer.
fn feature_layers(discriminator: &Network, layer: Option<usize>) -> Result<Range<usize>> {
    let hidden = discriminator.len() - 1;
    let layer = layer.unwrap_or(hidden - 1);
    if layer >= hidden {
        return Err(Error::invalid(
            "feature_matching.layer",
            layer,
            format!(
                "a hidden layer of the discriminator, 0 to {} (its last layer {hidden} outputs \
                 the logit)",
                hidden - 1
            ),
        ));
    }
    Ok(0..layer + 1)
}
