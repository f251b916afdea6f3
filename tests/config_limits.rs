//! Upper limits of the training settings, and checkpoints whose stored state is unusable.
//! Each rejected value would otherwise allocate terabytes, or hang a resumed run, so every
//! case must fail in `GanTrainer::new` or `from_checkpoint` before any large allocation.

use dcgan::models::DcganConfig;
use dcgan::train::{GanTrainer, TrainConfig, Tricks, MAX_D_STEPS};
use dcgan::tricks::{
    MinibatchDiscrimination, MinibatchDiscriminationOptions, VirtualBatchNormOptions,
    MAX_MINIBATCH_KERNELS, MAX_MINIBATCH_KERNEL_DIM, MAX_MINIBATCH_WIDTH, MAX_REFERENCE_SIZE,
};
use dcgan::Error;

/// Returns a 16x16 model small enough to build in milliseconds.
fn tiny() -> DcganConfig {
    DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 }
}

fn with_tricks(tricks: Tricks) -> TrainConfig {
    TrainConfig { tricks, ..TrainConfig::default() }
}

fn minibatch(kernels: usize, kernel_dim: usize) -> TrainConfig {
    with_tricks(Tricks {
        minibatch_discrimination: Some(MinibatchDiscriminationOptions {
            kernels,
            kernel_dim,
            include_self: false,
        }),
        ..Tricks::default()
    })
}

fn vbn(reference_size: usize) -> TrainConfig {
    with_tricks(Tricks {
        virtual_batch_norm: Some(VirtualBatchNormOptions { reference_size }),
        ..Tricks::default()
    })
}

/// Asserts that `config` is rejected as an invalid `name` whose message shows `value`.
fn assert_rejected(config: TrainConfig, name: &str, value: &str) {
    let err = GanTrainer::new(tiny(), config, 1).unwrap_err();
    match &err {
        Error::InvalidArgument { name: got, value: shown, .. } => {
            assert_eq!(*got, name, "{err}");
            assert_eq!(shown, value, "{err}");
        }
        other => panic!("{name} = {value}: expected InvalidArgument, got {other}"),
    }
}

#[test]
fn huge_trick_sizes_are_rejected() {
    let kernels = "minibatch_discrimination.kernels (B)";
    let kernel_dim = "minibatch_discrimination.kernel_dim (C)";
    assert_rejected(minibatch(100_000_000, 5), kernels, "100000000");
    assert_rejected(minibatch(100, 100_000_000), kernel_dim, "100000000");
    assert_rejected(minibatch(100_000, 1000), kernels, "100000");
    assert_rejected(minibatch(MAX_MINIBATCH_KERNELS + 1, 1), kernels, "4097");
    assert_rejected(minibatch(1, MAX_MINIBATCH_KERNEL_DIM + 1), kernel_dim, "1025");
    let reference = "virtual_batch_norm.reference_size";
    assert_rejected(vbn(1_000_000_000), reference, "1000000000");
    assert_rejected(vbn(MAX_REFERENCE_SIZE + 1), reference, "4097");
}

#[test]
fn minibatch_width_limit_is_on_the_product() {
    // Each size alone is in range, but their product exceeds the limit.
    let (b, c) = (MAX_MINIBATCH_KERNELS, MAX_MINIBATCH_KERNEL_DIM);
    assert!(b * c > MAX_MINIBATCH_WIDTH);
    let err = minibatch(b, c).validate().unwrap_err();
    assert!(err.to_string().contains("B * C"), "{err}");

    let c = MAX_MINIBATCH_KERNEL_DIM;
    let widest = minibatch(MAX_MINIBATCH_WIDTH / c, c);
    assert!(widest.validate().is_ok());
    assert!(minibatch(MAX_MINIBATCH_WIDTH / c + 1, c).validate().is_err());
}

#[test]
fn limits_themselves_are_accepted() {
    assert!(vbn(MAX_REFERENCE_SIZE).validate().is_ok());
    assert!(minibatch(MAX_MINIBATCH_KERNELS, 1).validate().is_ok());
    assert!(minibatch(1, MAX_MINIBATCH_KERNEL_DIM).validate().is_ok());
    let config = TrainConfig { d_steps: MAX_D_STEPS, ..TrainConfig::default() };
    assert!(config.validate().is_ok());
}

#[test]
fn minibatch_layer_rejects_a_huge_tensor() {
    // Within the option limits, but A * B * C = 2^20 * 2^16 = 2^36 elements.
    let err = MinibatchDiscrimination::new(1 << 20, 1 << 6, 1 << 10, false).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("[1048576, 64, 1024]"), "{err}");
    assert!(MinibatchDiscrimination::new(1 << 10, 1 << 6, 1 << 10, false).is_ok());
}

#[test]
fn discriminator_steps_are_bounded() {
    let config = |d_steps| TrainConfig { d_steps, ..TrainConfig::default() };
    assert_rejected(config(0), "d_steps", "0");
    assert_rejected(config(MAX_D_STEPS + 1), "d_steps", "101");
    assert_rejected(config(1_000_000_000), "d_steps", "1000000000");
}

#[test]
fn checkpoint_with_huge_d_steps_is_rejected() {
    let trainer = GanTrainer::new(tiny(), TrainConfig::default(), 3).unwrap();
    let mut checkpoint = trainer.to_checkpoint().unwrap();
    let mut config = *trainer.config();
    config.d_steps = 1_000_000_000;
    checkpoint.set_json("train_config", &config).unwrap();
    let err = GanTrainer::from_checkpoint(&checkpoint).unwrap_err();
    match &err {
        Error::InvalidArgument { name, .. } => assert_eq!(*name, "d_steps", "{err}"),
        other => panic!("expected InvalidArgument, got {other}"),
    }
}

#[test]
fn checkpoint_with_all_zero_rng_is_rejected() {
    let trainer = GanTrainer::new(tiny(), TrainConfig::default(), 4).unwrap();
    let zero = r#"{"inner":{"s":[0,0,0,0]}}"#;
    for key in ["noise_rng", "instance_noise_rng"] {
        let mut checkpoint = trainer.to_checkpoint().unwrap();
        checkpoint.metadata.insert(key.into(), zero.into());
        let err = GanTrainer::from_checkpoint(&checkpoint).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{key}: {err}");
        let message = err.to_string();
        assert!(message.contains(key), "{message}");
        assert!(message.contains("[0, 0, 0, 0]"), "{message}");
    }
    // The unchanged checkpoint still loads.
    assert!(GanTrainer::from_checkpoint(&trainer.to_checkpoint().unwrap()).is_ok());
}
