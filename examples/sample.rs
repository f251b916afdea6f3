//! Draws new digits from the generator of a `train_mnist` checkpoint and writes them as one
//! PNG grid.
//!
//! ```text
//! cargo run --release --example sample -- --checkpoint runs/mnist/checkpoint.safetensors \
//!     --seed 7 --count 100 --out digits.png
//! ```
//!
//! The generator runs in evaluation mode (BatchNorm uses its running statistics), so each image
//! depends on its own latent vector alone. A run with virtual batch normalisation normalises
//! with its reference batch, as in training. The latent vectors come from the sample stream of
//! `--seed`, the stream a run draws its fixed sample batch from: with the run's seed and its
//! sample count, the grid equals the run's last sample grid.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use dcgan::checkpoint::Checkpoint;
use dcgan::image::check_png_path;
use dcgan::kernels::gemm::set_gemm_backend;
use dcgan::kernels::{set_winograd, Winograd};
use dcgan::layers::Mode;
use dcgan::run::{
    available_memory, check_generation_memory, generate, load_generator, sample_noise,
    write_sample_grid, RunSettings,
};
use dcgan::train::GanTrainer;

#[path = "common/cli.rs"]
mod cli;

/// The largest grid this example writes.
const MAX_COUNT: usize = 4096;

/// The largest worker pool the example starts.
const MAX_THREADS: usize = 1024;

/// Draw new digits from a trained generator and write them as a PNG grid.
#[derive(Debug, Parser)]
#[command(name = "sample", version, mut_args = cli::allow_negative_numbers)]
struct Args {
    /// Checkpoint written by train_mnist, or the folder that contains it.
    #[arg(long, short, default_value = "runs/mnist/checkpoint.safetensors")]
    checkpoint: PathBuf,

    /// Seed of the latent vectors. The run's own seed with --count equal to its sample count
    /// reproduces the run's last sample grid.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Number of digits in the grid (1 to 4096).
    #[arg(long, short = 'n', default_value_t = 64)]
    count: usize,

    /// Output PNG file, with a name ending in .png [default: generated_seed<SEED>.png next to
    /// the checkpoint].
    #[arg(long, short)]
    out: Option<PathBuf>,

    /// Worker threads (0: one per CPU core). The images are identical for every count.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

type AppResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> ExitCode {
    let args = Args::try_parse().unwrap_or_else(|err| cli::shorten_echoed_value(err).exit());
    match sample(&args) {
        Ok(path) => {
            let digits = if args.count == 1 { "digit" } else { "digits" };
            println!("Wrote {} {digits} to {}", args.count, path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn sample(args: &Args) -> AppResult<PathBuf> {
    if !(1..=MAX_COUNT).contains(&args.count) {
        return Err(format!("invalid --count {}: expected 1 to {MAX_COUNT}", args.count).into());
    }
    let checkpoint_path = if args.checkpoint.is_dir() {
        args.checkpoint.join(dcgan::run::folder::CHECKPOINT_FILE)
    } else {
        args.checkpoint.clone()
    };
    if checkpoint_path.exists() && !checkpoint_path.is_file() {
        return Err(format!(
            "invalid --checkpoint {}: expected a checkpoint file or a run folder, found neither",
            checkpoint_path.display()
        )
        .into());
    }
    if !checkpoint_path.is_file() {
        return Err(format!(
            "no checkpoint at {}: train one first with `cargo run --release --example \
             train_mnist`, or pass --checkpoint PATH",
            checkpoint_path.display()
        )
        .into());
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => checkpoint_path.with_file_name(format!("generated_seed{}.png", args.seed)),
    };
    prepare_output(&out)?;

    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    if threads > MAX_THREADS {
        return Err(format!("invalid --threads {threads}: expected 0 to {MAX_THREADS}").into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|err| format!("cannot start {threads} worker threads: {err}"))?;
    pool.install(|| draw(&checkpoint_path, args.seed, args.count, &out))?;
    Ok(out)
}

/// Checks that `out` can be a PNG file and creates its folder, before the digits are generated.
fn prepare_output(out: &Path) -> AppResult<()> {
    if out.is_dir() {
        return Err(format!(
            "--out {} is a folder: expected the path of a PNG file",
            out.display()
        )
        .into());
    }
    if check_png_path("out", out).is_err() {
        return Err(format!(
            "invalid --out {}: expected a file name ending in .png, because the grid is written \
             in the PNG format",
            out.display()
        )
        .into());
    }
    let Some(parent) = out.parent().filter(|parent| !parent.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::create_dir_all(parent).map_err(|err| {
        format!("cannot create the folder {} of --out: {err}", parent.display()).into()
    })
}

/// Generates `count` digits from the checkpoint's generator and writes the grid to `out`.
fn draw(checkpoint_path: &Path, seed: u64, count: usize, out: &Path) -> AppResult<()> {
    let checkpoint = Checkpoint::load(checkpoint_path)?;
    let settings = RunSettings::from_checkpoint(&checkpoint)?;
    // Generate on the backend and Winograd setting the run trained on, so the images match its
    // own grids bit for bit.
    set_winograd(settings.winograd.unwrap_or(Winograd::Off));
    if let Some(backend) = settings.gemm_backend {
        set_gemm_backend(backend);
    }
    // The generator runs on all `count` latent vectors at once.
    check_generation_memory(&settings.model, count, "count", available_memory())?;
    let z = sample_noise(&settings.model, seed, count)?;
    let images = if settings.train.tricks.virtual_batch_norm.is_some() {
        // The whole trainer, for the reference batch that goes in front of the latent vectors.
        GanTrainer::from_checkpoint(&checkpoint)?.generate(z, Mode::Eval)?
    } else {
        let (_, mut generator) = load_generator(&checkpoint)?;
        generate(&mut generator, z)?
    };
    write_sample_grid(out, &images)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_without_png_extension_rejected() {
        let folder = std::env::temp_dir().join(format!("dcgan-sample-out-{}", std::process::id()));
        for name in ["digits.jpg", "digits", "digits.png.bak"] {
            let out = folder.join(name);
            let err = prepare_output(&out).unwrap_err().to_string();
            assert!(err.starts_with("invalid --out "), "{name}: {err}");
            assert!(err.contains(name), "{name}: {err}");
            assert!(err.contains(".png"), "{name}: {err}");
        }
        assert!(!folder.exists(), "a rejected --out created its folder");
    }

    #[test]
    fn out_with_png_extension_accepted() {
        let folder = std::env::temp_dir().join(format!("dcgan-sample-png-{}", std::process::id()));
        for name in ["digits.png", "digits.PNG", "digits.Png"] {
            assert!(prepare_output(&folder.join(name)).is_ok(), "{name}");
        }
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
