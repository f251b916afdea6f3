//! Trains the plain DCGAN and then each GAN loss and trick on its own, with the same seed,
//! steps and data, and prints one markdown table of the shipped classifier's metrics.
//!
//! ```text
//! cargo run --release --example compare_tricks -- --steps 200 --seeds 0 --out runs/compare
//! cargo run --release --example compare_tricks -- --seeds 0,1,2 --rows plain,lsgan,vbn
//! ```
//!
//! Each row changes one thing from the plain DCGAN (non-saturating loss, Adam 2e-4 with betas
//! (0.5, 0.999), one discriminator step per generator step): the loss, or one field of
//! `dcgan::train::Tricks`. After training, the generator draws `--samples` digits in eval mode
//! (BatchNorm with running statistics) from latent vectors that are the same for every row,
//! and `dcgan::eval::Evaluator::shipped` scores them. The first `8 * --grid-rows`
//! go into `OUT/ROW_seedSEED.png` as a grid 8 digits wide. The table goes to stdout and to `OUT/table.md`.
//!
//! A row whose losses, gradients or samples turn NaN or infinite stops training there, is
//! marked `NaN: yes`, and is scored on what its generator draws at that point, if the samples
//! are finite. Runs are deterministic: the same flags give the same table, apart from the
//! wall times.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use dcgan::atomic::write_atomic;
use dcgan::data::{Batcher, LastBatch, Mnist, MnistOptions};
use dcgan::eval::{EvalOptions, Evaluator, SampleMetrics};
use dcgan::layers::Mode;
use dcgan::loss::{Divergence, GanLoss};
use dcgan::models::DcganConfig;
use dcgan::rng::{Rng, Stream};
use dcgan::train::{GanTrainer, TrainConfig, Tricks};
use dcgan::tricks::{
    FeatureMatching, HistoricalAveraging, InstanceNoise, MinibatchDiscriminationOptions,
    VirtualBatchNormOptions,
};
use dcgan::Error;
use ndarray::{s, Array4};

#[path = "common/cli.rs"]
mod cli;

/// Row names, in table order.
const ROWS: [&str; 16] = [
    "plain",
    "minimax",
    "lsgan",
    "hinge",
    "wgan",
    "fgan-kl",
    "fgan-reverse-kl",
    "fgan-pearson",
    "fgan-hellinger",
    "fgan-js",
    "label-smoothing",
    "instance-noise",
    "feature-matching",
    "minibatch-discrimination",
    "historical-averaging",
    "vbn",
];

/// Images per generator forward pass while drawing the evaluation samples.
const SAMPLE_BATCH: usize = 500;

/// Digits in each row of a sample grid.
const GRID_COLUMNS: usize = 8;

/// Train the plain DCGAN and each GAN loss and trick on its own, and compare their samples.
#[derive(Debug, Parser)]
#[command(name = "compare_tricks", version, mut_args = cli::allow_negative_numbers)]
struct Args {
    /// Training steps (generator updates) of every row.
    #[arg(long, default_value_t = 200)]
    steps: u64,
    /// Seeds of every random stream, comma-separated. Each row trains once per seed.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Rows to train, comma-separated (default: all, in table order).
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Latent vector length.
    #[arg(long, default_value_t = 32)]
    nz: usize,
    /// Generator width (channels of its last hidden layer).
    #[arg(long, default_value_t = 32)]
    ngf: usize,
    /// Discriminator width (channels of its first layer).
    #[arg(long, default_value_t = 16)]
    ndf: usize,
    /// Generated digits scored per row.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Instance noise: standard deviation at step 0, falling linearly to 0 at the last step.
    #[arg(long, default_value_t = 0.3)]
    instance_noise_std: f32,
    /// Historical averaging: weight lambda of ||theta - mean of past theta||^2.
    #[arg(long, default_value_t = 0.1)]
    historical_averaging: f64,
    /// Rows of 8 digits in each sample grid.
    #[arg(long, default_value_t = 8)]
    grid_rows: usize,
    /// Folder for the sample grids and `table.md` (created if missing).
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Worker threads, 0 to 1024 (0: rayon's default, one per core). The results do not depend
    /// on it.
    #[arg(long, default_value_t = 0, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    threads: usize,
}

/// The outcome of one row trained with one seed.
struct RowResult {
    name: &'static str,
    seed: u64,
    /// Mean discriminator and generator losses over the last (up to 50) finite steps.
    d_loss: f64,
    g_loss: f64,
    seconds: f64,
    /// The step whose losses, gradients or samples were not finite, if any.
    non_finite_step: Option<u64>,
    /// `None` when the samples themselves were not finite.
    metrics: Option<SampleMetrics>,
}

/// Builds the training settings of row `name`.
fn row_config(name: &str, args: &Args) -> dcgan::Result<TrainConfig> {
    let with_loss = |loss| TrainConfig { loss, ..TrainConfig::default() };
    let with_tricks = |tricks| TrainConfig { tricks, ..TrainConfig::default() };
    let config = match name {
        "plain" => TrainConfig::default(),
        "minimax" => with_loss(GanLoss::Minimax),
        "lsgan" => with_loss(GanLoss::least_squares()),
        "hinge" => with_loss(GanLoss::Hinge),
        "wgan" => TrainConfig::wgan(),
        "fgan-kl" => with_loss(GanLoss::f_gan(Divergence::KullbackLeibler)),
        "fgan-reverse-kl" => with_loss(GanLoss::f_gan(Divergence::ReverseKullbackLeibler)),
        "fgan-pearson" => with_loss(GanLoss::f_gan(Divergence::PearsonChiSquared)),
        "fgan-hellinger" => with_loss(GanLoss::f_gan(Divergence::SquaredHellinger)),
        "fgan-js" => with_loss(GanLoss::f_gan(Divergence::JensenShannon)),
        "label-smoothing" => {
            with_tricks(Tricks { label_smoothing: Some(0.9), ..Tricks::default() })
        }
        "instance-noise" => with_tricks(Tricks {
            instance_noise: Some(InstanceNoise::linear(args.instance_noise_std, args.steps)),
            ..Tricks::default()
        }),
        "feature-matching" => with_tricks(Tricks {
            feature_matching: Some(FeatureMatching { layer: None }),
            ..Tricks::default()
        }),
        "minibatch-discrimination" => with_tricks(Tricks {
            minibatch_discrimination: Some(MinibatchDiscriminationOptions {
                kernels: 100,
                kernel_dim: 5,
                include_self: false,
            }),
            ..Tricks::default()
        }),
        "historical-averaging" => with_tricks(Tricks {
            historical_averaging: Some(HistoricalAveraging { weight: args.historical_averaging }),
            ..Tricks::default()
        }),
        "vbn" => with_tricks(Tricks {
            virtual_batch_norm: Some(VirtualBatchNormOptions { reference_size: 64 }),
            ..Tricks::default()
        }),
        other => return Err(Error::invalid("row", other, format!("one of {}", ROWS.join(", ")))),
    };
    Ok(config)
}

/// Trains row `name` with `seed`, draws and scores its samples, and writes its grid.
fn run_row(
    name: &'static str,
    seed: u64,
    model: DcganConfig,
    args: &Args,
    data: &Mnist,
    evaluator: &mut Evaluator,
) -> dcgan::Result<RowResult> {
    let config = row_config(name, args)?;
    let mut batcher = Batcher::new(data.len(), args.batch_size, seed, LastBatch::Drop)?;
    let mut trainer = GanTrainer::new(model, config, seed)?;

    // Train, keeping the losses of the last 50 steps.
    let window = 50.min(args.steps.max(1)) as usize;
    let mut recent: Vec<(f64, f64)> = Vec::with_capacity(window);
    let mut non_finite_step = None;
    let started = Instant::now();
    for step in 1..=args.steps {
        let stats = match trainer.step(|| Ok(batcher.next_batch(data)?.images)) {
            Ok(stats) => stats,
            Err(Error::NonFinite { .. }) => {
                non_finite_step = Some(step);
                break;
            }
            Err(err) => return Err(err),
        };
        if !(stats.d_loss.is_finite() && stats.g_loss.is_finite()) {
            non_finite_step = Some(step);
            break;
        }
        if recent.len() == window {
            recent.remove(0);
        }
        recent.push((stats.d_loss, stats.g_loss));
    }
    let seconds = started.elapsed().as_secs_f64();
    let count = recent.len().max(1) as f64;
    let d_loss = recent.iter().map(|r| r.0).sum::<f64>() / count;
    let g_loss = recent.iter().map(|r| r.1).sum::<f64>() / count;

    // Draw the samples from latent vectors shared by every row of this seed.
    let mut noise = Rng::stream(seed, Stream::Samples);
    let mut images = Array4::<f32>::zeros(model.image_shape(args.samples));
    for start in (0..args.samples).step_by(SAMPLE_BATCH) {
        let end = (start + SAMPLE_BATCH).min(args.samples);
        let mut z = Array4::<f32>::zeros(model.noise_shape(end - start));
        noise.fill_normal(z.as_slice_mut().expect("standard layout"), 0.0, 1.0);
        let batch = trainer.generate(z, Mode::Eval)?;
        images.slice_mut(s![start..end, .., .., ..]).assign(&batch);
    }

    let grid_count = (GRID_COLUMNS * args.grid_rows).clamp(1, args.samples);
    let grid = images.slice(s![..grid_count, .., .., ..]).to_owned();
    let grid_path = args.out.join(format!("{name}_seed{seed}.png"));
    let metrics = if images.iter().all(|v| v.is_finite()) {
        dcgan::image::write_grid_png(
            &grid_path,
            grid.as_slice().expect("standard layout"),
            model.image_shape(grid_count),
            GRID_COLUMNS,
            2,
        )?;
        Some(evaluator.evaluate_images(&images)?)
    } else {
        non_finite_step.get_or_insert(args.steps);
        None
    };
    Ok(RowResult { name, seed, d_loss, g_loss, seconds, non_finite_step, metrics })
}

/// Formats the results as a markdown table, one line per row and seed.
fn table(results: &[RowResult]) -> String {
    let mut text = String::from(
        "| row | seed | FD | classifier score | classes covered | class KL | loss_D | loss_G \
         | wall s | NaN |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in results {
        let metrics = match &r.metrics {
            Some(m) => format!(
                "{:.2} | {:.2} | {} | {:.3}",
                m.frechet_distance, m.classifier_score, m.classes_covered, m.class_kl
            ),
            None => "- | - | - | -".to_string(),
        };
        let nan = match r.non_finite_step {
            Some(step) => format!("yes (step {step})"),
            None => "no".to_string(),
        };
        let _ = writeln!(
            text,
            "| {} | {} | {metrics} | {:.3} | {:.3} | {:.1} | {nan} |",
            r.name, r.seed, r.d_loss, r.g_loss, r.seconds
        );
    }
    text
}

/// Formats the per-row means over seeds as a markdown table (rows with NaN samples left out).
fn mean_table(results: &[RowResult], rows: &[&'static str]) -> String {
    let mut text = String::from(
        "| row | seeds scored | mean FD | mean classifier score | mean classes covered \
         | mean class KL | runs with NaN |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for &name in rows {
        let runs: Vec<&RowResult> = results.iter().filter(|r| r.name == name).collect();
        let scored: Vec<&SampleMetrics> = runs.iter().filter_map(|r| r.metrics.as_ref()).collect();
        let nan_runs = runs.iter().filter(|r| r.non_finite_step.is_some()).count();
        let n = scored.len() as f64;
        let mean = |f: fn(&SampleMetrics) -> f64| scored.iter().map(|m| f(m)).sum::<f64>() / n;
        let _ = writeln!(
            text,
            "| {name} | {} | {:.2} | {:.2} | {:.1} | {:.3} | {nan_runs} |",
            scored.len(),
            mean(|m| m.frechet_distance),
            mean(|m| m.classifier_score),
            mean(|m| m.classes_covered as f64),
            mean(|m| m.class_kl),
        );
    }
    text
}

/// Returns the rows named by `--rows`, or all of them.
fn selected_rows(args: &Args) -> dcgan::Result<Vec<&'static str>> {
    if args.rows.is_empty() {
        return Ok(ROWS.to_vec());
    }
    args.rows
        .iter()
        .map(|name| {
            ROWS.iter()
                .copied()
                .find(|row| row == name)
                .ok_or_else(|| Error::invalid("row", name, format!("one of {}", ROWS.join(", "))))
        })
        .collect()
}

fn run(args: &Args) -> dcgan::Result<()> {
    if args.seeds.is_empty() {
        return Err(Error::invalid("seeds", "(none)", "at least one seed"));
    }
    if args.samples < 2 {
        return Err(Error::invalid("samples", args.samples, "at least 2"));
    }
    let rows = selected_rows(args)?;
    let model =
        DcganConfig { nz: args.nz, ngf: args.ngf, ndf: args.ndf, channels: 1, image_size: 32 };
    model.validate()?;
    std::fs::create_dir_all(&args.out)
        .map_err(|err| Error::invalid_path("out", &args.out, format!("a folder: {err}")))?;

    let data = Mnist::shipped(&MnistOptions { size: 32, limit: None })?;
    let mut evaluator = Evaluator::shipped(EvalOptions::default())?;
    let mut results = Vec::new();
    for &seed in &args.seeds {
        for &name in &rows {
            let result = run_row(name, seed, model, args, &data, &mut evaluator)?;
            let fd = result.metrics.as_ref().map_or(f64::NAN, |m| m.frechet_distance);
            eprintln!("{name} seed {seed}: FD {fd:.2}, {:.1} s", result.seconds);
            results.push(result);
        }
    }

    let mut text = table(&results);
    if args.seeds.len() > 1 {
        text.push('\n');
        text.push_str(&mean_table(&results, &rows));
    }
    print!("{text}");
    write_table(&args.out, &text)
}

fn write_table(out: &Path, text: &str) -> dcgan::Result<()> {
    let path = out.join("table.md");
    write_atomic(&path, text.as_bytes())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::try_parse().unwrap_or_else(|err| cli::shorten_echoed_value(err).exit());
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

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn thread_count_above_limit_rejected() {
        // Without the bound, --threads 100000000 tries to start 100 million threads.
        let command_line = ["compare_tricks", "--threads", "1025"];
        let err = Args::try_parse_from(command_line).expect_err("1025 threads are too many");
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("--threads"), "{err}");
        let command_line = ["compare_tricks", "--threads", "1024"];
        assert!(Args::try_parse_from(command_line).is_ok());
    }
}
