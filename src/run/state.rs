//! Saving and restoring a [`TrainingRun`] through a [`Checkpoint`].

use ndarray::Array4;

use super::{check_data, RunSettings, TrainingRun};
use crate::checkpoint::{Checkpoint, Scalar};
use crate::data::{Batcher, BatcherState, Mnist};
use crate::error::{Error, Result};
use crate::layers::{BufferData, Network};
use crate::rng::{Rng, Stream};
use crate::train::GanTrainer;

/// The `format` metadata of a training-run checkpoint. A checkpoint with another value is
/// rejected rather than misread.
pub const CHECKPOINT_FORMAT: &str = "dcgan-training-run-2";

/// Stores the parameters and buffers of `network` in `checkpoint` under `{prefix}.{name}`
/// (`generator.main.0.weight`, `generator.main.1.running_mean`).
///
/// Parameters and `f32` buffers become `F32` tensors in PyTorch's shapes; `i64` buffers of one
/// element (BatchNorm's `num_batches_tracked`) become `U64` scalars.
///
/// # Errors
/// [`Error::InvalidArgument`] for an `i64` buffer that is negative or has more than one element.
pub fn insert_network(checkpoint: &mut Checkpoint, prefix: &str, network: &Network) -> Result<()> {
    for tensor in network.named_params() {
        let name = format!("{prefix}.{}", tensor.name);
        checkpoint.insert_tensor(name, &tensor.shape, tensor.data.to_vec())?;
    }
    for buffer in network.named_buffers() {
        let name = format!("{prefix}.{}", buffer.name);
        match buffer.data {
            BufferData::F32(values) => {
                checkpoint.insert_tensor(name, &buffer.shape, values.to_vec())?
            }
            BufferData::I64(&[value]) => {
                let value = u64::try_from(value)
                    .map_err(|_| Error::invalid("buffer", &name, "a count of at least 0"))?;
                checkpoint.scalars.insert(name, Scalar::U64(value));
            }
            BufferData::I64(values) => {
                return Err(Error::invalid(
                    "buffer",
                    &name,
                    format!("an i64 buffer of one element, not {}", values.len()),
                ))
            }
        }
    }
    Ok(())
}

/// Overwrites the parameters and buffers of `network` with those that [`insert_network`] stored
/// under `prefix`.
///
/// # Errors
/// [`Error::Format`] when a tensor or scalar is missing or has another shape;
/// [`Error::NonFinite`] or [`Error::InvalidArgument`] for values the network rejects (NaN
/// weights, a negative running variance). The network may be partly overwritten then.
pub fn restore_network(checkpoint: &Checkpoint, prefix: &str, network: &mut Network) -> Result<()> {
    let params: Vec<(String, Vec<usize>)> =
        network.named_params().map(|t| (t.name, t.shape)).collect();
    for (name, shape) in params {
        let tensor = format!("{prefix}.{name}");
        network
            .set_param(&name, checkpoint.get(&tensor, &shape)?)
            .map_err(|error| error.in_tensor(&tensor))?;
    }
    let buffers: Vec<(String, Vec<usize>, bool)> = network
        .named_buffers()
        .map(|b| (b.name, b.shape, matches!(b.data, BufferData::F32(_))))
        .collect();
    for (name, shape, is_f32) in buffers {
        let key = format!("{prefix}.{name}");
        if is_f32 {
            network.set_buffer(&name, BufferData::F32(checkpoint.get(&key, &shape)?))?;
        } else {
            let value = i64::try_from(checkpoint.get_u64(&key)?).map_err(|_| Error::Format {
                format: "checkpoint",
                reason: format!("scalar `{key}` exceeds i64::MAX"),
            })?;
            network.set_buffer(&name, BufferData::I64(&[value]))?;
        }
    }
    Ok(())
}

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
/// normalisation.
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
    /// | `generator.main.*`, `discriminator.main.*` | F32 tensors, U64 scalars | parameters and BatchNorm buffers, named as in PyTorch's state dicts ([`insert_network`]) |
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
    /// malformed, or the trainer's stored settings disagree with the run's.
    /// [`Error::InvalidArgument`] when its settings are invalid or `data` does not match them.
    /// The errors of [`GanTrainer::from_checkpoint`] for values it rejects.
    pub fn from_checkpoint(checkpoint: &Checkpoint, data: Mnist) -> Result<TrainingRun> {
        // Settings and data.
        let settings = RunSettings::from_checkpoint(checkpoint)?;
        check_data(&settings, &data)?;
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
        let batcher = Batcher::from_state(batcher_state, data.len())?;

        // Networks, optimisers, trick state and streams.
        let trainer = GanTrainer::from_checkpoint(checkpoint)?;
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

        // Sample noise.
        let shape = settings.model.noise_shape(settings.sample_count);
        let noise = checkpoint.get("fixed_noise", &shape)?;
        let fixed_noise = Array4::from_shape_vec(shape, noise.to_vec()).expect("shape checked");
        Ok(TrainingRun { settings, data, trainer, batcher, fixed_noise })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::GanLoss;
    use crate::train::Trainer;

    #[test]
    fn network_round_trips_through_checkpoint() {
        let settings = RunSettings {
            model: crate::models::DcganConfig {
                nz: 4,
                ngf: 2,
                ndf: 2,
                channels: 1,
                image_size: 16,
            },
            ..RunSettings::default()
        };
        let source = Trainer::new(settings.model, 1, GanLoss::default()).unwrap();
        let mut checkpoint = Checkpoint::new();
        insert_network(&mut checkpoint, "g", source.generator()).unwrap();
        let mut other = Trainer::new(settings.model, 99, GanLoss::default()).unwrap();
        assert_ne!(other.generator().params(), source.generator().params());
        restore_network(&checkpoint, "g", other.generator_mut()).unwrap();
        assert_eq!(other.generator().params(), source.generator().params());
        assert!(checkpoint.scalars.contains_key("g.main.1.num_batches_tracked"));
    }
}
