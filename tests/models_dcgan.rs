//! The DCGAN builders and the training step: the PyTorch example's layout, gradients of both
//! GAN losses against finite differences through a whole tiny generator and discriminator,
//! isolation of the two half-steps, and bit-identical steps across thread counts.

mod layers_common;

use dcgan::kernels::{Conv2dSpec, ConvTranspose2dSpec};
use dcgan::layers::{Mode, Network};
use dcgan::loss::GanLoss;
use dcgan::models::{DcganConfig, STEP_BYTES_PER_ACTIVATION};
use dcgan::rng::Rng;
use dcgan::train::{StepStats, Trainer};
use dcgan::Error;
use layers_common::*;
use ndarray::Array4;

fn shapes(net: &Network) -> Vec<(String, Vec<usize>)> {
    net.named_params().map(|t| (t.name, t.shape)).collect()
}

fn expected(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    list.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect()
}

#[test]
fn dcgan64_matches_the_pytorch_example() {
    // The state dicts of the PyTorch DCGAN example's Generator and Discriminator (nz 100,
    // ngf = ndf = 64, nc 3): 3,576,704 and 2,765,568 parameters.
    let (g, d) = DcganConfig::dcgan64().build(0).unwrap();
    assert_eq!(
        shapes(&g),
        expected(&[
            ("main.0.weight", &[100, 512, 4, 4]),
            ("main.1.weight", &[512]),
            ("main.1.bias", &[512]),
            ("main.3.weight", &[512, 256, 4, 4]),
            ("main.4.weight", &[256]),
            ("main.4.bias", &[256]),
            ("main.6.weight", &[256, 128, 4, 4]),
            ("main.7.weight", &[128]),
            ("main.7.bias", &[128]),
            ("main.9.weight", &[128, 64, 4, 4]),
            ("main.10.weight", &[64]),
            ("main.10.bias", &[64]),
            ("main.12.weight", &[64, 3, 4, 4]),
        ])
    );
    assert_eq!(
        shapes(&d),
        expected(&[
            ("main.0.weight", &[64, 3, 4, 4]),
            ("main.2.weight", &[128, 64, 4, 4]),
            ("main.3.weight", &[128]),
            ("main.3.bias", &[128]),
            ("main.5.weight", &[256, 128, 4, 4]),
            ("main.6.weight", &[256]),
            ("main.6.bias", &[256]),
            ("main.8.weight", &[512, 256, 4, 4]),
            ("main.9.weight", &[512]),
            ("main.9.bias", &[512]),
            ("main.11.weight", &[1, 512, 4, 4]),
        ])
    );
    assert_eq!(g.num_params(), 3_576_704);
    assert_eq!(d.num_params(), 2_765_568);
    assert_eq!(g.len(), 14, "G: 4 x (ConvT, BN, ReLU) + ConvT + Tanh");
    assert_eq!(d.len(), 12, "D: Conv + LeakyReLU, 3 x (Conv, BN, LeakyReLU), Conv");
    let buffers: Vec<String> = d.named_buffers().map(|b| b.name).collect();
    assert_eq!(
        &buffers[..3],
        &["main.3.running_mean", "main.3.running_var", "main.3.num_batches_tracked"]
    );
}

#[test]
fn supported_sizes_build_and_connect() {
    for size in [16, 32, 64, 128] {
        let config = DcganConfig { nz: 5, ngf: 2, ndf: 3, channels: 2, image_size: size };
        let (g, d) = config.build(1).unwrap();
        assert_eq!(g.output_shape([4, 5, 1, 1]).unwrap(), [4, 2, size, size], "G at {size}");
        assert_eq!(d.output_shape([4, 2, size, size]).unwrap(), [4, 1, 1, 1], "D at {size}");
        let stages = size.trailing_zeros() as usize - 2; // 16 -> 2 upsampling stages
        assert_eq!(g.len(), 3 * stages + 2, "G layers at {size}");
        assert_eq!(d.len(), 3 * stages, "D layers at {size}");
    }
    for size in [0, 8, 24, 256] {
        let config = DcganConfig { image_size: size, ..DcganConfig::dcgan32() };
        let err = config.build(1).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "image_size", .. }), "{size}: {err}");
    }
    let config = DcganConfig { nz: 0, ..DcganConfig::dcgan32() };
    assert!(config.build(1).is_err());
}

#[test]
fn parameter_counts_match_built_networks() {
    for size in [16, 32, 64, 128] {
        for (nz, ngf, ndf, channels) in [(5, 2, 3, 2), (100, 64, 64, 3), (7, 1, 1, 1)] {
            let config = DcganConfig { nz, ngf, ndf, channels, image_size: size };
            let (g, d) = config.build(1).unwrap();
            let [g_count, d_count] = config.parameter_counts().unwrap();
            assert_eq!(g_count, g.num_params(), "generator of {config:?}");
            assert_eq!(d_count, d.num_params(), "discriminator of {config:?}");
        }
    }
}

#[test]
fn activation_counts_follow_the_architecture() {
    // The MNIST model. The generator's three ConvT + BN + ReLU stages output 256x4x4, 128x8x8
    // and 64x16x16, then ConvT and Tanh output 1x32x32. The discriminator's Conv + LeakyReLU
    // output 16x16x16, two Conv + BN + LeakyReLU stages 32x8x8 and 64x4x4, the last Conv 1x1x1.
    let mnist = DcganConfig { nz: 100, ngf: 64, ndf: 16, channels: 1, image_size: 32 };
    let generator = 3 * (256 * 16 + 128 * 64 + 64 * 256) + 2 * 1024;
    let discriminator = 2 * 16 * 256 + 3 * (32 * 64 + 64 * 16) + 1;
    for batch in [1, 3, 64] {
        let counts = mnist.activation_counts(batch).unwrap();
        assert_eq!(counts, [batch * generator, batch * discriminator], "batch {batch}");
    }

    // Every model: the sum of the built layers' output sizes.
    for size in [16, 32, 64, 128] {
        for (nz, ngf, ndf, channels) in [(5, 2, 3, 2), (7, 1, 1, 1)] {
            let config = DcganConfig { nz, ngf, ndf, channels, image_size: size };
            let (g, d) = config.build(1).unwrap();
            let layer_sum = |network: &Network, mut shape: [usize; 4]| {
                let mut total = 0;
                for index in 0..network.len() {
                    shape = network.layer(index).unwrap().output_shape(shape).unwrap();
                    total += shape.iter().product::<usize>();
                }
                total
            };
            let expected =
                [layer_sum(&g, config.noise_shape(2)), layer_sum(&d, config.image_shape(2))];
            assert_eq!(config.activation_counts(2).unwrap(), expected, "{config:?}");
        }
    }
}

#[test]
fn step_memory_counts_activations_and_parameters() {
    let config = DcganConfig::dcgan32();
    let [g_params, d_params] = config.parameter_counts().unwrap();
    for batch in [1, 64] {
        let [g_values, d_values] = config.activation_counts(batch).unwrap();
        let expected =
            STEP_BYTES_PER_ACTIVATION * (g_values + d_values) + 16 * (g_params + d_params);
        assert_eq!(config.step_memory_bytes(batch).unwrap(), expected, "batch {batch}");
    }
    assert!(config.step_memory_bytes(usize::MAX).is_err());
    let bad = DcganConfig { image_size: 24, ..config };
    assert!(bad.step_memory_bytes(1).is_err());
}

#[test]
fn oversized_noise_batch_is_rejected() {
    let config = tiny();
    let mut trainer = Trainer::new(config, 13, GanLoss::Bce { real_label: 1.0 }).unwrap();
    for n in [usize::MAX / 4, 1 << 31] {
        let err = trainer.sample_noise(n).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "n", .. }), "{n}: {err}");
        let err = dcgan::run::sample_noise(&config, 0, n).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "n", .. }), "{n}: {err}");
    }
    assert_eq!(trainer.sample_noise(3).unwrap().shape(), [3, config.nz, 1, 1]);
}

#[test]
fn oversized_model_is_rejected() {
    let config = DcganConfig { ngf: 1024, ndf: 1024, image_size: 128, ..DcganConfig::dcgan64() };
    let err = config.validate().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "generator parameters", .. }), "{err}");
    let config = DcganConfig { ndf: 1024, image_size: 128, ..DcganConfig::dcgan64() };
    let err = config.validate().unwrap_err();
    let name = "discriminator parameters";
    assert!(matches!(err, Error::InvalidArgument { name: n, .. } if n == name), "{err}");
    let config = DcganConfig { ngf: usize::MAX / 4, ..DcganConfig::dcgan64() };
    assert!(config.validate().is_err());
}

/// Returns the tiny model of the gradient and parity tests.
fn tiny() -> DcganConfig {
    DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 }
}

/// Returns the generator of the PyTorch example at 16x16, written out layer by layer.
fn reference_generator(c: &DcganConfig) -> Vec<RefLayer> {
    let bn = |features| RefLayer::BatchNorm { features, eps: 1e-5, running: None };
    let up = |c_in, c_out| ConvTranspose2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    vec![
        RefLayer::ConvTranspose2d {
            spec: ConvTranspose2dSpec::new(c.nz, c.ngf * 2, 4),
            bias: false,
        },
        bn(c.ngf * 2),
        RefLayer::Relu,
        RefLayer::ConvTranspose2d { spec: up(c.ngf * 2, c.ngf), bias: false },
        bn(c.ngf),
        RefLayer::Relu,
        RefLayer::ConvTranspose2d { spec: up(c.ngf, c.channels), bias: false },
        RefLayer::Tanh,
    ]
}

/// Returns the discriminator of the PyTorch example at 16x16, written out layer by layer.
fn reference_discriminator(c: &DcganConfig) -> Vec<RefLayer> {
    let down = |c_in, c_out| Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    vec![
        RefLayer::Conv2d { spec: down(c.channels, c.ndf), bias: false },
        RefLayer::LeakyRelu(0.2),
        RefLayer::Conv2d { spec: down(c.ndf, c.ndf * 2), bias: false },
        RefLayer::BatchNorm { features: c.ndf * 2, eps: 1e-5, running: None },
        RefLayer::LeakyRelu(0.2),
        RefLayer::Conv2d { spec: Conv2dSpec::new(c.ndf * 2, 1, 4), bias: false },
    ]
}

/// Picks a few indices of every parameter tensor: its first and last element and four random
/// ones.
fn sample_indices(net: &Network, rng: &mut Rng) -> Vec<usize> {
    let mut indices = Vec::new();
    let mut offset = 0;
    for t in net.named_params() {
        let len = t.data.len();
        indices.extend([offset, offset + len - 1]);
        indices.extend((0..4).map(|_| offset + rng.below(len)));
        offset += len;
    }
    indices
}

#[test]
fn gan_loss_gradients_match_finite_differences() {
    let config = tiny();
    let mut trainer = Trainer::new(config, 11, GanLoss::default()).unwrap();
    let mut rng = Rng::from_seed(12);
    let real = random_array(&mut rng, config.image_shape(3), 1.0);
    let z = random_array(&mut rng, config.noise_shape(3), 2.0);
    let g0 = to64(trainer.generator().params());
    let d0 = to64(trainer.discriminator().params());
    trainer.step_with_noise(real.clone(), z.clone()).unwrap();
    let d1 = to64(trainer.discriminator().params());

    let (ref_g, ref_d) = (reference_generator(&config), reference_discriminator(&config));
    let (real64, z64) = (T64::from_f32(&real), T64::from_f32(&z));
    let fake64 = forward_all(&ref_g, &g0, &z64);

    // The discriminator's gradients were taken at (G0, D0) on its loss.
    let d_loss = |d: &[f64]| {
        bce64(&forward_all(&ref_d, d, &real64).data, 1.0)
            + bce64(&forward_all(&ref_d, d, &fake64).data, 0.0)
    };
    let indices = sample_indices(trainer.discriminator(), &mut rng);
    let fd = central_diff(&d0, &indices, d_loss);
    let analytic: Vec<f32> = indices.iter().map(|&i| trainer.discriminator().grads()[i]).collect();
    assert_close("discriminator gradient", &analytic, &fd, 2e-4, 1e-7);

    // The generator's gradients were taken at (G0, D1): the discriminator already updated.
    let g_loss =
        |g: &[f64]| bce64(&forward_all(&ref_d, &d1, &forward_all(&ref_g, g, &z64)).data, 1.0);
    let indices = sample_indices(trainer.generator(), &mut rng);
    let fd = central_diff(&g0, &indices, g_loss);
    let analytic: Vec<f32> = indices.iter().map(|&i| trainer.generator().grads()[i]).collect();
    assert_close("generator gradient", &analytic, &fd, 2e-4, 1e-7);
}

#[test]
fn half_steps_touch_only_their_network() {
    let config = tiny();
    let mut trainer = Trainer::new(config, 13, GanLoss::Bce { real_label: 0.9 }).unwrap();
    let mut rng = Rng::from_seed(14);
    let real = random_array(&mut rng, config.image_shape(4), 1.0);
    let z = trainer.sample_noise(4).unwrap();
    let fake = trainer.generator_mut().forward(z, Mode::Train).unwrap();

    // Give G's gradients a recognisable value: the D step must not touch them.
    trainer.generator_mut().grads_mut().fill(0.5);
    let g_params = trainer.generator().params().to_vec();
    let d_params = trainer.discriminator().params().to_vec();
    trainer.discriminator_step(real, fake.clone()).unwrap();
    assert_eq!(trainer.generator().params(), &g_params[..], "D step: G parameters");
    assert!(trainer.generator().grads().iter().all(|&g| g == 0.5), "D step: G gradients");
    assert_ne!(trainer.discriminator().params(), &d_params[..], "D step updates D");

    let d_params = trainer.discriminator().params().to_vec();
    let d_grads = trainer.discriminator().grads().to_vec();
    trainer.generator_step(fake).unwrap();
    assert_eq!(trainer.discriminator().params(), &d_params[..], "G step: D parameters");
    assert_eq!(trainer.discriminator().grads(), &d_grads[..], "G step: D gradients");
    assert_ne!(trainer.generator().params(), &g_params[..], "G step updates G");
}

#[test]
fn step_rejects_bad_batches() {
    let config = tiny();
    let mut trainer = Trainer::new(config, 15, GanLoss::default()).unwrap();
    let err = trainer.step(Array4::zeros([2, 1, 32, 32])).unwrap_err();
    assert!(err.to_string().contains("real batch shape"), "{err}");
    let err = trainer.step_with_noise(Array4::zeros([2, 1, 16, 16]), Array4::zeros([3, 8, 1, 1]));
    assert!(err.unwrap_err().to_string().contains("noise shape"));
    // A batch of one still gives BatchNorm 16 values per channel (4x4 planes), as in PyTorch;
    // an empty batch is an error.
    assert!(trainer.step(Array4::zeros([1, 1, 16, 16])).is_ok());
    assert!(trainer.step(Array4::zeros([0, 1, 16, 16])).is_err());
    let mut real = Array4::<f32>::zeros([2, 1, 16, 16]);
    real[[1, 0, 3, 3]] = f32::NAN;
    assert!(matches!(trainer.step(real), Err(Error::NonFinite { .. })));
}

/// Everything a run produces: G and D parameters, G gradients, running statistics, step stats.
type RunResult = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<String>, Vec<StepStats>);

/// Runs two training steps of a small model in a pool of `threads` threads.
fn two_steps(threads: usize) -> RunResult {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let config = DcganConfig { nz: 16, ngf: 8, ndf: 8, channels: 1, image_size: 32 };
        let mut trainer = Trainer::new(config, 17, GanLoss::default()).unwrap();
        let mut rng = Rng::from_seed(18);
        let stats = (0..2)
            .map(|_| trainer.step(random_array(&mut rng, config.image_shape(8), 1.0)).unwrap())
            .collect();
        let buffers = trainer
            .generator()
            .named_buffers()
            .chain(trainer.discriminator().named_buffers())
            .map(|b| format!("{b:?}"))
            .collect();
        (
            trainer.generator().params().to_vec(),
            trainer.discriminator().params().to_vec(),
            trainer.generator().grads().to_vec(),
            buffers,
            stats,
        )
    })
}

#[test]
fn steps_are_bit_identical_across_thread_counts() {
    let one = two_steps(1);
    for threads in [2, 7] {
        let other = two_steps(threads);
        assert_eq!(one.0, other.0, "{threads} threads: generator parameters");
        assert_eq!(one.1, other.1, "{threads} threads: discriminator parameters");
        assert_eq!(one.2, other.2, "{threads} threads: generator gradients");
        assert_eq!(one.3, other.3, "{threads} threads: running statistics");
        assert_eq!(one.4, other.4, "{threads} threads: losses and probabilities");
    }
}
