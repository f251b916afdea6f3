//! Times whole DCGAN training steps (D step on real and fake, G step, Adam on both) at batch 64.
//!
//! ```text
//! cargo run --release --example train_step -- dcgan64 1 5
//! ```
//!
//! Arguments: the model (`dcgan64`: 3x64x64, ngf = ndf = 64; `dcgan32`: 1x32x32), the number of
//! threads, and the number of timed steps after one warm-up step. `--backend packed` or
//! `--backend matrixmultiply` before them selects the GEMM backend (default: see
//! `GemmBackend::default`). `mnist` is the MNIST command's default model (1x32x32, ngf 64,
//! ndf 16). Prints the median and minimum milliseconds per step. Run it under `/usr/bin/time -v` for the peak memory of a step.

use std::process::ExitCode;
use std::time::Instant;

use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::rng::Rng;
use dcgan::train::Trainer;
use ndarray::Array4;

const BATCH: usize = 64;

fn run(args: &[String]) -> Result<(), String> {
    let usage =
        "usage: train_step [--backend packed|matrixmultiply] dcgan64|dcgan32|mnist THREADS STEPS";
    let args = match args {
        [flag, backend, rest @ ..] if flag == "--backend" => {
            set_gemm_backend(match backend.as_str() {
                "packed" => GemmBackend::Packed,
                "matrixmultiply" => GemmBackend::MatrixMultiply,
                other => {
                    return Err(format!(
                        "unknown backend {other:?}: expected packed or matrixmultiply"
                    ))
                }
            });
            rest
        }
        _ => args,
    };
    let [model, threads, steps] = args else {
        return Err(usage.to_string());
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
        .filter(|&s| s >= 1)
        .ok_or_else(|| format!("invalid STEPS {steps:?}: expected a positive integer"))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("failed to start {threads} threads: {e}"))?;

    let mut rng = Rng::from_seed(1);
    let real =
        Array4::from_shape_simple_fn(config.image_shape(BATCH), || 2.0 * rng.uniform() - 1.0);
    let mut trainer = Trainer::new(config, 0, GanLoss::default()).map_err(|e| e.to_string())?;

    let mut times = Vec::with_capacity(steps);
    for step in 0..=steps {
        let start = Instant::now();
        pool.install(|| trainer.step(real.clone())).map_err(|e| e.to_string())?;
        if step > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{model} threads={threads} train_step median {:.1} ms, min {:.1} ms over {steps} steps",
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
