//! Fully connected layer (PyTorch's `nn.Linear`) on vectors `[n, features, 1, 1]`.
//!
//! `y = x W^T + b` with `W` `[out, in]`; backward `dx = dy W`, `dW += dy^T x`,
//! `db += sum over the batch of dy`. The products run on `matrixmultiply`'s single-threaded
//! sgemm through `ndarray`, so their results do not depend on the thread count.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array4, ArrayView2, ArrayViewMut2};

use super::{
    check_grad_shape, fill_uniform, no_forward_error, shape4, standard, Init, Layer, Mode,
    ParamSpec,
};
use crate::error::{check_len, checked_product, Error, Result};
use crate::rng::Rng;

/// The input, cached for the backward pass.
#[derive(Debug)]
struct LinearCache {
    input: Array4<f32>,
}

/// Fully connected layer. Parameters: `weight` `[out_features, in_features]`, then `bias`
/// `[out_features]` if enabled.
#[derive(Debug)]
pub struct Linear {
    in_features: usize,
    out_features: usize,
    bias: bool,
    cache: Option<LinearCache>,
}

impl Linear {
    /// Creates a linear map from `in_features` to `out_features`, with a bias when `bias` is true.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero features; [`Error::Overflow`] when the weight size
    /// does not fit in `usize`.
    pub fn new(in_features: usize, out_features: usize, bias: bool) -> Result<Self> {
        if in_features == 0 {
            return Err(Error::invalid("in_features", in_features, "at least 1"));
        }
        if out_features == 0 {
            return Err(Error::invalid("out_features", out_features, "at least 1"));
        }
        checked_product("linear weight", &[in_features, out_features])?;
        Ok(Linear { in_features, out_features, bias, cache: None })
    }

    fn weight_len(&self) -> usize {
        self.in_features * self.out_features
    }

    fn split<'a>(&self, params: &'a [f32]) -> Result<(ArrayView2<'a, f32>, Option<&'a [f32]>)> {
        let bias_len = if self.bias { self.out_features } else { 0 };
        check_len("layer parameters", params.len(), self.weight_len() + bias_len)?;
        let (weight, bias) = params.split_at(self.weight_len());
        let weight = ArrayView2::from_shape((self.out_features, self.in_features), weight)
            .expect("length checked");
        Ok((weight, self.bias.then_some(bias)))
    }
}

impl Layer for Linear {
    fn describe(&self) -> String {
        format!(
            "Linear(in_features={}, out_features={}, bias={})",
            self.in_features, self.out_features, self.bias
        )
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs =
            vec![ParamSpec { name: "weight", shape: vec![self.out_features, self.in_features] }];
        if self.bias {
            specs.push(ParamSpec { name: "bias", shape: vec![self.out_features] });
        }
        specs
    }

    fn init_params(&self, params: &mut [f32], rng: &mut Rng, init: Init) {
        let (weight, bias) = params.split_at_mut(self.weight_len());
        let bound = 1.0 / (self.in_features as f32).sqrt();
        match init {
            Init::PyTorch => fill_uniform(weight, rng, bound),
            Init::Dcgan => rng.fill_normal(weight, 0.0, 0.02),
        }
        fill_uniform(bias, rng, bound);
    }

    fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        let [n, c, h, w] = input;
        if c != self.in_features || (h, w) != (1, 1) {
            return Err(Error::invalid(
                "input shape",
                format!("{input:?}"),
                format!("[n, {}, 1, 1] for Linear (flatten images first)", self.in_features),
            ));
        }
        Ok([n, self.out_features, 1, 1])
    }

    fn forward(&mut self, params: &[f32], x: Array4<f32>, _mode: Mode) -> Result<Array4<f32>> {
        let [n, _, _, _] = self.output_shape(shape4(&x))?;
        let (weight, bias) = self.split(params)?;
        let x = standard(x);
        let x2 = ArrayView2::from_shape((n, self.in_features), x.as_slice().expect("standard"))
            .expect("shape checked");

        // [n, out] = [n, in] * [in, out], starting from the broadcast bias.
        let mut y = Array4::<f32>::zeros([n, self.out_features, 1, 1]);
        let ys = y.as_slice_mut().expect("standard layout");
        if let Some(bias) = bias {
            for row in ys.chunks_mut(self.out_features) {
                row.copy_from_slice(bias);
            }
        }
        let mut y2 = ArrayViewMut2::from_shape((n, self.out_features), ys).expect("shape");
        general_mat_mul(1.0, &x2, &weight.t(), 1.0, &mut y2);
        self.cache = Some(LinearCache { input: x });
        Ok(y)
    }

    fn backward(
        &mut self,
        params: &[f32],
        grads: Option<&mut [f32]>,
        dy: Array4<f32>,
        input_grad: bool,
    ) -> Result<Option<Array4<f32>>> {
        let cache = self.cache.as_ref().ok_or_else(|| no_forward_error("Linear"))?;
        let n = cache.input.shape()[0];
        check_grad_shape(&dy, [n, self.out_features, 1, 1])?;
        let (weight, _) = self.split(params)?;
        let dy = standard(dy);
        let dy2 = ArrayView2::from_shape((n, self.out_features), dy.as_slice().expect("standard"))
            .expect("shape checked");

        // Parameter gradients: dW += dy^T x, db += column sums of dy.
        if let Some(grads) = grads {
            check_len("layer gradients", grads.len(), params.len())?;
            let (dweight, dbias) = grads.split_at_mut(self.weight_len());
            let x2 = ArrayView2::from_shape(
                (n, self.in_features),
                cache.input.as_slice().expect("standard layout"),
            )
            .expect("shape checked");
            let mut dw2 = ArrayViewMut2::from_shape((self.out_features, self.in_features), dweight)
                .expect("length checked");
            general_mat_mul(1.0, &dy2.t(), &x2, 1.0, &mut dw2);
            if self.bias {
                for (o, db) in dbias.iter_mut().enumerate() {
                    let sum: f64 = dy2.column(o).iter().map(|&v| v as f64).sum();
                    *db += sum as f32;
                }
            }
        }

        // Input gradient: [n, in] = [n, out] * [out, in].
        if !input_grad {
            return Ok(None);
        }
        let mut dx = Array4::<f32>::zeros([n, self.in_features, 1, 1]);
        let mut dx2 =
            ArrayViewMut2::from_shape((n, self.in_features), dx.as_slice_mut().expect("standard"))
                .expect("shape");
        general_mat_mul(1.0, &dy2, &weight, 0.0, &mut dx2);
        Ok(Some(dx))
    }
}
