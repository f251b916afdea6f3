//! Hand-differentiated layers and the sequential [`Network`] that runs them.
//!
//! Activations are `ndarray::Array4<f32>` in NCHW, standard (C-contiguous) layout; vectors (the
//! input and output of [`Linear`], [`BatchNorm`] in its 1-d form) are `[n, features, 1, 1]`.
//!
//! A [`Layer`] owns no trainable parameters: the network keeps all of them in one flat `Vec<f32>`
//! (and their gradients in another of the same length) and hands each layer the slice its
//! [`ParamSpec`]s describe, in order. Layers own what is not trained: the activations cached by
//! `forward` for `backward`, and buffers such as BatchNorm's running statistics.
//!
//! `forward` takes its input by value, so a layer that needs its input for the backward pass
//! keeps it without a copy. `backward` computes only what it is asked for: parameter gradients
//! when it gets a gradient slice (they are added, as PyTorch accumulates `.grad`), and the input
//! gradient when `input_grad` is true.
//!
//! The set is open: any type implementing [`Layer`] can join a [`Network`] as a
//! `Box<dyn Layer + Send + Sync>`.

mod activation;
mod batchnorm;
mod conv;
mod dropout;
pub(crate) mod elementwise;
mod linear;
mod network;
mod pool;
pub(crate) mod recycle;
mod reshape;

use ndarray::Array4;

use crate::error::{Error, Result};
use crate::rng::Rng;

pub use activation::{LeakyRelu, Relu, Sigmoid, Tanh};
pub use batchnorm::BatchNorm;
pub use conv::{Conv2d, ConvTranspose2d};
pub use dropout::Dropout;
pub use linear::Linear;
pub use network::{InputGrad, NamedBuffer, NamedTensor, Network, ParamGrads};
pub use pool::MaxPool2d;
pub use reshape::{Flatten, Reshape};

/// Whether a forward pass trains (batch statistics, dropout) or evaluates (running statistics,
/// no dropout), as PyTorch's `module.train()` and `module.eval()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: BatchNorm normalises with batch statistics and updates its running ones;
    /// dropout drops.
    Train,
    /// Evaluation: BatchNorm normalises with its running statistics; dropout is the identity.
    Eval,
}

/// Initialisation schemes for a layer's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// PyTorch's defaults: weights and biases of convolutions and linear layers uniform in
    /// `±1/sqrt(fan_in)`, BatchNorm weight 1 and bias 0.
    PyTorch,
    /// The DCGAN paper's scheme: convolution and linear weights N(0, 0.02^2), BatchNorm
    /// weight N(1, 0.02^2) and bias 0. Convolution and linear biases keep PyTorch's default.
    Dcgan,
}

/// Name and shape of one trainable parameter tensor of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// PyTorch's attribute name (`weight`, `bias`).
    pub name: &'static str,
    /// PyTorch's shape, e.g. `[c_out, c_in, k_h, k_w]` for a Conv2d weight.
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// Returns the number of elements, the product of the shape.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Returns whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The elements of a non-trainable buffer, in PyTorch's dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BufferData<'a> {
    /// A float32 tensor (running mean and variance).
    F32(&'a [f32]),
    /// An int64 tensor (`num_batches_tracked`).
    I64(&'a [i64]),
}

impl BufferData<'_> {
    /// Returns the number of elements.
    pub fn len(&self) -> usize {
        match self {
            BufferData::F32(v) => v.len(),
            BufferData::I64(v) => v.len(),
        }
    }

    /// Returns whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One non-trainable buffer of a layer, named as in PyTorch's state dict.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer<'a> {
    /// PyTorch's attribute name (`running_mean`, `num_batches_tracked`).
    pub name: &'static str,
    /// PyTorch's shape; `[]` for a scalar such as `num_batches_tracked`.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: BufferData<'a>,
}

/// A pointwise activation that a preceding layer may apply in its own pass (see
/// [`Layer::fuses_activation`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, `slope * x` otherwise.
    LeakyRelu(f32),
}

/// A differentiable building block of a [`Network`].
///
/// `params` (and `grads`) are this layer's slice of the network's flat buffers, laid out as
/// [`param_specs`](Layer::param_specs) lists them, each tensor C-contiguous. The trait is
/// object safe, so networks hold `Box<dyn Layer + Send + Sync>`.
pub trait Layer: std::fmt::Debug + Send + Sync {
    /// Describes the layer in PyTorch's notation, e.g. `Conv2d(3, 64, kernel_size=4,
    /// stride=2, padding=1, bias=False)`.
    fn describe(&self) -> String;

    /// Returns the trainable parameter tensors, in their order within the layer's slice.
    fn param_specs(&self) -> Vec<ParamSpec> {
        Vec::new()
    }

    /// Fills `params` (this layer's slice) with initial values drawn from `rng`.
    fn init_params(&self, _params: &mut [f32], _rng: &mut Rng, _init: Init) {}

    /// Returns the output shape for an input of shape `input` (`[n, c, h, w]`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the layer cannot take such an input.
    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]>;

    /// Computes the output for `x` and keeps what [`backward`](Layer::backward) needs.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an input shape that [`output_shape`](Layer::output_shape)
    /// rejects, or a batch the layer cannot process in `mode` (BatchNorm in training with one
    /// value per channel). [`Error::LengthMismatch`] for a `params` slice of the wrong length.
    /// [`Error::NonFinite`] where the layer detects NaN or infinity.
    fn forward(&mut self, params: &[f32], x: Array4<f32>, mode: Mode) -> Result<Array4<f32>>;

    /// Back-propagates `dy`, the loss gradient w.r.t. the last forward pass's output.
    ///
    /// Adds the parameter gradients into `grads` when it is `Some` (no weight gradient is formed
    /// when it is `None`) and returns the input gradient when `input_grad` is true.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when no forward pass was cached or `dy` does not have the
    /// cached output's shape; [`Error::LengthMismatch`] for slices of the wrong length.
    fn backward(
        &mut self,
        params: &[f32],
        grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>>;

    /// Returns the non-trainable buffers (running statistics), in state-dict order.
    fn buffers(&self) -> Vec<Buffer<'_>> {
        Vec::new()
    }

    /// Overwrites the buffer `name` with `data`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name or a wrong dtype;
    /// [`Error::LengthMismatch`] for a wrong length.
    fn set_buffer(&mut self, name: &str, _data: BufferData<'_>) -> Result<()> {
        Err(Error::invalid("buffer name", name, format!("a buffer of {}", self.describe())))
    }

    /// Returns the activation this layer computes, if it is one a preceding layer can fuse.
    fn as_activation(&self) -> Option<Activation> {
        None
    }

    /// Returns whether [`forward_fused`](Layer::forward_fused) is implemented.
    fn fuses_activation(&self) -> bool {
        false
    }

    /// Computes `activation(layer(x))` in one pass. The following `backward` then takes the
    /// gradient w.r.t. the activation's output.
    ///
    /// # Errors
    /// As [`forward`](Layer::forward); [`Error::InvalidArgument`] when the layer does not fuse.
    fn forward_fused(
        &mut self,
        _params: &[f32],
        _x: Array4<f32>,
        _mode: Mode,
        activation: Activation,
    ) -> Result<Array4<f32>> {
        Err(Error::invalid(
            "fused activation",
            format!("{activation:?}"),
            format!("none: {} does not fuse activations", self.describe()),
        ))
    }
}

/// Returns `x` in standard layout, copying only when it is not.
pub(crate) fn standard(x: Array4<f32>) -> Array4<f32> {
    if x.is_standard_layout() {
        x
    } else {
        x.as_standard_layout().into_owned()
    }
}

/// Returns the shape of `x` as an array.
pub(crate) fn shape4(x: &Array4<f32>) -> [usize; 4] {
    let s = x.shape();
    [s[0], s[1], s[2], s[3]]
}

/// Returns the error for a `backward` call with no cached forward pass.
pub(crate) fn no_forward_error(layer: &str) -> Error {
    Error::invalid(
        "layer state",
        format!("{layer} has no cached forward pass"),
        "a forward() call before backward()",
    )
}

/// Checks that `dy` has the shape of the cached forward output.
pub(crate) fn check_grad_shape(dy: &Array4<f32>, output: [usize; 4]) -> Result<()> {
    if shape4(dy) != output {
        return Err(Error::invalid(
            "grad_output shape",
            format!("{:?}", dy.shape()),
            format!("the forward output's shape {output:?}"),
        ));
    }
    Ok(())
}

/// Fills `out` uniformly in `[-bound, bound)`.
pub(crate) fn fill_uniform(out: &mut [f32], rng: &mut Rng, bound: f32) {
    for v in out {
        *v = bound * (2.0 * rng.uniform() - 1.0);
    }
}
