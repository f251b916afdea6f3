//! Saving a [`GanTrainer`] into a [`Checkpoint`] and restoring it, so that a resumed run takes
//! the same steps, bit for bit, as one that never stopped.
//!
//! Layout (tensor names; `G` and `D` are `generator` and `discriminator`):
//!
//! * `G.{state-dict name}` and `D.{...}`: parameters and `f32` buffers (running statistics);
//!   integer buffers (`num_batches_tracked`) are `u64` scalars of the same name.
//! * `g_optimizer.*`, `d_optimizer.*`: the optimiser's vectors (`exp_avg`, `exp_avg_sq`,
//!   `square_avg`, `momentum_buffer`) and its `step` scalar.
//! * `g_history.average`, `d_history.average` and their `count` scalars: historical averaging.
//! * `reference_noise`: the virtual batch normalisation reference batch.
//! * scalars `seed` and `step`; metadata (JSON) `model`, `train_config`, `noise_rng` and
//!   `instance_noise_rng`.

use std::collections::BTreeSet;

use ndarray::Array4;

use super::config::{GanOptimizer, OptimizerState};
use super::gan::GanTrainer;
use crate::checkpoint::{
    check_stored_parameters, insert_network, restore_network, Checkpoint, Scalar,
};
use crate::error::{Error, Result};
use crate::models::DcganConfig;
use crate::optim::{AdamState, RmsPropState, SgdState};
use crate::rng::Rng;
use crate::tricks::HistoricalAverage;

fn insert_vector(checkpoint: &mut Checkpoint, name: String, data: &[f32]) -> Result<()> {
    checkpoint.insert_tensor(name, &[data.len()], data.to_vec())
}

/// Checks that the optimisers' step counts match `step` training steps: one generator update
/// and `d_steps` discriminator updates each, as [`GanTrainer::step`] takes them.
fn check_update_counts(checkpoint: &Checkpoint, step: u64, d_steps: usize) -> Result<()> {
    let expected =
        [("g_optimizer.step", Some(step)), ("d_optimizer.step", step.checked_mul(d_steps as u64))];
    for (name, expected) in expected {
        let stored = checkpoint.get_u64(name)?;
        if Some(stored) != expected {
            return Err(Error::Format {
                format: "checkpoint",
                reason: format!(
                    "scalar `{name}` is {stored}, but `step` is {step} with {d_steps} \
                     discriminator updates per step: the counts must agree"
                ),
            });
        }
    }
    Ok(())
}

fn save_optimizer(
    checkpoint: &mut Checkpoint,
    prefix: &str,
    optimizer: &GanOptimizer,
) -> Result<()> {
    let step = match optimizer.state() {
        OptimizerState::Adam(s) => {
            insert_vector(checkpoint, format!("{prefix}.exp_avg"), &s.exp_avg)?;
            insert_vector(checkpoint, format!("{prefix}.exp_avg_sq"), &s.exp_avg_sq)?;
            s.step
        }
        OptimizerState::RmsProp(s) => {
            insert_vector(checkpoint, format!("{prefix}.square_avg"), &s.square_avg)?;
            insert_vector(checkpoint, format!("{prefix}.momentum_buffer"), &s.momentum_buffer)?;
            s.step
        }
        OptimizerState::Sgd(s) => {
            insert_vector(checkpoint, format!("{prefix}.momentum_buffer"), &s.momentum_buffer)?;
            s.step
        }
    };
    checkpoint.scalars.insert(format!("{prefix}.step"), Scalar::U64(step));
    Ok(())
}

fn load_optimizer(
    checkpoint: &Checkpoint,
    prefix: &str,
    optimizer: &mut GanOptimizer,
    len: usize,
) -> Result<()> {
    let vector = |name: &str| -> Result<Vec<f32>> {
        Ok(checkpoint.get(&format!("{prefix}.{name}"), &[len])?.to_vec())
    };
    let step = checkpoint.get_u64(&format!("{prefix}.step"))?;
    let state = match optimizer {
        GanOptimizer::Adam(_) => OptimizerState::Adam(AdamState {
            step,
            exp_avg: vector("exp_avg")?,
            exp_avg_sq: vector("exp_avg_sq")?,
        }),
        GanOptimizer::RmsProp(_) => OptimizerState::RmsProp(RmsPropState {
            step,
            square_avg: vector("square_avg")?,
            momentum_buffer: vector("momentum_buffer")?,
        }),
        GanOptimizer::Sgd(_) => {
            OptimizerState::Sgd(SgdState { step, momentum_buffer: vector("momentum_buffer")? })
        }
    };
    optimizer.set_state(state).map_err(|err| match err {
        // Name the checkpoint tensors, which the optimiser's own message cannot.
        Error::NonFinite { what } => {
            Error::NonFinite { what: format!("{what} (checkpoint tensors `{prefix}.*`)") }
        }
        Error::InvalidArgument { name, value, expected } => Error::InvalidArgument {
            name,
            value,
            expected: format!("{expected} (checkpoint tensors `{prefix}.*`)"),
        },
        other => other,
    })
}

fn save_history(
    checkpoint: &mut Checkpoint,
    prefix: &str,
    history: &HistoricalAverage,
) -> Result<()> {
    insert_vector(checkpoint, format!("{prefix}.average"), &history.average)?;
    checkpoint.scalars.insert(format!("{prefix}.count"), Scalar::U64(history.count));
    Ok(())
}

fn load_history(
    checkpoint: &Checkpoint,
    prefix: &str,
    history: &mut HistoricalAverage,
) -> Result<()> {
    let len = history.average.len();
    let average = checkpoint.get(&format!("{prefix}.average"), &[len])?.to_vec();
    let count = checkpoint.get_u64(&format!("{prefix}.count"))?;
    history.restore(HistoricalAverage { count, average })
}

impl GanTrainer {
    /// Saves everything the run needs to continue: both networks' parameters and buffers,
    /// both optimisers' state, the trick state (historical averages, the reference batch),
    /// the random streams, the step count, the seed, and the settings.
    ///
    /// # Errors
    /// [`Error::Format`] if a value cannot be serialised (not expected for valid trainers).
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut checkpoint = Checkpoint::new();
        insert_network(&mut checkpoint, "generator", &self.generator)?;
        insert_network(&mut checkpoint, "discriminator", &self.discriminator)?;
        save_optimizer(&mut checkpoint, "g_optimizer", &self.g_optimizer)?;
        save_optimizer(&mut checkpoint, "d_optimizer", &self.d_optimizer)?;
        if let Some(history) = &self.g_history {
            save_history(&mut checkpoint, "g_history", history)?;
        }
        if let Some(history) = &self.d_history {
            save_history(&mut checkpoint, "d_history", history)?;
        }
        if let Some(reference) = &self.reference_noise {
            let data = reference.iter().copied().collect();
            checkpoint.insert_tensor("reference_noise", reference.shape(), data)?;
        }
        checkpoint.scalars.insert("seed".into(), Scalar::U64(self.seed));
        checkpoint.scalars.insert("step".into(), Scalar::U64(self.step));
        checkpoint.set_json("model", &self.model)?;
        checkpoint.set_json("train_config", &self.config)?;
        checkpoint.set_json("noise_rng", &self.noise)?;
        checkpoint.set_json("instance_noise_rng", &self.instance_noise)?;
        Ok(checkpoint)
    }

    /// Returns the names of the tensors and scalars that
    /// [`to_checkpoint`](GanTrainer::to_checkpoint) writes, without copying any values.
    pub(crate) fn checkpoint_entry_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (prefix, network) in
            [("generator", &self.generator), ("discriminator", &self.discriminator)]
        {
            names.extend(network.named_params().map(|t| format!("{prefix}.{}", t.name)));
            names.extend(network.named_buffers().map(|b| format!("{prefix}.{}", b.name)));
        }
        for (prefix, optimizer) in
            [("g_optimizer", &self.g_optimizer), ("d_optimizer", &self.d_optimizer)]
        {
            let vectors: &[&str] = match optimizer {
                GanOptimizer::Adam(_) => &["exp_avg", "exp_avg_sq"],
                GanOptimizer::RmsProp(_) => &["square_avg", "momentum_buffer"],
                GanOptimizer::Sgd(_) => &["momentum_buffer"],
            };
            names.extend(vectors.iter().chain(&["step"]).map(|name| format!("{prefix}.{name}")));
        }
        for (prefix, history) in [("g_history", &self.g_history), ("d_history", &self.d_history)] {
            if history.is_some() {
                names.extend(["average", "count"].map(|name| format!("{prefix}.{name}")));
            }
        }
        if self.reference_noise.is_some() {
            names.insert("reference_noise".into());
        }
        names.extend(["seed", "step"].map(String::from));
        names
    }

    /// Rebuilds a trainer from [`to_checkpoint`](GanTrainer::to_checkpoint)'s output.
    ///
    /// Entries under `generator.` and `discriminator.` must be parameters or buffers of the
    /// networks. Other entries that the trainer does not read are left to the caller, because
    /// a training run stores its own next to the trainer's ([`crate::run::TrainingRun`]).
    ///
    /// # Errors
    /// [`Error::Format`] for a missing entry, one of the wrong shape, or an unknown entry under
    /// a network's prefix, and [`Error::NonFinite`] for NaN or infinity in stored parameters or
    /// state. Invalid stored
    /// settings give the errors of [`GanTrainer::new`].
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<GanTrainer> {
        let model: DcganConfig = checkpoint.get_json("model")?;
        let config = checkpoint.get_json("train_config")?;
        let seed = checkpoint.get_u64("seed")?;
        model.validate()?;
        let [g_count, d_count] = model.parameter_counts()?;
        check_stored_parameters(checkpoint, "generator", g_count)?;
        check_stored_parameters(checkpoint, "discriminator", d_count)?;
        let mut trainer = GanTrainer::new(model, config, seed)?;

        restore_network(checkpoint, "generator", &mut trainer.generator)?;
        restore_network(checkpoint, "discriminator", &mut trainer.discriminator)?;
        let (g_len, d_len) = (trainer.generator.num_params(), trainer.discriminator.num_params());
        load_optimizer(checkpoint, "g_optimizer", &mut trainer.g_optimizer, g_len)?;
        load_optimizer(checkpoint, "d_optimizer", &mut trainer.d_optimizer, d_len)?;
        if let Some(history) = &mut trainer.g_history {
            load_history(checkpoint, "g_history", history)?;
        }
        if let Some(history) = &mut trainer.d_history {
            load_history(checkpoint, "d_history", history)?;
        }
        if let Some(reference) = &mut trainer.reference_noise {
            let data = checkpoint.get("reference_noise", reference.shape())?;
            if data.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite { what: "reference_noise".into() });
            }
            let shape = reference.raw_dim();
            *reference = Array4::from_shape_vec(shape, data.to_vec()).expect("shape checked");
        }
        trainer.step = checkpoint.get_u64("step")?;
        check_update_counts(checkpoint, trainer.step, trainer.config.d_steps)?;
        trainer.noise = checkpoint.get_json::<Rng>("noise_rng")?;
        trainer.instance_noise = checkpoint.get_json::<Rng>("instance_noise_rng")?;
        Ok(trainer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{RmsPropConfig, SgdConfig};
    use crate::train::{OptimizerConfig, TrainConfig};
    use crate::tricks::{
        HistoricalAveraging, MinibatchDiscriminationOptions, VirtualBatchNormOptions,
    };

    /// Returns the names of the tensors and scalars of `checkpoint`.
    fn entry_names(checkpoint: &Checkpoint) -> BTreeSet<String> {
        checkpoint.tensors.keys().chain(checkpoint.scalars.keys()).cloned().collect()
    }

    #[test]
    fn entry_names_match_saved_checkpoint() {
        let model = DcganConfig { nz: 4, ngf: 2, ndf: 2, channels: 1, image_size: 16 };
        let mut with_tricks = TrainConfig {
            g_optimizer: OptimizerConfig::RmsProp(RmsPropConfig::default()),
            d_optimizer: OptimizerConfig::Sgd(SgdConfig::new(0.1)),
            ..TrainConfig::default()
        };
        let tricks = &mut with_tricks.tricks;
        tricks.historical_averaging = Some(HistoricalAveraging { weight: 0.5 });
        tricks.virtual_batch_norm = Some(VirtualBatchNormOptions { reference_size: 4 });
        tricks.minibatch_discrimination = Some(MinibatchDiscriminationOptions::default());
        for config in [TrainConfig::default(), with_tricks] {
            let trainer = GanTrainer::new(model, config, 3).unwrap();
            let saved = entry_names(&trainer.to_checkpoint().unwrap());
            assert_eq!(trainer.checkpoint_entry_names(), saved, "{config:?}");
        }
    }
}
