//! A sequential network: layers run in order over one flat parameter buffer.
//!
//! A parameter `name` of layer `i` is called `{prefix}.{i}.{name}`, as in the state dict of a
//! PyTorch `nn.Sequential` stored under `prefix` (the DCGAN example uses `main`). Every layer
//! takes one index, activations included, and buffers are named the same way.
//!
//! When a layer that fuses activations (BatchNorm) is directly followed by a ReLU or LeakyReLU
//! and both run in the same call, the pair runs as one pass forward and one pass backward. The
//! results are bit-identical to running them apart; [`Network::set_fusion`] turns fusion off.

use std::ops::Range;

use ndarray::Array4;

use super::elementwise::all_finite;
use super::{BufferData, Init, Layer, Mode};
use crate::error::{check_len, try_zeros, Error, Result};
use crate::rng::Rng;

/// Whether a backward pass adds into the parameter gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamGrads {
    /// Add each parameter's gradient into the network's gradient buffer.
    Accumulate,
    /// Form no parameter gradients (the discriminator during the generator's step).
    Skip,
}

/// Whether a backward pass returns the gradient w.r.t. the input of its first layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputGrad {
    /// Compute and return it.
    Compute,
    /// Skip it (the network's input is data or noise).
    Skip,
}

/// A named parameter or gradient tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor<'a> {
    /// State-dict name, `{prefix}.{index}.{name}`.
    pub name: String,
    /// PyTorch's shape.
    pub shape: Vec<usize>,
    /// The elements, C-contiguous.
    pub data: &'a [f32],
}

/// A named non-trainable buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedBuffer<'a> {
    /// State-dict name, `{prefix}.{index}.{name}`.
    pub name: String,
    /// PyTorch's shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// The elements.
    pub data: BufferData<'a>,
}

/// Name, shape and location of one parameter tensor in the flat buffers.
#[derive(Clone, Debug)]
struct ParamEntry {
    name: String,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// A sequential network with its parameters and gradients in two flat buffers.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    layers: Vec<Box<dyn Layer + Send + Sync>>,
    layer_ranges: Vec<Range<usize>>,
    entries: Vec<ParamEntry>,
    params: Vec<f32>,
    grads: Vec<f32>,
    fusion: bool,
    /// `fused_with_next[i]`: the last forward pass ran layer `i + 1` inside layer `i`.
    fused_with_next: Vec<bool>,
}

impl Network {
    /// Builds a network from `layers`, naming parameters under `prefix`, and initialises its
    /// parameters from `rng`, layer by layer in order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty layer list; [`Error::Overflow`] when the
    /// parameter count does not fit in `usize`; [`Error::OutOfMemory`] when the parameters or
    /// their gradients cannot be allocated.
    pub fn new(
        prefix: &str,
        layers: Vec<Box<dyn Layer + Send + Sync>>,
        rng: &mut Rng,
        init: Init,
    ) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::invalid("layers", "an empty list", "at least one layer"));
        }
        let mut entries = Vec::new();
        let mut layer_ranges = Vec::with_capacity(layers.len());
        let mut offset = 0usize;
        for (i, layer) in layers.iter().enumerate() {
            let start = offset;
            for spec in layer.param_specs() {
                let len = crate::error::checked_product("parameter tensor", &spec.shape)?;
                let end = offset.checked_add(len).ok_or(Error::Overflow { what: "parameters" })?;
                let name = if prefix.is_empty() {
                    format!("{i}.{}", spec.name)
                } else {
                    format!("{prefix}.{i}.{}", spec.name)
                };
                entries.push(ParamEntry { name, shape: spec.shape, range: offset..end });
                offset = end;
            }
            layer_ranges.push(start..offset);
        }
        let count = layers.len();
        let mut network = Network {
            prefix: prefix.to_string(),
            layers,
            layer_ranges,
            entries,
            params: try_zeros("network parameters", offset)?,
            grads: try_zeros("network gradients", offset)?,
            fusion: true,
            fused_with_next: vec![false; count],
        };
        network.init(rng, init);
        Ok(network)
    }

    /// Re-initialises every parameter from `rng`, layer by layer in order.
    pub fn init(&mut self, rng: &mut Rng, init: Init) {
        for (layer, range) in self.layers.iter().zip(&self.layer_ranges) {
            layer.init_params(&mut self.params[range.clone()], rng, init);
        }
    }

    /// Returns the number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Returns whether there are no layers (never true for a constructed network).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Layer `index`.
    pub fn layer(&self, index: usize) -> Option<&(dyn Layer + Send + Sync)> {
        self.layers.get(index).map(|l| l.as_ref())
    }

    /// Returns the layers' descriptions, one line each, with their indices.
    pub fn describe(&self) -> String {
        let lines: Vec<String> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| format!("({i}): {}", l.describe()))
            .collect();
        lines.join("\n")
    }

    /// Returns the state-dict prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns whether BatchNorm + activation pairs run fused (the default).
    pub fn fusion(&self) -> bool {
        self.fusion
    }

    /// Turns fusion of BatchNorm + activation pairs on or off.
    pub fn set_fusion(&mut self, fusion: bool) {
        self.fusion = fusion;
    }

    /// Returns the number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Returns all parameters, layer by layer, each tensor C-contiguous.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Returns all parameters, mutable.
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// Returns all gradients, laid out as [`params`](Network::params).
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Returns all gradients, mutable.
    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// Returns the parameters (mutable) and gradients together, for an optimiser step.
    pub fn params_and_grads_mut(&mut self) -> (&mut [f32], &[f32]) {
        (&mut self.params, &self.grads)
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// Returns each parameter tensor with its name and shape, in state-dict order.
    pub fn named_params(&self) -> impl Iterator<Item = NamedTensor<'_>> + '_ {
        self.entries.iter().map(|e| NamedTensor {
            name: e.name.clone(),
            shape: e.shape.clone(),
            data: &self.params[e.range.clone()],
        })
    }

    /// Returns each gradient tensor, named after its parameter.
    pub fn named_grads(&self) -> impl Iterator<Item = NamedTensor<'_>> + '_ {
        self.entries.iter().map(|e| NamedTensor {
            name: e.name.clone(),
            shape: e.shape.clone(),
            data: &self.grads[e.range.clone()],
        })
    }

    /// Returns each non-trainable buffer with its name, shape and data, in state-dict order.
    pub fn named_buffers(&self) -> impl Iterator<Item = NamedBuffer<'_>> + '_ {
        self.layers.iter().enumerate().flat_map(move |(i, layer)| {
            layer.buffers().into_iter().map(move |b| NamedBuffer {
                name: self.full_name(i, b.name),
                shape: b.shape,
                data: b.data,
            })
        })
    }

    fn full_name(&self, index: usize, name: &str) -> String {
        if self.prefix.is_empty() {
            format!("{index}.{name}")
        } else {
            format!("{}.{index}.{name}", self.prefix)
        }
    }

    fn entry(&self, name: &str) -> Result<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            Error::invalid("parameter name", name, "a name listed by named_params()")
        })
    }

    /// Returns the parameter tensor `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name.
    pub fn param(&self, name: &str) -> Result<&[f32]> {
        Ok(&self.params[self.entry(name)?.range.clone()])
    }

    /// Returns the gradient of parameter `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name.
    pub fn grad(&self, name: &str) -> Result<&[f32]> {
        Ok(&self.grads[self.entry(name)?.range.clone()])
    }

    /// Overwrites the parameter tensor `name` with `values` (C-contiguous, PyTorch's layout).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name; [`Error::LengthMismatch`] for a wrong
    /// length; [`Error::NonFinite`] for NaN or infinite values.
    pub fn set_param(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let range = self.entry(name)?.range.clone();
        check_len("parameter values", values.len(), range.len())?;
        if !all_finite(values) {
            return Err(Error::NonFinite { what: format!("values for parameter {name}") });
        }
        self.params[range].copy_from_slice(values);
        Ok(())
    }

    /// Overwrites the buffer `name` (e.g. `main.1.running_var`) with `data`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name or a wrong dtype;
    /// [`Error::LengthMismatch`] for a wrong length.
    pub fn set_buffer(&mut self, name: &str, data: BufferData<'_>) -> Result<()> {
        let unknown = || Error::invalid("buffer name", name, "a name listed by named_buffers()");
        let rest = if self.prefix.is_empty() {
            name
        } else {
            name.strip_prefix(self.prefix.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .ok_or_else(unknown)?
        };
        let (index, buffer) = rest.split_once('.').ok_or_else(unknown)?;
        let index: usize = index.parse().map_err(|_| unknown())?;
        let layer = self.layers.get_mut(index).ok_or_else(unknown)?;
        layer.set_buffer(buffer, data)
    }

    /// Returns the output shape for an input of shape `input`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a layer rejects the shape it would receive.
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        self.layers.iter().try_fold(input, |shape, layer| layer.output_shape(shape))
    }

    fn check_range(&self, layers: &Range<usize>) -> Result<()> {
        if layers.start >= layers.end || layers.end > self.layers.len() {
            return Err(Error::invalid(
                "layer range",
                format!("{layers:?}"),
                format!("a non-empty range within 0..{}", self.layers.len()),
            ));
        }
        Ok(())
    }

    /// Runs every layer on `x`.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for NaN or infinity in `x`; any error of a layer's forward pass.
    pub fn forward(&mut self, x: Array4<f32>, mode: Mode) -> Result<Array4<f32>> {
        self.forward_range(0..self.layers.len(), x, mode)
    }

    /// Runs layers `layers.start .. layers.end` on `x`, the input of layer `layers.start`, and
    /// returns the output of layer `layers.end - 1`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or out-of-bounds range; [`Error::NonFinite`] for
    /// NaN or infinity in `x`; any error of a layer's forward pass.
    pub fn forward_range(
        &mut self,
        layers: Range<usize>,
        x: Array4<f32>,
        mode: Mode,
    ) -> Result<Array4<f32>> {
        self.check_range(&layers)?;
        let input_ok = match x.as_slice_memory_order() {
            Some(xs) => all_finite(xs),
            None => x.iter().all(|v| v.is_finite()),
        };
        if !input_ok {
            return Err(Error::NonFinite {
                what: format!("input of layer {} of {}", layers.start, self.prefix),
            });
        }
        if layers.start > 0 {
            // The layer before the range does not absorb the range's first layer this time.
            self.fused_with_next[layers.start - 1] = false;
        }
        let mut x = x;
        let mut i = layers.start;
        while i < layers.end {
            let range = self.layer_ranges[i].clone();
            let next_activation =
                if self.fusion && i + 1 < layers.end && self.layers[i].fuses_activation() {
                    self.layers[i + 1].as_activation()
                } else {
                    None
                };
            let layer = &mut self.layers[i];
            match next_activation {
                Some(activation) => {
                    x = layer.forward_fused(&self.params[range], x, mode, activation)?;
                    self.fused_with_next[i] = true;
                    self.fused_with_next[i + 1] = false;
                    i += 2;
                }
                None => {
                    x = layer.forward(&self.params[range], x, mode)?;
                    self.fused_with_next[i] = false;
                    i += 1;
                }
            }
        }
        Ok(x)
    }

    /// Back-propagates `dy`, the gradient w.r.t. the network's output, through every layer.
    ///
    /// # Errors
    /// As [`backward_range`](Network::backward_range).
    pub fn backward(
        &mut self,
        dy: Array4<f32>,
        param_grads: ParamGrads,
        input_grad: InputGrad,
    ) -> Result<Option<Array4<f32>>> {
        self.backward_range(0..self.layers.len(), dy, param_grads, input_grad)
    }

    /// Back-propagates `dy`, the gradient w.r.t. the output of layer `layers.end - 1`, down to
    /// layer `layers.start`, using the activations cached by the last forward pass over them.
    ///
    /// Parameter gradients are added into [`grads`](Network::grads) when `param_grads` is
    /// [`ParamGrads::Accumulate`]. Returns the gradient w.r.t. the input of layer
    /// `layers.start` when `input_grad` is [`InputGrad::Compute`]. On an error, layers above
    /// the failing one have already added their gradients.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or out-of-bounds range, a range that splits a
    /// pair fused in the forward pass, a layer without a cached forward pass, or a `dy` of the
    /// wrong shape.
    pub fn backward_range(
        &mut self,
        layers: Range<usize>,
        dy: Array4<f32>,
        param_grads: ParamGrads,
        input_grad: InputGrad,
    ) -> Result<Option<Array4<f32>>> {
        self.check_range(&layers)?;
        let mut dy = dy;
        let mut end = layers.end;
        loop {
            // The layer to run: layer `end - 1`, or the layer that absorbed it when fused.
            let mut i = end - 1;
            if i > 0 && self.fused_with_next[i - 1] {
                if i == layers.start {
                    return Err(Error::invalid(
                        "layer range",
                        format!("{layers:?}"),
                        format!(
                            "a range that includes layer {} too: layer {i} ran fused into it",
                            i - 1
                        ),
                    ));
                }
                i -= 1;
            }
            let want_input = i > layers.start || input_grad == InputGrad::Compute;
            let range = self.layer_ranges[i].clone();
            let grads = match param_grads {
                ParamGrads::Accumulate => Some(&mut self.grads[range.clone()]),
                ParamGrads::Skip => None,
            };
            let dx = self.layers[i].backward(&self.params[range], grads, dy, want_input)?;
            if i == layers.start {
                return Ok(dx);
            }
            dy = dx.ok_or_else(|| {
                Error::invalid(
                    "layer output",
                    format!("no input gradient from layer {i}"),
                    "an input gradient when one is requested",
                )
            })?;
            end = i;
        }
    }
}
