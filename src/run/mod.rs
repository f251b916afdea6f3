//! A training run on MNIST digits: its settings, its complete state, and its per-step metrics.
//!
//! [`TrainingRun`] bundles a [`GanTrainer`] (with the loss, schedule, optimisers and tricks of
//! [`RunSettings::train`]), the [`Batcher`] that orders the digits, and a fixed latent batch
//! from which every sample grid of the run is drawn. [`TrainingRun::to_checkpoint`] stores
//! everything the next step reads: both networks' parameters and BatchNorm running statistics,
//! both optimisers' states, the trick state, the random streams, the data order and the step
//! count. [`TrainingRun::from_checkpoint`] restores it, so a run stopped after step `k` and
//! resumed takes the same steps, bit for bit, as one that never stopped.
//! The layout of the checkpoint is described in [`TrainingRun::to_checkpoint`].
//!
//! The per-step losses are kept as [`MetricsRow`]s; [`metrics`] writes them as CSV and as a
//! loss plot, and [`RunFolder`] lays out a run's files.

pub mod folder;
pub mod metrics;
pub mod quality;
mod state;

use std::path::Path;

use ndarray::Array4;
use serde::{Deserialize, Serialize};

use crate::kernels::gemm::GemmBackend;
use crate::kernels::Winograd;

use crate::checkpoint::Checkpoint;
use crate::data::{Batcher, LastBatch, Mnist};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, SampleMetrics};
use crate::layers::{Mode, Network};
use crate::models::{DcganConfig, STEP_BYTES_PER_ACTIVATION};
use crate::optim::{AdamConfig, MAX_HYPER_PARAMETER};
use crate::rng::{Rng, Stream};
use crate::train::{GanTrainer, OptimizerConfig, TrainConfig};

pub use crate::checkpoint::{insert_network, restore_network};
pub use folder::RunFolder;
pub use metrics::MetricsRow;
pub use state::{load_generator, CHECKPOINT_FORMAT};

/// The largest fixed latent batch a run keeps for its sample grids.
pub const MAX_SAMPLE_COUNT: usize = 1024;

/// The largest `nz`, `ngf` and `ndf` a run accepts. It keeps a mistyped width from asking for
/// tens of gigabytes of weights: at `ngf` 4096 and 64x64 images the generator alone has about
/// 1.6e9 parameters.
pub const MAX_MODEL_WIDTH: usize = 4096;

/// Everything that determines a run's weights, losses and images.
///
/// Output choices (folder, how often to write files, thread count) are not part of it: they do
/// not change a single bit of the run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Sizes of the generator and discriminator.
    pub model: DcganConfig,
    /// Digits per training step.
    pub batch_size: usize,
    /// The generator's Adam learning rate.
    pub lr_g: f64,
    /// The discriminator's Adam learning rate.
    pub lr_d: f64,
    /// Adam's decay rate of the first moment, for both networks.
    pub beta1: f64,
    /// Adam's decay rate of the second moment, for both networks.
    pub beta2: f64,
    /// Seed of every random stream: initial weights, noise, data order and sample noise.
    pub seed: u64,
    /// Number of digits trained on: the first `digits` of the data set.
    pub digits: usize,
    /// Size of the fixed latent batch behind the sample grids.
    pub sample_count: usize,
    /// The loss, the discriminator steps per generator step, the optimisers and the tricks.
    /// The learning rates and Adam betas above replace those of its optimisers (see
    /// [`RunSettings::train_config`]). Settings written before this field existed read as
    /// [`TrainConfig::default`], the plain DCGAN.
    #[serde(default)]
    pub train: TrainConfig,
    /// The GEMM backend the run trains on, which decides the last bits of every result. The
    /// backend is a process-wide setting, so the caller selects it
    /// ([`crate::kernels::gemm::set_gemm_backend`]) before training. A resumed run continues
    /// bit for bit only on the backend it started on. `None` in settings written before the
    /// backend was recorded.
    #[serde(default)]
    pub gemm_backend: Option<GemmBackend>,
    /// When the run's convolutions take the Winograd path ([`crate::kernels::set_winograd`]),
    /// which also decides the last bits of the results it touches. Selected by the caller
    /// before training, like the backend. `None` in settings written before it was recorded,
    /// which trained without the Winograd path.
    #[serde(default)]
    pub winograd: Option<Winograd>,
}

impl Default for RunSettings {
    /// Returns a small 32x32 model that draws recognisable digits after five epochs over the
    /// 10,000 shipped digits. It has nz 100, ngf 64, ndf 16, batch 64, seed 0, an 8x8 sample
    /// grid and the DCGAN paper's Adam settings (lr 2e-4, betas (0.5, 0.999)).
    ///
    /// The discriminator is the narrower network on purpose: with ndf = ngf = 32 it wins early
    /// (`D(G(z))` near 0.03) and five epochs give blotchy digits, while ngf 64 and ndf 16 keep
    /// the two in balance (`D(G(z))` near 0.2 to 0.5) and give clean strokes in the same time.
    fn default() -> Self {
        RunSettings {
            model: DcganConfig { nz: 100, ngf: 64, ndf: 16, channels: 1, image_size: 32 },
            batch_size: 64,
            lr_g: 2e-4,
            lr_d: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            seed: 0,
            digits: 10_000,
            sample_count: 64,
            train: TrainConfig::default(),
            gemm_backend: None,
            winograd: None,
        }
    }
}

impl RunSettings {
    /// Checks every setting.
    ///
    /// # Errors
    /// As [`DcganConfig::validate`] and [`AdamConfig::validate`];
    /// [`Error::InvalidArgument`], named after the field, for a learning rate that is negative,
    /// non-finite or above [`MAX_HYPER_PARAMETER`], a beta outside `[0, 1)`, a zero batch size
    /// or digit count, a batch larger than the digits, or a sample count outside
    /// `1..=MAX_SAMPLE_COUNT`.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in
            [("nz", self.model.nz), ("ngf", self.model.ngf), ("ndf", self.model.ndf)]
        {
            if value > MAX_MODEL_WIDTH {
                return Err(Error::invalid(name, value, format!("1 to {MAX_MODEL_WIDTH}")));
            }
        }
        self.model.validate()?;
        for (name, value) in [("lr_g", self.lr_g), ("lr_d", self.lr_d)] {
            if !(value.is_finite() && (0.0..=MAX_HYPER_PARAMETER).contains(&value)) {
                return Err(Error::invalid(
                    name,
                    value,
                    "a finite number of at least 0 and at most f32::MAX, because the update runs \
                     in f32",
                ));
            }
        }
        for (name, value) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(Error::invalid(name, value, "a number in [0, 1)"));
            }
        }
        self.adam_config(self.lr_g)?;
        self.adam_config(self.lr_d)?;
        self.train_config().validate()?;
        if self.digits == 0 {
            return Err(Error::invalid("digits", self.digits, "at least 1"));
        }
        if self.batch_size == 0 || self.batch_size > self.digits {
            return Err(Error::invalid(
                "batch_size",
                self.batch_size,
                format!("1 to {}, the number of digits trained on", self.digits),
            ));
        }
        if !(1..=MAX_SAMPLE_COUNT).contains(&self.sample_count) {
            return Err(Error::invalid(
                "sample_count",
                self.sample_count,
                format!("1 to {MAX_SAMPLE_COUNT}"),
            ));
        }
        Ok(())
    }

    /// Returns the trainer's settings: [`RunSettings::train`] with the generator's learning
    /// rate set to `lr_g`, the discriminator's to `lr_d`, and Adam's betas to
    /// `(beta1, beta2)` (other optimisers have no betas).
    pub fn train_config(&self) -> TrainConfig {
        let tune = |optimizer: OptimizerConfig, lr: f64| match optimizer {
            OptimizerConfig::Adam(c) => {
                OptimizerConfig::Adam(AdamConfig { lr, betas: (self.beta1, self.beta2), ..c })
            }
            OptimizerConfig::RmsProp(c) => {
                OptimizerConfig::RmsProp(crate::optim::RmsPropConfig { lr, ..c })
            }
            OptimizerConfig::Sgd(c) => OptimizerConfig::Sgd(crate::optim::SgdConfig { lr, ..c }),
        };
        TrainConfig {
            g_optimizer: tune(self.train.g_optimizer, self.lr_g),
            d_optimizer: tune(self.train.d_optimizer, self.lr_d),
            ..self.train
        }
    }

    /// Returns the Adam settings for learning rate `lr`.
    ///
    /// # Errors
    /// As [`AdamConfig::validate`].
    fn adam_config(&self, lr: f64) -> Result<AdamConfig> {
        let config = AdamConfig { lr, betas: (self.beta1, self.beta2), ..AdamConfig::default() };
        config.validate()?;
        Ok(config)
    }
}

/// Draws `count` latent vectors of `model` from the sample stream of `seed`
/// (`Rng::stream(seed, Stream::Samples)`), `[count, nz, 1, 1]`.
///
/// A run's fixed latent batch is `sample_noise(&settings.model, settings.seed,
/// settings.sample_count)`.
///
/// # Errors
/// As [`Rng::standard_normal_tensor`], for a `count` too large to allocate.
pub fn sample_noise(model: &DcganConfig, seed: u64, count: usize) -> Result<Array4<f32>> {
    Rng::stream(seed, Stream::Samples).standard_normal_tensor(model.noise_shape(count))
}

/// Runs `generator` in evaluation mode (BatchNorm uses its running statistics) on `z`.
///
/// Evaluation mode changes no state, so sampling in the middle of a run leaves its later steps
/// unchanged, and each image depends on its own latent vector alone.
///
/// # Errors
/// As [`Network::forward`].
pub fn generate(generator: &mut Network, z: Array4<f32>) -> Result<Array4<f32>> {
    generator.forward(z, Mode::Eval)
}

/// Writes `images` (`[n, channels, h, w]`, values in [-1, 1]) as a PNG grid, as close to square
/// as whole rows allow, with 2 pixels of padding.
///
/// # Errors
/// As [`crate::image::write_grid_png`].
pub fn write_sample_grid(path: impl AsRef<Path>, images: &Array4<f32>) -> Result<()> {
    let shape: [usize; 4] = images.shape().try_into().expect("four dimensions");
    let columns = (1..).find(|c| c * c >= shape[0]).unwrap_or(1);
    let values = images.as_standard_layout();
    let values = values.as_slice().expect("standard layout");
    crate::image::write_grid_png(path, values, shape, columns, 2)
}

/// A DCGAN training run on a set of digits, with everything needed to resume it exactly.
#[derive(Debug)]
pub struct TrainingRun {
    settings: RunSettings,
    data: Mnist,
    trainer: GanTrainer,
    batcher: Batcher,
    fixed_noise: Array4<f32>,
}

impl TrainingRun {
    /// Starts a run on `data`: networks initialised from the seed's init stream, zero Adam
    /// moments, the data order at epoch 1, no steps taken.
    ///
    /// # Errors
    /// As [`RunSettings::validate`]; [`Error::InvalidArgument`] when `data` does not contain
    /// `settings.digits` images of the model's channels and size, or when a step at the batch
    /// size or the sample grid would need more memory than the system has available
    /// ([`check_step_memory`]).
    pub fn new(settings: RunSettings, data: Mnist) -> Result<TrainingRun> {
        settings.validate()?;
        check_data(&settings, &data)?;
        check_step_memory(&settings, available_memory())?;
        let trainer = GanTrainer::new(settings.model, settings.train_config(), settings.seed)?;
        let batcher =
            Batcher::new(data.len(), settings.batch_size, settings.seed, LastBatch::Drop)?;
        let fixed_noise = sample_noise(&settings.model, settings.seed, settings.sample_count)?;
        Ok(TrainingRun { settings, data, trainer, batcher, fixed_noise })
    }

    /// Reads a checkpoint file written by [`TrainingRun::save`] and continues that run on `data`.
    ///
    /// # Errors
    /// As [`Checkpoint::load`] and [`TrainingRun::from_checkpoint`].
    pub fn load(path: impl AsRef<Path>, data: Mnist) -> Result<TrainingRun> {
        TrainingRun::from_checkpoint(&Checkpoint::load(path)?, data)
    }

    /// Writes the run's state to `path` atomically.
    ///
    /// # Errors
    /// As [`TrainingRun::to_checkpoint`] and [`Checkpoint::save`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.to_checkpoint()?.save(path)
    }

    /// Takes one training step: `d_steps` discriminator updates, each on the next batch of
    /// digits, then one generator update. The row's epoch is the one the step started in.
    ///
    /// # Errors
    /// As [`GanTrainer::step`]; [`Error::NonFinite`] when training diverges. The run should be
    /// dropped then (the step may be half done).
    pub fn step(&mut self) -> Result<MetricsRow> {
        let epoch = self.batcher.epoch() + 1;
        let (batcher, data) = (&mut self.batcher, &self.data);
        let stats = self.trainer.step(|| Ok(batcher.next_batch(data)?.images))?;
        Ok(MetricsRow::from_stats(self.trainer.step_count(), epoch, &stats))
    }

    /// Generates the run's sample images from its fixed latent batch, in evaluation mode (see
    /// [`generate`]): `[sample_count, channels, image_size, image_size]`. With virtual batch
    /// normalisation the reference batch goes in front, as in training
    /// ([`GanTrainer::generate`]).
    ///
    /// # Errors
    /// As [`GanTrainer::generate`].
    pub fn samples(&mut self) -> Result<Array4<f32>> {
        self.trainer.generate(self.fixed_noise.clone(), Mode::Eval)
    }

    /// Scores `count` samples of the generator, in evaluation mode on noise from `seed`, with
    /// `evaluator`. Like [`samples`](Self::samples), it changes no state of the run.
    ///
    /// # Errors
    /// As [`Evaluator::evaluate_trainer`].
    pub fn evaluate(
        &mut self,
        evaluator: &mut Evaluator,
        count: usize,
        seed: u64,
    ) -> Result<SampleMetrics> {
        evaluator.evaluate_trainer(&mut self.trainer, count, seed, Mode::Eval)
    }

    /// Returns the settings.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// Returns the number of training steps taken since the run started.
    pub fn steps_done(&self) -> u64 {
        self.trainer.step_count()
    }

    /// Returns the number of completed epochs.
    pub fn epochs_done(&self) -> u64 {
        self.batcher.epoch()
    }

    /// Returns the number of steps in one epoch, at least 1: the whole batches of an epoch
    /// (incomplete ones are skipped) divided by the batches each step takes (`d_steps`).
    pub fn steps_per_epoch(&self) -> u64 {
        let d_steps = self.trainer.config().d_steps.max(1) as u64;
        (self.batcher.batches_per_epoch() as u64 / d_steps).max(1)
    }

    /// Returns the number of steps, counted from the start of the run, after which `epochs`
    /// passes over the data are complete: the whole batches of `epochs` epochs divided by the
    /// batches each step takes (`d_steps`), rounded up. With `d_steps` above 1 an epoch is not a
    /// whole number of steps, so `epochs * steps_per_epoch()` would stop short of the last pass.
    pub fn steps_for_epochs(&self, epochs: u64) -> u64 {
        let d_steps = self.trainer.config().d_steps.max(1) as u64;
        let batches = epochs.saturating_mul(self.batcher.batches_per_epoch() as u64);
        batches.div_ceil(d_steps)
    }

    /// Returns the trainer: both networks, their optimisers and the trick state.
    pub fn trainer(&self) -> &GanTrainer {
        &self.trainer
    }

    /// Returns the fixed latent batch behind the sample grids, `[sample_count, nz, 1, 1]`.
    pub fn fixed_noise(&self) -> &Array4<f32> {
        &self.fixed_noise
    }
}

/// Checks that `data` contains `settings.digits` images of the model's shape.
fn check_data(settings: &RunSettings, data: &Mnist) -> Result<()> {
    let expected = settings.model.image_shape(settings.digits);
    if data.images.shape() != expected {
        return Err(Error::invalid(
            "data shape",
            format!("{:?}", data.images.shape()),
            format!(
                "{expected:?}: {} digits (settings.digits) of {} channel(s) at {}x{} (the model's \
                 image size)",
                settings.digits,
                settings.model.channels,
                settings.model.image_size,
                settings.model.image_size
            ),
        ));
    }
    Ok(())
}

/// Checks that generating `count` images of `model` in one batch fits in `available` bytes
/// beside the parameters of both networks. The sample grid of a run and the `sample` command
/// run the generator on all their latent vectors at once, so a large grid of a wide model can
/// need far more memory than a training step. Any count passes where `available` is `None`.
///
/// The estimate is 16 bytes per parameter of both networks, as in
/// [`DcganConfig::step_memory_bytes`], plus [`STEP_BYTES_PER_ACTIVATION`] per value that the
/// generator's layers output for the images.
///
/// NOTE: the estimate is cautious. A step keeps every layer's output for the backward pass,
/// but generation does not: a 128-pixel model with ngf 512 was estimated at 93 MiB per image
/// and measured at about 23, so some counts that would fit are rejected.
///
/// # Errors
/// [`Error::InvalidArgument`] named `name`, with the largest count that fits, when the
/// estimate exceeds `available`; [`Error::Overflow`] when the estimate overflows.
pub fn check_generation_memory(
    model: &DcganConfig,
    count: usize,
    name: &'static str,
    available: Option<u64>,
) -> Result<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let overflow = || Error::Overflow { what: "generation memory" };
    let [g_params, d_params] = model.parameter_counts()?;
    let fixed =
        g_params.checked_add(d_params).and_then(|n| n.checked_mul(16)).ok_or_else(overflow)?;
    let per_sample = model.activation_counts(1)?[0]
        .checked_mul(STEP_BYTES_PER_ACTIVATION)
        .ok_or_else(overflow)?;
    let needed =
        per_sample.checked_mul(count).and_then(|n| n.checked_add(fixed)).ok_or_else(overflow)?;
    if u64::try_from(needed).is_ok_and(|needed| needed <= available) {
        return Ok(());
    }
    let available = usize::try_from(available).unwrap_or(usize::MAX);
    let largest = available.saturating_sub(fixed) / per_sample.max(1);
    const MIB: usize = 1 << 20;
    Err(Error::invalid(
        name,
        count,
        format!(
            "at most {largest}: generating the images of this model needs about {} MiB plus \
             {:.2} MiB per image ({} MiB for {count}), and the system has {} MiB available",
            fixed.div_ceil(MIB),
            per_sample as f64 / MIB as f64,
            needed.div_ceil(MIB),
            available / MIB,
        ),
    ))
}

/// Returns the memory that the system reports as available to new allocations, in bytes:
/// `MemAvailable` of `/proc/meminfo` on Linux, and `None` where it cannot be read.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find_map(|line| line.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Checks that one training step of `settings` fits in `available` bytes, by the estimate of
/// [`DcganConfig::step_memory_bytes`], and so does its sample grid. Where `available` is
/// `None`, only the sizes of the step's tensors are checked.
///
/// A step allocates its activations as it goes, so a batch far beyond the memory at hand would
/// otherwise end the process in the middle of a step, or get it killed by the system, instead
/// of returning an error.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `batch_size` and the largest batch that fits, when the
/// step's estimate exceeds `available`, or naming `batch_size` and the largest batch that fits
/// when a layer's output at that batch exceeds the largest tensor the kernels take. The same
/// naming `sample_count` and the largest grid that fits, when the grid's estimate exceeds
/// `available`. The errors of
/// [`DcganConfig::step_memory_bytes`] for a model that is invalid at any batch.
pub fn check_step_memory(settings: &RunSettings, available: Option<u64>) -> Result<()> {
    let batch = settings.batch_size;
    let needed = match settings.model.step_memory_bytes(batch) {
        Ok(needed) => needed,
        // A model that is valid at batch 1 fails at this batch only because a layer's output
        // is too large a tensor, so the batch size is the value to change.
        Err(err) if batch > 1 && settings.model.step_memory_bytes(1).is_ok() => {
            let mut largest = largest_batch_within_tensor_limit(&settings.model, batch);
            if let Some(available) = available {
                largest = largest.min(largest_batch_within_memory(&settings.model, available)?);
            }
            return Err(Error::invalid(
                "batch_size",
                batch,
                format!("a smaller batch, at most {largest}: {err}"),
            ));
        }
        Err(err) => return Err(err),
    };
    let Some(available) = available else {
        return Ok(());
    };
    if u64::try_from(needed).is_ok_and(|needed| needed <= available) {
        return check_generation_memory(
            &settings.model,
            settings.sample_count,
            "sample_count",
            Some(available),
        );
    }
    let (fixed, per_sample) = step_memory_terms(&settings.model)?;
    let largest = largest_batch_within_memory(&settings.model, available)?;
    let available = usize::try_from(available).unwrap_or(usize::MAX);
    const MIB: usize = 1 << 20;
    Err(Error::invalid(
        "batch_size",
        batch,
        format!(
            "at most {largest}: a training step of this model needs about {} MiB plus {:.2} MiB \
             per digit ({} MiB at this batch), and the system has {} MiB available",
            fixed.div_ceil(MIB),
            per_sample as f64 / MIB as f64,
            needed.div_ceil(MIB),
            available / MIB,
        ),
    ))
}

/// Returns the largest batch below `batch` whose step tensors all fit the kernels' size limit,
/// for a model that fits at batch 1 and not at `batch`.
fn largest_batch_within_tensor_limit(model: &DcganConfig, batch: usize) -> usize {
    // The tensor sizes grow with the batch, so the batches that fit are 1 to some bound.
    let (mut fits, mut too_large) = (1, batch);
    while too_large - fits > 1 {
        let middle = fits + (too_large - fits) / 2;
        if model.step_memory_bytes(middle).is_ok() {
            fits = middle;
        } else {
            too_large = middle;
        }
    }
    fits
}

/// Returns the largest batch whose training step fits in `available` bytes, by the estimate of
/// [`DcganConfig::step_memory_bytes`], which grows by the same number of bytes with every sample.
fn largest_batch_within_memory(model: &DcganConfig, available: u64) -> Result<usize> {
    let (fixed, per_sample) = step_memory_terms(model)?;
    let available = usize::try_from(available).unwrap_or(usize::MAX);
    Ok(available.saturating_sub(fixed) / per_sample)
}

/// Splits [`DcganConfig::step_memory_bytes`] into fixed bytes and bytes per sample (at least
/// 1). The estimate grows by the same amount with every sample, so two batches determine it.
fn step_memory_terms(model: &DcganConfig) -> Result<(usize, usize)> {
    let one_sample = model.step_memory_bytes(1)?;
    let per_sample = model.step_memory_bytes(2)?.saturating_sub(one_sample).max(1);
    Ok((one_sample.saturating_sub(per_sample), per_sample))
}
