//! Saving and restoring a [`TrainingRun`] through a [`Checkpoint`].

use super::{
    available_memory, check_data, check_step_memory, sample_noise, RunSettings, TrainingRun,
};
use crate::checkpoint::{
    check_stored_parameters, reject_unknown_entries, restore_network, Checkpoint,
};
use crate::data::{Batcher, BatcherState, Mnist};
use crate::error::{Error, Result};
use crate::layers::Network;
use crate::models::DcganConfig;
use crate::rng::{Rng, Stream};
use crate::train::GanTrainer;

/// The names of the tensors and scalars outside the networks' prefixes that a training-run
/// checkpoint may contain ([`TrainingRun::to_checkpoint`]).
const RUN_ENTRIES: [&str; 4] = ["fixed_noise", "reference_noise", "seed", "step"];

/// The prefixes of the other tensors and scalars of a training-run checkpoint.
const RUN_ENTRY_PREFIXES: [&str; 6] =
    ["generator.", "discriminator.", "g_optimizer.", "d_optimizer.", "g_history.", "d_history."];

/// The `format` metadata of a training-run checkpoint. A checkpoint with another value is
/// rejected rather than misread.
pub const CHECKPOINT_FORMAT: &str = "dcgan-training-run-2";

impl RunSettings {
    /// Reads the settings of a checkpoint written by [`TrainingRun::to_checkpoint`].
    ///
    /// # Errors
    /// [`Error::Format`] when the checkpoint's `format` is not [`CHECKPOINT_FORMAT`] or its
    /// settings are missing or malformed; [`Error::InvalidArgument`] when they are invalid.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<RunSettings> {
        let format = checkpoint.metadata.get("format").map(String::as_str).unwrap_or("(none)");
        if format != CHECKPOINT_FORMAT {
            return Err(Error::Format {
                format: "checkpoint",
                reason: format!(
                    "format `{format}`: expected `{CHECKPOINT_FORMAT}`, a training run written \
                     by TrainingRun::save (examples/train_mnist.rs)"
                ),
            });
        }
        let settings: RunSettings = checkpoint.get_json("settings")?;
        settings.validate()?;
        Ok(settings)
    }
}

/// Reads the settings and the generator (parameters and BatchNorm running statistics) of a
/// training-run checkpoint, for sampling with [`generate`](super::generate).
///
/// A run with virtual batch normalisation is rejected, because its generator needs the run's
/// reference batch in front of every input: load it with [`GanTrainer::from_checkpoint`] and
/// sample with [`GanTrainer::generate`].
///
/// # Errors
/// As [`TrainingRun::from_checkpoint`]; [`Error::InvalidArgument`] for a run with virtual batch
/// normalisation; [`Error::Format`] for a tensor or scalar that a training run does not write
/// (checked by its name, and within `generator.*` against the generator's parameters and
/// buffers).
pub fn load_generator(checkpoint: &Checkpoint) -> Result<(RunSettings, Network)> {
    let settings = RunSettings::from_checkpoint(checkpoint)?;
    if let Some(options) = settings.train.tricks.virtual_batch_norm {
        return Err(Error::invalid(
            "virtual_batch_norm.reference_size",
            options.reference_size,
            "none for load_generator: a generator with virtual batch normalisation needs its \
             reference batch, so load it with GanTrainer::from_checkpoint and sample with \
             GanTrainer::generate",
        ));
    }
    let model: DcganConfig = checkpoint.get_json("model")?;
    if model != settings.model {
        return Err(Error::Format {
            format: "checkpoint",
            reason: format!(
                "the trainer's model {model:?} differs from the run's settings {:?}: expected \
                 equal",
                settings.model
            ),
        });
    }
    settings.model.validate()?;
    let [count, _] = settings.model.parameter_counts()?;
    check_stored_parameters(checkpoint, "generator", count)?;
    // Only the generator is read, so the other entries are checked by name alone.
    reject_unknown_entries(checkpoint, "the entries of a training run", |name| {
        RUN_ENTRIES.contains(&name) || RUN_ENTRY_PREFIXES.iter().any(|p| name.starts_with(p))
    })?;
    let mut generator = settings.model.generator(&mut Rng::stream(settings.seed, Stream::Init))?;
    restore_network(checkpoint, "generator", &mut generator)?;
    Ok((settings, generator))
}

impl TrainingRun {
    /// Stores the run's complete state: the entries of [`GanTrainer::to_checkpoint`] and the
    /// run's own.
    ///
    /// | entry | kind | contents |
    /// | --- | --- | --- |
    /// | `generator.main.*`, `discriminator.main.*` | F32 tensors, U64 scalars | parameters and BatchNorm buffers, named as in PyTorch's state dicts ([`insert_network`](crate::checkpoint::insert_network)) |
    /// | `g_optimizer.*`, `d_optimizer.*`, `g_history.*`, `d_history.*`, `reference_noise` | as [`GanTrainer::to_checkpoint`] | optimiser state and trick state |
    /// | `step`, `seed` | U64 scalars | training steps taken, the seed |
    /// | `model`, `train_config`, `noise_rng`, `instance_noise_rng` | metadata, JSON | as [`GanTrainer::to_checkpoint`] |
    /// | `fixed_noise` | F32 tensor | the latent batch of the sample grids, `[sample_count, nz, 1, 1]` |
    /// | `format` | metadata | [`CHECKPOINT_FORMAT`] |
    /// | `settings` | metadata, JSON | [`RunSettings`] |
    /// | `batcher` | metadata, JSON | [`BatcherState`]: epoch, position and data-order stream |
    ///
    /// Equal states give byte-identical files.
    ///
    /// # Errors
    /// As [`GanTrainer::to_checkpoint`] and [`Checkpoint::set_json`].
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut checkpoint = self.trainer.to_checkpoint()?;
        let noise = &self.fixed_noise;
        let noise_values = noise.as_slice().expect("standard layout").to_vec();
        checkpoint.insert_tensor("fixed_noise", noise.shape(), noise_values)?;
        checkpoint.metadata.insert("format".into(), CHECKPOINT_FORMAT.into());
        checkpoint.set_json("settings", &self.settings)?;
        checkpoint.set_json("batcher", self.batcher.state())?;
        Ok(checkpoint)
    }

    /// Restores a run from a checkpoint written by [`TrainingRun::to_checkpoint`], to continue
    /// on `data` (the same digits as before).
    ///
    /// # Errors
    /// [`Error::Format`] when the checkpoint is not a training run, an entry is missing or
    /// malformed, a tensor or scalar is not one that the run writes, or the trainer's stored
    /// settings disagree with the run's.
    /// [`Error::InvalidArgument`] when its settings are invalid, `data` does not match them, or
    /// a step or the sample grid would need more memory than the system has available
    /// ([`check_step_memory`]).
    /// The errors of [`GanTrainer::from_checkpoint`] for values it rejects.
    pub fn from_checkpoint(checkpoint: &Checkpoint, data: Mnist) -> Result<TrainingRun> {
        // Settings and data.
        let settings = RunSettings::from_checkpoint(checkpoint)?;
        check_data(&settings, &data)?;
        check_step_memory(&settings, available_memory())?;
        let batcher_state: BatcherState = checkpoint.get_json("batcher")?;
        if batcher_state.batch_size != settings.batch_size {
            return Err(Error::Format {
                format: "checkpoint",
                reason: format!(
                    "data order has batch size {}, settings {}: expected equal",
                    batcher_state.batch_size, settings.batch_size
                ),
            });
        }
        let epoch = batcher_state.epoch;
        let batcher = Batcher::from_state(batcher_state, data.len())?;

        // Networks, optimisers, trick state and streams.
        let trainer = GanTrainer::from_checkpoint(checkpoint)?;
        // Each step draws `d_steps` batches, and each epoch contains at least one.
        let batches = trainer.step_count().saturating_mul(trainer.config().d_steps as u64);
        if epoch > batches {
            return Err(Error::Format {
                format: "checkpoint",
                reason: format!(
                    "data order at epoch {epoch} after {batches} batches: expected at most one \
                     epoch per batch drawn"
                ),
            });
        }
        if *trainer.model() != settings.model
            || *trainer.config() != settings.train_config()
            || trainer.seed() != settings.seed
        {
            return Err(Error::Format {
                format: "checkpoint",
                reason: "the trainer's model, train_config or seed differ from the run's \
                         settings: expected equal"
                    .into(),
            });
        }

        // Sample noise: drawn from the seed, so a stored batch that differs is corrupt.
        let shape = settings.model.noise_shape(settings.sample_count);
        let stored = checkpoint.get("fixed_noise", &shape)?;
        let fixed_noise = sample_noise(&settings.model, settings.seed, settings.sample_count)?;
        let same = |(a, b): (&f32, &f32)| a.to_bits() == b.to_bits();
        if !stored.iter().zip(&fixed_noise).all(same) {
            return Err(Error::Format {
                format: "checkpoint",
                reason: "tensor fixed_noise differs from the latent batch that the run's seed \
                         and sample_count give: the file is corrupt"
                    .into(),
            });
        }
        let mut known = trainer.checkpoint_entry_names();
        known.insert("fixed_noise".into());
        reject_unknown_entries(checkpoint, "the entries of a training run", |name| {
            known.contains(name)
        })?;
        Ok(TrainingRun { settings, data, trainer, batcher, fixed_noise })
    }
}
