//! A small convolutional MNIST classifier, the judge of generated digits.
//!
//! It takes `[n, 1, 32, 32]` images in `[-1, 1]` (the layout of [`crate::data::Mnist`] at its
//! default size, and of the 32x32 DCGAN's output) and is built from the crate's own layers:
//!
//! ```text
//! 0  Conv2d(1 -> w, k3 p1)    ReLU  MaxPool2d(2)     32x32 -> 16x16
//! 3  Conv2d(w -> 2w, k3 p1)   ReLU  MaxPool2d(2)     16x16 -> 8x8
//! 6  Conv2d(2w -> 2w, k3 p1)  ReLU  MaxPool2d(2)     8x8 -> 4x4
//! 9  Flatten  Linear(32w -> hidden)  ReLU            the features
//! 12 Dropout(p)  Linear(hidden -> 10)                the logits
//! ```
//!
//! The `hidden` values after the ReLU at index 11 are the penultimate features that the Frechet
//! distance compares, as FID compares Inception's pool features.

use std::path::Path;

use ndarray::{s, Array2, Array4};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{reject_unknown_entries, Checkpoint};
use crate::error::{checked_product, Error, Result};
use crate::kernels::Conv2dSpec;
use crate::layers::{
    Conv2d, Dropout, Flatten, Init, InputGrad, Layer, Linear, MaxPool2d, Mode, Network, ParamGrads,
    Relu,
};
use crate::loss::softmax_cross_entropy;
use crate::optim::Optimizer;
use crate::rng::{Rng, Stream};

/// Number of classes: the digits 0 to 9.
pub const NUM_CLASSES: usize = 10;

/// Side length of the classifier's input images.
pub const IMAGE_SIZE: usize = 32;

/// Number of layers that compute the penultimate features (indices 0 to 11).
const FEATURE_LAYERS: usize = 12;

/// The metadata key under which a checkpoint stores the [`ClassifierConfig`] as JSON.
pub const CONFIG_KEY: &str = "classifier_config";

/// The state-dict prefix of the classifier's parameters (`classifier.0.weight`).
const PREFIX: &str = "classifier";

/// The shipped weights, trained by `examples/train_classifier.rs` (see `models/README.md`).
static SHIPPED_WEIGHTS: &[u8] = include_bytes!("../../models/mnist_classifier.safetensors");

/// Sizes of the classifier.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Channels of the first convolution; the second and third have twice as many.
    pub width: usize,
    /// Length of the penultimate feature vector.
    pub hidden: usize,
    /// Drop probability of the dropout before the last linear layer (training only).
    pub dropout: f32,
}

impl Default for ClassifierConfig {
    /// Returns the shipped classifier's sizes: width 32, 128 features, dropout 0.25.
    fn default() -> Self {
        ClassifierConfig { width: 32, hidden: 128, dropout: 0.25 }
    }
}

impl ClassifierConfig {
    /// Checks the sizes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero width or feature count, or a dropout probability
    /// outside `[0, 1)`; [`Error::Overflow`] when a layer's size does not fit in `usize`.
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 {
            return Err(Error::invalid("width", self.width, "at least 1"));
        }
        if self.hidden == 0 {
            return Err(Error::invalid("hidden", self.hidden, "at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid("dropout", self.dropout, "a probability in [0, 1)"));
        }
        let flat = checked_product(
            "flattened features",
            &[2, self.width, IMAGE_SIZE / 8, IMAGE_SIZE / 8],
        )?;
        checked_product("first linear layer", &[flat, self.hidden])?;
        Ok(())
    }

    /// Builds the layers listed in the module documentation; the dropout draws from `dropout_rng`.
    fn layers(&self, dropout_rng: Rng) -> Result<Vec<Box<dyn Layer + Send + Sync>>> {
        let (w, w2) = (self.width, 2 * self.width);
        let conv = |c_in, c_out| Conv2d::new(Conv2dSpec::new(c_in, c_out, 3).padding(1), true);
        let flat = w2 * (IMAGE_SIZE / 8) * (IMAGE_SIZE / 8);
        Ok(vec![
            Box::new(conv(1, w)?),
            Box::new(Relu::new()),
            Box::new(MaxPool2d::square(2)?),
            Box::new(conv(w, w2)?),
            Box::new(Relu::new()),
            Box::new(MaxPool2d::square(2)?),
            Box::new(conv(w2, w2)?),
            Box::new(Relu::new()),
            Box::new(MaxPool2d::square(2)?),
            Box::new(Flatten::new()),
            Box::new(Linear::new(flat, self.hidden, true)?),
            Box::new(Relu::new()),
            Box::new(Dropout::new(self.dropout, dropout_rng)?),
            Box::new(Linear::new(self.hidden, NUM_CLASSES, true)?),
        ])
    }
}

/// The classifier's outputs for a set of images.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    /// Logits, `[n, 10]`.
    pub logits: Array2<f32>,
    /// Penultimate features, `[n, hidden]`.
    pub features: Array2<f32>,
}

impl Predictions {
    /// Returns the class probabilities `softmax(logits)`, `[n, 10]`, computed in `f64`.
    pub fn probabilities(&self) -> Array2<f64> {
        let mut probs = self.logits.mapv(|v| v as f64);
        for mut row in probs.rows_mut() {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.mapv_inplace(|v| (v - max).exp());
            let sum = row.sum();
            row.mapv_inplace(|v| v / sum);
        }
        probs
    }

    /// Returns the predicted class of each image: the index of its largest logit (the first on
    /// ties).
    pub fn classes(&self) -> Vec<usize> {
        self.logits
            .rows()
            .into_iter()
            .map(|row| {
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }
}

/// The MNIST classifier: a [`Network`] of the layout in the module documentation.
#[derive(Debug)]
pub struct Classifier {
    config: ClassifierConfig,
    network: Network,
}

impl Classifier {
    /// Builds a classifier with PyTorch's default initialisation drawn from
    /// `Rng::stream(seed, Stream::Init)`; its dropout draws from `Rng::stream(seed,
    /// Stream::Dropout)`.
    ///
    /// # Errors
    /// As [`ClassifierConfig::validate`].
    pub fn new(config: ClassifierConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let layers = config.layers(Rng::stream(seed, Stream::Dropout))?;
        let network =
            Network::new(PREFIX, layers, &mut Rng::stream(seed, Stream::Init), Init::PyTorch)?;
        Ok(Classifier { config, network })
    }

    /// Loads the classifier that ships with the crate, `models/mnist_classifier.safetensors`.
    ///
    /// # Errors
    /// As [`from_checkpoint`](Self::from_checkpoint); an error means the shipped file is
    /// damaged.
    pub fn shipped() -> Result<Self> {
        Classifier::from_checkpoint(&Checkpoint::load_bytes(SHIPPED_WEIGHTS)?)
    }

    /// Loads a classifier from a checkpoint file, such as one saved from
    /// [`to_checkpoint`](Self::to_checkpoint).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; as [`from_checkpoint`](Self::from_checkpoint).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Classifier::from_checkpoint(&Checkpoint::load(path)?)
    }

    /// Builds a classifier from a checkpoint's [`CONFIG_KEY`] metadata and its parameter
    /// tensors (`classifier.0.weight`, ...).
    ///
    /// # Errors
    /// [`Error::Format`] for missing metadata or tensors, tensors of the wrong shape, or tensors
    /// and scalars that are not the classifier's parameters;
    /// [`Error::InvalidArgument`] for an invalid configuration; [`Error::NonFinite`] for NaN or
    /// infinite weights.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        let config: ClassifierConfig = checkpoint.get_json(CONFIG_KEY)?;
        config.validate()?;

        // A configuration claiming more parameters than the file stores is rejected before the
        // network allocates them, so a damaged file cannot request a huge buffer.
        let specs = config
            .layers(Rng::from_seed(0))?
            .iter()
            .flat_map(|l| l.param_specs())
            .collect::<Vec<_>>();
        let needed = specs.iter().try_fold(0usize, |sum, spec| sum.checked_add(spec.len()));
        let stored: usize = checkpoint.tensors.values().map(|(_, data)| data.len()).sum();
        if needed.is_none_or(|needed| needed > stored) {
            return Err(Error::Format {
                format: "checkpoint",
                reason: format!(
                    "classifier configuration {config:?} needs more parameters than the {stored} \
                     the file stores"
                ),
            });
        }
        let mut classifier = Classifier::new(config, 0)?;
        let names: Vec<(String, Vec<usize>)> =
            classifier.network.named_params().map(|t| (t.name, t.shape)).collect();
        reject_unknown_entries(checkpoint, "the classifier's parameters", |name| {
            names.iter().any(|(param, _)| param == name)
        })?;
        for (name, shape) in names {
            let values = checkpoint.get(&name, &shape)?;
            classifier.network.set_param(&name, values)?;
        }
        Ok(classifier)
    }

    /// Returns a checkpoint with the parameters and the configuration. Callers may add
    /// metadata (accuracy, the command that trained it) before saving it.
    ///
    /// # Errors
    /// None in practice: the `Result` passes on the checks of [`Checkpoint::set_json`] and
    /// [`Checkpoint::insert_tensor`], which a valid classifier always meets.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut checkpoint = Checkpoint::new();
        checkpoint.set_json(CONFIG_KEY, &self.config)?;
        for tensor in self.network.named_params() {
            checkpoint.insert_tensor(tensor.name, &tensor.shape, tensor.data.to_vec())?;
        }
        Ok(checkpoint)
    }

    /// Returns the sizes.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// Returns the length of the penultimate feature vector.
    pub fn feature_dim(&self) -> usize {
        self.config.hidden
    }

    /// Returns the network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Returns the network, mutable (for an optimiser step or loading weights).
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Runs one training step on `images` (`[n, 1, 32, 32]`) with class indices `labels`: zeroes
    /// the gradients, back-propagates the mean softmax cross-entropy and applies `optimizer`.
    /// Returns the loss before the update.
    ///
    /// # Errors
    /// As [`Network::forward`] for images of the wrong shape, and as
    /// [`softmax_cross_entropy`] for wrong labels; the optimiser's errors.
    pub fn train_step(
        &mut self,
        images: Array4<f32>,
        labels: &[usize],
        optimizer: &mut dyn Optimizer,
    ) -> Result<f64> {
        check_images(images.shape())?;
        self.network.zero_grad();
        let logits = self.network.forward(images, Mode::Train)?;
        let loss = softmax_cross_entropy(&logits, labels)?;
        self.network.backward(loss.grad, ParamGrads::Accumulate, InputGrad::Skip)?;
        let (params, grads) = self.network.params_and_grads_mut();
        optimizer.step(params, grads)?;
        Ok(loss.loss)
    }

    /// Computes the logits and penultimate features of `images` (`[n, 1, 32, 32]`) in
    /// evaluation mode, `batch_size` images per forward pass.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another image shape, no images or a zero batch size;
    /// [`Error::NonFinite`] for NaN or infinite pixels.
    pub fn predict(&mut self, images: &Array4<f32>, batch_size: usize) -> Result<Predictions> {
        check_images(images.shape())?;
        if batch_size == 0 {
            return Err(Error::invalid("batch_size", batch_size, "at least 1"));
        }
        let n = images.shape()[0];
        let mut logits = Array2::<f32>::zeros((n, NUM_CLASSES));
        let mut features = Array2::<f32>::zeros((n, self.config.hidden));
        for start in (0..n).step_by(batch_size) {
            let end = (start + batch_size).min(n);
            let batch = images.slice(s![start..end, .., .., ..]).to_owned();
            let f = self.network.forward_range(0..FEATURE_LAYERS, batch, Mode::Eval)?;
            let layers = self.network.len();
            let y = self.network.forward_range(FEATURE_LAYERS..layers, f.clone(), Mode::Eval)?;
            let rows = end - start;
            features.slice_mut(s![start..end, ..]).assign(
                &f.into_shape_with_order((rows, self.config.hidden)).expect("[n, hidden, 1, 1]"),
            );
            logits
                .slice_mut(s![start..end, ..])
                .assign(&y.into_shape_with_order((rows, NUM_CLASSES)).expect("[n, 10, 1, 1]"));
        }
        Ok(Predictions { logits, features })
    }

    /// Returns the fraction of `images` whose predicted class is their label.
    ///
    /// # Errors
    /// As [`predict`](Self::predict); [`Error::LengthMismatch`] unless there is one label per
    /// image.
    pub fn accuracy(
        &mut self,
        images: &Array4<f32>,
        labels: &[u8],
        batch_size: usize,
    ) -> Result<f64> {
        crate::error::check_len("labels", labels.len(), images.shape()[0])?;
        let classes = self.predict(images, batch_size)?.classes();
        let correct = classes.iter().zip(labels).filter(|(&c, &l)| c == l as usize).count();
        Ok(correct as f64 / labels.len() as f64)
    }
}

/// Checks that `shape` is `[n, 1, 32, 32]` with `n >= 1`.
fn check_images(shape: &[usize]) -> Result<()> {
    if shape.len() != 4 || shape[0] == 0 || shape[1..] != [1, IMAGE_SIZE, IMAGE_SIZE] {
        return Err(Error::invalid(
            "image shape",
            format!("{shape:?}"),
            format!("[n, 1, {IMAGE_SIZE}, {IMAGE_SIZE}] with n >= 1 (see to_classifier_input)"),
        ));
    }
    Ok(())
}

/// Returns greyscale images of side 16, 28, 32, 64 or 128 at the classifier's 32x32, laid out
/// as [`crate::data::Mnist`] lays out digits. 28 is padded with 2 background pixels (-1) on
/// every side. Other sizes are resized bilinearly, which for 64 and 128 nearly inverts the
/// upsampling of the real digits. 32 is returned as is.
///
/// # Errors
/// [`Error::InvalidArgument`] for more than one channel, non-square images, an unsupported
/// side or no images.
pub fn to_classifier_input(images: &Array4<f32>) -> Result<Array4<f32>> {
    let [n, c, h, w] = [0, 1, 2, 3].map(|axis| images.shape()[axis]);
    if n == 0 || c != 1 || h != w || !crate::data::mnist::SUPPORTED_SIZES.contains(&h) {
        return Err(Error::invalid(
            "image shape",
            format!("{:?}", images.shape()),
            format!(
                "[n, 1, size, size] with n >= 1 and size one of {:?}",
                crate::data::mnist::SUPPORTED_SIZES
            ),
        ));
    }
    if h == IMAGE_SIZE {
        return Ok(images.as_standard_layout().into_owned());
    }
    let mut out = Array4::<f32>::from_elem((n, 1, IMAGE_SIZE, IMAGE_SIZE), -1.0);
    for (src, mut dst) in images.outer_iter().zip(out.outer_iter_mut()) {
        let src = src.as_standard_layout();
        let src = src.as_slice().expect("standard layout");
        let dst = dst.as_slice_mut().expect("standard layout");
        if h == crate::data::mnist::DIGIT_SIZE {
            let margin = (IMAGE_SIZE - h) / 2;
            for (row, src_row) in src.chunks_exact(h).enumerate() {
                let start = (row + margin) * IMAGE_SIZE + margin;
                dst[start..start + h].copy_from_slice(src_row);
            }
        } else {
            crate::data::mnist::resize_bilinear(src, h, dst, IMAGE_SIZE);
        }
    }
    Ok(out)
}
