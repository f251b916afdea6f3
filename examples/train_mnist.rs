//! Trains a DCGAN on the 10,000 MNIST digits that ship with the crate.
//!
//! ```text
//! cargo run --release --example train_mnist                  # defaults: a few minutes
//! cargo run --release --example train_mnist -- --help        # every option
//! cargo run --release --example train_mnist -- --resume      # continue the run in runs/mnist
//! ```
//!
//! The output folder (default `runs/mnist`) receives:
//!
//! - `samples/step_XXXXXX.png`: the generator's images for one fixed latent batch, at step 0,
//!   every `--sample-every` steps and at the end;
//! - `metrics.csv`: losses and discriminator outputs of every step;
//! - `losses.png`: the loss curves;
//! - `checkpoint.safetensors`: the complete training state, every `--checkpoint-every` steps
//!   and at the end;
//! - `settings.json`: the settings of the run;
//! - `quality.csv`, `quality.png`: sample quality scores, every `--eval-every` steps when set.
//!
//! Ctrl-C, SIGTERM (sent by `kill`, `timeout`, systemd and container runtimes) and SIGHUP
//! finish the current step, save the checkpoint and a sample grid, and exit with status 130. A
//! second signal exits at once without saving. A run stopped either way continues from its last
//! saved checkpoint with `--resume`, and the resumed run produces the same weights and images,
//! bit for bit, as one that never stopped. The thread count does not change a single bit either.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use dcgan::checkpoint::Checkpoint;
use dcgan::data::{Mnist, MnistOptions};
use dcgan::eval::{EvalOptions, Evaluator};
use dcgan::kernels::gemm::{gemm_backend, set_gemm_backend, GemmBackend};
use dcgan::kernels::{set_winograd, Winograd};
use dcgan::run::folder::{read_history, CHECKPOINT_FILE, SETTINGS_FILE};
use dcgan::run::quality::{read_quality, write_quality, QualityRow, QUALITY_CSV, QUALITY_PLOT};
use dcgan::run::{MetricsRow, RunFolder, RunSettings, TrainingRun};
use dcgan::train::OptimizerConfig;
use dcgan::Error;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use train_flags::{describe_as_flags, train_config, TrainFlags};

#[path = "common/cli.rs"]
mod cli;
#[path = "common/train_flags.rs"]
mod train_flags;

/// Seed of the noise the generator is scored on, the same at every score so that scores
/// compare the generator and not the noise.
const EVAL_SEED: u64 = 0x5eed;

/// Passes over the digits when neither `--epochs` nor `--steps` is given.
const DEFAULT_EPOCHS: u64 = 5;

/// The largest worker pool the example starts.
const MAX_THREADS: usize = 1024;

/// Number of MNIST digits that ship with the crate.
const SHIPPED_DIGITS: usize = 10_000;

/// Set by SIGINT (Ctrl-C), SIGTERM or SIGHUP: the training loop saves the run and stops after
/// the current step.
static STOP: AtomicBool = AtomicBool::new(false);

/// Exit status after a stop signal: 128 + SIGINT, as shells report Ctrl-C. The signal handler
/// cannot tell the signals apart, so SIGTERM and SIGHUP exit with it too.
const EXIT_INTERRUPTED: u8 = 130;

/// How training ended.
enum Finished {
    /// At the requested step count, or with nothing left to train.
    Done,
    /// Stopped by a signal (Ctrl-C, SIGTERM or SIGHUP), with the run saved.
    Interrupted,
}

type AppResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Train a DCGAN on the MNIST digits that ship with the crate, on the CPU.
///
/// Writes sample grids, a per-step metrics CSV, a loss plot and a checkpoint into the output
/// folder. Ctrl-C or SIGTERM saves the run after the current step, and a second one stops at
/// once without saving. Continue with --resume: the resumed run gives the same weights and
/// images, bit for bit, as one that never stopped.
#[derive(Debug, Parser)]
#[command(name = "train_mnist", version, mut_args = cli::allow_negative_numbers)]
struct Args {
    /// Passes over the digits to train for, counting from the start of the run.
    #[arg(long, default_value_t = DEFAULT_EPOCHS, conflicts_with = "steps")]
    epochs: u64,

    /// Training steps (one batch each) to train for, counting from the start of the run. Replaces
    /// --epochs.
    #[arg(long)]
    steps: Option<u64>,

    /// Digits per training step.
    #[arg(long, default_value_t = RunSettings::default().batch_size)]
    batch_size: usize,

    /// Learning rate of the generator's optimiser [default: 2e-4; 5e-5 with --wgan].
    #[arg(long)]
    lr_g: Option<f64>,

    /// Learning rate of the discriminator's optimiser [default: 2e-4; 5e-5 with --wgan].
    #[arg(long)]
    lr_d: Option<f64>,

    /// Adam's first-moment decay rate (beta1), for both networks.
    #[arg(long, default_value_t = RunSettings::default().beta1)]
    beta1: f64,

    /// Length of the generator's latent vector.
    #[arg(long, default_value_t = RunSettings::default().model.nz)]
    nz: usize,

    /// Generator width: channels of its last hidden layer (earlier layers have 2x, 4x, ...).
    #[arg(long, default_value_t = RunSettings::default().model.ngf)]
    ngf: usize,

    /// Discriminator width: channels of its first layer (later layers have 2x, 4x, ...).
    #[arg(long, default_value_t = RunSettings::default().model.ndf)]
    ndf: usize,

    /// Image side length in pixels: 16, 32, 64 or 128. The 28x28 digits are padded to 32x32
    /// and resized from there.
    #[arg(long, default_value_t = RunSettings::default().model.image_size)]
    image_size: usize,

    /// Number of digits to train on: the first N of the 10,000 shipped ones.
    #[arg(long, default_value_t = RunSettings::default().digits)]
    digits: usize,

    /// Seed of all randomness: initial weights, noise, data order and the sample grid's noise.
    #[arg(long, default_value_t = RunSettings::default().seed)]
    seed: u64,

    /// Number of images in each sample grid (from one fixed latent batch).
    #[arg(long, default_value_t = RunSettings::default().sample_count)]
    sample_count: usize,

    /// Worker threads (0: one per CPU core). Results are identical for every count.
    #[arg(long, default_value_t = 0)]
    threads: usize,

    /// GEMM backend: `packed` (the crate's microkernel, with im2col fused into its packing) or
    /// `matrixmultiply` (the reference path). Default: packed when the build enables AVX2 and
    /// FMA or AVX-512. Results differ between the two in the last bits, so a resumed run stays
    /// on the backend recorded in its checkpoint.
    #[arg(long, value_enum)]
    backend: Option<Backend>,

    /// When stride-2 4x4 convolutions run as Winograd F(2x2, 2x2) products on the packed
    /// backend: `measured` (where they were measured faster), `always` or `off`. Default:
    /// measured. It has no effect on the matrixmultiply backend. Like the backend, it decides
    /// the last bits, so a resumed run keeps the setting recorded in its checkpoint.
    #[arg(long, value_enum)]
    winograd: Option<WinogradFlag>,

    /// Output folder for samples, metrics, loss plot, checkpoint and settings.
    #[arg(long, short, default_value = "runs/mnist")]
    out: PathBuf,

    /// Continue a stopped run: from the output folder's checkpoint, or from CHECKPOINT (a
    /// checkpoint file or the folder that contains one). Model and optimiser settings come from
    /// the checkpoint.
    #[arg(long, value_name = "CHECKPOINT")]
    resume: Option<Option<PathBuf>>,

    /// Start in a non-empty output folder, deleting the files of the run there, and the
    /// generated_seed*.png and metrics.json that the README's sample and evaluate commands write
    /// there. Other files stay. With --resume, only for a checkpoint outside the output folder.
    #[arg(long)]
    force: bool,

    /// Write a sample grid every N steps (0: only at the start and the end).
    #[arg(long, value_name = "N", default_value_t = 100)]
    sample_every: u64,

    /// Write the checkpoint, metrics and loss plot every N steps (0: only at the end).
    #[arg(long, value_name = "N", default_value_t = 100)]
    checkpoint_every: u64,

    /// Score the generator every N steps with the shipped MNIST classifier (Frechet distance,
    /// classifier score, classes covered, class KL) into quality.csv and quality.png (0: off).
    /// Scoring changes no training state.
    #[arg(long, value_name = "N", default_value_t = 0)]
    eval_every: u64,

    /// Samples drawn for each score of --eval-every (at least 2).
    #[arg(long, value_name = "COUNT", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(2..=100_000), requires = "eval_every")]
    eval_samples: u64,

    /// Loss, optimiser and tricks (all off by default: the plain DCGAN).
    #[command(flatten)]
    train: TrainFlags,
}

fn main() -> ExitCode {
    let matches = Args::command()
        .try_get_matches()
        .unwrap_or_else(|err| cli::shorten_echoed_value(err).exit());
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(err) => err.exit(),
    };
    if let Err(message) = args.train.check_combinations() {
        Args::command().error(ErrorKind::ArgumentConflict, message).exit();
    }
    // SIGINT (Ctrl-C), SIGTERM and SIGHUP ask the training loop to stop after the current step
    // and save. A second signal exits at once.
    let handler = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopped at once by a second signal: the current step is not saved");
            std::process::exit(EXIT_INTERRUPTED.into());
        }
    });
    if let Err(err) = handler {
        eprintln!("warning: Ctrl-C and SIGTERM will stop the run without saving it: {err}");
    }
    match train(&args, &matches) {
        Ok(Finished::Done) => ExitCode::SUCCESS,
        Ok(Finished::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The values of `--backend`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Backend {
    Packed,
    Matrixmultiply,
}

impl From<Backend> for GemmBackend {
    fn from(backend: Backend) -> Self {
        match backend {
            Backend::Packed => GemmBackend::Packed,
            Backend::Matrixmultiply => GemmBackend::MatrixMultiply,
        }
    }
}

/// The values of `--winograd`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum WinogradFlag {
    Off,
    Measured,
    Always,
}

impl From<WinogradFlag> for Winograd {
    fn from(flag: WinogradFlag) -> Self {
        match flag {
            WinogradFlag::Off => Winograd::Off,
            WinogradFlag::Measured => Winograd::Measured,
            WinogradFlag::Always => Winograd::Always,
        }
    }
}

/// Names a Winograd setting as `--winograd` spells it.
fn winograd_name(setting: Winograd) -> &'static str {
    match setting {
        Winograd::Off => "off",
        Winograd::Measured => "measured",
        Winograd::Always => "always",
    }
}

/// Names a backend as `--backend` spells it.
fn backend_name(backend: GemmBackend) -> &'static str {
    match backend {
        GemmBackend::Packed => "packed",
        GemmBackend::MatrixMultiply => "matrixmultiply",
    }
}

/// Rejects an explicit --eval-samples when --eval-every 0 turns scoring off, which clap's
/// `requires` lets through because --eval-every is present.
fn check_eval_samples(args: &Args, matches: &ArgMatches) -> Result<(), String> {
    let samples_given = matches.value_source("eval_samples") == Some(ValueSource::CommandLine);
    if args.eval_every == 0 && samples_given {
        return Err(format!(
            "invalid --eval-samples {} with --eval-every 0: scoring is off, so set --eval-every N \
             or drop --eval-samples",
            args.eval_samples
        ));
    }
    Ok(())
}

fn train(args: &Args, matches: &ArgMatches) -> AppResult<Finished> {
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    if threads > MAX_THREADS {
        return Err(format!("invalid --threads {threads}: expected 0 to {MAX_THREADS}").into());
    }
    check_eval_samples(args, matches)?;
    if let Ok(cores) = std::thread::available_parallelism() {
        if threads > cores.get() {
            eprintln!(
                "warning: --threads {threads} is more than the {cores} cores available; the extra \
                 threads make each step slower, not faster (results stay the same)"
            );
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|err| format!("cannot start {threads} worker threads: {err}"))?;
    pool.install(|| train_in_pool(args, matches, threads))
}

fn train_in_pool(args: &Args, matches: &ArgMatches, threads: usize) -> AppResult<Finished> {
    let started = Instant::now();
    match args.steps {
        Some(0) => return Err("invalid --steps 0: expected at least 1 training step".into()),
        None if args.epochs == 0 => {
            return Err("invalid --epochs 0: expected at least 1 pass over the digits".into())
        }
        _ => {}
    }

    // Settings, the output folder and the run: fresh, or restored from a checkpoint.
    // `new_folder` is true unless the run resumes in the folder of its checkpoint.
    let (run, folder, history, new_folder) = match &args.resume {
        None => {
            let settings = merge_settings(matches, args, RunSettings::default(), false)?;
            set_gemm_backend(settings.gemm_backend.unwrap_or_default());
            set_winograd(settings.winograd.unwrap_or(Winograd::Off));
            settings.validate().map_err(name_flag)?;
            let digits = load_digits(&settings)?;
            let run = TrainingRun::new(settings, digits).map_err(name_flag)?;
            let folder = create_folder(&args.out, args.force)?;
            (run, folder, Vec::new(), true)
        }
        Some(path) => {
            let checkpoint_path = resolve_checkpoint(path.as_deref(), &args.out)?;
            let in_out_folder = same_folder(&args.out, &checkpoint_path);
            if args.force && in_out_folder {
                return Err(format!(
                    "--force conflicts with --resume of the checkpoint in --out {}: the run \
                     continues in that folder and --force would delete nothing. Drop --force, or \
                     pass another --out to continue the run in a new folder",
                    args.out.display()
                )
                .into());
            }
            let checkpoint = Checkpoint::load(&checkpoint_path)?;
            let saved = RunSettings::from_checkpoint(&checkpoint)?;
            let settings = merge_settings(matches, args, saved, true)?;
            set_gemm_backend(settings.gemm_backend.unwrap_or_default());
            set_winograd(settings.winograd.unwrap_or(Winograd::Off));
            let run = TrainingRun::from_checkpoint(&checkpoint, load_digits(&settings)?)?;
            let folder = if in_out_folder {
                RunFolder::open(&args.out)?
            } else {
                create_folder(&args.out, args.force)?
            };
            let history = read_history(&checkpoint_path, run.steps_done())?;
            eprintln!(
                "Resuming {} at step {}, epoch {}.",
                checkpoint_path.display(),
                run.steps_done(),
                run.epochs_done() + 1
            );
            if history.len() as u64 != run.steps_done() {
                eprintln!(
                    "note: {} has {} of the {} steps before the checkpoint, so metrics.csv and \
                     losses.png will lack the others.",
                    checkpoint_path.with_file_name("metrics.csv").display(),
                    history.len(),
                    run.steps_done()
                );
            }
            (run, folder, history, !in_out_folder)
        }
    };
    let started_folder = new_folder.then(|| folder.clone());
    let result = train_run(args, run, folder, history, threads, started);
    let Some(folder) = started_folder else {
        return result;
    };
    // A run that fails before its first checkpoint cannot be resumed, and its settings and
    // first sample grid would make the next run into the folder need --force.
    // NOTE: a run killed before its first checkpoint (a second Ctrl-C, SIGKILL) skips this, so
    // its files stay and the next run there still needs --force.
    match result {
        Err(err) => match folder.remove_unfinished_run() {
            Ok(true) => Err(format!(
                "{err}\nnote: deleted the files of this run from {} because it failed before its \
                 first checkpoint, so a new run can start there without --force",
                folder.path().display()
            )
            .into()),
            Ok(false) => Err(err),
            Err(cleanup) => Err(format!(
                "{err}\nnote: the files of this run in {} could not be deleted ({cleanup}): \
                 delete them, or pass --force to the next run there",
                folder.path().display()
            )
            .into()),
        },
        done => done,
    }
}

/// Trains `run` in `folder` up to the requested step count and writes its files there.
fn train_run(
    args: &Args,
    mut run: TrainingRun,
    folder: RunFolder,
    history: Vec<MetricsRow>,
    threads: usize,
    started: Instant,
) -> AppResult<Finished> {
    let total_steps = match args.steps {
        Some(steps) => steps,
        None => run.steps_for_epochs(args.epochs),
    };
    if args.resume.is_some() && run.steps_done() >= total_steps {
        println!(
            "Nothing left to train (0 steps): the run is already at step {} and --epochs/--steps \
             ask for {total_steps}. Pass a larger --epochs or --steps to train further; {} is \
             unchanged.",
            run.steps_done(),
            folder.path().display()
        );
        return Ok(Finished::Done);
    }
    // Scores past the checkpoint's step belong to the stopped run's lost steps, as in metrics.csv.
    // They are read before anything is written, so a malformed quality.csv leaves the folder as
    // it was.
    let quality = read_quality(&folder.path().join(QUALITY_CSV), run.steps_done())?;
    folder.write_settings(&serde_json::json!({
        "settings": run.settings(),
        "total_steps": total_steps,
        "steps_per_epoch": run.steps_per_epoch(),
        "sample_every": args.sample_every,
        "checkpoint_every": args.checkpoint_every,
        "threads": threads,
        "resumed_at_step": args.resume.as_ref().map(|_| run.steps_done()),
    }))?;
    if run.steps_done() == 0 {
        folder.write_samples(&mut run)?;
    }

    let mut progress = Progress::new(run, folder, history, quality, total_steps, args);
    progress.train()?;
    progress.finish(started.elapsed(), threads)
}

/// Names the command-line flag in an invalid-setting error (`--image-size` for `image_size`,
/// `--instance-noise-steps` for `instance_noise.anneal_steps`).
fn name_flag(err: Error) -> Box<dyn std::error::Error + Send + Sync> {
    let is_flag = |id: &str| Args::command().get_arguments().any(|arg| arg.get_id() == id);
    train_flags::name_flag(err, is_flag).into()
}

/// Creates the output folder of a new run, explaining the flags when it is not empty.
fn create_folder(out: &Path, force: bool) -> AppResult<RunFolder> {
    if out.exists() && !out.is_dir() {
        return Err(format!(
            "--out {} is a file, not a folder: pass the path of a new or existing run folder",
            out.display()
        )
        .into());
    }
    RunFolder::create(out, force).map_err(|err| match err {
        Error::InvalidArgument { name: "output folder", expected, .. } => format!(
            "output folder {} is not usable: expected {expected}. Continue the run there with \
             --resume, start over with --force (deletes that run's files), or choose another \
             --out",
            out.display()
        )
        .into(),
        other => other.into(),
    })
}

/// Returns whether `checkpoint` lies directly in folder `out`.
fn same_folder(out: &Path, checkpoint: &Path) -> bool {
    let parent =
        checkpoint.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (out.canonicalize(), parent.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Loads the first `settings.digits` shipped digits at the model's image size.
fn load_digits(settings: &RunSettings) -> AppResult<Mnist> {
    if settings.digits > SHIPPED_DIGITS {
        return Err(format!(
            "invalid --digits {}: expected 1 to {SHIPPED_DIGITS}, the number of shipped digits",
            settings.digits
        )
        .into());
    }
    let options = MnistOptions { size: settings.model.image_size, limit: Some(settings.digits) };
    Ok(Mnist::shipped(&options)?)
}

/// Returns the checkpoint file to resume from: `path` itself, `path/checkpoint.safetensors` when
/// `path` is a folder, or the output folder's checkpoint without `path` (a bare --resume).
fn resolve_checkpoint(path: Option<&Path>, out: &Path) -> AppResult<PathBuf> {
    let file = match path {
        None => out.join(CHECKPOINT_FILE),
        Some(folder) if folder.is_dir() => folder.join(CHECKPOINT_FILE),
        Some(file) => file.to_path_buf(),
    };
    if !file.is_file() {
        return Err(format!(
            "no checkpoint to resume at {}: start a run without --resume, or pass --resume PATH \
             with the checkpoint of a stopped run",
            file.display()
        )
        .into());
    }
    Ok(file)
}

/// Takes the settings from the command line into `base`. A fresh run takes every value,
/// given or default. A resumed run keeps the checkpoint's values, and a flag given explicitly
/// must agree with them, because a changed model or optimiser would make the resumed run differ
/// from the original.
fn merge_settings(
    matches: &ArgMatches,
    args: &Args,
    base: RunSettings,
    resuming: bool,
) -> AppResult<RunSettings> {
    let mut merge = Merge { matches, resuming, conflicts: Vec::new() };
    let mut settings = base;
    merge.take("batch_size", args.batch_size, &mut settings.batch_size);
    if resuming {
        // Learning rates given explicitly must agree with the checkpoint, and so must the
        // training settings that the given loss, optimiser and trick flags describe.
        merge.take_given("lr_g", args.lr_g, &mut settings.lr_g);
        merge.take_given("lr_d", args.lr_d, &mut settings.lr_d);
        let given: Vec<String> = TrainFlags::ids()
            .into_iter()
            .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
            .collect();
        if !given.is_empty() {
            let flags = RunSettings {
                train: train_config(&args.train, Some(settings.lr_g), Some(settings.lr_d)),
                ..settings
            };
            if flags.train_config() != settings.train_config() {
                let names: Vec<String> = given.iter().map(|id| given_flag(matches, id)).collect();
                merge.conflicts.push(format!(
                    "{} (the checkpoint trains with {})",
                    names.join(" "),
                    describe_as_flags(&settings.train_config())
                ));
            }
        }
    } else {
        let train = train_config(&args.train, args.lr_g, args.lr_d);
        settings.lr_g = train.g_optimizer.lr();
        settings.lr_d = train.d_optimizer.lr();
        settings.train = train;
    }
    merge.take("beta1", args.beta1, &mut settings.beta1);
    // Only Adam has betas, so another optimiser would ignore --beta1.
    let other_optimizer = match settings.train.g_optimizer {
        OptimizerConfig::Adam(_) => None,
        OptimizerConfig::RmsProp(_) => Some("rmsprop"),
        OptimizerConfig::Sgd(_) => Some("sgd"),
    };
    if let (Some(optimizer), Some(ValueSource::CommandLine)) =
        (other_optimizer, matches.value_source("beta1"))
    {
        return Err(format!(
            "--beta1 applies only to the Adam optimiser, but the run trains with {optimizer}: \
             drop --beta1, or pass --optimizer adam"
        )
        .into());
    }
    merge.take("nz", args.nz, &mut settings.model.nz);
    merge.take("ngf", args.ngf, &mut settings.model.ngf);
    merge.take("ndf", args.ndf, &mut settings.model.ndf);
    merge.take("image_size", args.image_size, &mut settings.model.image_size);
    merge.take("digits", args.digits, &mut settings.digits);
    merge.take("seed", args.seed, &mut settings.seed);
    merge.take("sample_count", args.sample_count, &mut settings.sample_count);
    // The backend decides the last bits: a resumed run stays on the one it started on.
    let flag = args.backend.map(GemmBackend::from);
    match (resuming, settings.gemm_backend, flag) {
        (true, Some(saved), Some(given)) if saved != given => merge.conflicts.push(format!(
            "--backend {} (the checkpoint trains on {})",
            backend_name(given),
            backend_name(saved)
        )),
        (true, Some(_), _) => {}
        _ => settings.gemm_backend = Some(flag.unwrap_or_else(gemm_backend)),
    }
    // So does the Winograd setting; a checkpoint that predates it trained without Winograd.
    let flag = args.winograd.map(Winograd::from);
    match (resuming, settings.winograd, flag) {
        (true, saved, Some(given)) if saved.unwrap_or(Winograd::Off) != given => {
            merge.conflicts.push(format!(
                "--winograd {} (the checkpoint trains with {})",
                winograd_name(given),
                winograd_name(saved.unwrap_or(Winograd::Off))
            ))
        }
        (true, _, _) => {}
        (false, _, _) => settings.winograd = Some(flag.unwrap_or_default()),
    }
    // The matrixmultiply backend has no Winograd path, so it would ignore the setting.
    let on_matrixmultiply = settings.gemm_backend == Some(GemmBackend::MatrixMultiply);
    if let (false, true, Some(given)) = (resuming, on_matrixmultiply, args.winograd) {
        if Winograd::from(given) != Winograd::Off {
            return Err(format!(
                "--winograd {} has no effect on the matrixmultiply backend: drop --winograd, or \
                 pass --backend packed",
                winograd_name(given.into())
            )
            .into());
        }
    }
    if !merge.conflicts.is_empty() {
        return Err(format!(
            "a resumed run keeps the settings it started with, so these flags conflict with the \
             checkpoint: {}. Drop them, or start a new run in another --out folder",
            merge.conflicts.join("; ")
        )
        .into());
    }
    Ok(settings)
}

/// Formats flag `id` as given on the command line: `--loss lsgan`, `--feature-matching`.
fn given_flag(matches: &ArgMatches, id: &str) -> String {
    let flag = format!("--{}", id.replace('_', "-"));
    let values: Vec<String> = matches
        .get_raw(id)
        .into_iter()
        .flatten()
        .map(|value| value.to_string_lossy().into_owned())
        .filter(|value| value != "true")
        .collect();
    if values.is_empty() {
        flag
    } else {
        format!("{flag} {}", values.join(" "))
    }
}

/// Command-line values being merged into settings; see [`merge_settings`].
struct Merge<'a> {
    matches: &'a ArgMatches,
    resuming: bool,
    conflicts: Vec<String>,
}

impl Merge<'_> {
    fn take<T: PartialEq + std::fmt::Display>(&mut self, id: &str, value: T, field: &mut T) {
        if !self.resuming {
            *field = value;
            return;
        }
        let given = self.matches.value_source(id) == Some(ValueSource::CommandLine);
        if given && value != *field {
            let flag = id.replace('_', "-");
            self.conflicts.push(format!("--{flag} {value} (the checkpoint has {field})"));
        }
    }

    /// Checks an optional flag of a resumed run: a given value must equal the checkpoint's.
    fn take_given<T: PartialEq + std::fmt::Display>(
        &mut self,
        id: &str,
        value: Option<T>,
        field: &mut T,
    ) {
        if let Some(value) = value {
            self.take(id, value, field);
        }
    }
}

/// The training loop with its progress bar and its periodic writes.
struct Progress {
    run: TrainingRun,
    folder: RunFolder,
    history: Vec<MetricsRow>,
    total_steps: u64,
    sample_every: u64,
    checkpoint_every: u64,
    /// Scoring every `eval_every` steps (0: off) with `eval_samples` samples.
    eval_every: u64,
    eval_samples: usize,
    /// The classifier-based judge, loaded at the first score.
    evaluator: Option<Evaluator>,
    quality: Vec<QualityRow>,
    bar: ProgressBar,
    first_step: u64,
    /// Time spent in the training loop, writes included.
    loop_time: Duration,
    /// Whether a stop signal (Ctrl-C, SIGTERM or SIGHUP) ended the loop early.
    interrupted: bool,
}

impl Progress {
    fn new(
        run: TrainingRun,
        folder: RunFolder,
        history: Vec<MetricsRow>,
        quality: Vec<QualityRow>,
        total_steps: u64,
        args: &Args,
    ) -> Progress {
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps, {rate}, ETA {eta}\n  {msg}",
        )
        .expect("valid template")
        .with_key("rate", |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = write!(out, "{:.2} steps/s", state.per_sec());
        })
        .progress_chars("=> ");
        let first_step = run.steps_done().min(total_steps);
        let bar = ProgressBar::new(total_steps).with_style(style).with_position(first_step);
        bar.reset_eta();
        Progress {
            run,
            folder,
            history,
            total_steps,
            sample_every: args.sample_every,
            checkpoint_every: args.checkpoint_every,
            eval_every: args.eval_every,
            eval_samples: args.eval_samples as usize,
            evaluator: None,
            quality,
            bar,
            first_step,
            loop_time: Duration::ZERO,
            interrupted: false,
        }
    }

    fn train(&mut self) -> AppResult<()> {
        let steps_per_epoch = self.run.steps_per_epoch();
        let total_epochs = self.total_steps.div_ceil(steps_per_epoch);
        if self.run.steps_done() >= self.total_steps {
            self.bar.finish_and_clear();
            eprintln!(
                "The run is already at step {} of {}: pass a larger --epochs or --steps to train \
                 further.",
                self.run.steps_done(),
                self.total_steps
            );
            return Ok(());
        }
        let loop_start = Instant::now();
        let mut last_log = Instant::now();
        while self.run.steps_done() < self.total_steps {
            let row = self.run.step().map_err(|err| {
                let step = self.run.steps_done() + 1;
                format!(
                    "training step {step} failed: {err}. Try a lower learning rate or another seed"
                )
            })?;
            self.history.push(row);
            let message = describe(&row, total_epochs);
            self.bar.set_message(message.clone());
            self.bar.inc(1);

            let step = row.step;
            if due(step, self.sample_every) {
                self.folder.write_samples(&mut self.run)?;
            }
            if due(step, self.checkpoint_every) {
                self.folder.write_progress(&self.run, &self.history)?;
            }
            if self.eval_every > 0 && step % self.eval_every == 0 {
                self.score(step)?;
            }
            // Without a terminal the bar is hidden: log a line every 30 s instead.
            if self.bar.is_hidden() && last_log.elapsed() >= Duration::from_secs(30) {
                eprintln!("step {step}/{}: {message}", self.total_steps);
                last_log = Instant::now();
            }
            if STOP.load(Ordering::SeqCst) && self.run.steps_done() < self.total_steps {
                self.interrupted = true;
                break;
            }
        }
        if self.interrupted {
            self.bar.abandon();
        } else {
            self.bar.finish();
        }
        self.loop_time = loop_start.elapsed();
        Ok(())
    }

    fn finish(mut self, elapsed: Duration, threads: usize) -> AppResult<Finished> {
        // The final grid and state. When the loop has just written them, the bytes are the same.
        let step = self.run.steps_done();
        let samples = self.folder.write_samples(&mut self.run)?;
        self.folder.write_progress(&self.run, &self.history)?;

        let steps = step.saturating_sub(self.first_step);
        let rate = steps as f64 / self.loop_time.as_secs_f64().max(1e-9);
        println!();
        println!(
            "Trained {} in {} ({rate:.2} steps/s on {}, {} in all). The run is at step \
             {step}: {} of {} done.",
            count(steps, "step"),
            format_duration(self.loop_time),
            count(threads as u64, "thread"),
            format_duration(elapsed),
            count(self.run.epochs_done(), "epoch"),
            count(self.run.steps_per_epoch(), "step")
        );
        if let Some(row) = self.history.last() {
            println!("Last step: {}", describe(row, 0));
        }
        let out = self.folder.path();
        println!("Results in {}:", out.display());
        println!("  {:<40} samples from the fixed noise", samples.display());
        println!("  {:<40} loss curves", out.join("losses.png").display());
        println!("  {:<40} losses per step", out.join("metrics.csv").display());
        println!("  {:<40} training state", out.join(CHECKPOINT_FILE).display());
        println!("  {:<40} settings of the run", out.join(SETTINGS_FILE).display());
        if out.join(QUALITY_CSV).exists() {
            println!("  {:<40} sample quality scores", out.join(QUALITY_CSV).display());
            println!("  {:<40} sample quality plot", out.join(QUALITY_PLOT).display());
        }
        if self.interrupted {
            println!(
                "Stopped by a signal after step {step} of {}, with the state saved. Continue with: \
                 cargo run --release --example train_mnist -- --out {} --resume --steps {}",
                self.total_steps,
                out.display(),
                self.total_steps
            );
            return Ok(Finished::Interrupted);
        }
        println!(
            "Train further:   cargo run --release --example train_mnist -- --out {} --resume \
             --epochs N",
            out.display()
        );
        println!(
            "Draw new digits: cargo run --release --example sample -- --checkpoint {}",
            out.join(CHECKPOINT_FILE).display()
        );
        Ok(Finished::Done)
    }
}

/// Returns whether a periodic write with interval `every` (0: never) falls on `step`.
fn due(step: u64, every: u64) -> bool {
    every != 0 && step.is_multiple_of(every)
}

impl Progress {
    /// Scores the generator at `step` and rewrites quality.csv and quality.png.
    fn score(&mut self, step: u64) -> AppResult<()> {
        if self.evaluator.is_none() {
            self.evaluator = Some(Evaluator::shipped(EvalOptions::default())?);
        }
        let evaluator = self.evaluator.as_mut().expect("loaded above");
        let metrics = self.run.evaluate(evaluator, self.eval_samples, EVAL_SEED)?;
        self.quality.push(QualityRow::new(step, &metrics));
        write_quality(self.folder.path(), &self.quality)?;
        Ok(())
    }
}

/// Formats a step's metrics for the progress bar. A `total_epochs` of 0 omits the epoch.
fn describe(row: &MetricsRow, total_epochs: u64) -> String {
    let epoch = if total_epochs == 0 {
        String::new()
    } else {
        format!("epoch {}/{total_epochs} | ", row.epoch)
    };
    format!(
        "{epoch}loss_D {:.3} loss_G {:.3} | D(x) {:.3} D(G(z)) {:.3} -> {:.3}",
        row.loss_d, row.loss_g, row.d_real, row.d_fake, row.d_fake_after
    )
}

/// Formats `n` with `unit` in the singular or plural: `1 step`, `2 steps`.
fn count(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("{n} {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn format_duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    if seconds >= 60 {
        format!("{}m {:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{:.1}s", elapsed.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `flags` as the command line of `train_mnist`.
    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("train_mnist").chain(flags.iter().copied()))
    }

    #[test]
    fn command_passes_debug_asserts() {
        Args::command().debug_assert();
    }

    #[test]
    fn negative_count_names_flag() {
        let cases: [&[&str]; 5] = [
            &["--steps", "-1"],
            &["--threads", "-1"],
            &["--batch-size", "-4"],
            &["--d-steps", "-1"],
            &["--minibatch-discrimination", "--minibatch-kernels", "-1"],
        ];
        for flags in cases {
            let err = parse(flags).expect_err("a negative count must be rejected");
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{flags:?}");
            let flag = flags[flags.len() - 2];
            assert!(err.to_string().contains(flag), "{flags:?}: {err}");
        }
    }

    #[test]
    fn negative_float_reaches_settings() {
        let args = parse(&["--weight-clip", "-1", "--historical-averaging", "-1"]).unwrap();
        assert_eq!(args.train.weight_clip, Some(-1.0));
        assert_eq!(args.train.historical_averaging, Some(-1.0));
        let args = parse(&["--lr-g", "-0.5"]).unwrap();
        assert_eq!(args.lr_g, Some(-0.5));
    }

    #[test]
    fn negative_exponent_float_reaches_settings() {
        let args = parse(&["--lr-d", "-1e-3", "--lr-g", "-2E-4"]).unwrap();
        assert_eq!(args.lr_d, Some(-1e-3));
        assert_eq!(args.lr_g, Some(-2e-4));
        let args = parse(&["--weight-clip", "-1e-2", "--label-smoothing", "-1e0"]).unwrap();
        assert_eq!(args.train.weight_clip, Some(-1e-2));
        assert_eq!(args.train.label_smoothing, Some(-1.0));
    }

    #[test]
    fn flag_as_float_value_names_flag() {
        let err = parse(&["--lr-d", "--force"]).expect_err("a flag is not a float");
        assert!(err.to_string().contains("--lr-d"), "{err}");
    }

    #[test]
    fn option_without_its_switch_rejected() {
        let cases: [(&[&str], &str); 8] = [
            (&["--feature-layer", "2"], "--feature-matching"),
            (&["--minibatch-kernels", "10"], "--minibatch-discrimination"),
            (&["--minibatch-kernel-dim", "3"], "--minibatch-discrimination"),
            (&["--minibatch-include-self"], "--minibatch-discrimination"),
            (&["--instance-noise-steps", "10"], "--instance-noise-std"),
            (&["--instance-noise-schedule", "exponential"], "--instance-noise-std"),
            (&["--instance-noise-final-fraction", "0.1"], "--instance-noise-std"),
            (&["--eval-samples", "10"], "--eval-every"),
        ];
        for (flags, switch) in cases {
            let err = parse(flags).expect_err("an option without its switch must be rejected");
            assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{flags:?}");
            assert!(err.to_string().contains(switch), "{flags:?}: {err}");
        }
    }

    #[test]
    fn option_with_its_switch_accepted() {
        let cases: [&[&str]; 4] = [
            &["--feature-matching", "--feature-layer", "2"],
            &["--minibatch-discrimination", "--minibatch-kernel-dim", "3"],
            &["--instance-noise-std", "0.1", "--instance-noise-steps", "10"],
            &["--eval-every", "50", "--eval-samples", "10"],
        ];
        for flags in cases {
            let args = parse(flags);
            assert!(args.is_ok(), "{flags:?}: {:?}", args.err());
        }
    }

    #[test]
    fn value_dependent_option_checked() {
        let check = |flags: &[&str]| parse(flags).unwrap().train.check_combinations();
        assert!(check(&["--fgan-generator", "saturating"]).is_err());
        assert!(check(&["--loss", "lsgan", "--fgan-generator", "saturating"]).is_err());
        assert!(check(&["--loss", "fgan-kl", "--fgan-generator", "saturating"]).is_ok());
        let linear = ["--instance-noise-std", "0.1", "--instance-noise-final-fraction", "0.1"];
        assert!(check(&linear).is_err());
        let exponential = [&linear[..], &["--instance-noise-schedule", "exponential"]].concat();
        assert!(check(&exponential).is_ok());
    }

    #[test]
    fn eval_samples_without_scoring_rejected() {
        let check = |flags: &[&str]| {
            let matches = Args::command()
                .try_get_matches_from(std::iter::once("train_mnist").chain(flags.iter().copied()))
                .unwrap();
            let args = Args::from_arg_matches(&matches).unwrap();
            check_eval_samples(&args, &matches)
        };
        let err = check(&["--eval-every", "0", "--eval-samples", "500"]).unwrap_err();
        assert!(err.contains("--eval-samples 500"), "{err}");
        assert!(check(&["--eval-every", "10", "--eval-samples", "500"]).is_ok());
        assert!(check(&["--eval-every", "0"]).is_ok());
        assert!(check(&[]).is_ok());
    }

    /// Runs `train_mnist` with `flags`, on a model small enough to take a step in milliseconds.
    fn train_tiny(flags: &[&str]) -> AppResult<Finished> {
        let tiny = "--digits 32 --batch-size 16 --nz 4 --ngf 4 --ndf 4 --image-size 16 \
                    --sample-count 4 --threads 1";
        let command_line = std::iter::once("train_mnist")
            .chain(tiny.split_whitespace())
            .chain(flags.iter().copied());
        let matches = Args::command().try_get_matches_from(command_line).unwrap();
        let args = Args::from_arg_matches(&matches).unwrap();
        train(&args, &matches)
    }

    #[test]
    fn failed_first_step_leaves_folder_reusable() {
        let path = std::env::temp_dir().join(format!("train-mnist-failed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let out = path.to_str().unwrap();
        // A learning rate this large makes the first step's losses non-finite.
        let diverging = ["--steps", "2", "--lr-d", "1e30", "--lr-g", "1e30", "--out", out];

        let err = train_tiny(&diverging).err().expect("the first step fails");
        assert!(err.to_string().contains("training step 1 failed"), "{err}");
        assert!(!path.exists(), "the failed run left its folder");

        // In a folder that existed, the failed run deletes only its own files.
        std::fs::create_dir_all(&path).unwrap();
        train_tiny(&diverging).err().expect("the first step fails");
        let entries: Vec<_> = std::fs::read_dir(&path).unwrap().collect();
        assert!(entries.is_empty(), "the failed run left {entries:?}");

        // The next run starts there without --force.
        let result = train_tiny(&["--steps", "1", "--out", out]);
        assert!(result.is_ok(), "{:?}", result.err());
        assert!(path.join(CHECKPOINT_FILE).exists());
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn epochs_with_d_steps_complete_passes() {
        let path = std::env::temp_dir().join(format!("train-mnist-epochs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let out = path.to_str().unwrap();
        // 32 digits in batches of 16 are 2 batches an epoch, and each step takes 3 of them, so
        // 3 epochs need 2 steps. Whole steps per epoch (at least 1) would give 3 steps, 4.5
        // epochs.
        let flags = ["--d-steps", "3", "--epochs", "3", "--out", out];
        let result = train_tiny(&flags);
        assert!(result.is_ok(), "{:?}", result.err());

        let settings = std::fs::read_to_string(path.join(SETTINGS_FILE)).unwrap();
        let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
        assert_eq!(settings["total_steps"], 2, "{settings}");
        let digits = Mnist::shipped(&MnistOptions { size: 16, limit: Some(32) }).unwrap();
        let run = TrainingRun::load(path.join(CHECKPOINT_FILE), digits).unwrap();
        assert_eq!(run.steps_done(), 2);
        assert_eq!(run.epochs_done(), 3);
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn malformed_quality_csv_changes_nothing() {
        let path = std::env::temp_dir().join(format!("train-mnist-quality-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let out = path.to_str().unwrap();
        let result = train_tiny(&["--steps", "1", "--out", out]);
        assert!(result.is_ok(), "{:?}", result.err());
        std::fs::write(path.join(QUALITY_CSV), "step\nnot a row\n").unwrap();
        let settings = std::fs::read(path.join(SETTINGS_FILE)).unwrap();

        let err = train_tiny(&["--steps", "2", "--out", out, "--resume"]).err();
        let err = err.expect("the malformed quality.csv is rejected");
        assert!(err.to_string().contains(QUALITY_CSV), "{err}");
        let after = std::fs::read(path.join(SETTINGS_FILE)).unwrap();
        assert_eq!(after, settings, "the failed resume rewrote settings.json");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn long_flag_value_shortened() {
        let digits = format!("1{}", "0".repeat(300));
        let err = parse(&["--steps", &digits]).expect_err("too large for u64");
        let message = cli::shorten_echoed_value(err).to_string();
        let shortened = format!("'1{}... (301 characters)'", "0".repeat(39));
        assert!(message.contains(&shortened), "{message}");
        assert!(!message.contains(&digits), "{message}");

        let err = parse(&["--seed", "12x"]).expect_err("not a number");
        let message = cli::shorten_echoed_value(err).to_string();
        assert!(message.contains("'12x'"), "{message}");

        // A float parses, so the settings check echoes it through the crate's error.
        let args = parse(&["--lr-d", &digits]).unwrap();
        let settings = RunSettings { lr_d: args.lr_d.unwrap(), ..RunSettings::default() };
        let message = name_flag(settings.validate().unwrap_err()).to_string();
        assert!(message.starts_with("invalid --lr-d 1000"), "{message}");
        assert!(message.contains("... (301 characters)"), "{message}");
    }

    #[test]
    fn version_flag_prints_version() {
        for flag in ["-V", "--version"] {
            let err = parse(&[flag]).expect_err("--version exits through an error");
            assert_eq!(err.kind(), ErrorKind::DisplayVersion, "{flag}");
        }
    }
}
