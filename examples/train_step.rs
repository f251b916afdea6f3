//! Times whole DCGAN training steps (D step on real and fake, G step, Adam on both) at batch 64.
//!
//! ```text
//! cargo run --release --example train_step -- dcgan64 1 5
//! ```
//!
//! Arguments: the model (`dcgan64`: 3x64x64, ngf = ndf = 64; `dcgan32`: 1x32x32), the number of
//! threads, and the number of timed steps (1 to 1,000,000) after one warm-up step.
//! `--backend packed` or `--backend matrixmultiply`, anywhere on the line, selects the GEMM
//! backend (default: see `GemmBackend::default`), and `--winograd off|measured|always` when
//! stride-2 4x4 convolutions run as Winograd products (default: measured). `mnist` is the MNIST command's default model
//! (1x32x32, ngf 64, ndf 16). Prints the backend, the Winograd setting, and the median and minimum milliseconds per
//! step. Run it under `/usr/bin/time -v` for the peak memory of a step.

use std::process::ExitCode;
use std::time::Instant;

use dcgan::kernels::gemm::{gemm_backend, set_gemm_backend, GemmBackend};
use dcgan::kernels::{set_winograd, winograd, Winograd};
use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::rng::Rng;
use dcgan::train::Trainer;
use ndarray::Array4;

const BATCH: usize = 64;

/// The maximum number of timed steps, far more than a timing needs. The times are kept in
/// memory, 8 bytes a step.
const MAX_STEPS: usize = 1_000_000;

const USAGE: &str = "usage: train_step [--backend packed|matrixmultiply] \
                     [--winograd off|measured|always] dcgan64|dcgan32|mnist THREADS STEPS";

/// The request on the command line.
enum Command {
    /// Print the usage and exit.
    Help,
    /// Time `steps` steps of `model` on `threads` threads.
    Time { model: String, config: DcganConfig, threads: usize, steps: usize },
}

/// Returns the option named by `value`, the argument after `flag`, or an error that names the
/// flag, the value and the expected names.
fn choice<T: Copy>(flag: &str, value: Option<&String>, options: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    let expected = match names.as_slice() {
        [first, second] => format!("{first} or {second}"),
        [rest @ .., last] => format!("{}, or {last}", rest.join(", ")),
        [] => String::new(),
    };
    let Some(value) = value else {
        return Err(format!("missing value of {flag}: expected {expected}"));
    };
    options
        .iter()
        .find(|(name, _)| name == value)
        .map(|&(_, option)| option)
        .ok_or_else(|| format!("invalid {flag} {value:?}: expected {expected}"))
}

/// Parses the arguments. `--backend` and `--winograd` may appear anywhere and take effect at
/// once.
fn parse(args: &[String]) -> Result<Command, String> {
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--backend" => {
                let backends = [
                    ("packed", GemmBackend::Packed),
                    ("matrixmultiply", GemmBackend::MatrixMultiply),
                ];
                set_gemm_backend(choice("--backend", iter.next(), &backends)?);
            }
            "--winograd" => {
                let settings = [
                    ("off", Winograd::Off),
                    ("measured", Winograd::Measured),
                    ("always", Winograd::Always),
                ];
                set_winograd(choice("--winograd", iter.next(), &settings)?);
            }
            // Negative numbers pass through, for the argument checks to name.
            flag if flag.starts_with('-') && flag.parse::<i64>().is_err() => {
                return Err(format!("unknown flag {flag:?}\n{USAGE}"));
            }
            _ => positional.push(arg),
        }
    }
    let [model, threads, steps] = positional[..] else {
        return Err(format!(
            "expected 3 arguments (MODEL THREADS STEPS), got {}\n{USAGE}",
            positional.len()
        ));
    };
    let config = match model.as_str() {
        "dcgan64" => DcganConfig::dcgan64(),
        "dcgan32" => DcganConfig::dcgan32(),
        "mnist" => DcganConfig { nz: 100, ngf: 64, ndf: 16, channels: 1, image_size: 32 },
        other => {
            return Err(format!("unknown model {other:?}: expected dcgan64, dcgan32 or mnist"))
        }
    };
    let threads: usize = threads
        .parse()
        .ok()
        .filter(|&t| (1..=1024).contains(&t))
        .ok_or_else(|| format!("invalid THREADS {threads:?}: expected 1 to 1024"))?;
    let steps: usize = steps
        .parse()
        .ok()
        .filter(|&s| (1..=MAX_STEPS).contains(&s))
        .ok_or_else(|| format!("invalid STEPS {steps:?}: expected 1 to {MAX_STEPS}"))?;
    Ok(Command::Time { model: model.clone(), config, threads, steps })
}

fn run(args: &[String]) -> Result<(), String> {
    let (model, config, threads, steps) = match parse(args)? {
        Command::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Command::Time { model, config, threads, steps } => (model, config, threads, steps),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("failed to start {threads} threads: {e}"))?;

    let mut rng = Rng::from_seed(1);
    let real =
        Array4::from_shape_simple_fn(config.image_shape(BATCH), || 2.0 * rng.uniform() - 1.0);
    let mut trainer = Trainer::new(config, 0, GanLoss::default()).map_err(|e| e.to_string())?;

    let mut times = Vec::new();
    for step in 0..=steps {
        let start = Instant::now();
        pool.install(|| trainer.step(real.clone())).map_err(|e| e.to_string())?;
        if step > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let backend = match gemm_backend() {
        GemmBackend::Packed => "packed",
        GemmBackend::MatrixMultiply => "matrixmultiply",
    };
    // The Winograd products run on the packed GEMM only, so on matrixmultiply the setting has
    // no effect and the line marks it unused.
    let winograd = match gemm_backend() {
        GemmBackend::Packed => format!("{:?}", winograd()),
        GemmBackend::MatrixMultiply => format!("{:?} (unused on matrixmultiply)", winograd()),
    };
    let unit = if steps == 1 { "step" } else { "steps" };
    println!(
        "{model} threads={threads} backend={backend} winograd={winograd} train_step median {:.1} \
         ms, min {:.1} ms over {steps} {unit}",
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
