//! Conv2d and ConvTranspose2d layers over the kernels of [`crate::kernels`].
//!
//! Both keep their input for the backward pass, which needs it for the weight gradient. The
//! parameter slice contains the weight in PyTorch's layout, then the bias when there is one.

use ndarray::Array4;

use super::{
    check_grad_shape, fill_uniform, no_forward_error, recycle, shape4, standard, Init, Layer, Mode,
    ParamSpec,
};
use crate::error::{check_len, Error, Result};
use crate::kernels::{
    conv2d_forward, conv2d_grad_bias, conv2d_grad_input, conv2d_grad_weight,
    conv_transpose2d_forward, conv_transpose2d_grad_bias, conv_transpose2d_grad_input,
    conv_transpose2d_grad_weight, Conv2dGeometry, Conv2dSpec, ConvTranspose2dGeometry,
    ConvTranspose2dSpec,
};
use crate::rng::Rng;

/// Checks that an input has `c_in` channels.
fn check_channels(layer: &str, input: [usize; 4], c_in: usize) -> Result<()> {
    if input[1] != c_in {
        return Err(Error::invalid(
            "input shape",
            format!("{input:?}"),
            format!("[n, {c_in}, h, w] for {layer}"),
        ));
    }
    Ok(())
}

/// Splits a layer's parameter slice into weight and optional bias.
fn split_params(
    params: &[f32],
    weight_len: usize,
    bias_len: Option<usize>,
) -> Result<(&[f32], Option<&[f32]>)> {
    check_len("layer parameters", params.len(), weight_len + bias_len.unwrap_or(0))?;
    let (weight, bias) = params.split_at(weight_len);
    Ok((weight, bias_len.map(|_| bias)))
}

/// Initialises a weight and bias: the DCGAN scheme draws the weight from N(0, 0.02^2); PyTorch's
/// default (and every bias) is uniform in `±1/sqrt(fan_in)`.
fn init_conv_params(
    params: &mut [f32],
    weight_len: usize,
    fan_in: usize,
    rng: &mut Rng,
    init: Init,
) {
    let (weight, bias) = params.split_at_mut(weight_len);
    let bound = 1.0 / (fan_in as f32).sqrt();
    match init {
        Init::PyTorch => fill_uniform(weight, rng, bound),
        Init::Dcgan => rng.fill_normal(weight, 0.0, 0.02),
    }
    fill_uniform(bias, rng, bound);
}

/// Geometry and input of the last forward pass, cached for the backward pass.
#[derive(Debug)]
struct ConvCache<G> {
    geometry: G,
    input: Array4<f32>,
    output_shape: [usize; 4],
}

/// The kernel passes of one kind of convolution, over its checked geometry.
trait Passes: std::fmt::Debug {
    fn input_shape(&self) -> [usize; 4];
    fn output_shape(&self) -> [usize; 4];
    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>, y: &mut [f32])
        -> Result<()>;
    fn grad_input(&self, weight: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()>;
    fn grad_weight(&self, x: &[f32], dy: &[f32], dweight: &mut [f32]) -> Result<()>;
    fn grad_bias(&self, dy: &[f32], dbias: &mut [f32]) -> Result<()>;
}

impl Passes for Conv2dGeometry {
    fn input_shape(&self) -> [usize; 4] {
        Conv2dGeometry::input_shape(self)
    }
    fn output_shape(&self) -> [usize; 4] {
        Conv2dGeometry::output_shape(self)
    }
    fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
        conv2d_forward(self, x, w, b, y)
    }
    fn grad_input(&self, weight: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        conv2d_grad_input(self, weight, dy, dx)
    }
    fn grad_weight(&self, x: &[f32], dy: &[f32], dweight: &mut [f32]) -> Result<()> {
        conv2d_grad_weight(self, x, dy, dweight)
    }
    fn grad_bias(&self, dy: &[f32], dbias: &mut [f32]) -> Result<()> {
        conv2d_grad_bias(self, dy, dbias)
    }
}

impl Passes for ConvTranspose2dGeometry {
    fn input_shape(&self) -> [usize; 4] {
        ConvTranspose2dGeometry::input_shape(self)
    }
    fn output_shape(&self) -> [usize; 4] {
        ConvTranspose2dGeometry::output_shape(self)
    }
    fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) -> Result<()> {
        conv_transpose2d_forward(self, x, w, b, y)
    }
    fn grad_input(&self, weight: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        conv_transpose2d_grad_input(self, weight, dy, dx)
    }
    fn grad_weight(&self, x: &[f32], dy: &[f32], dweight: &mut [f32]) -> Result<()> {
        conv_transpose2d_grad_weight(self, x, dy, dweight)
    }
    fn grad_bias(&self, dy: &[f32], dbias: &mut [f32]) -> Result<()> {
        conv_transpose2d_grad_bias(self, dy, dbias)
    }
}

/// Runs the forward pass of either convolution and caches its input, returning the replaced
/// cache's memory to the buffer pool.
fn forward_pass<G: Passes>(
    cache: &mut Option<ConvCache<G>>,
    geometry: G,
    (weight, bias): (&[f32], Option<&[f32]>),
    x: Array4<f32>,
) -> Result<Array4<f32>> {
    let x = standard(x);
    let output_shape = geometry.output_shape();
    // The kernels overwrite every output value.
    let mut y = recycle::take(output_shape);
    geometry.forward(
        x.as_slice().expect("standard layout"),
        weight,
        bias,
        y.as_slice_mut().expect("standard layout"),
    )?;
    let old = cache.replace(ConvCache { geometry, input: x, output_shape });
    recycle::give_opt(old.map(|cache| cache.input));
    Ok(y)
}

/// Runs the backward pass of either convolution. Adds the parameter gradients into `grads` when
/// given, and returns the input gradient when `input_grad` is true.
fn backward_pass<G: Passes>(
    cache: &ConvCache<G>,
    (weight, bias): (&[f32], Option<&[f32]>),
    grads: Option<&mut [f32]>,
    dy: Array4<f32>,
    input_grad: bool,
) -> Result<Option<Array4<f32>>> {
    check_grad_shape(&dy, cache.output_shape)?;
    let dy = standard(dy);
    let dys = dy.as_slice().expect("standard layout");
    let g = &cache.geometry;

    // Parameter gradients, added into the caller's buffer.
    if let Some(grads) = grads {
        check_len("layer gradients", grads.len(), weight.len() + bias.map_or(0, <[f32]>::len))?;
        let (dweight, dbias) = grads.split_at_mut(weight.len());
        g.grad_weight(cache.input.as_slice().expect("standard layout"), dys, dweight)?;
        if bias.is_some() {
            g.grad_bias(dys, dbias)?;
        }
    }

    // Input gradient, only when requested.
    let dx = if input_grad {
        let mut dx = recycle::take(g.input_shape());
        g.grad_input(weight, dys, dx.as_slice_mut().expect("standard layout"))?;
        Some(dx)
    } else {
        None
    };
    recycle::give(dy);
    Ok(dx)
}

/// 2-D convolution (PyTorch's `nn.Conv2d`, without groups).
///
/// Parameters: `weight` `[c_out, c_in, k_h, k_w]`, then `bias` `[c_out]` if enabled.
#[derive(Debug)]
pub struct Conv2d {
    spec: Conv2dSpec,
    bias: bool,
    weight_len: usize,
    cache: Option<ConvCache<Conv2dGeometry>>,
}

impl Conv2d {
    /// Creates a convolution with the hyper-parameters of `spec`, with a bias when `bias` is true.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero channel count, kernel size, stride or dilation;
    /// [`Error::Overflow`] when the weight size does not fit in `usize`.
    pub fn new(spec: Conv2dSpec, bias: bool) -> Result<Self> {
        // A 1x1 input padded beyond the dilated kernel validates every hyper-parameter that
        // does not depend on the input size.
        let padding = [0, 1].map(|axis| spec.kernel[axis].saturating_mul(spec.dilation[axis]));
        Conv2dSpec { padding, ..spec }.geometry(1, 1, 1)?;
        let weight_len = spec.weight_len()?;
        Ok(Conv2d { spec, bias, weight_len, cache: None })
    }

    /// Returns the hyper-parameters.
    pub fn spec(&self) -> &Conv2dSpec {
        &self.spec
    }

    fn geometry(&self, input: [usize; 4]) -> Result<Conv2dGeometry> {
        check_channels("Conv2d", input, self.spec.c_in)?;
        self.spec.geometry(input[0], input[2], input[3])
    }
}

impl Layer for Conv2d {
    fn describe(&self) -> String {
        let s = &self.spec;
        format!(
            "Conv2d({}, {}, kernel_size={:?}, stride={:?}, padding={:?}, dilation={:?}, \
             bias={})",
            s.c_in, s.c_out, s.kernel, s.stride, s.padding, s.dilation, self.bias
        )
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let s = &self.spec;
        let mut specs = vec![ParamSpec {
            name: "weight",
            shape: vec![s.c_out, s.c_in, s.kernel[0], s.kernel[1]],
        }];
        if self.bias {
            specs.push(ParamSpec { name: "bias", shape: vec![s.c_out] });
        }
        specs
    }

    fn init_params(&self, params: &mut [f32], rng: &mut Rng, init: Init) {
        let fan_in = self.spec.c_in * self.spec.kernel[0] * self.spec.kernel[1];
        init_conv_params(params, self.weight_len, fan_in, rng, init);
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        Ok(self.geometry(input)?.output_shape())
    }

    fn forward(&mut self, params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let geometry = self.geometry(shape4(&x))?;
        let bias_len = self.bias.then_some(self.spec.c_out);
        let operands = split_params(params, self.weight_len, bias_len)?;
        forward_pass(&mut self.cache, geometry, operands, x)
    }

    fn backward(
        &mut self,
        params: &[f32],
        grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let cache = self.cache.as_ref().ok_or_else(|| no_forward_error("Conv2d"))?;
        let bias_len = self.bias.then_some(self.spec.c_out);
        backward_pass(
            cache,
            split_params(params, self.weight_len, bias_len)?,
            grads,
            dy,
            input_grad,
        )
    }
}

/// 2-D transposed convolution (PyTorch's `nn.ConvTranspose2d`, without groups).
///
/// Parameters: `weight` `[c_in, c_out, k_h, k_w]`, then `bias` `[c_out]` if enabled.
#[derive(Debug)]
pub struct ConvTranspose2d {
    spec: ConvTranspose2dSpec,
    bias: bool,
    weight_len: usize,
    cache: Option<ConvCache<ConvTranspose2dGeometry>>,
}

impl ConvTranspose2d {
    /// Creates a transposed convolution with the hyper-parameters of `spec`, with a bias when
    /// `bias` is true.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero channel count, kernel size, stride or dilation, or
    /// an output padding not smaller than the stride or dilation of its axis;
    /// [`Error::Overflow`] when the weight size does not fit in `usize`.
    pub fn new(spec: ConvTranspose2dSpec, bias: bool) -> Result<Self> {
        // A 1x1 probe without cropping validates every hyper-parameter except input size.
        ConvTranspose2dSpec { padding: [0, 0], ..spec }.geometry(1, 1, 1)?;
        let weight_len = spec.weight_len()?;
        Ok(ConvTranspose2d { spec, bias, weight_len, cache: None })
    }

    /// Returns the hyper-parameters.
    pub fn spec(&self) -> &ConvTranspose2dSpec {
        &self.spec
    }

    fn geometry(&self, input: [usize; 4]) -> Result<ConvTranspose2dGeometry> {
        check_channels("ConvTranspose2d", input, self.spec.c_in)?;
        self.spec.geometry(input[0], input[2], input[3])
    }
}

impl Layer for ConvTranspose2d {
    fn describe(&self) -> String {
        let s = &self.spec;
        format!(
            "ConvTranspose2d({}, {}, kernel_size={:?}, stride={:?}, padding={:?}, \
             output_padding={:?}, dilation={:?}, bias={})",
            s.c_in, s.c_out, s.kernel, s.stride, s.padding, s.output_padding, s.dilation, self.bias
        )
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let s = &self.spec;
        let mut specs = vec![ParamSpec {
            name: "weight",
            shape: vec![s.c_in, s.c_out, s.kernel[0], s.kernel[1]],
        }];
        if self.bias {
            specs.push(ParamSpec { name: "bias", shape: vec![s.c_out] });
        }
        specs
    }

    fn init_params(&self, params: &mut [f32], rng: &mut Rng, init: Init) {
        // PyTorch computes the fan-in of a transposed convolution from the weight's dimension 1.
        let fan_in = self.spec.c_out * self.spec.kernel[0] * self.spec.kernel[1];
        init_conv_params(params, self.weight_len, fan_in, rng, init);
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        Ok(self.geometry(input)?.output_shape())
    }

    fn forward(&mut self, params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let geometry = self.geometry(shape4(&x))?;
        let bias_len = self.bias.then_some(self.spec.c_out);
        let operands = split_params(params, self.weight_len, bias_len)?;
        forward_pass(&mut self.cache, geometry, operands, x)
    }

    fn backward(
        &mut self,
        params: &[f32],
        grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let cache = self.cache.as_ref().ok_or_else(|| no_forward_error("ConvTranspose2d"))?;
        let bias_len = self.bias.then_some(self.spec.c_out);
        backward_pass(
            cache,
            split_params(params, self.weight_len, bias_len)?,
            grads,
            dy,
            input_grad,
        )
    }
}
