//! Sample-quality metrics of generated digits, judged by the MNIST [`Classifier`].
//!
//! - Frechet distance between Gaussians fitted to the classifier's penultimate features of the
//!   samples and of real digits (the MNIST analogue of FID; lower is better, 0 for identical
//!   statistics).
//! - Classifier score `exp(E_x KL(p(y|x) || p(y)))` (the analogue of the Inception Score):
//!   high when each sample is classified confidently and the classes are spread out. It lies in
//!   `[1, 10]`. It is computed over all samples at once, not averaged over splits.
//! - The predicted-class histogram, the number of classes covered (a class counts when at least
//!   `coverage_threshold` of the samples are predicted as it) and `KL(generated || real)` between
//!   the predicted-class distribution of the samples and that of the real digits. Both
//!   distributions come from the classifier's predictions, so its own errors affect both alike.

use std::fmt;

use ndarray::{s, Array2, Array4};
use serde::Serialize;

use super::classifier::{to_classifier_input, Classifier, Predictions, IMAGE_SIZE, NUM_CLASSES};
use super::frechet::{frechet_distance, GaussianStats};
use crate::data::{Mnist, MnistOptions};
use crate::error::{Error, Result};
use crate::layers::{Mode, Network};
use crate::rng::{Rng, Stream};
use crate::train::GanTrainer;

/// Default [`EvalOptions::coverage_threshold`]: 2% of the samples, a fifth of a class's share
/// when all ten are equally likely.
pub const DEFAULT_COVERAGE_THRESHOLD: f64 = 0.02;

/// Settings of an [`Evaluator`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalOptions {
    /// Images per forward pass of the classifier and of a generator (default 100).
    pub batch_size: usize,
    /// Fraction of the samples that a class needs to count as covered (default
    /// [`DEFAULT_COVERAGE_THRESHOLD`]).
    pub coverage_threshold: f64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { batch_size: 100, coverage_threshold: DEFAULT_COVERAGE_THRESHOLD }
    }
}

impl EvalOptions {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero batch size or a threshold outside `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size", self.batch_size, "at least 1"));
        }
        if !(self.coverage_threshold > 0.0 && self.coverage_threshold <= 1.0) {
            return Err(Error::invalid(
                "coverage_threshold",
                self.coverage_threshold,
                "a fraction in (0, 1]",
            ));
        }
        Ok(())
    }
}

/// The metrics of one set of samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SampleMetrics {
    /// Number of samples evaluated.
    pub samples: usize,
    /// Number of real digits in the reference statistics.
    pub reference_samples: usize,
    /// Frechet distance between the feature statistics of the samples and of the real digits.
    pub frechet_distance: f64,
    /// `exp(E_x KL(p(y|x) || p(y)))`, from 1 (no information) to 10.
    pub classifier_score: f64,
    /// Number of samples predicted as each digit 0 to 9.
    pub class_counts: Vec<usize>,
    /// `class_counts` divided by the number of samples.
    pub class_fractions: Vec<f64>,
    /// Fraction of the real digits predicted as each digit.
    pub reference_fractions: Vec<f64>,
    /// Fraction of the samples a class needs to count as covered.
    pub coverage_threshold: f64,
    /// Number of classes with at least `coverage_threshold` of the samples.
    pub classes_covered: usize,
    /// `KL(class_fractions || reference_fractions)` in nats; infinite when the samples fall in
    /// a class the real digits never do (serialised as `null` in JSON).
    pub class_kl: f64,
}

impl SampleMetrics {
    /// Returns the metrics as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("metrics serialise to JSON")
    }
}

impl fmt::Display for SampleMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "samples              {}", self.samples)?;
        writeln!(f, "real digits          {}", self.reference_samples)?;
        writeln!(f, "Frechet distance     {:.4}", self.frechet_distance)?;
        writeln!(f, "classifier score     {:.4}", self.classifier_score)?;
        writeln!(
            f,
            "classes covered      {} of {} (at least {:.1}% of the samples each)",
            self.classes_covered,
            NUM_CLASSES,
            100.0 * self.coverage_threshold
        )?;
        writeln!(f, "KL(samples || real)  {:.4} nats", self.class_kl)?;
        writeln!(f, "digit   samples   real")?;
        for (digit, (fraction, real)) in
            self.class_fractions.iter().zip(&self.reference_fractions).enumerate()
        {
            writeln!(f, "{digit:>5}   {:>6.2}%  {:>6.2}%", 100.0 * fraction, 100.0 * real)?;
        }
        Ok(())
    }
}

/// The classifier's statistics of real digits: features and predicted-class distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceStats {
    /// Gaussian fitted to the penultimate features.
    pub features: GaussianStats,
    /// Fraction of the digits predicted as each class.
    pub class_fractions: Vec<f64>,
}

impl ReferenceStats {
    /// Computes the statistics of `real` (`[n, 1, size, size]`, see [`to_classifier_input`] for
    /// the sizes), `batch_size` images per forward pass of `classifier`.
    ///
    /// # Errors
    /// As [`to_classifier_input`] and [`Classifier::predict`]; [`Error::InvalidArgument`] for
    /// fewer than two digits.
    pub fn compute(
        classifier: &mut Classifier,
        real: &Array4<f32>,
        batch_size: usize,
    ) -> Result<Self> {
        let input = to_classifier_input(real)?;
        let predictions = classifier.predict(&input, batch_size)?;
        let features = feature_stats(&predictions.features)?;
        let class_fractions = fractions(&histogram(&predictions.classes())?);
        Ok(ReferenceStats { features, class_fractions })
    }
}

/// Computes metrics of samples against fixed reference statistics of real digits.
#[derive(Debug)]
pub struct Evaluator {
    classifier: Classifier,
    reference: ReferenceStats,
    options: EvalOptions,
}

impl Evaluator {
    /// Creates an evaluator that compares samples with `real` (`[n, 1, size, size]`, see
    /// [`to_classifier_input`] for the sizes), judged by `classifier`.
    ///
    /// # Errors
    /// As [`EvalOptions::validate`] and [`to_classifier_input`]; [`Error::InvalidArgument`] for
    /// fewer than two real digits.
    pub fn new(
        mut classifier: Classifier,
        real: &Array4<f32>,
        options: EvalOptions,
    ) -> Result<Self> {
        options.validate()?;
        let reference = ReferenceStats::compute(&mut classifier, real, options.batch_size)?;
        Ok(Evaluator { classifier, reference, options })
    }

    /// Creates an evaluator from reference statistics computed earlier with the same
    /// classifier, e.g. to share them between several evaluators.
    ///
    /// # Errors
    /// As [`EvalOptions::validate`]; [`Error::InvalidArgument`] when the reference does not
    /// have the classifier's feature dimension and one fraction per class.
    pub fn with_reference(
        classifier: Classifier,
        reference: ReferenceStats,
        options: EvalOptions,
    ) -> Result<Self> {
        options.validate()?;
        let dim = reference.features.dim();
        if dim != classifier.feature_dim() || reference.class_fractions.len() != NUM_CLASSES {
            return Err(Error::invalid(
                "reference statistics",
                format!("{dim} features and {} classes", reference.class_fractions.len()),
                format!("{} features and {NUM_CLASSES} classes", classifier.feature_dim()),
            ));
        }
        Ok(Evaluator { classifier, reference, options })
    }

    /// Creates an evaluator with the shipped classifier against all 10,000 shipped digits.
    ///
    /// # Errors
    /// As [`EvalOptions::validate`].
    pub fn shipped(options: EvalOptions) -> Result<Self> {
        let real = Mnist::shipped(&MnistOptions { size: IMAGE_SIZE, limit: None })?;
        Evaluator::new(Classifier::shipped()?, &real.images, options)
    }

    /// Returns the reference statistics.
    pub fn reference(&self) -> &ReferenceStats {
        &self.reference
    }

    /// Returns the settings.
    pub fn options(&self) -> &EvalOptions {
        &self.options
    }

    /// Returns the classifier.
    pub fn classifier_mut(&mut self) -> &mut Classifier {
        &mut self.classifier
    }

    /// Computes the metrics of `images` (`[n, 1, size, size]` in `[-1, 1]`, `n >= 2`).
    ///
    /// # Errors
    /// As [`to_classifier_input`]; [`Error::InvalidArgument`] for fewer than two images;
    /// [`Error::NonFinite`] for NaN or infinite pixels.
    pub fn evaluate_images(&mut self, images: &Array4<f32>) -> Result<SampleMetrics> {
        let input = to_classifier_input(images)?;
        let predictions = self.classifier.predict(&input, self.options.batch_size)?;
        self.metrics(&predictions)
    }

    /// Computes the metrics of the classifier's `predictions` for a set of samples.
    fn metrics(&self, predictions: &Predictions) -> Result<SampleMetrics> {
        let features = feature_stats(&predictions.features)?;
        let class_counts = histogram(&predictions.classes())?;
        let class_fractions = fractions(&class_counts);
        let reference = &self.reference;
        Ok(SampleMetrics {
            samples: predictions.features.nrows(),
            reference_samples: reference.features.count(),
            frechet_distance: frechet_distance(&features, &reference.features)?,
            classifier_score: classifier_score(&predictions.probabilities()),
            classes_covered: classes_covered(&class_fractions, self.options.coverage_threshold),
            class_kl: kl_divergence(&class_fractions, &reference.class_fractions)?,
            class_counts,
            class_fractions,
            reference_fractions: reference.class_fractions.clone(),
            coverage_threshold: self.options.coverage_threshold,
        })
    }

    /// Draws `count` samples from `generator` with [`generate`] and computes their metrics.
    ///
    /// # Errors
    /// As [`generate`] and [`evaluate_images`](Self::evaluate_images).
    pub fn evaluate_generator(
        &mut self,
        generator: &mut Network,
        nz: usize,
        count: usize,
        seed: u64,
        mode: Mode,
    ) -> Result<SampleMetrics> {
        check_counts(count, nz, self.options.batch_size)?;
        // Rejects a generator that does not take `[n, nz, 1, 1]` before any work.
        generator.output_shape([1, nz, 1, 1])?;
        self.evaluate_drawn(nz, count, seed, |z| generator.forward(z, mode))
    }

    /// Draws `count` samples from `trainer`'s generator with [`GanTrainer::generate`], which
    /// puts the virtual batch normalisation reference batch in front when the trainer uses
    /// it, and computes their metrics. The latent vectors are those of [`generate`], so
    /// without virtual batch normalisation the result equals
    /// [`evaluate_generator`](Self::evaluate_generator)'s on the trainer's generator.
    ///
    /// # Errors
    /// As [`generate`], [`GanTrainer::generate`] and [`evaluate_images`](Self::evaluate_images).
    pub fn evaluate_trainer(
        &mut self,
        trainer: &mut GanTrainer,
        count: usize,
        seed: u64,
        mode: Mode,
    ) -> Result<SampleMetrics> {
        let nz = trainer.model().nz;
        self.evaluate_drawn(nz, count, seed, |z| trainer.generate(z, mode))
    }

    /// Runs `forward` on the latent vectors of [`generate`], one batch of
    /// [`EvalOptions::batch_size`] at a time, classifies each batch of images as it comes, and
    /// computes the metrics of all of them. Only the classifier's outputs are kept, so the
    /// memory does not grow with the images' size. The classifier receives the same batches as
    /// [`evaluate_images`](Self::evaluate_images) on the images of [`generate`], so the
    /// metrics are the same.
    fn evaluate_drawn(
        &mut self,
        nz: usize,
        count: usize,
        seed: u64,
        mut forward: impl FnMut(Array4<f32>) -> Result<Array4<f32>>,
    ) -> Result<SampleMetrics> {
        let batch_size = self.options.batch_size;
        check_counts(count, nz, batch_size)?;
        let hidden = self.classifier.config().hidden;
        // One row of logits and one of features per sample, within the largest tensor size.
        let per_sample = NUM_CLASSES + hidden;
        let max_count = max_count(per_sample);
        if count > max_count {
            return Err(Error::invalid("count", count, format!("at most {max_count} samples")));
        }
        let mut all = Predictions {
            logits: Array2::zeros((count, NUM_CLASSES)),
            features: Array2::zeros((count, hidden)),
        };
        for_each_batch(nz, count, batch_size, seed, |start, z| {
            let rows = z.shape()[0];
            let images = forward(z)?;
            check_batch_rows(&images, rows)?;
            let input = to_classifier_input(&images)?;
            let predictions = self.classifier.predict(&input, batch_size)?;
            let end = start + rows;
            all.logits.slice_mut(s![start..end, ..]).assign(&predictions.logits);
            all.features.slice_mut(s![start..end, ..]).assign(&predictions.features);
            Ok(())
        })?;
        self.metrics(&all)
    }
}

/// Runs `generator` on `count` latent vectors `[nz, 1, 1]` from N(0, 1), drawn in order from
/// `Rng::stream(seed, Stream::Noise)` (a fresh stream, so a training run's own noise is not
/// touched), `batch_size` at a time, and returns the images.
///
/// `mode` is the generator's BatchNorm mode: [`Mode::Eval`] normalises with the running
/// statistics and leaves the network unchanged; [`Mode::Train`] normalises with each batch's
/// statistics, as the PyTorch DCGAN example samples, and updates the running statistics. The
/// latent vectors do not depend on `batch_size`; in training mode the batch statistics, and so
/// the samples, do.
///
/// NOTE: in evaluation mode too, the last bits of a sample can depend on its place in its
/// batch, and so on `batch_size`. A transposed convolution on the direct lowering multiplies a
/// group of samples side by side, and the order in which a pixel's terms are added follows
/// where the GEMM's column slivers cut the sample's columns. The group sizes are powers of two
/// of at most 64 that depend on the layer's shape alone, so batch sizes that are multiples of
/// 64 give the same bits, as do multiples of every such layer's group. The MNIST generator has
/// one such layer, with groups of 4. On a trained checkpoint, batches of 4, 8, 20, 64, 100 and
/// 500 gave the same metrics, and batches of 7 and 50 differed from them in the ninth digit.
///
/// # Errors
/// [`Error::InvalidArgument`] for a zero `count`, `nz` or `batch_size`, or a generator that
/// does not take `[n, nz, 1, 1]`; any error of its forward pass.
pub fn generate(
    generator: &mut Network,
    nz: usize,
    count: usize,
    batch_size: usize,
    seed: u64,
    mode: Mode,
) -> Result<Array4<f32>> {
    check_counts(count, nz, batch_size)?;
    let [_, c, h, w] = generator.output_shape([1, nz, 1, 1])?;
    draw_images([c, h, w], nz, count, batch_size, seed, |z| generator.forward(z, mode))
}

/// Runs `forward` on `count` latent vectors `[nz, 1, 1]` from `Rng::stream(seed,
/// Stream::Noise)`, `batch_size` at a time, and collects its images `[count, c, h, w]` with
/// `image = [c, h, w]`. The vectors are those of [`generate`].
fn draw_images(
    image: [usize; 3],
    nz: usize,
    count: usize,
    batch_size: usize,
    seed: u64,
    mut forward: impl FnMut(Array4<f32>) -> Result<Array4<f32>>,
) -> Result<Array4<f32>> {
    check_counts(count, nz, batch_size)?;
    let [c, h, w] = image;
    let per_image = crate::error::checked_product("generated image", &[c, h, w])?;
    let max_count = max_count(per_image);
    if count > max_count {
        return Err(Error::invalid(
            "count",
            count,
            format!("at most {max_count} images of {c}x{h}x{w}"),
        ));
    }

    let mut images = Array4::<f32>::zeros((count, c, h, w));
    for_each_batch(nz, count, batch_size, seed, |start, z| {
        let rows = z.shape()[0];
        let batch = forward(z)?;
        if batch.shape() != [rows, c, h, w] {
            return Err(Error::invalid(
                "generated batch shape",
                format!("{:?}", batch.shape()),
                format!("{:?}", [rows, c, h, w]),
            ));
        }
        images.slice_mut(s![start..start + rows, .., .., ..]).assign(&batch);
        Ok(())
    })?;
    Ok(images)
}

/// Checks that a generator turned `rows` latent vectors into as many images.
fn check_batch_rows(images: &Array4<f32>, rows: usize) -> Result<()> {
    if images.shape()[0] == rows {
        return Ok(());
    }
    Err(Error::invalid("generated batch size", images.shape()[0], format!("{rows} images")))
}

/// Calls `visit(start, z)` for each batch of at most `batch_size` of `count` latent vectors
/// `z [n, nz, 1, 1]`, drawn in order from `Rng::stream(seed, Stream::Noise)`. `start` is the
/// index of the batch's first vector.
fn for_each_batch(
    nz: usize,
    count: usize,
    batch_size: usize,
    seed: u64,
    mut visit: impl FnMut(usize, Array4<f32>) -> Result<()>,
) -> Result<()> {
    let mut rng = Rng::stream(seed, Stream::Noise);
    for start in (0..count).step_by(batch_size) {
        let end = (start + batch_size).min(count);
        let mut z = Array4::<f32>::zeros((end - start, nz, 1, 1));
        rng.fill_normal(z.as_slice_mut().expect("standard layout"), 0.0, 1.0);
        visit(start, z)?;
    }
    Ok(())
}

/// Returns the largest count of items of `per_item` values each whose tensor stays within
/// [`MAX_TENSOR_ELEMENTS`](crate::kernels::MAX_TENSOR_ELEMENTS). Comparing the count with it,
/// in place of multiplying, also rejects a count whose product overflows `usize`.
fn max_count(per_item: usize) -> usize {
    crate::kernels::MAX_TENSOR_ELEMENTS / per_item.max(1)
}

fn check_counts(count: usize, nz: usize, batch_size: usize) -> Result<()> {
    for (name, value) in [("count", count), ("nz", nz), ("batch_size", batch_size)] {
        if value == 0 {
            return Err(Error::invalid(name, value, "at least 1"));
        }
    }
    Ok(())
}

/// Fits a Gaussian to feature rows `[n, dim]`.
fn feature_stats(features: &Array2<f32>) -> Result<GaussianStats> {
    let features = features.as_standard_layout();
    GaussianStats::from_features(features.as_slice().expect("standard layout"), features.ncols())
}

/// Counts the predictions of each class 0 to 9.
///
/// # Errors
/// [`Error::InvalidArgument`] for a class above 9.
pub fn histogram(classes: &[usize]) -> Result<Vec<usize>> {
    let mut counts = vec![0; NUM_CLASSES];
    for &class in classes {
        let count = counts.get_mut(class).ok_or_else(|| {
            Error::invalid("class", class, format!("a class index below {NUM_CLASSES}"))
        })?;
        *count += 1;
    }
    Ok(counts)
}

/// Returns `counts` divided by their sum (all zeros when the sum is 0).
pub fn fractions(counts: &[usize]) -> Vec<f64> {
    let total: usize = counts.iter().sum();
    counts.iter().map(|&c| if total == 0 { 0.0 } else { c as f64 / total as f64 }).collect()
}

/// Returns the number of classes whose fraction is at least `threshold`.
pub fn classes_covered(fractions: &[f64], threshold: f64) -> usize {
    fractions.iter().filter(|&&f| f >= threshold).count()
}

/// Computes `KL(p || q) = sum p ln(p / q)` in nats over two distributions of the same length.
/// Terms with `p = 0` are 0; a term with `p > 0` and `q = 0` makes it infinite.
///
/// # Errors
/// [`Error::LengthMismatch`] when the lengths differ.
pub fn kl_divergence(p: &[f64], q: &[f64]) -> Result<f64> {
    crate::error::check_len("distribution q", q.len(), p.len())?;
    Ok(p.iter()
        .zip(q)
        .map(|(&pi, &qi)| match (pi > 0.0, qi > 0.0) {
            (false, _) => 0.0,
            (true, false) => f64::INFINITY,
            (true, true) => pi * (pi / qi).ln(),
        })
        .sum())
}

/// Computes the classifier score `exp(mean over rows of KL(p(y|x) || p(y)))` of class
/// probabilities `[n, classes]`, where `p(y)` is the mean row. Returns NaN for no rows.
pub fn classifier_score(probabilities: &Array2<f64>) -> f64 {
    let n = probabilities.nrows();
    if n == 0 {
        return f64::NAN;
    }
    let marginal = probabilities.mean_axis(ndarray::Axis(0)).expect("at least one row");
    let mean_kl = probabilities
        .rows()
        .into_iter()
        .map(|row| kl_divergence(&row.to_vec(), &marginal.to_vec()).expect("equal lengths"))
        .sum::<f64>()
        / n as f64;
    mean_kl.exp()
}
