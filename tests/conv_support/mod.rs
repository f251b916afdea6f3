//! Shared helpers of the convolution tests: data, the f64 reference, error bounds.
#![allow(dead_code)]

use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::kernels::{
    conv, conv_transpose, reference, Conv2dGeometry, Conv2dSpec, ConvTranspose2dGeometry,
    ConvTranspose2dSpec,
};
use dcgan::rng::Rng;
use proptest::prelude::*;

/// Unit roundoff of f32 (round to nearest).
pub const U32: f64 = f32::EPSILON as f64 / 2.0;
/// Unit roundoff of f64.
pub const U64: f64 = f64::EPSILON / 2.0;

/// Higham's `gamma_m = m u / (1 - m u)`: a sum of `m` products computed in floating point, in
/// any order and with or without fused multiply-adds, differs from the exact sum by at most
/// `gamma_m` times the sum of the products' absolute values.
pub fn gamma(m: usize, u: f64) -> f64 {
    let mu = m as f64 * u;
    assert!(mu < 0.5, "gamma({m}) too large to bound anything");
    mu / (1.0 - mu)
}

/// `len` standard-normal values from `seed`.
pub fn normal(seed: u64, len: usize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    Rng::from_seed(seed).fill_normal(&mut out, 0.0, 1.0);
    out
}

/// `len` integers in `-range..=range`, as f32, from `seed`.
pub fn integers(seed: u64, len: usize, range: usize) -> Vec<f32> {
    let mut rng = Rng::from_seed(seed);
    (0..len).map(|_| rng.below(2 * range + 1) as f32 - range as f32).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs()).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Asserts `|got[i] - exact[i]| <= bound[i]` for every element, naming the first failure.
pub fn assert_close(what: &str, got: &[f32], exact: &[f64], bound: &[f64]) {
    assert_eq!(got.len(), exact.len(), "{what}: lengths");
    for (i, ((g, e), b)) in got.iter().zip(exact).zip(bound).enumerate() {
        let err = (*g as f64 - e).abs();
        assert!(err <= *b, "{what}[{i}]: got {g}, exact {e}, error {err:e} > bound {b:e}");
    }
}

/// The four results of one convolution's kernels, as our f32 implementation computes them.
pub struct Passes {
    pub y: Vec<f32>,
    pub dx: Vec<f32>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

/// Runs the conv2d kernels on NaN-filled outputs (forward, grad-input) and zeroed gradients.
pub fn conv_passes(
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    dy: &[f32],
) -> Passes {
    let l = &g.lowering;
    let mut y = vec![f32::NAN; l.grid_len()];
    conv::conv2d_forward(g, x, w, b, &mut y).unwrap();
    let mut dx = vec![f32::NAN; l.image_len()];
    conv::conv2d_grad_input(g, w, dy, &mut dx).unwrap();
    let mut dw = vec![0.0; l.weight_len()];
    conv::conv2d_grad_weight(g, x, dy, &mut dw).unwrap();
    let mut db = vec![0.0; l.c_out];
    conv::conv2d_grad_bias(g, dy, &mut db).unwrap();
    Passes { y, dx, dw, db }
}

/// Runs the conv_transpose2d kernels on NaN-filled outputs and zeroed gradients.
pub fn conv_transpose_passes(
    g: &ConvTranspose2dGeometry,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    dy: &[f32],
) -> Passes {
    let l = &g.lowering;
    let mut y = vec![f32::NAN; l.image_len()];
    conv_transpose::conv_transpose2d_forward(g, x, w, b, &mut y).unwrap();
    let mut dx = vec![f32::NAN; l.grid_len()];
    conv_transpose::conv_transpose2d_grad_input(g, w, dy, &mut dx).unwrap();
    let mut dw = vec![0.0; l.weight_len()];
    conv_transpose::conv_transpose2d_grad_weight(g, x, dy, &mut dw).unwrap();
    let mut db = vec![0.0; l.c_in];
    conv_transpose::conv_transpose2d_grad_bias(g, dy, &mut db).unwrap();
    Passes { y, dx, dw, db }
}

/// Either convolution, so that one test body covers both.
#[derive(Clone, Copy, Debug)]
pub enum Conv {
    Forward(Conv2dGeometry),
    Transposed(ConvTranspose2dGeometry),
}

impl Conv {
    /// `[input, output, weight, bias]` lengths.
    pub fn lens(&self) -> [usize; 4] {
        match self {
            Conv::Forward(g) => {
                let l = &g.lowering;
                [l.image_len(), l.grid_len(), l.weight_len(), l.c_out]
            }
            Conv::Transposed(g) => {
                let l = &g.lowering;
                [l.grid_len(), l.image_len(), l.weight_len(), l.c_in]
            }
        }
    }

    /// Number of products summed into one element of the output, of grad-input and of
    /// grad-weight (upper bounds).
    pub fn terms(&self) -> [usize; 3] {
        let (Conv::Forward(Conv2dGeometry { lowering: l })
        | Conv::Transposed(ConvTranspose2dGeometry { lowering: l })) = self;
        let image_side = l.c_out * l.k_h * l.k_w; // products per image pixel
        let grid_side = l.k(); // products per grid element
        let weight_side = l.n * l.positions(); // products per weight element
        match self {
            Conv::Forward(_) => [grid_side + 1, image_side, weight_side],
            Conv::Transposed(_) => [image_side + 1, grid_side, weight_side],
        }
    }

    /// Our f32 kernels.
    pub fn passes(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, dy: &[f32]) -> Passes {
        match self {
            Conv::Forward(g) => conv_passes(g, x, w, b, dy),
            Conv::Transposed(g) => conv_transpose_passes(g, x, w, b, dy),
        }
    }

    /// Adds this pass's grad-weight and grad-bias into `dw` and `db` again.
    pub fn accumulate_grads(&self, x: &[f32], dy: &[f32], dw: &mut [f32], db: &mut [f32]) {
        match self {
            Conv::Forward(g) => {
                conv::conv2d_grad_weight(g, x, dy, dw).unwrap();
                conv::conv2d_grad_bias(g, dy, db).unwrap();
            }
            Conv::Transposed(g) => {
                conv_transpose::conv_transpose2d_grad_weight(g, x, dy, dw).unwrap();
                conv_transpose::conv_transpose2d_grad_bias(g, dy, db).unwrap();
            }
        }
    }

    /// The reference forward pass in f64.
    pub fn forward64(&self, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        match self {
            Conv::Forward(g) => reference::conv2d_forward(g, x, w, b),
            Conv::Transposed(g) => reference::conv_transpose2d_forward(g, x, w, b),
        }
    }

    /// The reference gradients in f64: `[dx, dw, db]` for output gradient `dy`.
    pub fn grads64(&self, x: &[f64], w: &[f64], dy: &[f64]) -> [Vec<f64>; 3] {
        match self {
            Conv::Forward(g) => [
                reference::conv2d_grad_input(g, w, dy),
                reference::conv2d_grad_weight(g, x, dy),
                reference::conv2d_grad_bias(g, dy),
            ],
            Conv::Transposed(g) => [
                reference::conv_transpose2d_grad_input(g, w, dy),
                reference::conv_transpose2d_grad_weight(g, x, dy),
                reference::conv_transpose2d_grad_bias(g, dy),
            ],
        }
    }
}

/// Draws a small convolution of either kind: batch 1-4, channels 1-8, sizes 1-12, and per axis
/// kernel 1-4, stride 1-3, padding 0-3, dilation 1-3 and output padding 0-2 (transposed only).
/// Parameters the geometry rejects are drawn again.
pub fn random_conv() -> impl Strategy<Value = Conv> {
    let sizes = (1..=4usize, 1..=8usize, 1..=8usize, 1..=12usize, 1..=12usize);
    let pairs = (
        prop::array::uniform2(1..=4usize), // kernel
        prop::array::uniform2(1..=3usize), // stride
        prop::array::uniform2(0..=3usize), // padding
        prop::array::uniform2(1..=3usize), // dilation
        prop::array::uniform2(0..=2usize), // output padding
    );
    (sizes, pairs, any::<bool>()).prop_filter_map(
        "geometry rejected",
        |((n, c_in, c_out, h, w), (kernel, stride, padding, dilation, output_padding), t)| {
            Some(if t {
                let spec = ConvTranspose2dSpec {
                    c_in,
                    c_out,
                    kernel,
                    stride,
                    padding,
                    output_padding,
                    dilation,
                };
                Conv::Transposed(spec.geometry(n, h, w).ok()?)
            } else {
                let spec = Conv2dSpec { c_in, c_out, kernel, stride, padding, dilation };
                Conv::Forward(spec.geometry(n, h, w).ok()?)
            })
        },
    )
}

/// Runs the convolution pass that calls `image_to_grid`, on the packed backend: conv2d forward
/// with bias, or conv_transpose2d grad-input. Returns `(inputs, ours)`, where `inputs` are
/// `[x, w, b]` for the forward pass and `[dy, w]` for grad-input.
pub fn run_image_to_grid(conv: &Conv, seed: u64) -> (Vec<Vec<f32>>, Vec<f32>) {
    set_gemm_backend(GemmBackend::Packed);
    let [x_len, y_len, w_len, b_len] = conv.lens();
    match conv {
        Conv::Forward(g) => {
            let (x, w, b) = (normal(seed, x_len), normal(seed + 1, w_len), normal(seed + 2, b_len));
            let mut y = vec![f32::NAN; y_len];
            conv::conv2d_forward(g, &x, &w, Some(&b), &mut y).unwrap();
            (vec![x, w, b], y)
        }
        Conv::Transposed(g) => {
            let (w, dy) = (normal(seed + 1, w_len), normal(seed + 3, y_len));
            let mut dx = vec![f32::NAN; x_len];
            conv_transpose::conv_transpose2d_grad_input(g, &w, &dy, &mut dx).unwrap();
            (vec![dy, w], dx)
        }
    }
}

/// Checks the pass of [`run_image_to_grid`] against the f64 reference, within twice `gamma(terms)`
/// relative to the sum of absolute products (the second factor covers the reference's own
/// rounding).
pub fn check_image_to_grid(name: &str, conv: &Conv, seed: u64) {
    let (inputs, ours) = run_image_to_grid(conv, seed);
    let [_, dx_terms, _] = conv.terms();
    let [y_terms, _, _] = conv.terms();
    let (exact, abs, terms) = match conv {
        Conv::Forward(_) => {
            let [x, w, b] = [&inputs[0], &inputs[1], &inputs[2]];
            let exact = conv.forward64(&to_f64(x), &to_f64(w), Some(&to_f64(b)));
            let abs = conv.forward64(&abs64(x), &abs64(w), Some(&abs64(b)));
            (exact, abs, y_terms)
        }
        Conv::Transposed(_) => {
            let [dy, w] = [&inputs[0], &inputs[1]];
            let x_len = conv.lens()[0];
            let zeros = vec![0.0; x_len];
            let [exact, _, _] = conv.grads64(&zeros, &to_f64(w), &to_f64(dy));
            let [abs, _, _] = conv.grads64(&zeros, &abs64(w), &abs64(dy));
            (exact, abs, dx_terms)
        }
    };
    let bound: Vec<f64> = abs.iter().map(|a| 2.0 * gamma(terms, U32) * a).collect();
    assert_close(name, &ours, &exact, &bound);
}

/// Asserts that `run` returns the same bits in a rayon pool of each size in `threads`.
pub fn assert_same_bits_on_threads(
    name: &str,
    threads: &[usize],
    run: impl Fn() -> Vec<f32> + Sync,
) {
    let bits = |count: usize| -> Vec<u32> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(count).build().unwrap();
        pool.install(&run).iter().map(|v| v.to_bits()).collect()
    };
    let first = bits(threads[0]);
    for &count in &threads[1..] {
        assert!(
            bits(count) == first,
            "{name}: results differ between {} and {count} threads",
            threads[0]
        );
    }
}
