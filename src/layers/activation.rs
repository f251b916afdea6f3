//! Pointwise activations: ReLU, LeakyReLU, Tanh and Sigmoid.
//!
//! Each works in place on the buffer it receives. ReLU and LeakyReLU keep one bit per element
//! (`x > 0`) for the backward pass; Tanh and Sigmoid keep their output, from which their
//! derivatives follow (`1 - y^2` and `y (1 - y)`).

use ndarray::Array4;
use rayon::prelude::*;
use wide::f32x8;

use super::elementwise::{map_in_place, masked_scale, positive_mask, zip_in_place, PAR_CHUNK};
use super::{
    check_grad_shape, no_forward_error, recycle, shape4, standard, Activation, Layer, Mode,
};
use crate::error::{Error, Result};

/// The sign mask of the last input, cached by ReLU and LeakyReLU for the backward pass.
#[derive(Debug)]
struct MaskCache {
    shape: [usize; 4],
    mask: Vec<u8>,
}

/// Back-propagates through `x > 0 ? x : slope * x` with the cached mask.
fn masked_backward(
    cache: &Option<MaskCache>,
    name: &str,
    dy: Array4<f32>,
    slope: f32,
    input_grad: bool,
) -> Result<Option<Array4<f32>>> {
    let cache = cache.as_ref().ok_or_else(|| no_forward_error(name))?;
    check_grad_shape(&dy, cache.shape)?;
    if !input_grad {
        return Ok(None);
    }
    let mut dx = standard(dy);
    masked_scale(dx.as_slice_mut().expect("standard layout"), &cache.mask, slope);
    Ok(Some(dx))
}

/// Applies `activation` to eight lanes. NaN stays NaN, as in PyTorch.
#[inline(always)]
pub(crate) fn activate(v: f32x8, activation: Activation) -> f32x8 {
    match activation {
        Activation::Relu => v.simd_le(f32x8::ZERO).select(f32x8::ZERO, v),
        Activation::LeakyRelu(slope) => v.simd_gt(f32x8::ZERO).select(v, v * f32x8::splat(slope)),
    }
}

/// Returns the slope of `activation` on the negative side: 0 for ReLU.
pub(crate) fn negative_slope(activation: Activation) -> f32 {
    match activation {
        Activation::Relu => 0.0,
        Activation::LeakyRelu(slope) => slope,
    }
}

/// Multiplies `dy` by the activation's derivative at `pre`, its input: `dy` where `pre > 0`,
/// `slope * dy` elsewhere. The standalone layers compute the same expression from a bit mask.
#[inline(always)]
pub(crate) fn activation_grad(pre: f32x8, dy: f32x8, slope: f32x8) -> f32x8 {
    pre.simd_gt(f32x8::ZERO).select(dy, dy * slope)
}

/// Applies `activation` in place.
fn apply_activation(xs: &mut [f32], activation: Activation) {
    map_in_place(xs, move |v| activate(v, activation));
}

/// Rectified linear unit, `max(x, 0)` (PyTorch's `nn.ReLU`). The gradient at 0 is 0.
#[derive(Debug, Default)]
pub struct Relu {
    cache: Option<MaskCache>,
}

impl Relu {
    /// Creates a ReLU.
    pub fn new() -> Self {
        Relu::default()
    }
}

impl Layer for Relu {
    fn describe(&self) -> String {
        "ReLU()".into()
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        Ok(input)
    }

    fn forward(&mut self, _params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let mut x = standard(x);
        let xs = x.as_slice_mut().expect("standard layout");
        let mask = positive_mask(xs);
        apply_activation(xs, Activation::Relu);
        self.cache = Some(MaskCache { shape: shape4(&x), mask });
        Ok(x)
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        masked_backward(&self.cache, "ReLU", dy, 0.0, input_grad)
    }

    fn as_activation(&self) -> Option<Activation> {
        Some(Activation::Relu)
    }
}

/// Leaky rectified linear unit, `x > 0 ? x : slope * x` (PyTorch's `nn.LeakyReLU`).
#[derive(Debug)]
pub struct LeakyRelu {
    slope: f32,
    cache: Option<MaskCache>,
}

impl LeakyRelu {
    /// Creates a LeakyReLU with negative-side slope `slope` (DCGAN's discriminator uses 0.2).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a non-finite slope.
    pub fn new(slope: f32) -> Result<Self> {
        if !slope.is_finite() {
            return Err(Error::invalid("negative_slope", slope, "a finite number"));
        }
        Ok(LeakyRelu { slope, cache: None })
    }

    /// Returns the negative-side slope.
    pub fn slope(&self) -> f32 {
        self.slope
    }
}

impl Layer for LeakyRelu {
    fn describe(&self) -> String {
        format!("LeakyReLU(negative_slope={})", self.slope)
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        Ok(input)
    }

    fn forward(&mut self, _params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let mut x = standard(x);
        let xs = x.as_slice_mut().expect("standard layout");
        let mask = positive_mask(xs);
        apply_activation(xs, Activation::LeakyRelu(self.slope));
        self.cache = Some(MaskCache { shape: shape4(&x), mask });
        Ok(x)
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        masked_backward(&self.cache, "LeakyReLU", dy, self.slope, input_grad)
    }

    fn as_activation(&self) -> Option<Activation> {
        Some(Activation::LeakyRelu(self.slope))
    }
}

/// Applies a scalar function to every element, in parallel chunks.
fn map_scalar(xs: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    xs.par_chunks_mut(PAR_CHUNK).for_each(|chunk| {
        for v in chunk {
            *v = f(*v);
        }
    });
}

/// Back-propagates through a layer whose derivative is a function of its output `y`.
fn output_backward(
    cache: &Option<Array4<f32>>,
    name: &str,
    dy: Array4<f32>,
    input_grad: bool,
    derivative: impl Fn(f32x8) -> f32x8 + Sync,
) -> Result<Option<Array4<f32>>> {
    let y = cache.as_ref().ok_or_else(|| no_forward_error(name))?;
    check_grad_shape(&dy, shape4(y))?;
    if !input_grad {
        return Ok(None);
    }
    let mut dx = standard(dy);
    let ys = y.as_slice().expect("standard layout");
    zip_in_place(dx.as_slice_mut().expect("standard layout"), ys, |d, y| d * derivative(y));
    Ok(Some(dx))
}

/// Hyperbolic tangent (PyTorch's `nn.Tanh`), the DCGAN generator's output layer.
#[derive(Debug, Default)]
pub struct Tanh {
    output: Option<Array4<f32>>,
}

impl Tanh {
    /// Creates a Tanh.
    pub fn new() -> Self {
        Tanh::default()
    }
}

impl Layer for Tanh {
    fn describe(&self) -> String {
        "Tanh()".into()
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        Ok(input)
    }

    fn forward(&mut self, _params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let mut x = standard(x);
        // NOTE: scalar `f32::tanh` (libm), not SIMD: `wide` has no tanh, and the exp-based
        // formula loses relative precision near zero. It runs once per step on the generator's
        // output only.
        map_scalar(x.as_slice_mut().expect("standard layout"), f32::tanh);
        recycle::give_opt(self.output.replace(recycle::copy_of(&x)));
        Ok(x)
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        output_backward(&self.output, "Tanh", dy, input_grad, |y| f32x8::ONE - y * y)
    }
}

/// The logistic function `1 / (1 + exp(-x))` (PyTorch's `nn.Sigmoid`).
#[derive(Debug, Default)]
pub struct Sigmoid {
    output: Option<Array4<f32>>,
}

impl Sigmoid {
    /// Creates a Sigmoid.
    pub fn new() -> Self {
        Sigmoid::default()
    }
}

/// Computes the logistic function without overflow, because the argument of `exp` is never
/// positive.
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl Layer for Sigmoid {
    fn describe(&self) -> String {
        "Sigmoid()".into()
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        Ok(input)
    }

    fn forward(&mut self, _params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let mut x = standard(x);
        map_scalar(x.as_slice_mut().expect("standard layout"), sigmoid);
        recycle::give_opt(self.output.replace(recycle::copy_of(&x)));
        Ok(x)
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        output_backward(&self.output, "Sigmoid", dy, input_grad, |y| y * (f32x8::ONE - y))
    }
}
