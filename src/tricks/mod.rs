//! GAN training tricks: the layers and per-step pieces that [`crate::train::GanTrainer`]
//! switches on one at a time through [`crate::train::Tricks`].
//!
//! * [`MinibatchDiscrimination`] and [`minibatch_discriminator`]: the discriminator compares
//!   each sample with the rest of its batch.
//! * [`VirtualBatchNorm`] and [`vbn_generator`]: the generator normalises with a fixed
//!   reference batch's statistics.
//! * [`feature_matching_loss`]: the generator matches the mean of a discriminator layer's
//!   activations on real data.
//! * [`HistoricalAverage`]: a penalty that pulls each player towards its mean past parameters.
//! * [`InstanceNoise`]: annealed Gaussian noise on the discriminator's inputs.
//!
//! One-sided label smoothing lives in the losses
//! ([`GanLoss::discriminator_real_smoothed`](crate::loss::GanLoss::discriminator_real_smoothed)),
//! and weight clipping in the trainer.

mod feature_matching;
mod history;
mod minibatch;
mod models;
mod noise;
mod vbn;

pub use feature_matching::{feature_matching_loss, FeatureMatching};
pub use history::{HistoricalAverage, HistoricalAveraging};
pub use minibatch::MinibatchDiscrimination;
pub use models::{
    minibatch_discriminator, vbn_generator, MinibatchDiscriminationOptions,
    VirtualBatchNormOptions, MAX_MINIBATCH_KERNELS, MAX_MINIBATCH_KERNEL_DIM, MAX_MINIBATCH_WIDTH,
    MAX_REFERENCE_SIZE,
};
pub use noise::{add_instance_noise, InstanceNoise, NoiseSchedule};
pub use vbn::VirtualBatchNorm;
