//! Shape changes between images `[n, c, h, w]` and vectors `[n, features, 1, 1]`. The data does
//! not move: both are views of the same C-contiguous buffer.

use ndarray::Array4;

use super::{check_grad_shape, no_forward_error, shape4, standard, Layer, Mode};
use crate::error::{Error, Result};

/// Reshapes a C-contiguous array without copying.
fn reshape(x: Array4<f32>, shape: [usize; 4]) -> Array4<f32> {
    standard(x).into_shape_with_order(shape).expect("same element count, standard layout")
}

/// Flattens `[n, c, h, w]` to `[n, c * h * w, 1, 1]` (PyTorch's `nn.Flatten`).
#[derive(Debug, Default)]
pub struct Flatten {
    input_shape: Option<[usize; 4]>,
}

impl Flatten {
    /// Creates a Flatten.
    pub fn new() -> Self {
        Flatten::default()
    }
}

impl Layer for Flatten {
    fn describe(&self) -> String {
        "Flatten()".into()
    }

    fn output_shape(&self, [n, c, h, w]: [usize; 4]) -> Result<[usize; 4]> {
        let features = c.checked_mul(h).and_then(|v| v.checked_mul(w));
        let features = features.ok_or(Error::Overflow { what: "flattened features" })?;
        Ok([n, features, 1, 1])
    }

    fn forward(&mut self, _params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let shape = shape4(&x);
        let out = self.output_shape(shape)?;
        self.input_shape = Some(shape);
        Ok(reshape(x, out))
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let input = self.input_shape.ok_or_else(|| no_forward_error("Flatten"))?;
        check_grad_shape(&dy, self.output_shape(input)?)?;
        Ok(input_grad.then(|| reshape(dy, input)))
    }
}

/// Reshapes `[n, c * h * w, 1, 1]` (or any shape with `c * h * w` elements per sample) to
/// `[n, c, h, w]` (PyTorch's `nn.Unflatten(1, (c, h, w))` after a flatten).
#[derive(Debug)]
pub struct Reshape {
    target: [usize; 3],
    input_shape: Option<[usize; 4]>,
}

impl Reshape {
    /// Reshapes each sample to `[c, h, w]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero dimension; [`Error::Overflow`] when the product
    /// does not fit in `usize`.
    pub fn new(target: [usize; 3]) -> Result<Self> {
        if target.contains(&0) {
            return Err(Error::invalid("reshape target", format!("{target:?}"), "no zero sizes"));
        }
        crate::error::checked_product("reshape target", &target)?;
        Ok(Reshape { target, input_shape: None })
    }
}

impl Layer for Reshape {
    fn describe(&self) -> String {
        format!("Unflatten(1, {:?})", self.target)
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        let [c, h, w] = self.target;
        let per_sample = input[1].checked_mul(input[2]).and_then(|v| v.checked_mul(input[3]));
        if per_sample != Some(c * h * w) {
            return Err(Error::invalid(
                "input shape",
                format!("{input:?}"),
                format!("{} elements per sample to reshape to [{c}, {h}, {w}]", c * h * w),
            ));
        }
        Ok([input[0], c, h, w])
    }

    fn forward(&mut self, _params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let shape = shape4(&x);
        let out = self.output_shape(shape)?;
        self.input_shape = Some(shape);
        Ok(reshape(x, out))
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let input = self.input_shape.ok_or_else(|| no_forward_error("Reshape"))?;
        check_grad_shape(&dy, self.output_shape(input)?)?;
        Ok(input_grad.then(|| reshape(dy, input)))
    }
}
