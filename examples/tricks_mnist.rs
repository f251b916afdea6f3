//! Trains a small DCGAN on the shipped MNIST digits with one loss or trick switched on by
//! flags, and prints the losses: a quick way to see what each option does.
//!
//! ```text
//! cargo run --release --example tricks_mnist -- --steps 300 --loss lsgan
//! cargo run --release --example tricks_mnist -- --minibatch-discrimination --samples mbd.png
//! cargo run --release --example tricks_mnist -- --wgan
//! ```
//!
//! Each flag sets the field of `dcgan::train::TrainConfig` or `Tricks` of the same name.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use dcgan::data::{Batcher, LastBatch, Mnist, MnistOptions};
use dcgan::layers::Mode;
use dcgan::loss::{Divergence, FGanGenerator, GanLoss};
use dcgan::models::DcganConfig;
use dcgan::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use dcgan::train::{GanTrainer, OptimizerConfig, StepStats, TrainConfig};
use dcgan::tricks::{
    FeatureMatching, HistoricalAveraging, InstanceNoise, MinibatchDiscriminationOptions,
    NoiseSchedule, VirtualBatchNormOptions,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LossArg {
    Minimax,
    NonSaturating,
    Lsgan,
    Wasserstein,
    Hinge,
    FganKl,
    FganReverseKl,
    FganPearson,
    FganHellinger,
    FganJs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FGanGeneratorArg {
    Alternative,
    Saturating,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OptimizerArg {
    Adam,
    Rmsprop,
    Sgd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScheduleArg {
    Linear,
    Exponential,
}

/// Train a small DCGAN on the shipped MNIST digits with one GAN loss or trick switched on.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Training steps (generator updates).
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Image side length in pixels (16, 32 or 64).
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Latent vector length.
    #[arg(long, default_value_t = 32)]
    nz: usize,
    /// Generator width (channels of its last hidden layer).
    #[arg(long, default_value_t = 16)]
    ngf: usize,
    /// Discriminator width (channels of its first layer).
    #[arg(long, default_value_t = 16)]
    ndf: usize,
    /// Number of shipped digits to train on (at most 10000).
    #[arg(long, default_value_t = 10000)]
    digits: usize,
    /// Seed of every random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (0: rayon's default, one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print the losses every this many steps.
    #[arg(long, default_value_t = 50)]
    print_every: u64,
    /// Write a grid of 64 generated digits to this PNG file at the end.
    #[arg(long)]
    samples: Option<PathBuf>,

    /// Start from the WGAN paper's settings: Wasserstein loss, 5 critic steps, weight clip
    /// 0.01, RMSProp with lr 5e-5. Other flags override them.
    #[arg(long)]
    wgan: bool,
    /// GAN loss.
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Generator loss of the f-GAN losses: Nowozin et al.'s alternative -E[g_f(v)], or the
    /// saturating -E[f*(g_f(v))].
    #[arg(long, value_enum, default_value = "alternative")]
    fgan_generator: FGanGeneratorArg,
    /// Discriminator (critic) updates per generator update.
    #[arg(long)]
    d_steps: Option<usize>,
    /// Optimiser of both players (default Adam with betas (0.5, 0.999)).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Generator learning rate (default 2e-4; 5e-5 with --wgan).
    #[arg(long)]
    lr_g: Option<f64>,
    /// Discriminator learning rate (default 2e-4; 5e-5 with --wgan).
    #[arg(long)]
    lr_d: Option<f64>,

    /// One-sided label smoothing: the discriminator's target for real digits (0.9 is usual).
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// Instance noise: standard deviation at step 0 (images lie in [-1, 1]).
    #[arg(long)]
    instance_noise_std: Option<f32>,
    /// Instance noise: steps until the noise is off.
    #[arg(long, default_value_t = 200)]
    instance_noise_steps: u64,
    /// Instance noise: the decay from the initial standard deviation to zero.
    #[arg(long, value_enum, default_value = "linear")]
    instance_noise_schedule: ScheduleArg,
    /// Instance noise, exponential schedule: fraction of the standard deviation left at the
    /// end.
    #[arg(long, default_value_t = 0.01)]
    instance_noise_final_fraction: f32,
    /// Feature matching: the generator matches the mean activations of a discriminator layer.
    #[arg(long)]
    feature_matching: bool,
    /// Feature matching: index of the discriminator layer (default: the last hidden one).
    #[arg(long)]
    feature_layer: Option<usize>,
    /// Minibatch discrimination before the discriminator's output.
    #[arg(long)]
    minibatch_discrimination: bool,
    /// Minibatch discrimination: number of kernels B appended to the features.
    #[arg(long, default_value_t = 100)]
    minibatch_kernels: usize,
    /// Minibatch discrimination: length C of each kernel's projection.
    #[arg(long, default_value_t = 5)]
    minibatch_kernel_dim: usize,
    /// Minibatch discrimination: count each sample itself (adds 1 to every output).
    #[arg(long)]
    minibatch_include_self: bool,
    /// Historical averaging: weight lambda of ||theta - mean of past theta||^2.
    #[arg(long)]
    historical_averaging: Option<f64>,
    /// Virtual batch normalisation in the generator, with a reference batch of this size.
    #[arg(long)]
    virtual_batch_norm: Option<usize>,
    /// Clip every discriminator weight to [-c, c] after each update.
    #[arg(long)]
    weight_clip: Option<f32>,
}

fn loss(arg: LossArg, generator: FGanGeneratorArg) -> GanLoss {
    let generator = match generator {
        FGanGeneratorArg::Alternative => FGanGenerator::Alternative,
        FGanGeneratorArg::Saturating => FGanGenerator::Saturating,
    };
    let f_gan = |divergence| GanLoss::FGan { divergence, generator };
    match arg {
        LossArg::Minimax => GanLoss::Minimax,
        LossArg::NonSaturating => GanLoss::NonSaturating,
        LossArg::Lsgan => GanLoss::least_squares(),
        LossArg::Wasserstein => GanLoss::Wasserstein,
        LossArg::Hinge => GanLoss::Hinge,
        LossArg::FganKl => f_gan(Divergence::KullbackLeibler),
        LossArg::FganReverseKl => f_gan(Divergence::ReverseKullbackLeibler),
        LossArg::FganPearson => f_gan(Divergence::PearsonChiSquared),
        LossArg::FganHellinger => f_gan(Divergence::SquaredHellinger),
        LossArg::FganJs => f_gan(Divergence::JensenShannon),
    }
}

fn optimizer(arg: OptimizerArg, lr: f64) -> OptimizerConfig {
    match arg {
        OptimizerArg::Adam => OptimizerConfig::Adam(AdamConfig { lr, ..AdamConfig::dcgan() }),
        OptimizerArg::Rmsprop => {
            OptimizerConfig::RmsProp(RmsPropConfig { lr, ..RmsPropConfig::default() })
        }
        OptimizerArg::Sgd => OptimizerConfig::Sgd(SgdConfig::new(lr)),
    }
}

/// Builds the training settings from the flags.
fn train_config(args: &Args) -> TrainConfig {
    let mut config = if args.wgan { TrainConfig::wgan() } else { TrainConfig::default() };
    if let Some(arg) = args.loss {
        config.loss = loss(arg, args.fgan_generator);
    }
    if let Some(d_steps) = args.d_steps {
        config.d_steps = d_steps;
    }
    let default_optimizer = if args.wgan { OptimizerArg::Rmsprop } else { OptimizerArg::Adam };
    let kind = args.optimizer.unwrap_or(default_optimizer);
    if args.optimizer.is_some() || args.lr_g.is_some() || args.lr_d.is_some() {
        let (g_lr, d_lr) = (config.g_optimizer.lr(), config.d_optimizer.lr());
        config.g_optimizer = optimizer(kind, args.lr_g.unwrap_or(g_lr));
        config.d_optimizer = optimizer(kind, args.lr_d.unwrap_or(d_lr));
    }

    let tricks = &mut config.tricks;
    tricks.label_smoothing = args.label_smoothing;
    tricks.instance_noise = args.instance_noise_std.map(|std| InstanceNoise {
        std,
        anneal_steps: args.instance_noise_steps,
        schedule: match args.instance_noise_schedule {
            ScheduleArg::Linear => NoiseSchedule::Linear,
            ScheduleArg::Exponential => {
                NoiseSchedule::Exponential { final_fraction: args.instance_noise_final_fraction }
            }
        },
    });
    tricks.feature_matching =
        args.feature_matching.then_some(FeatureMatching { layer: args.feature_layer });
    tricks.minibatch_discrimination =
        args.minibatch_discrimination.then_some(MinibatchDiscriminationOptions {
            kernels: args.minibatch_kernels,
            kernel_dim: args.minibatch_kernel_dim,
            include_self: args.minibatch_include_self,
        });
    tricks.historical_averaging =
        args.historical_averaging.map(|weight| HistoricalAveraging { weight });
    tricks.virtual_batch_norm =
        args.virtual_batch_norm.map(|reference_size| VirtualBatchNormOptions { reference_size });
    if args.weight_clip.is_some() {
        tricks.weight_clip = args.weight_clip;
    }
    config
}

fn run(args: &Args) -> dcgan::Result<()> {
    let model = DcganConfig {
        nz: args.nz,
        ngf: args.ngf,
        ndf: args.ndf,
        channels: 1,
        image_size: args.image_size,
    };
    let config = train_config(args);
    let data = Mnist::shipped(&MnistOptions { size: args.image_size, limit: Some(args.digits) })?;
    let mut batcher = Batcher::new(data.len(), args.batch_size, args.seed, LastBatch::Drop)?;
    let mut trainer = GanTrainer::new(model, config, args.seed)?;
    println!("settings: {}", serde_json::to_string(trainer.config()).unwrap_or_default());
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "step", "loss_D", "loss_G", "D(x)", "D(G(z))", "noise"
    );

    // Mean of the statistics since the last line.
    let started = Instant::now();
    let mut window: Vec<StepStats> = Vec::new();
    let mut last_line = None;
    for step in 1..=args.steps {
        let noise = trainer.instance_noise_std();
        let stats = trainer.step(|| Ok(batcher.next_batch(&data)?.images))?;
        if !(stats.d_loss.is_finite() && stats.g_loss.is_finite()) {
            return Err(dcgan::Error::NonFinite { what: format!("the losses at step {step}") });
        }
        window.push(stats);
        if step % args.print_every == 0 || step == args.steps {
            let mean =
                |f: fn(&StepStats) -> f64| window.iter().map(f).sum::<f64>() / window.len() as f64;
            let line =
                (mean(|s| s.d_loss), mean(|s| s.g_loss), mean(|s| s.d_real), mean(|s| s.d_fake));
            println!(
                "{step:>6} {:>10.4} {:>10.4} {:>8.3} {:>8.3} {noise:>8.3}",
                line.0, line.1, line.2, line.3
            );
            last_line = Some(line);
            window.clear();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some((d_loss, g_loss, d_real, d_fake)) = last_line {
        println!(
            "final (mean of the last {} steps): loss_D {d_loss:.4}, loss_G {g_loss:.4}, \
             D(x) {d_real:.3}, D(G(z)) {d_fake:.3}; {} steps in {seconds:.1} s ({:.2} s/step)",
            args.print_every.min(args.steps),
            args.steps,
            seconds / args.steps.max(1) as f64
        );
    }

    if let Some(path) = &args.samples {
        // A generator of its own, so that writing samples leaves the training streams alone.
        let mut noise = dcgan::rng::Rng::from_seed(args.seed);
        let mut z = ndarray::Array4::<f32>::zeros(model.noise_shape(64));
        noise.fill_normal(z.as_slice_mut().expect("standard layout"), 0.0, 1.0);
        let images = trainer.generate(z, Mode::Eval)?;
        let shape = model.image_shape(64);
        dcgan::image::write_grid_png(
            path,
            images.as_slice().expect("standard layout"),
            shape,
            8,
            2,
        )?;
        println!("samples: {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global();
    if let Err(err) = pool {
        eprintln!("error: cannot start {} threads: {err}", args.threads);
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
