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

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use dcgan::data::{Batcher, LastBatch, Mnist, MnistOptions};
use dcgan::layers::Mode;
use dcgan::models::DcganConfig;
use dcgan::optim::MAX_HYPER_PARAMETER;
use dcgan::train::{GanTrainer, StepStats};
use train_flags::{train_config, TrainFlags};

#[path = "common/cli.rs"]
mod cli;
#[path = "common/train_flags.rs"]
mod train_flags;

/// Train a small DCGAN on the shipped MNIST digits with one GAN loss or trick switched on.
#[derive(Debug, Parser)]
#[command(name = "tricks_mnist", version, mut_args = cli::allow_negative_numbers)]
struct Args {
    /// Training steps (generator updates), at least 1.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
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
    /// Number of shipped digits to train on (1 to 10000).
    #[arg(long, default_value_t = 10000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10000))]
    digits: usize,
    /// Seed of every random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads, 0 to 1024 (0: rayon's default, one per core).
    #[arg(long, default_value_t = 0, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    threads: usize,
    /// Print the losses every this many steps (at least 1).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    print_every: u64,
    /// Write a grid of 64 generated digits to this PNG file (name ending in .png) at the end.
    #[arg(long)]
    samples: Option<PathBuf>,

    /// Generator learning rate (default 2e-4; 5e-5 with --wgan).
    #[arg(long)]
    lr_g: Option<f64>,
    /// Discriminator learning rate (default 2e-4; 5e-5 with --wgan).
    #[arg(long)]
    lr_d: Option<f64>,
    /// Loss, optimiser and tricks.
    #[command(flatten)]
    train: TrainFlags,
}

/// Checks the flags that training would only use at its end, or would report under the
/// optimiser's field name `lr`, so that a bad value fails before the training.
fn check_flags(args: &Args) -> dcgan::Result<()> {
    if let Some(path) = &args.samples {
        if path.is_dir() {
            return Err(dcgan::Error::invalid_path(
                "samples",
                path,
                "the path of a PNG file, not a folder",
            ));
        }
        dcgan::image::check_png_path("samples", path)?;
        let folder = path.parent().filter(|folder| !folder.as_os_str().is_empty());
        if folder.is_some_and(|folder| !folder.is_dir()) {
            return Err(dcgan::Error::invalid_path(
                "samples",
                path,
                "the path of a PNG file in an existing folder",
            ));
        }
    }
    for (name, lr) in [("lr_g", args.lr_g), ("lr_d", args.lr_d)] {
        if let Some(lr) = lr.filter(|lr| !(0.0..=MAX_HYPER_PARAMETER).contains(lr)) {
            return Err(dcgan::Error::invalid(
                name,
                lr,
                "a finite number of at least 0 and at most f32::MAX",
            ));
        }
    }
    Ok(())
}

fn run(args: &Args) -> dcgan::Result<()> {
    check_flags(args)?;
    let model = DcganConfig {
        nz: args.nz,
        ngf: args.ngf,
        ndf: args.ndf,
        channels: 1,
        image_size: args.image_size,
    };
    let config = train_config(&args.train, args.lr_g, args.lr_d);
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
        let steps = |n: u64| if n == 1 { "1 step".to_string() } else { format!("{n} steps") };
        println!(
            "final (mean of the last {}): loss_D {d_loss:.4}, loss_G {g_loss:.4}, \
             D(x) {d_real:.3}, D(G(z)) {d_fake:.3}; {} in {seconds:.1} s ({:.2} s/step)",
            steps(args.print_every.min(args.steps)),
            steps(args.steps),
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
    let args = Args::try_parse().unwrap_or_else(|err| cli::shorten_echoed_value(err).exit());
    if let Err(message) = args.train.check_combinations() {
        Args::command().error(ErrorKind::ArgumentConflict, message).exit();
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global();
    if let Err(err) = pool {
        eprintln!("error: cannot start {} threads: {err}", args.threads);
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let is_flag = |id: &str| Args::command().get_arguments().any(|arg| arg.get_id() == id);
            eprintln!("error: {}", train_flags::name_flag(err, is_flag));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `flags` as the command line of `tricks_mnist` and checks them.
    fn check(flags: &[&str]) -> dcgan::Result<()> {
        let args =
            Args::try_parse_from(std::iter::once("tricks_mnist").chain(flags.iter().copied()))
                .expect("the flags parse");
        check_flags(&args)
    }

    /// Asserts that `flags` fail the check with an error naming `flag`.
    fn assert_rejected(flags: &[&str], flag: &str) {
        let err = check(flags).expect_err("the flags must be rejected");
        let is_flag = |id: &str| Args::command().get_arguments().any(|arg| arg.get_id() == id);
        let message = train_flags::name_flag(err, is_flag);
        assert!(message.contains(flag), "{flags:?}: {message}");
    }

    #[test]
    fn command_passes_debug_asserts() {
        Args::command().debug_assert();
    }

    #[test]
    fn samples_in_missing_folder_rejected() {
        let path = std::env::temp_dir().join("tricks-mnist-no-such-folder").join("samples.png");
        assert_rejected(&["--samples", path.to_str().unwrap()], "--samples");
    }

    #[test]
    fn samples_folder_path_rejected() {
        let folder = std::env::temp_dir();
        assert_rejected(&["--samples", folder.to_str().unwrap()], "--samples");
    }

    #[test]
    fn samples_path_without_png_extension_rejected() {
        for path in ["samples.jpg", "samples", "samples.png.txt"] {
            assert_rejected(&["--samples", path], "--samples");
            let err = check(&["--samples", path]).unwrap_err();
            assert!(err.to_string().contains(".png"), "{path}: {err}");
        }
    }

    #[test]
    fn samples_file_path_accepted() {
        assert!(check(&["--samples", "samples.PNG"]).is_ok());
        assert!(check(&["--samples", "samples.png"]).is_ok());
        let path = std::env::temp_dir().join("samples.png");
        assert!(check(&["--samples", path.to_str().unwrap()]).is_ok());
    }

    #[test]
    fn out_of_range_counts_name_flag() {
        // Without the bounds, --threads 100000000 tries to start 100 million threads, --digits 0
        // fails as "invalid limit", and --steps 0 prints an empty table.
        let cases: [(&[&str], &str); 4] = [
            (&["--threads", "1025"], "--threads"),
            (&["--digits", "0"], "--digits"),
            (&["--digits", "10001"], "--digits"),
            (&["--steps", "0"], "--steps"),
        ];
        for (flags, flag) in cases {
            let command_line = std::iter::once("tricks_mnist").chain(flags.iter().copied());
            let err = Args::try_parse_from(command_line).expect_err("the value is out of range");
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{flags:?}");
            assert!(err.to_string().contains(flag), "{flags:?}: {err}");
        }
        assert!(check(&["--threads", "1024", "--digits", "10000", "--steps", "1"]).is_ok());
    }

    #[test]
    fn bad_learning_rates_name_flag() {
        assert_rejected(&["--lr-d", "-1e-3"], "--lr-d");
        assert_rejected(&["--lr-g", "NaN"], "--lr-g");
        assert_rejected(&["--lr-g", "1e40"], "--lr-g");
        assert!(check(&["--lr-g", "0", "--lr-d", "1e-3"]).is_ok());
    }
}
