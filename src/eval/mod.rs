//! Sample quality: an MNIST classifier as the judge, the Frechet distance between its features
//! of generated and real digits, a classifier score and class coverage.
//!
//! [`Evaluator::shipped`] loads the classifier that ships with the crate
//! (`models/mnist_classifier.safetensors`, trained by `examples/train_classifier.rs`). It fits
//! the reference statistics to the 10,000 shipped digits once. Then
//! [`Evaluator::evaluate_generator`] and [`Evaluator::evaluate_images`] return
//! [`SampleMetrics`], printable as text or JSON.

pub mod classifier;
pub mod frechet;
pub mod metrics;

pub use classifier::{
    to_classifier_input, Classifier, ClassifierConfig, Predictions, IMAGE_SIZE, NUM_CLASSES,
};
pub use frechet::{frechet_distance, sqrtm_psd, symmetric_eigen, GaussianStats, SymmetricEigen};
pub use metrics::{
    classes_covered, classifier_score, fractions, generate, histogram, kl_divergence, EvalOptions,
    Evaluator, ReferenceStats, SampleMetrics, DEFAULT_COVERAGE_THRESHOLD,
};
