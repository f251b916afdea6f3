//! The loss, optimiser and trick flags shared by `train_mnist` and `tricks_mnist`, and their
//! translation into a `dcgan::train::TrainConfig`.
//!
//! Each flag sets the field of `TrainConfig` or `Tricks` of the same name. An example includes
//! this file with `#[path = "common/train_flags.rs"] mod train_flags;` and flattens
//! [`TrainFlags`] into its own arguments.

use clap::ValueEnum;
use dcgan::loss::{Divergence, FGanGenerator, GanLoss};
use dcgan::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use dcgan::train::{OptimizerConfig, TrainConfig};
use dcgan::tricks::{
    FeatureMatching, HistoricalAveraging, InstanceNoise, MinibatchDiscriminationOptions,
    NoiseSchedule, VirtualBatchNormOptions,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LossArg {
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
pub enum FGanGeneratorArg {
    Alternative,
    Saturating,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerArg {
    Adam,
    Rmsprop,
    Sgd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScheduleArg {
    Linear,
    Exponential,
}

/// The GAN loss, the schedule, the optimiser kind and the tricks.
#[derive(Debug, clap::Args)]
pub struct TrainFlags {
    /// Start from the WGAN paper's settings: Wasserstein loss, 5 critic steps, weight clip
    /// 0.01, RMSProp with lr 5e-5. Other flags override them.
    #[arg(long)]
    pub wgan: bool,
    /// GAN loss.
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,
    /// Generator loss of the f-GAN losses (--loss fgan-*): Nowozin et al.'s alternative
    /// -E[g_f(v)], or the saturating -E[f*(g_f(v))] [default: alternative].
    #[arg(long, value_enum)]
    pub fgan_generator: Option<FGanGeneratorArg>,
    /// Discriminator (critic) updates per generator update (1 to 100).
    #[arg(long)]
    pub d_steps: Option<usize>,
    /// Optimiser of both players (default Adam with betas (0.5, 0.999)).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,

    /// One-sided label smoothing: the discriminator's target for real digits (0.9 is usual).
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    /// Instance noise: standard deviation at step 0 (images lie in [-1, 1]).
    #[arg(long)]
    pub instance_noise_std: Option<f32>,
    /// Instance noise: steps until the noise is off.
    #[arg(long, default_value_t = 200, requires = "instance_noise_std")]
    pub instance_noise_steps: u64,
    /// Instance noise: the decay from the initial standard deviation to zero.
    #[arg(long, value_enum, default_value = "linear", requires = "instance_noise_std")]
    pub instance_noise_schedule: ScheduleArg,
    /// Instance noise, exponential schedule: fraction of the standard deviation left at the
    /// end [default: 0.01].
    #[arg(long, requires = "instance_noise_std")]
    pub instance_noise_final_fraction: Option<f32>,
    /// Feature matching: the generator matches the mean activations of a discriminator layer.
    #[arg(long)]
    pub feature_matching: bool,
    /// Feature matching: index of the discriminator layer (default: the last hidden one).
    #[arg(long, requires = "feature_matching")]
    pub feature_layer: Option<usize>,
    /// Minibatch discrimination before the discriminator's output.
    #[arg(long)]
    pub minibatch_discrimination: bool,
    /// Minibatch discrimination: number of kernels B appended to the features (1 to 4096,
    /// and B * C at most 65536).
    #[arg(long, default_value_t = 100, requires = "minibatch_discrimination")]
    pub minibatch_kernels: usize,
    /// Minibatch discrimination: length C of each kernel's projection (1 to 1024).
    #[arg(long, default_value_t = 5, requires = "minibatch_discrimination")]
    pub minibatch_kernel_dim: usize,
    /// Minibatch discrimination: count each sample itself (adds 1 to every output).
    #[arg(long, requires = "minibatch_discrimination")]
    pub minibatch_include_self: bool,
    /// Historical averaging: weight lambda of ||theta - mean of past theta||^2.
    #[arg(long)]
    pub historical_averaging: Option<f64>,
    /// Virtual batch normalisation in the generator, with a reference batch of this size (1 to
    /// 4096).
    #[arg(long)]
    pub virtual_batch_norm: Option<usize>,
    /// Clip every discriminator weight to [-c, c] after each update.
    #[arg(long)]
    pub weight_clip: Option<f32>,
}

impl TrainFlags {
    /// Returns the ids of these flags (`instance_noise_std`), to tell which were given.
    #[allow(dead_code)] // Only train_mnist, which checks a resumed run's flags, calls it.
    pub fn ids() -> Vec<String> {
        use clap::Args;
        TrainFlags::augment_args(clap::Command::new("train_flags"))
            .get_arguments()
            .map(|arg| arg.get_id().to_string())
            .collect()
    }

    /// Rejects a flag that applies only with a certain value of another flag, which clap's
    /// `requires` cannot express: `--fgan-generator` without an f-GAN loss, and
    /// `--instance-noise-final-fraction` without the exponential schedule.
    pub fn check_combinations(&self) -> Result<(), String> {
        let f_gan = matches!(
            self.loss,
            Some(
                LossArg::FganKl
                    | LossArg::FganReverseKl
                    | LossArg::FganPearson
                    | LossArg::FganHellinger
                    | LossArg::FganJs
            )
        );
        if self.fgan_generator.is_some() && !f_gan {
            return Err("--fgan-generator applies only to the f-GAN losses: pass --loss \
                        fgan-kl (or another fgan-* loss), or drop --fgan-generator"
                .into());
        }
        let exponential = matches!(self.instance_noise_schedule, ScheduleArg::Exponential);
        if self.instance_noise_final_fraction.is_some() && !exponential {
            return Err("--instance-noise-final-fraction applies only to the exponential \
                        schedule: pass --instance-noise-schedule exponential, or drop \
                        --instance-noise-final-fraction"
                .into());
        }
        Ok(())
    }
}

/// Fraction of the instance noise's standard deviation left at the end of the exponential
/// schedule when `--instance-noise-final-fraction` is not given.
const DEFAULT_FINAL_FRACTION: f32 = 0.01;

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

/// Builds the training settings from the flags and the learning rates (`None`: the
/// optimiser's default, 2e-4, or 5e-5 with `--wgan`).
pub fn train_config(args: &TrainFlags, lr_g: Option<f64>, lr_d: Option<f64>) -> TrainConfig {
    let mut config = if args.wgan { TrainConfig::wgan() } else { TrainConfig::default() };
    if let Some(arg) = args.loss {
        let generator = args.fgan_generator.unwrap_or(FGanGeneratorArg::Alternative);
        config.loss = loss(arg, generator);
    }
    if let Some(d_steps) = args.d_steps {
        config.d_steps = d_steps;
    }
    let default_optimizer = if args.wgan { OptimizerArg::Rmsprop } else { OptimizerArg::Adam };
    let kind = args.optimizer.unwrap_or(default_optimizer);
    if args.optimizer.is_some() || lr_g.is_some() || lr_d.is_some() {
        let (g_lr, d_lr) = (config.g_optimizer.lr(), config.d_optimizer.lr());
        config.g_optimizer = optimizer(kind, lr_g.unwrap_or(g_lr));
        config.d_optimizer = optimizer(kind, lr_d.unwrap_or(d_lr));
    }

    let tricks = &mut config.tricks;
    tricks.label_smoothing = args.label_smoothing;
    tricks.instance_noise = args.instance_noise_std.map(|std| InstanceNoise {
        std,
        anneal_steps: args.instance_noise_steps,
        schedule: match args.instance_noise_schedule {
            ScheduleArg::Linear => NoiseSchedule::Linear,
            ScheduleArg::Exponential => NoiseSchedule::Exponential {
                final_fraction: args
                    .instance_noise_final_fraction
                    .unwrap_or(DEFAULT_FINAL_FRACTION),
            },
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

/// Returns the flag that sets the training setting `name`, as [`TrainConfig::validate`] and the
/// tricks' own checks name it (`instance_noise.anneal_steps` is `--instance-noise-steps`).
pub fn flag_of_setting(name: &str) -> Option<&'static str> {
    Some(match name {
        "d_steps" => "--d-steps",
        "label_smoothing" => "--label-smoothing",
        "instance_noise.std" => "--instance-noise-std",
        "instance_noise.anneal_steps" => "--instance-noise-steps",
        "instance_noise.final_fraction" => "--instance-noise-final-fraction",
        "feature_matching.layer" => "--feature-layer",
        "minibatch_discrimination.kernels (B)" => "--minibatch-kernels",
        "minibatch_discrimination.kernel_dim (C)" => "--minibatch-kernel-dim",
        "historical_averaging.weight" => "--historical-averaging",
        "virtual_batch_norm.reference_size" => "--virtual-batch-norm",
        "weight_clip" => "--weight-clip",
        _ => return None,
    })
}

/// Rewrites an invalid-setting error to name its flag: `invalid --d-steps 0: expected ...`.
/// A setting of the example's own (`batch_size`) is named when `is_flag` accepts its id;
/// other errors keep their text.
pub fn name_flag(err: dcgan::Error, is_flag: impl Fn(&str) -> bool) -> String {
    match &err {
        dcgan::Error::InvalidArgument { name, value, expected } => {
            let flag = match flag_of_setting(name) {
                Some(flag) => flag.to_string(),
                None if is_flag(name) => format!("--{}", name.replace('_', "-")),
                None => return err.to_string(),
            };
            format!("invalid {flag} {value}: expected {expected}")
        }
        _ => err.to_string(),
    }
}

/// Describes the loss, optimisers and tricks of `config` as the flags that set them, for
/// messages: `--loss lsgan --d-steps 1 --optimizer adam --lr-g 0.0002 --lr-d 0.0002`.
#[allow(dead_code)] // Only train_mnist, which checks a resumed run's flags, calls it.
pub fn describe_as_flags(config: &TrainConfig) -> String {
    let mut flags = vec![format!("--loss {}", config.loss.name())];
    if let GanLoss::FGan { generator: FGanGenerator::Saturating, .. } = config.loss {
        flags.push("--fgan-generator saturating".into());
    }
    flags.push(format!("--d-steps {}", config.d_steps));
    let kind = |optimizer: &OptimizerConfig| match optimizer {
        OptimizerConfig::Adam(_) => "adam",
        OptimizerConfig::RmsProp(_) => "rmsprop",
        OptimizerConfig::Sgd(_) => "sgd",
    };
    flags.push(format!("--optimizer {}", kind(&config.g_optimizer)));
    if kind(&config.d_optimizer) != kind(&config.g_optimizer) {
        flags.push(format!("(discriminator: {})", kind(&config.d_optimizer)));
    }
    flags.push(format!("--lr-g {}", config.g_optimizer.lr()));
    flags.push(format!("--lr-d {}", config.d_optimizer.lr()));

    let tricks = &config.tricks;
    if let Some(label) = tricks.label_smoothing {
        flags.push(format!("--label-smoothing {label}"));
    }
    if let Some(noise) = &tricks.instance_noise {
        flags.push(format!("--instance-noise-std {}", noise.std));
        flags.push(format!("--instance-noise-steps {}", noise.anneal_steps));
        match noise.schedule {
            NoiseSchedule::Linear => flags.push("--instance-noise-schedule linear".into()),
            NoiseSchedule::Exponential { final_fraction } => {
                flags.push("--instance-noise-schedule exponential".into());
                flags.push(format!("--instance-noise-final-fraction {final_fraction}"));
            }
        }
    }
    if let Some(matching) = &tricks.feature_matching {
        flags.push("--feature-matching".into());
        if let Some(layer) = matching.layer {
            flags.push(format!("--feature-layer {layer}"));
        }
    }
    if let Some(options) = &tricks.minibatch_discrimination {
        flags.push("--minibatch-discrimination".into());
        flags.push(format!("--minibatch-kernels {}", options.kernels));
        flags.push(format!("--minibatch-kernel-dim {}", options.kernel_dim));
        if options.include_self {
            flags.push("--minibatch-include-self".into());
        }
    }
    if let Some(averaging) = &tricks.historical_averaging {
        flags.push(format!("--historical-averaging {}", averaging.weight));
    }
    if let Some(options) = &tricks.virtual_batch_norm {
        flags.push(format!("--virtual-batch-norm {}", options.reference_size));
    }
    if let Some(clip) = tricks.weight_clip {
        flags.push(format!("--weight-clip {clip}"));
    }
    flags.join(" ")
}
