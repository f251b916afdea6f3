//! Trains the MNIST classifier that judges generated digits, and writes its weights.
//!
//! ```text
//! cargo run --release --example train_classifier
//! ```
//!
//! It trains on the first 8,000 shipped digits and reports the accuracy on the last 2,000, which
//! it never trains on. With the same flags and build, the weights are bit-identical whatever the
//! number of threads. The written file records the accuracy and the command that reproduces it.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use dcgan::data::{Batcher, LastBatch, Mnist, MnistOptions};
use dcgan::eval::{Classifier, ClassifierConfig, IMAGE_SIZE};
use dcgan::optim::{Adam, AdamConfig};
use dcgan::rng::{Rng, Stream};
use dcgan::Error;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{s, Array4, Axis};

#[path = "common/cli.rs"]
mod cli;

/// Train the MNIST classifier used by the sample-quality metrics.
#[derive(Parser, Debug)]
#[command(name = "train_classifier", version, about)]
#[command(mut_args = cli::allow_negative_numbers)]
struct Args {
    /// Passes over the training digits.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Digits per training step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam learning rate of the first epoch.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Factor applied to the learning rate after each epoch.
    #[arg(long, default_value_t = 0.8)]
    lr_decay: f64,
    /// Largest random shift, in pixels along each axis, applied to each training digit (0 turns
    /// the augmentation off).
    #[arg(long, default_value_t = 1)]
    max_shift: usize,
    /// Seed of the initial weights, the data order, dropout and the shifts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of shipped digits, counted from the end, held out for the accuracy.
    #[arg(long, default_value_t = 2000)]
    held_out: usize,
    /// Channels of the first convolution (the others have twice as many).
    #[arg(long, default_value_t = ClassifierConfig::default().width)]
    width: usize,
    /// Length of the penultimate feature vector.
    #[arg(long, default_value_t = ClassifierConfig::default().hidden)]
    hidden: usize,
    /// Dropout probability before the last layer.
    #[arg(long, default_value_t = ClassifierConfig::default().dropout)]
    dropout: f32,
    /// Worker threads (0: one per core). The weights do not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Output path of the weights.
    #[arg(long, default_value = "models/mnist_classifier.safetensors")]
    output: PathBuf,
}

impl Args {
    /// Returns the command line that reproduces these weights, every flag but the thread count
    /// and output path spelled out.
    fn command(&self) -> String {
        format!(
            "cargo run --release --example train_classifier -- --epochs {} --batch-size {} \
             --lr {} --lr-decay {} --max-shift {} --seed {} --held-out {} --width {} --hidden {} \
             --dropout {}",
            self.epochs,
            self.batch_size,
            self.lr,
            self.lr_decay,
            self.max_shift,
            self.seed,
            self.held_out,
            self.width,
            self.hidden,
            self.dropout
        )
    }
}

fn main() {
    let args = Args::try_parse().unwrap_or_else(|err| cli::shorten_echoed_value(err).exit());
    if let Err(err) = run(&args) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Error> {
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global().map_err(
            |err| Error::invalid("threads", args.threads, format!("a usable count: {err}")),
        )?;
    }
    for (name, value) in [("epochs", args.epochs), ("batch-size", args.batch_size)] {
        if value == 0 {
            return Err(Error::invalid(name, value, "at least 1"));
        }
    }
    if !(args.lr_decay > 0.0 && args.lr_decay <= 1.0) {
        return Err(Error::invalid("lr-decay", args.lr_decay, "a factor in (0, 1]"));
    }
    if args.max_shift >= IMAGE_SIZE / 2 {
        return Err(Error::invalid(
            "max-shift",
            args.max_shift,
            format!("below {}", IMAGE_SIZE / 2),
        ));
    }
    // Fail before the training rather than after it.
    if args.output.is_dir() {
        return Err(Error::invalid_path(
            "output",
            &args.output,
            "the path of a .safetensors file, not a folder",
        ));
    }

    // Split the shipped digits: the first part trains, the last `held_out` measure accuracy.
    let digits = Mnist::shipped(&MnistOptions { size: IMAGE_SIZE, limit: None })?;
    if args.held_out == 0 || args.held_out >= digits.len() {
        return Err(Error::invalid(
            "held-out",
            args.held_out,
            format!("1 to {} digits, leaving some to train on", digits.len() - 1),
        ));
    }
    let train_len = digits.len() - args.held_out;
    let train = Mnist {
        images: digits.images.slice(s![..train_len, .., .., ..]).to_owned(),
        labels: digits.labels[..train_len].to_vec(),
    };
    let held_out_images = digits.images.slice(s![train_len.., .., .., ..]).to_owned();
    let held_out_labels = &digits.labels[train_len..];

    let config = ClassifierConfig { width: args.width, hidden: args.hidden, dropout: args.dropout };
    let mut classifier = Classifier::new(config, args.seed)?;
    let num_params = classifier.network().num_params();
    let mut batcher = Batcher::new(train_len, args.batch_size, args.seed, LastBatch::Drop)?;
    // The shifts get their own generator, seeded once from the setup stream.
    let mut shift_rng = Rng::from_seed(Rng::stream(args.seed, Stream::Setup).next_u64());
    let mut adam_config = AdamConfig { lr: args.lr, ..AdamConfig::default() };
    let mut adam = Adam::new(num_params, adam_config)?;
    println!(
        "training on {train_len} digits, holding out {}; {num_params} parameters",
        args.held_out
    );

    let start = Instant::now();
    let steps = batcher.batches_per_epoch();
    let mut accuracy = 0.0;
    for epoch in 0..args.epochs {
        let bar = ProgressBar::new(steps as u64).with_style(
            ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{}/{}", epoch + 1, args.epochs));
        let mut loss_sum = 0.0;
        for _ in 0..steps {
            let batch = batcher.next_batch(&train)?;
            let images = shift_randomly(batch.images, args.max_shift, &mut shift_rng);
            let labels: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
            loss_sum += classifier.train_step(images, &labels, &mut adam)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        accuracy = classifier.accuracy(&held_out_images, held_out_labels, 500)?;
        println!(
            "epoch {:>2}/{}  lr {:.2e}  mean loss {:.4}  held-out accuracy {:.2}%  ({:.0} s)",
            epoch + 1,
            args.epochs,
            adam_config.lr,
            loss_sum / steps as f64,
            100.0 * accuracy,
            start.elapsed().as_secs_f64()
        );

        // Decay the learning rate, keeping Adam's moments and step count.
        adam_config.lr *= args.lr_decay;
        let state = adam.state().clone();
        adam = Adam::new(num_params, adam_config)?;
        adam.set_state(state)?;
    }

    let mut checkpoint = classifier.to_checkpoint()?;
    let correct = (accuracy * args.held_out as f64).round() as usize;
    let metadata = [
        ("held_out_accuracy", format!("{accuracy:.4}")),
        ("held_out_correct", format!("{correct} of {}", args.held_out)),
        ("held_out_digits", format!("shipped digits {train_len}..{}", digits.len())),
        ("train_digits", format!("shipped digits 0..{train_len}")),
        ("command", args.command()),
    ];
    for (key, value) in metadata {
        checkpoint.metadata.insert(key.into(), value);
    }
    checkpoint.save(&args.output)?;
    println!(
        "held-out accuracy {:.2}% ({correct} of {}); wrote {} in {:.0} s",
        100.0 * accuracy,
        args.held_out,
        args.output.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Shifts each image by a random whole number of pixels in `-max_shift..=max_shift` along each
/// axis, filling the uncovered border with the background value -1.
fn shift_randomly(images: Array4<f32>, max_shift: usize, rng: &mut Rng) -> Array4<f32> {
    if max_shift == 0 {
        return images;
    }
    let mut out = Array4::<f32>::from_elem(images.raw_dim(), -1.0);
    let size = images.shape()[3];
    for (src, mut dst) in images.axis_iter(Axis(0)).zip(out.axis_iter_mut(Axis(0))) {
        let dy = rng.below(2 * max_shift + 1) as isize - max_shift as isize;
        let dx = rng.below(2 * max_shift + 1) as isize - max_shift as isize;
        // Destination rows and columns that receive a source pixel.
        let range = |d: isize| (d.max(0) as usize, (size as isize + d.min(0)) as usize);
        let ((y0, y1), (x0, x1)) = (range(dy), range(dx));
        let src_rows = (y0 as isize - dy) as usize..(y1 as isize - dy) as usize;
        let src_cols = (x0 as isize - dx) as usize..(x1 as isize - dx) as usize;
        dst.slice_mut(s![.., y0..y1, x0..x1]).assign(&src.slice(s![.., src_rows, src_cols]));
    }
    out
}
