//! Double-precision reference layers and central finite differences, shared by the layer and
//! model tests.
//!
//! Each reference layer is written from its textbook definition (convolutions use the crate's
//! direct-loop reference in `f64`), without caching, fusion or SIMD, so it shares no code path
//! with the layers under test. Finite differences of `f64` references need no allowance for
//! `f32` rounding. With step `h = 1e-6` on values of order 1, the truncation error is about
//! `h^2 = 1e-12` and the rounding error about `1e-16 / h = 1e-10`. Both are far below the `f32`
//! error of the analytic gradients being checked.
#![allow(dead_code)]

use dcgan::kernels::{reference, Conv2dSpec, ConvTranspose2dSpec};
use dcgan::rng::Rng;
use ndarray::Array4;

/// A tensor in `f64`, C-contiguous.
#[derive(Clone, Debug)]
pub struct T64 {
    pub shape: [usize; 4],
    pub data: Vec<f64>,
}

impl T64 {
    pub fn from_f32(x: &Array4<f32>) -> T64 {
        let s = x.shape();
        T64 { shape: [s[0], s[1], s[2], s[3]], data: x.iter().map(|&v| v as f64).collect() }
    }
}

/// A layer's definition, evaluated in `f64`.
#[derive(Clone, Debug)]
pub enum RefLayer {
    Conv2d {
        spec: Conv2dSpec,
        bias: bool,
    },
    ConvTranspose2d {
        spec: ConvTranspose2dSpec,
        bias: bool,
    },
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    /// Batch statistics when `running` is `None`, else the given (mean, variance).
    BatchNorm {
        features: usize,
        eps: f64,
        running: Option<(Vec<f64>, Vec<f64>)>,
    },
    Relu,
    LeakyRelu(f64),
    Tanh,
    Sigmoid,
    Flatten,
    Reshape([usize; 3]),
    /// Multiplies element-wise by a fixed mask.
    Mask(Vec<f64>),
}

impl RefLayer {
    /// Returns the number of parameters the layer reads.
    pub fn num_params(&self) -> usize {
        match self {
            RefLayer::Conv2d { spec, bias } => {
                spec.weight_len().unwrap() + if *bias { spec.c_out } else { 0 }
            }
            RefLayer::ConvTranspose2d { spec, bias } => {
                spec.weight_len().unwrap() + if *bias { spec.c_out } else { 0 }
            }
            RefLayer::Linear { in_features, out_features, bias } => {
                in_features * out_features + if *bias { *out_features } else { 0 }
            }
            RefLayer::BatchNorm { features, .. } => 2 * features,
            _ => 0,
        }
    }

    /// Returns the layer's output for `x` with parameters `p`.
    pub fn forward(&self, p: &[f64], x: &T64) -> T64 {
        assert_eq!(p.len(), self.num_params());
        let [n, c, h, w] = x.shape;
        match self {
            RefLayer::Conv2d { spec, bias } => {
                let g = spec.geometry(n, h, w).unwrap();
                let wl = spec.weight_len().unwrap();
                let b = bias.then(|| &p[wl..]);
                let data = reference::conv2d_forward(&g, &x.data, &p[..wl], b);
                T64 { shape: g.output_shape(), data }
            }
            RefLayer::ConvTranspose2d { spec, bias } => {
                let g = spec.geometry(n, h, w).unwrap();
                let wl = spec.weight_len().unwrap();
                let b = bias.then(|| &p[wl..]);
                let data = reference::conv_transpose2d_forward(&g, &x.data, &p[..wl], b);
                T64 { shape: g.output_shape(), data }
            }
            RefLayer::Linear { in_features, out_features, bias } => {
                let (fi, fo) = (*in_features, *out_features);
                let mut data = vec![0.0; n * fo];
                for b in 0..n {
                    for o in 0..fo {
                        let mut acc = if *bias { p[fi * fo + o] } else { 0.0 };
                        for i in 0..fi {
                            acc += p[o * fi + i] * x.data[b * fi + i];
                        }
                        data[b * fo + o] = acc;
                    }
                }
                T64 { shape: [n, fo, 1, 1], data }
            }
            RefLayer::BatchNorm { features, eps, running } => {
                assert_eq!(c, *features);
                let plane = h * w;
                let count = (n * plane) as f64;
                let mut data = x.data.clone();
                for ch in 0..c {
                    let values = || {
                        (0..n).flat_map(move |b| {
                            let start = (b * c + ch) * plane;
                            start..start + plane
                        })
                    };
                    let (mean, var) = match running {
                        Some((rm, rv)) => (rm[ch], rv[ch]),
                        None => {
                            let mean = values().map(|i| x.data[i]).sum::<f64>() / count;
                            let var =
                                values().map(|i| (x.data[i] - mean).powi(2)).sum::<f64>() / count;
                            (mean, var)
                        }
                    };
                    let invstd = 1.0 / (var + eps).sqrt();
                    for i in values() {
                        data[i] = p[ch] * (x.data[i] - mean) * invstd + p[c + ch];
                    }
                }
                T64 { shape: x.shape, data }
            }
            RefLayer::Relu => map(x, |v| v.max(0.0)),
            RefLayer::LeakyRelu(s) => map(x, |v| if v > 0.0 { v } else { s * v }),
            RefLayer::Tanh => map(x, f64::tanh),
            RefLayer::Sigmoid => map(x, |v| 1.0 / (1.0 + (-v).exp())),
            RefLayer::Flatten => T64 { shape: [n, c * h * w, 1, 1], data: x.data.clone() },
            RefLayer::Reshape(t) => T64 { shape: [n, t[0], t[1], t[2]], data: x.data.clone() },
            RefLayer::Mask(m) => {
                T64 { shape: x.shape, data: x.data.iter().zip(m).map(|(a, b)| a * b).collect() }
            }
        }
    }
}

fn map(x: &T64, f: impl Fn(f64) -> f64) -> T64 {
    T64 { shape: x.shape, data: x.data.iter().map(|&v| f(v)).collect() }
}

/// Runs a list of reference layers, their parameters concatenated in order in `p`.
pub fn forward_all(layers: &[RefLayer], p: &[f64], x: &T64) -> T64 {
    let mut offset = 0;
    let mut x = x.clone();
    for layer in layers {
        let len = layer.num_params();
        x = layer.forward(&p[offset..offset + len], &x);
        offset += len;
    }
    assert_eq!(offset, p.len(), "parameter count");
    x
}

/// `sum(y * w)`: a scalar whose gradient w.r.t. `y` is `w`.
pub fn dot(y: &T64, w: &[f64]) -> f64 {
    assert_eq!(y.data.len(), w.len());
    y.data.iter().zip(w).map(|(a, b)| a * b).sum()
}

/// Central finite difference step.
pub const H: f64 = 1e-6;

/// `(f(v + h e_i) - f(v - h e_i)) / 2h` for each index `i` in `indices`.
pub fn central_diff(values: &[f64], indices: &[usize], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut v = values.to_vec();
    indices
        .iter()
        .map(|&i| {
            let orig = v[i];
            v[i] = orig + H;
            let plus = f(&v);
            v[i] = orig - H;
            let minus = f(&v);
            v[i] = orig;
            (plus - minus) / (2.0 * H)
        })
        .collect()
}

/// Mean BCE with logits in `f64`, the textbook stable form.
pub fn bce64(logits: &[f64], target: f64) -> f64 {
    logits.iter().map(|&x| x.max(0.0) - x * target + (-x.abs()).exp().ln_1p()).sum::<f64>()
        / logits.len() as f64
}

/// Returns values uniform in `[-scale, scale)`, rounded to `f32`.
pub fn random_vec(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| scale * (2.0 * rng.uniform() - 1.0)).collect()
}

/// Returns a random `f32` array of `shape`.
pub fn random_array(rng: &mut Rng, shape: [usize; 4], scale: f32) -> Array4<f32> {
    let len = shape.iter().product();
    Array4::from_shape_vec(shape, random_vec(rng, len, scale)).unwrap()
}

pub fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts `|actual - expected| <= rtol * max|expected| + atol` element-wise, naming `what` and
/// the index of the first failure.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f64], rtol: f64, atol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = rtol * scale + atol;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a as f64 - e).abs() <= tol,
            "{what}[{i}]: got {a}, expected {e} (tolerance {tol:.3e}, max |expected| {scale:.3e})"
        );
    }
}
