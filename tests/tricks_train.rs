//! The general training loop. With every option off it equals the plain DCGAN step bit for bit,
//! and with label smoothing or several discriminator steps it equals the plain step's own
//! options. The gradients of every loss and trick through a whole tiny generator and
//! discriminator match central finite differences of `f64` references. Historical averaging
//! and weight clipping are checked as identities, then resume from a checkpoint, thread
//! independence and option checks.

mod tricks_common;

use dcgan::kernels::{Conv2dSpec, ConvTranspose2dSpec};
use dcgan::layers::{Mode, Network};
use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::optim::{RmsPropConfig, SgdConfig};
use dcgan::rng::{Rng, Stream};
use dcgan::train::{GanTrainer, OptimizerConfig, StepStats, TrainConfig, Trainer, Tricks};
use dcgan::tricks::{
    FeatureMatching, HistoricalAveraging, InstanceNoise, MinibatchDiscriminationOptions,
    NoiseSchedule, VirtualBatchNormOptions,
};
use dcgan::Error;
use ndarray::Array4;
use tricks_common::*;

/// Returns the tiny model of the gradient tests: 16x16, two stages each side.
fn tiny() -> DcganConfig {
    DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 }
}

/// Returns the 16x16 DCGAN generator written out layer by layer; with `vbn`, virtual batch
/// normalisation with that many reference rows in place of BatchNorm.
fn reference_generator(c: &DcganConfig, vbn: Option<usize>) -> Vec<Ref> {
    let norm = |features| match vbn {
        Some(m) => Ref::Vbn { features, m },
        None => Ref::Std(RefLayer::BatchNorm { features, eps: 1e-5, running: None }),
    };
    let up = |c_in, c_out| ConvTranspose2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    vec![
        Ref::Std(RefLayer::ConvTranspose2d {
            spec: ConvTranspose2dSpec::new(c.nz, c.ngf * 2, 4),
            bias: false,
        }),
        norm(c.ngf * 2),
        Ref::Std(RefLayer::Relu),
        Ref::Std(RefLayer::ConvTranspose2d { spec: up(c.ngf * 2, c.ngf), bias: false }),
        norm(c.ngf),
        Ref::Std(RefLayer::Relu),
        Ref::Std(RefLayer::ConvTranspose2d { spec: up(c.ngf, c.channels), bias: false }),
        Ref::Std(RefLayer::Tanh),
    ]
}

/// Returns the 16x16 DCGAN discriminator written out layer by layer. With `minibatch`, Flatten,
/// minibatch discrimination and a linear layer replace the last conv.
fn reference_discriminator(
    c: &DcganConfig,
    minibatch: Option<MinibatchDiscriminationOptions>,
) -> Vec<Ref> {
    let down = |c_in, c_out| Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    let mut layers = std_layers(vec![
        RefLayer::Conv2d { spec: down(c.channels, c.ndf), bias: false },
        RefLayer::LeakyRelu(0.2),
        RefLayer::Conv2d { spec: down(c.ndf, c.ndf * 2), bias: false },
        RefLayer::BatchNorm { features: c.ndf * 2, eps: 1e-5, running: None },
        RefLayer::LeakyRelu(0.2),
    ]);
    match minibatch {
        None => layers.push(Ref::Std(RefLayer::Conv2d {
            spec: Conv2dSpec::new(c.ndf * 2, 1, 4),
            bias: false,
        })),
        Some(o) => {
            let a = c.ndf * 2 * 16;
            layers.push(Ref::Std(RefLayer::Flatten));
            layers.push(Ref::Minibatch {
                a,
                b: o.kernels,
                c: o.kernel_dim,
                include_self: o.include_self,
            });
            layers.push(Ref::Std(RefLayer::Linear {
                in_features: a + o.kernels,
                out_features: 1,
                bias: true,
            }));
        }
    }
    layers
}

/// Picks the first, the last and four random elements of every parameter tensor.
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

fn normal_array(shape: [usize; 4], rng: &mut Rng, std: f32) -> Array4<f32> {
    Array4::from_shape_simple_fn(shape, || rng.normal(0.0, std))
}

/// Adds `noise` in `f64`.
fn plus(x: &T64, noise: &Array4<f32>) -> T64 {
    T64 {
        shape: x.shape,
        data: x.data.iter().zip(noise.iter()).map(|(a, &b)| a + b as f64).collect(),
    }
}

/// Returns rows `start..` of `x`.
fn rows_from(x: &T64, start: usize) -> T64 {
    let per_row = x.data.len() / x.shape[0];
    let mut shape = x.shape;
    shape[0] -= start;
    T64 { shape, data: x.data[start * per_row..].to_vec() }
}

fn params_len(layers: &[Ref]) -> usize {
    layers.iter().map(Ref::num_params).sum()
}

/// Runs one step of a trainer with `config` on the tiny model and checks the gradients the
/// step used against central differences of `f64` references. Every random draw of the step
/// is replayed from the documented streams: `z`, then instance noise for the real and the
/// generated batch of the discriminator's update, then for the generated and (feature
/// matching) the real batch of the generator's update.
fn check_step_gradients(config: TrainConfig, seed: u64, what: &str) {
    assert_eq!(config.d_steps, 1);
    let model = tiny();
    let n = 3;
    let tricks = config.tricks;
    let mut trainer = GanTrainer::new(model, config, seed).unwrap();
    let mut rng = Rng::from_seed(seed ^ 0x5eed);
    let real = random_array(&mut rng, model.image_shape(n), 1.0);
    let (g0, d0) = (to64(trainer.generator().params()), to64(trainer.discriminator().params()));
    trainer.step(|| Ok(real.clone())).unwrap();
    let d1 = to64(trainer.discriminator().params());

    // Replay the step's draws.
    let z = normal_array(model.noise_shape(n), &mut Rng::stream(seed, Stream::Noise), 1.0);
    let sigma = tricks.instance_noise.map_or(0.0, |noise| noise.std_at(0));
    let mut noise_rng = Rng::stream(seed, Stream::InstanceNoise);
    let mut draw = |shape| {
        if sigma > 0.0 {
            normal_array(shape, &mut noise_rng, sigma)
        } else {
            Array4::zeros(shape)
        }
    };
    let (eps_real, eps_fake) = (draw(model.image_shape(n)), draw(model.image_shape(n)));
    let eps_fake_g = draw(model.image_shape(n));
    let eps_real_g = tricks.feature_matching.map(|_| draw(model.image_shape(n)));
    let reference_z = tricks.virtual_batch_norm.map(|o| {
        let mut setup = Rng::stream(seed, Stream::Setup);
        normal_array(model.noise_shape(o.reference_size), &mut setup, 1.0)
    });
    if let Some(reference) = &reference_z {
        assert_eq!(trainer.reference_noise(), Some(reference), "{what}: reference batch");
    }

    let ref_g = reference_generator(&model, tricks.virtual_batch_norm.map(|o| o.reference_size));
    let ref_d = reference_discriminator(&model, tricks.minibatch_discrimination);
    let z64 = match &reference_z {
        Some(r) => {
            T64::from_f32(&ndarray::concatenate(ndarray::Axis(0), &[r.view(), z.view()]).unwrap())
        }
        None => T64::from_f32(&z),
    };
    let m = reference_z.as_ref().map_or(0, |r| r.shape()[0]);
    let generate = |g: &[f64]| rows_from(&run(&ref_g, g, &z64), m);
    let noisy_real = T64::from_f32(&(&real + &eps_real));
    let fake64 = plus(&generate(&g0), &eps_fake);

    // The discriminator's gradients were taken at (G0, D0).
    let loss = config.loss;
    let real_loss = match tricks.label_smoothing {
        Some(label) => GanLoss::Bce { real_label: label },
        None => loss,
    };
    let d_loss = |d: &[f64]| {
        loss64(real_loss, Term::Real, &run(&ref_d, d, &noisy_real).data)
            + loss64(loss, Term::Fake, &run(&ref_d, d, &fake64).data)
    };
    let indices = sample_indices(trainer.discriminator(), &mut rng);
    let fd = central_diff(&d0, &indices, d_loss);
    let analytic: Vec<f32> = indices.iter().map(|&i| trainer.discriminator().grads()[i]).collect();
    assert_close(&format!("{what}: discriminator gradient"), &analytic, &fd, 2e-4, 1e-7);

    // The generator's gradients were taken at (G0, D1).
    let g_loss = |g: &[f64]| match tricks.feature_matching {
        None => {
            loss64(loss, Term::Generator, &run(&ref_d, &d1, &plus(&generate(g), &eps_fake_g)).data)
        }
        Some(options) => {
            let end = options.layer.unwrap_or(ref_d.len() - 2) + 1;
            let (layers, params) = (&ref_d[..end], &d1[..params_len(&ref_d[..end])]);
            let real_in = T64::from_f32(&(&real + eps_real_g.as_ref().unwrap()));
            let f_real = run(layers, params, &real_in);
            let f_fake = run(layers, params, &plus(&generate(g), &eps_fake_g));
            let width = f_real.data.len() / n;
            (0..width)
                .map(|j| {
                    let mean =
                        |f: &T64| (0..n).map(|i| f.data[i * width + j]).sum::<f64>() / n as f64;
                    (mean(&f_real) - mean(&f_fake)).powi(2)
                })
                .sum()
        }
    };
    let indices = sample_indices(trainer.generator(), &mut rng);
    let fd = central_diff(&g0, &indices, g_loss);
    let analytic: Vec<f32> = indices.iter().map(|&i| trainer.generator().grads()[i]).collect();
    assert_close(&format!("{what}: generator gradient"), &analytic, &fd, 2e-4, 1e-7);
}

/// Returns the default settings with SGD for both players.
fn sgd_config() -> TrainConfig {
    let sgd = OptimizerConfig::Sgd(SgdConfig::new(0.05));
    TrainConfig { g_optimizer: sgd, d_optimizer: sgd, ..TrainConfig::default() }
}

#[test]
fn every_loss_gradient_matches_finite_differences() {
    for (i, loss) in all_losses().into_iter().enumerate() {
        let config = TrainConfig { loss, ..sgd_config() };
        check_step_gradients(config, 100 + i as u64, &format!("{loss:?}"));
    }
}

#[test]
fn label_smoothing_gradient_matches_finite_differences() {
    for loss in [GanLoss::Minimax, GanLoss::NonSaturating] {
        let tricks = Tricks { label_smoothing: Some(0.9), ..Tricks::default() };
        check_step_gradients(TrainConfig { loss, tricks, ..sgd_config() }, 31, "label smoothing");
    }
}

#[test]
fn instance_noise_gradient_matches_finite_differences() {
    let noise = InstanceNoise::linear(0.3, 100);
    let tricks = Tricks { instance_noise: Some(noise), ..Tricks::default() };
    check_step_gradients(TrainConfig { tricks, ..sgd_config() }, 32, "instance noise");
    let tricks = Tricks {
        instance_noise: Some(noise),
        feature_matching: Some(FeatureMatching::default()),
        ..Tricks::default()
    };
    check_step_gradients(TrainConfig { tricks, ..sgd_config() }, 33, "noise + feature matching");
}

#[test]
fn feature_matching_gradient_matches_finite_differences() {
    // The default (the last hidden layer, the LeakyReLU before the logit) and the first conv.
    for layer in [None, Some(0), Some(3)] {
        let tricks =
            Tricks { feature_matching: Some(FeatureMatching { layer }), ..Tricks::default() };
        check_step_gradients(
            TrainConfig { tricks, ..sgd_config() },
            34,
            &format!("layer {layer:?}"),
        );
    }
}

#[test]
fn minibatch_discrimination_gradient_matches_finite_differences() {
    for include_self in [false, true] {
        let options = MinibatchDiscriminationOptions { kernels: 3, kernel_dim: 2, include_self };
        let tricks = Tricks { minibatch_discrimination: Some(options), ..Tricks::default() };
        check_step_gradients(
            TrainConfig { tricks, ..sgd_config() },
            35,
            "minibatch discrimination",
        );
    }
    // Feature matching at the minibatch layer's output, the default with the layer on.
    let tricks = Tricks {
        minibatch_discrimination: Some(MinibatchDiscriminationOptions::default()),
        feature_matching: Some(FeatureMatching::default()),
        ..Tricks::default()
    };
    check_step_gradients(TrainConfig { tricks, ..sgd_config() }, 36, "minibatch + matching");
}

#[test]
fn virtual_batch_norm_gradient_matches_finite_differences() {
    let tricks = Tricks {
        virtual_batch_norm: Some(VirtualBatchNormOptions { reference_size: 4 }),
        ..Tricks::default()
    };
    check_step_gradients(TrainConfig { tricks, ..sgd_config() }, 37, "virtual batch norm");
}

/// Everything a run leaves behind: parameters, gradients, buffers and statistics.
#[derive(Debug, PartialEq)]
struct RunState {
    g_params: Vec<f32>,
    d_params: Vec<f32>,
    g_grads: Vec<f32>,
    d_grads: Vec<f32>,
    buffers: Vec<String>,
    stats: Vec<StepStats>,
}

fn buffers(g: &Network, d: &Network) -> Vec<String> {
    g.named_buffers().chain(d.named_buffers()).map(|b| format!("{b:?}")).collect()
}

fn batches(model: &DcganConfig, count: usize, n: usize, seed: u64) -> Vec<Array4<f32>> {
    let mut rng = Rng::from_seed(seed);
    (0..count).map(|_| random_array(&mut rng, model.image_shape(n), 1.0)).collect()
}

#[test]
fn defaults_equal_the_plain_step_bit_for_bit() {
    let model = tiny();
    let data = batches(&model, 3, 4, 50);
    let mut plain = Trainer::new(model, 51, GanLoss::default()).unwrap();
    let mut general = GanTrainer::new(model, TrainConfig::default(), 51).unwrap();
    for real in &data {
        let a = plain.step(real.clone()).unwrap();
        let b = general.step(|| Ok(real.clone())).unwrap();
        assert_eq!(a, b, "step statistics");
    }
    assert_eq!(plain.generator().params(), general.generator().params());
    assert_eq!(plain.discriminator().params(), general.discriminator().params());
    assert_eq!(plain.generator().grads(), general.generator().grads());
    assert_eq!(plain.discriminator().grads(), general.discriminator().grads());
    assert_eq!(
        buffers(plain.generator(), plain.discriminator()),
        buffers(general.generator(), general.discriminator())
    );
    match (general.g_optimizer().state(), general.d_optimizer().state()) {
        (dcgan::train::OptimizerState::Adam(g), dcgan::train::OptimizerState::Adam(d)) => {
            assert_eq!(&g, plain.g_optimizer().state());
            assert_eq!(&d, plain.d_optimizer().state());
        }
        other => panic!("expected Adam states, got {other:?}"),
    }
    assert_eq!(plain.noise_rng(), general.noise_rng());
    assert_eq!(general.step_count(), 3);
}

#[test]
fn label_smoothing_equals_the_plain_bce_label() {
    let model = tiny();
    let data = batches(&model, 2, 4, 52);
    let mut plain = Trainer::new(model, 53, GanLoss::Bce { real_label: 0.9 }).unwrap();
    let tricks = Tricks { label_smoothing: Some(0.9), ..Tricks::default() };
    let config = TrainConfig { tricks, ..TrainConfig::default() };
    let mut general = GanTrainer::new(model, config, 53).unwrap();
    for real in &data {
        assert_eq!(plain.step(real.clone()).unwrap(), general.step(|| Ok(real.clone())).unwrap());
    }
    assert_eq!(plain.generator().params(), general.generator().params());
    assert_eq!(plain.discriminator().params(), general.discriminator().params());
}

#[test]
fn several_discriminator_steps_equal_composed_half_steps() {
    // Three D updates, each on its own batch and noise, then G on the last generated batch:
    // the plain trainer's half steps composed by hand.
    let model = tiny();
    let data = batches(&model, 6, 2, 54);
    let mut plain = Trainer::new(model, 55, GanLoss::default()).unwrap();
    let config = TrainConfig { d_steps: 3, ..TrainConfig::default() };
    let mut general = GanTrainer::new(model, config, 55).unwrap();
    for step in 0..2 {
        let mut fake = None;
        let mut d_loss = 0.0;
        for k in 0..3 {
            let z = plain.sample_noise(2).unwrap();
            let f = plain.generator_mut().forward(z, Mode::Train).unwrap();
            d_loss += plain.discriminator_step(data[3 * step + k].clone(), f.clone()).unwrap().loss;
            fake = Some(f);
        }
        let g = plain.generator_step(fake.unwrap()).unwrap();

        let mut calls = 0;
        let stats = general
            .step(|| {
                calls += 1;
                Ok(data[3 * step + calls - 1].clone())
            })
            .unwrap();
        assert_eq!(calls, 3, "one real batch per discriminator step");
        assert_eq!(stats.g_loss, g.loss);
        assert_eq!(stats.d_loss, d_loss / 3.0);
    }
    assert_eq!(plain.generator().params(), general.generator().params());
    assert_eq!(plain.discriminator().params(), general.discriminator().params());
    assert_eq!(plain.generator().grads(), general.generator().grads());
}

#[test]
fn feature_matching_leaves_the_discriminator_alone() {
    // Feature matching changes only the generator's update: D's parameters and gradients after
    // a step equal those of a run without it, and G's differ.
    let model = tiny();
    let data = batches(&model, 2, 3, 56);
    let run = |feature_matching| {
        let tricks = Tricks { feature_matching, ..Tricks::default() };
        let mut trainer =
            GanTrainer::new(model, TrainConfig { tricks, ..TrainConfig::default() }, 57).unwrap();
        let stats = trainer.step(|| Ok(data[0].clone())).unwrap();
        assert!(stats.g_loss.is_finite() && stats.d_fake_after.is_finite());
        trainer
    };
    let (with, without) = (run(Some(FeatureMatching::default())), run(None));
    assert_eq!(with.discriminator().params(), without.discriminator().params());
    assert_eq!(with.discriminator().grads(), without.discriminator().grads());
    assert_ne!(with.generator().grads(), without.generator().grads());
    assert_eq!(with.feature_layer(), Some(4));
}

#[test]
fn historical_averaging_adds_its_gradient() {
    // Step 1 has no penalty (the mean is the current parameters), so both runs reach the same
    // theta_1. At step 2 the mean is (theta_0 + theta_1) / 2 and the gradient gains
    // 2 lambda (theta_1 - mean) = lambda (theta_1 - theta_0), for both players.
    let model = tiny();
    let data = batches(&model, 2, 3, 58);
    let weight = 0.5;
    let sgd = sgd_config();
    let averaging =
        Tricks { historical_averaging: Some(HistoricalAveraging { weight }), ..Tricks::default() };
    let mut with = GanTrainer::new(model, TrainConfig { tricks: averaging, ..sgd }, 59).unwrap();
    let mut without = GanTrainer::new(model, sgd, 59).unwrap();
    let d0 = with.discriminator().params().to_vec();
    with.step(|| Ok(data[0].clone())).unwrap();
    without.step(|| Ok(data[0].clone())).unwrap();
    assert_eq!(with.generator().params(), without.generator().params(), "step 1");
    let d1 = with.discriminator().params().to_vec();
    let stats_with = with.step(|| Ok(data[1].clone())).unwrap();
    let stats_without = without.step(|| Ok(data[1].clone())).unwrap();

    // D's second update happens at theta_1 = d1.
    let expected: Vec<f64> = d1
        .iter()
        .zip(&d0)
        .zip(without.discriminator().grads())
        .map(|((&t1, &t0), &g)| g as f64 + weight * (t1 as f64 - t0 as f64))
        .collect();
    assert_close("discriminator gradient", with.discriminator().grads(), &expected, 1e-5, 1e-7);
    let penalty: f64 =
        d1.iter().zip(&d0).map(|(&t1, &t0)| weight * (0.5 * (t1 as f64 - t0 as f64)).powi(2)).sum();
    let d_diff = stats_with.d_loss - stats_without.d_loss;
    assert!((d_diff - penalty).abs() <= 1e-6 * penalty.max(1e-12), "{d_diff} vs {penalty}");
    assert!(penalty > 0.0);

    let (g_history, d_history) = with.histories();
    assert_eq!(g_history.unwrap().count, 2);
    assert_eq!(d_history.unwrap().count, 2);
}

#[test]
fn historical_averaging_adds_its_gradient_to_the_generator() {
    // With D frozen (SGD with lr 0) both runs keep the same D, so G's second gradient differs
    // only by lambda (theta_1 - theta_0).
    let model = tiny();
    let data = batches(&model, 2, 3, 68);
    let weight = 0.5;
    let frozen_d =
        TrainConfig { d_optimizer: OptimizerConfig::Sgd(SgdConfig::new(0.0)), ..sgd_config() };
    let averaging =
        Tricks { historical_averaging: Some(HistoricalAveraging { weight }), ..Tricks::default() };
    let mut with =
        GanTrainer::new(model, TrainConfig { tricks: averaging, ..frozen_d }, 69).unwrap();
    let mut without = GanTrainer::new(model, frozen_d, 69).unwrap();
    let g0 = with.generator().params().to_vec();
    with.step(|| Ok(data[0].clone())).unwrap();
    without.step(|| Ok(data[0].clone())).unwrap();
    let g1 = with.generator().params().to_vec();
    assert_eq!(&g1[..], without.generator().params(), "step 1");
    assert_ne!(g1, g0);
    let stats_with = with.step(|| Ok(data[1].clone())).unwrap();
    let stats_without = without.step(|| Ok(data[1].clone())).unwrap();
    assert_eq!(with.discriminator().params(), without.discriminator().params());

    let expected: Vec<f64> = g1
        .iter()
        .zip(&g0)
        .zip(without.generator().grads())
        .map(|((&t1, &t0), &g)| g as f64 + weight * (t1 as f64 - t0 as f64))
        .collect();
    assert_close("generator gradient", with.generator().grads(), &expected, 1e-5, 1e-7);
    let penalty: f64 =
        g1.iter().zip(&g0).map(|(&t1, &t0)| weight * (0.5 * (t1 as f64 - t0 as f64)).powi(2)).sum();
    let g_diff = stats_with.g_loss - stats_without.g_loss;
    assert!((g_diff - penalty).abs() <= 1e-6 * penalty, "{g_diff} vs {penalty}");
}

#[test]
fn weight_clipping_bounds_the_critic() {
    // One critic step: the clipped run's D parameters are the unclipped run's, clamped.
    let model = tiny();
    let data = batches(&model, 1, 3, 60);
    let wgan = TrainConfig { d_steps: 1, ..TrainConfig::wgan() };
    let unclipped = TrainConfig { tricks: Tricks::default(), ..wgan };
    let mut a = GanTrainer::new(model, wgan, 61).unwrap();
    let mut b = GanTrainer::new(model, unclipped, 61).unwrap();
    a.step(|| Ok(data[0].clone())).unwrap();
    b.step(|| Ok(data[0].clone())).unwrap();
    let clamped: Vec<f32> =
        b.discriminator().params().iter().map(|p| p.clamp(-0.01, 0.01)).collect();
    assert_eq!(a.discriminator().params(), &clamped[..]);
    assert!(b.discriminator().params().iter().any(|p| p.abs() > 0.01), "clipping had an effect");

    // The paper's schedule: five critic steps on five batches per generator step.
    let data = batches(&model, 10, 2, 62);
    let mut trainer = GanTrainer::new(model, TrainConfig::wgan(), 63).unwrap();
    let mut next = data.into_iter();
    for _ in 0..2 {
        let stats = trainer.step(|| Ok(next.next().unwrap())).unwrap();
        assert!(stats.d_loss.is_finite() && stats.g_loss.is_finite());
    }
    assert!(next.next().is_none(), "ten batches for two steps");
    assert!(trainer.discriminator().params().iter().all(|p| p.abs() <= 0.01));
}

#[test]
fn instance_noise_schedules_anneal_to_zero() {
    let linear = InstanceNoise::linear(0.4, 10);
    assert_eq!(linear.std_at(0), 0.4);
    assert!((linear.std_at(5) - 0.2).abs() < 1e-7);
    assert!((linear.std_at(9) - 0.04).abs() < 1e-7);
    assert_eq!(linear.std_at(10), 0.0);
    assert_eq!(linear.std_at(1000), 0.0);
    let exponential = InstanceNoise {
        std: 0.4,
        anneal_steps: 10,
        schedule: NoiseSchedule::Exponential { final_fraction: 0.01 },
    };
    assert_eq!(exponential.std_at(0), 0.4);
    assert!((exponential.std_at(5) - 0.04).abs() < 1e-7, "0.4 * 0.01^0.5");
    assert_eq!(exponential.std_at(10), 0.0);

    // Once annealed, a step draws nothing from the instance noise stream.
    let model = tiny();
    let data = batches(&model, 3, 2, 64);
    let tricks =
        Tricks { instance_noise: Some(InstanceNoise::linear(0.1, 2)), ..Tricks::default() };
    let mut trainer =
        GanTrainer::new(model, TrainConfig { tricks, ..TrainConfig::default() }, 65).unwrap();
    let fresh = trainer.instance_noise_rng().clone();
    trainer.step(|| Ok(data[0].clone())).unwrap();
    assert_ne!(trainer.instance_noise_rng(), &fresh, "step 0 draws noise");
    trainer.step(|| Ok(data[1].clone())).unwrap();
    let after = trainer.instance_noise_rng().clone();
    assert_eq!(trainer.instance_noise_std(), 0.0);
    trainer.step(|| Ok(data[2].clone())).unwrap();
    assert_eq!(trainer.instance_noise_rng(), &after, "step 2 is past the schedule");
}

/// Every trick at once, with RMSProp for D, on `threads` threads: `steps` steps, or `split`
/// steps, a round trip through checkpoint bytes, then the rest.
fn all_tricks_run(threads: usize, steps: usize, split: Option<usize>) -> RunState {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let model = DcganConfig { nz: 6, ngf: 4, ndf: 4, channels: 1, image_size: 16 };
        let config = TrainConfig {
            d_steps: 2,
            d_optimizer: OptimizerConfig::RmsProp(RmsPropConfig { lr: 1e-3, ..Default::default() }),
            tricks: Tricks {
                label_smoothing: Some(0.9),
                instance_noise: Some(InstanceNoise::linear(0.2, 50)),
                feature_matching: Some(FeatureMatching::default()),
                minibatch_discrimination: Some(MinibatchDiscriminationOptions {
                    kernels: 8,
                    kernel_dim: 3,
                    include_self: false,
                }),
                historical_averaging: Some(HistoricalAveraging { weight: 0.1 }),
                virtual_batch_norm: Some(VirtualBatchNormOptions { reference_size: 3 }),
                weight_clip: None,
            },
            ..TrainConfig::default()
        };
        let data = batches(&model, 2 * steps, 4, 66);
        let mut trainer = GanTrainer::new(model, config, 67).unwrap();
        let mut stats = Vec::new();
        let mut next = data.into_iter();
        for step in 0..steps {
            if split == Some(step) {
                let bytes = trainer.to_checkpoint().unwrap().to_bytes().unwrap();
                let checkpoint = dcgan::checkpoint::Checkpoint::load_bytes(&bytes).unwrap();
                trainer = GanTrainer::from_checkpoint(&checkpoint).unwrap();
            }
            stats.push(trainer.step(|| Ok(next.next().unwrap())).unwrap());
        }
        RunState {
            g_params: trainer.generator().params().to_vec(),
            d_params: trainer.discriminator().params().to_vec(),
            g_grads: trainer.generator().grads().to_vec(),
            d_grads: trainer.discriminator().grads().to_vec(),
            buffers: buffers(trainer.generator(), trainer.discriminator()),
            stats,
        }
    })
}

#[test]
fn resumed_run_is_bit_identical() {
    let straight = all_tricks_run(1, 4, None);
    let resumed = all_tricks_run(1, 4, Some(2));
    assert_eq!(straight.g_params, resumed.g_params, "generator parameters");
    assert_eq!(straight.d_params, resumed.d_params, "discriminator parameters");
    assert_eq!(straight.buffers, resumed.buffers, "running statistics");
    assert_eq!(straight.stats, resumed.stats, "losses");
    assert!(straight.stats.iter().all(|s| s.d_loss.is_finite() && s.g_loss.is_finite()));
}

#[test]
fn all_tricks_are_bit_identical_across_thread_counts() {
    let one = all_tricks_run(1, 2, None);
    let two = all_tricks_run(2, 2, None);
    assert_eq!(one, two);
}

#[test]
fn checkpoint_rejects_a_mismatched_state() {
    let model = tiny();
    let trainer = GanTrainer::new(model, TrainConfig::default(), 70).unwrap();
    let mut checkpoint = trainer.to_checkpoint().unwrap();
    checkpoint.tensors.remove("g_optimizer.exp_avg");
    let err = GanTrainer::from_checkpoint(&checkpoint).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("g_optimizer.exp_avg"), "{err}");

    let mut checkpoint = trainer.to_checkpoint().unwrap();
    checkpoint.metadata.insert("train_config".into(), "{\"loss\": 3}".into());
    assert!(GanTrainer::from_checkpoint(&checkpoint).is_err());
}

#[test]
fn checkpoint_claiming_a_larger_model_is_rejected() {
    let trainer = GanTrainer::new(tiny(), TrainConfig::default(), 71).unwrap();
    let mut checkpoint = trainer.to_checkpoint().unwrap();
    // Stored tensors of the tiny model, metadata of a model with millions of parameters.
    let claimed = DcganConfig { ngf: 64, ndf: 64, image_size: 64, ..tiny() };
    checkpoint.set_json("model", &claimed).unwrap();
    let err = GanTrainer::from_checkpoint(&checkpoint).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("generator.*"), "{err}");
    assert!(err.to_string().contains("parameters"), "{err}");
}

#[test]
fn restructured_networks_keep_the_plain_layout() {
    let model = DcganConfig { nz: 5, ngf: 3, ndf: 2, channels: 2, image_size: 32 };
    let (plain_g, plain_d) = model.build(7).unwrap();
    let tricks = Tricks {
        minibatch_discrimination: Some(MinibatchDiscriminationOptions::default()),
        virtual_batch_norm: Some(VirtualBatchNormOptions { reference_size: 2 }),
        ..Tricks::default()
    };
    let trainer =
        GanTrainer::new(model, TrainConfig { tricks, ..TrainConfig::default() }, 7).unwrap();
    let shapes = |net: &Network| -> Vec<(String, Vec<usize>)> {
        net.named_params().map(|t| (t.name, t.shape)).collect()
    };
    assert_eq!(shapes(trainer.generator()), shapes(&plain_g), "VBN generator");
    assert_eq!(trainer.generator().params(), plain_g.params(), "same initial values");
    let (d, plain) = (shapes(trainer.discriminator()), shapes(&plain_d));
    assert_eq!(d[..plain.len() - 1], plain[..plain.len() - 1], "discriminator trunk");
    let a = 2 * 4 * 16;
    assert_eq!(d[plain.len() - 1].1, vec![a, 100, 5], "minibatch tensor T");
    assert_eq!(d[plain.len()].1, vec![1, a + 100], "output layer");
    assert_eq!(trainer.discriminator().output_shape([3, 2, 32, 32]).unwrap(), [3, 1, 1, 1]);
}

#[test]
fn bad_options_are_rejected() {
    let model = tiny();
    let with = |tricks: Tricks| TrainConfig { tricks, ..TrainConfig::default() };
    let cases: Vec<(TrainConfig, &str)> = vec![
        (TrainConfig { d_steps: 0, ..TrainConfig::default() }, "d_steps"),
        (with(Tricks { label_smoothing: Some(0.0), ..Tricks::default() }), "label_smoothing"),
        (with(Tricks { label_smoothing: Some(1.5), ..Tricks::default() }), "label_smoothing"),
        (
            TrainConfig {
                loss: GanLoss::Hinge,
                ..with(Tricks { label_smoothing: Some(0.9), ..Tricks::default() })
            },
            "label_smoothing",
        ),
        (
            TrainConfig {
                loss: GanLoss::Bce { real_label: 0.8 },
                ..with(Tricks { label_smoothing: Some(0.9), ..Tricks::default() })
            },
            "label_smoothing",
        ),
        (
            with(Tricks {
                instance_noise: Some(InstanceNoise::linear(-0.1, 10)),
                ..Tricks::default()
            }),
            "instance_noise.std",
        ),
        (
            with(Tricks {
                instance_noise: Some(InstanceNoise::linear(0.1, 0)),
                ..Tricks::default()
            }),
            "instance_noise.anneal_steps",
        ),
        (
            with(Tricks {
                instance_noise: Some(InstanceNoise {
                    std: 0.1,
                    anneal_steps: 5,
                    schedule: NoiseSchedule::Exponential { final_fraction: 1.0 },
                }),
                ..Tricks::default()
            }),
            "instance_noise.final_fraction",
        ),
        (
            with(Tricks {
                minibatch_discrimination: Some(MinibatchDiscriminationOptions {
                    kernels: 0,
                    ..Default::default()
                }),
                ..Tricks::default()
            }),
            "minibatch_discrimination.kernels (B)",
        ),
        (
            with(Tricks {
                minibatch_discrimination: Some(MinibatchDiscriminationOptions {
                    kernel_dim: 0,
                    ..Default::default()
                }),
                ..Tricks::default()
            }),
            "minibatch_discrimination.kernel_dim (C)",
        ),
        (
            with(Tricks {
                historical_averaging: Some(HistoricalAveraging { weight: -1.0 }),
                ..Tricks::default()
            }),
            "historical_averaging.weight",
        ),
        (
            with(Tricks {
                virtual_batch_norm: Some(VirtualBatchNormOptions { reference_size: 0 }),
                ..Tricks::default()
            }),
            "virtual_batch_norm.reference_size",
        ),
        (with(Tricks { weight_clip: Some(0.0), ..Tricks::default() }), "weight_clip"),
        (with(Tricks { weight_clip: Some(-0.01), ..Tricks::default() }), "weight_clip"),
        (
            with(Tricks {
                feature_matching: Some(FeatureMatching { layer: Some(5) }),
                ..Tricks::default()
            }),
            "feature_matching.layer",
        ),
        (
            TrainConfig {
                d_optimizer: OptimizerConfig::Sgd(SgdConfig::new(-1.0)),
                ..TrainConfig::default()
            },
            "lr",
        ),
    ];
    for (config, name) in cases {
        let err = GanTrainer::new(model, config, 1).unwrap_err();
        match &err {
            Error::InvalidArgument { name: got, .. } => assert_eq!(*got, name, "{err}"),
            other => panic!("{name}: expected InvalidArgument, got {other}"),
        }
    }

    // A batch of the wrong shape, and an error from the batch source, reach the caller.
    let mut trainer = GanTrainer::new(model, TrainConfig::default(), 2).unwrap();
    let err = trainer.step(|| Ok(Array4::zeros([2, 1, 32, 32]))).unwrap_err();
    assert!(err.to_string().contains("real batch shape"), "{err}");
    let err =
        trainer.step(|| Err(Error::invalid("data", "exhausted", "more batches"))).unwrap_err();
    assert!(err.to_string().contains("exhausted"), "{err}");
    assert!(trainer.step(|| Ok(Array4::zeros([0, 1, 16, 16]))).is_err());
    assert_eq!(trainer.step_count(), 0);
}
