//! Measures the quality of a trained generator's digits: Frechet distance, classifier score and
//! class coverage, judged by the shipped MNIST classifier against the 10,000 shipped digits.
//!
//! ```text
//! cargo run --release --example evaluate -- --checkpoint runs/mnist/checkpoint.safetensors
//! ```
//!
//! The checkpoint is one written by `examples/train_mnist.rs` (any loss or trick, virtual batch
//! norm included): its generator alone through `dcgan::run::load_generator`, or with virtual
//! batch norm the whole trainer, for the reference batch. The metrics are printed as text
//! and, with `--json`, written as JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{CommandFactory, Parser, ValueEnum};
use dcgan::atomic::write_atomic;
use dcgan::checkpoint::Checkpoint;
use dcgan::eval::{EvalOptions, Evaluator, DEFAULT_COVERAGE_THRESHOLD};
use dcgan::kernels::gemm::set_gemm_backend;
use dcgan::kernels::{set_winograd, Winograd};
use dcgan::layers::Mode;
use dcgan::run::folder::CHECKPOINT_FILE;
use dcgan::run::{load_generator, RunSettings};
use dcgan::train::GanTrainer;
use dcgan::Error;

#[path = "common/cli.rs"]
mod cli;

/// The statistics that the generator's BatchNorm layers normalise with while sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BatchNormMode {
    /// The running statistics stored in the checkpoint (evaluation mode).
    Running,
    /// Each batch's own statistics, as the PyTorch DCGAN example samples (training mode).
    Batch,
}

/// Evaluate a generator checkpoint with the MNIST classifier.
///
/// The judge is the small convolutional classifier in models/mnist_classifier.safetensors
/// (trained by examples/train_classifier.rs), embedded in the binary, so no file is read
/// besides the checkpoint. The Frechet distance compares Gaussians fitted to the classifier's
/// 128 penultimate features (after the last hidden ReLU) of the generated digits and of the
/// 10,000 shipped digits, as FID does with Inception's pool features. Its values are not
/// comparable with FID's. The classifier score is exp(E[KL(p(y|x) || p(y))]) over the generated
/// digits, and a class counts as covered when at least --coverage-threshold of them fall in it.
#[derive(Parser, Debug)]
#[command(name = "evaluate", version, about, long_about)]
#[command(mut_args = cli::allow_negative_numbers)]
struct Args {
    /// Checkpoint written by the MNIST training command, or the run folder that contains it
    /// (checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Number of digits to generate: at least 2, to estimate the covariance of their features.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Seed of the latent vectors.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per forward pass of the generator and of the classifier.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Fraction of the samples a digit needs to count as covered.
    #[arg(long, default_value_t = DEFAULT_COVERAGE_THRESHOLD)]
    coverage_threshold: f64,
    /// Statistics used by the generator's BatchNorm layers.
    #[arg(long, value_enum, default_value_t = BatchNormMode::Running)]
    batch_norm: BatchNormMode,
    /// Also write the metrics as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads, 0 to 1024 (0: one per core). The metrics do not depend on it.
    #[arg(long, default_value_t = 0, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    threads: usize,
}

fn main() {
    let args = Args::try_parse().unwrap_or_else(|err| cli::shorten_echoed_value(err).exit());
    if let Err(err) = run(&args) {
        eprintln!("error: {}", name_flag(err));
        std::process::exit(1);
    }
}

/// Names the command-line flag in an invalid-value error (`--batch-size` for `batch_size`).
fn name_flag(err: Error) -> String {
    match err {
        Error::InvalidArgument { name, value, expected }
            if Args::command().get_arguments().any(|arg| arg.get_id() == name) =>
        {
            format!("invalid --{} {value}: expected {expected}", name.replace('_', "-"))
        }
        other => other.to_string(),
    }
}

fn run(args: &Args) -> Result<(), Error> {
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global().map_err(
            |err| Error::invalid("threads", args.threads, format!("a usable count: {err}")),
        )?;
    }
    let options =
        EvalOptions { batch_size: args.batch_size, coverage_threshold: args.coverage_threshold };
    options.validate()?;
    if args.count < 2 {
        return Err(Error::invalid(
            "count",
            args.count,
            "at least 2: the Frechet distance needs a covariance of the generated digits' features",
        ));
    }
    // Fail before the long evaluation rather than after it.
    if let Some(path) = &args.json {
        if path.is_dir() {
            return Err(Error::invalid_path("json", path, "the path of a file, not a folder"));
        }
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !folder.is_dir() {
            return Err(Error::invalid_path(
                "json",
                path,
                format!("a file in an existing folder; {} is not a folder", folder.display()),
            ));
        }
        dcgan::atomic::check_writable(path)?;
    }
    let start = Instant::now();

    let checkpoint_path = if args.checkpoint.is_dir() {
        args.checkpoint.join(CHECKPOINT_FILE)
    } else {
        args.checkpoint.clone()
    };
    let checkpoint = Checkpoint::load(&checkpoint_path)?;
    let settings = RunSettings::from_checkpoint(&checkpoint)?;
    // Generate on the backend and Winograd setting the run trained on, so the images match its
    // own grids bit for bit.
    set_winograd(settings.winograd.unwrap_or(Winograd::Off));
    if let Some(backend) = settings.gemm_backend {
        set_gemm_backend(backend);
    }
    let mut evaluator = Evaluator::shipped(options)?;
    let mode = match args.batch_norm {
        BatchNormMode::Running => Mode::Eval,
        BatchNormMode::Batch => Mode::Train,
    };
    let metrics = if settings.train.tricks.virtual_batch_norm.is_some() {
        let mut trainer = GanTrainer::from_checkpoint(&checkpoint)?;
        evaluator.evaluate_trainer(&mut trainer, args.count, args.seed, mode)?
    } else {
        let (settings, mut generator) = load_generator(&checkpoint)?;
        let nz = settings.model.nz;
        evaluator.evaluate_generator(&mut generator, nz, args.count, args.seed, mode)?
    };

    println!("checkpoint           {}", checkpoint_path.display());
    print!("{metrics}");
    println!("time                 {:.1} s", start.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        write_atomic(path, metrics.to_json().as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn thread_count_above_limit_rejected() {
        // Without the bound, --threads 100000000 tries to start 100 million threads.
        let command_line = ["evaluate", "--checkpoint", "run", "--threads", "1025"];
        let err = Args::try_parse_from(command_line).expect_err("1025 threads are too many");
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("--threads"), "{err}");
        let command_line = ["evaluate", "--checkpoint", "run", "--threads", "1024"];
        assert!(Args::try_parse_from(command_line).is_ok());
    }
}
