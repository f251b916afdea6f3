//! The checks both fuzz targets run: decode a bounded case, then either expect an error (zero
//! sizes, oversized kernels, wrong buffer lengths) or compare every pass of the f32 kernels with
//! the f64 reference.

use arbitrary::Arbitrary;
use dcgan::kernels::{conv, conv_transpose, reference, Conv2dSpec, ConvTranspose2dSpec};
use dcgan::rng::Rng;
use dcgan::Error;

/// Raw fuzz input. Sizes are reduced modulo small bounds in [`check`] so that one case runs in
/// well under a millisecond; zeros stay possible, to exercise the errors.
#[derive(Arbitrary, Debug)]
pub struct Case {
    pub n: u8,
    pub c_in: u8,
    pub c_out: u8,
    pub size: [u8; 2],
    pub kernel: [u8; 2],
    pub stride: [u8; 2],
    pub padding: [u8; 2],
    pub dilation: [u8; 2],
    pub output_padding: [u8; 2],
    pub bias: bool,
    /// Seed of the normal data.
    pub seed: u64,
    /// Data magnitude `2^(scale / 8)`.
    pub scale: i8,
    /// The buffer to give a wrong length (input, output, weight, bias), and the error.
    pub wrong_length: Option<(u8, i8)>,
}

/// Unit roundoff of f32.
const U32: f64 = f32::EPSILON as f64 / 2.0;

fn normal(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.normal(0.0, scale)).collect()
}

/// Asserts `|got - exact| <= 2 gamma(terms) |.|` elementwise, where `abs` is the same pass on
/// absolute values: the error bound of any summation order of `terms` products in f32, doubled
/// to cover the reference's own f64 rounding.
fn assert_close(what: &str, got: &[f32], exact: &[f64], abs: &[f64], terms: usize) {
    let mu = terms as f64 * U32;
    let gamma = mu / (1.0 - mu);
    assert_eq!(got.len(), exact.len(), "{what}: length");
    for (i, ((g, e), a)) in got.iter().zip(exact).zip(abs).enumerate() {
        let err = (*g as f64 - e).abs();
        assert!(err <= 2.0 * gamma * a, "{what}[{i}]: got {g}, exact {e}, abs-sum {a}");
    }
}

/// Decodes `case` as a convolution (`transposed == false`) or a transposed convolution and
/// checks it; panics on any mismatch, or on a panic inside the kernels.
pub fn check(case: &Case, transposed: bool) {
    let pair = |v: [u8; 2], m: u8| [(v[0] % m) as usize, (v[1] % m) as usize];
    let (n, c_in, c_out) =
        ((case.n % 4) as usize, (case.c_in % 6) as usize, (case.c_out % 6) as usize);
    let [h, w] = pair(case.size, 14);
    let (kernel, stride, padding) =
        (pair(case.kernel, 6), pair(case.stride, 5), pair(case.padding, 5));
    let (dilation, output_padding) = (pair(case.dilation, 4), pair(case.output_padding, 4));

    // Geometry: an error is an acceptable outcome, a panic is not.
    let geometry = if transposed {
        let spec =
            ConvTranspose2dSpec { c_in, c_out, kernel, stride, padding, output_padding, dilation };
        spec.geometry(n, h, w).map(Geometry::Transposed)
    } else {
        let spec = Conv2dSpec { c_in, c_out, kernel, stride, padding, dilation };
        spec.geometry(n, h, w).map(Geometry::Forward)
    };
    let geometry = match geometry {
        Ok(g) => g,
        Err(Error::InvalidArgument { .. } | Error::Overflow { .. }) => return,
        Err(other) => panic!("unexpected error kind: {other}"),
    };

    let lens = geometry.lens();
    let mut rng = Rng::from_seed(case.seed);
    let scale = 2f32.powf(case.scale as f32 / 8.0);
    let mut buffers: [Vec<f32>; 4] = std::array::from_fn(|i| normal(&mut rng, lens[i], scale));
    if let Some((which, delta)) = case.wrong_length {
        if delta != 0 {
            let which = which as usize % 4;
            let len = (lens[which] as isize + delta as isize).max(0) as usize;
            buffers[which].resize(len, 0.0);
            geometry.expect_length_errors(&mut buffers, which);
            return;
        }
    }
    geometry.compare(&buffers, case.bias);
}

enum Geometry {
    Forward(dcgan::kernels::Conv2dGeometry),
    Transposed(dcgan::kernels::ConvTranspose2dGeometry),
}

impl Geometry {
    /// `[input, output, weight, bias]` lengths.
    fn lens(&self) -> [usize; 4] {
        match self {
            Geometry::Forward(g) => {
                let l = &g.lowering;
                [l.image_len(), l.grid_len(), l.weight_len(), l.c_out]
            }
            Geometry::Transposed(g) => {
                let l = &g.lowering;
                [l.grid_len(), l.image_len(), l.weight_len(), l.c_in]
            }
        }
    }

    /// Products summed into one element of the output, grad-input and grad-weight.
    fn terms(&self) -> [usize; 3] {
        let (Geometry::Forward(dcgan::kernels::Conv2dGeometry { lowering: l })
        | Geometry::Transposed(dcgan::kernels::ConvTranspose2dGeometry { lowering: l })) = self;
        let (image_side, grid_side) = (l.c_out * l.k_h * l.k_w, l.k());
        match self {
            Geometry::Forward(_) => [grid_side + 1, image_side, l.n * l.positions()],
            Geometry::Transposed(_) => [image_side + 1, grid_side, l.n * l.positions()],
        }
    }

    /// Runs all four kernels with buffer `which` of the wrong length: each must either succeed
    /// (it does not use that buffer) or return a length error.
    fn expect_length_errors(&self, [x, y, w, b]: &mut [Vec<f32>; 4], which: usize) {
        let results = match self {
            Geometry::Forward(g) => [
                conv::conv2d_forward(g, x, w, Some(b), &mut y.clone()),
                conv::conv2d_grad_input(g, w, y, &mut x.clone()),
                conv::conv2d_grad_weight(g, x, y, &mut w.clone()),
                conv::conv2d_grad_bias(g, y, &mut b.clone()),
            ],
            Geometry::Transposed(g) => [
                conv_transpose::conv_transpose2d_forward(g, x, w, Some(b), &mut y.clone()),
                conv_transpose::conv_transpose2d_grad_input(g, w, y, &mut x.clone()),
                conv_transpose::conv_transpose2d_grad_weight(g, x, y, &mut w.clone()),
                conv_transpose::conv_transpose2d_grad_bias(g, y, &mut b.clone()),
            ],
        };
        // Which kernels read buffer `which` (input, output, weight, bias).
        let uses = [
            [true, true, true, false],
            [true, true, true, true],
            [true, true, true, false],
            [true, false, false, true],
        ];
        for (kernel, result) in results.into_iter().enumerate() {
            match result {
                Err(Error::LengthMismatch { .. }) => {}
                Ok(()) => assert!(!uses[which][kernel], "kernel {kernel} accepted a wrong length"),
                Err(other) => panic!("kernel {kernel}: unexpected error {other}"),
            }
        }
    }

    /// Compares every pass with the reference.
    fn compare(&self, [x, dy_like, w, b]: &[Vec<f32>; 4], bias: bool) {
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let abs = |v: &[f32]| v.iter().map(|&a| (a as f64).abs()).collect::<Vec<f64>>();
        let dy = dy_like; // the output-shaped buffer doubles as the output gradient
        let b_opt = bias.then_some(&b[..]);
        let (b64, b_abs) = (bias.then(|| f64s(b)), bias.then(|| abs(b)));
        let [y_terms, dx_terms, dw_terms] = self.terms();
        let db_terms = dy.len() / b.len().max(1);
        let mut y = vec![f32::NAN; dy.len()];
        let mut dx = vec![f32::NAN; x.len()];
        let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; b.len()]);
        let (exact, abs_sum) = match self {
            Geometry::Forward(g) => {
                conv::conv2d_forward(g, x, w, b_opt, &mut y).unwrap();
                conv::conv2d_grad_input(g, w, dy, &mut dx).unwrap();
                conv::conv2d_grad_weight(g, x, dy, &mut dw).unwrap();
                conv::conv2d_grad_bias(g, dy, &mut db).unwrap();
                let run = |x: &[f64], w: &[f64], b: Option<&[f64]>, dy: &[f64]| {
                    [
                        reference::conv2d_forward(g, x, w, b),
                        reference::conv2d_grad_input(g, w, dy),
                        reference::conv2d_grad_weight(g, x, dy),
                        reference::conv2d_grad_bias(g, dy),
                    ]
                };
                (
                    run(&f64s(x), &f64s(w), b64.as_deref(), &f64s(dy)),
                    run(&abs(x), &abs(w), b_abs.as_deref(), &abs(dy)),
                )
            }
            Geometry::Transposed(g) => {
                conv_transpose::conv_transpose2d_forward(g, x, w, b_opt, &mut y).unwrap();
                conv_transpose::conv_transpose2d_grad_input(g, w, dy, &mut dx).unwrap();
                conv_transpose::conv_transpose2d_grad_weight(g, x, dy, &mut dw).unwrap();
                conv_transpose::conv_transpose2d_grad_bias(g, dy, &mut db).unwrap();
                let run = |x: &[f64], w: &[f64], b: Option<&[f64]>, dy: &[f64]| {
                    [
                        reference::conv_transpose2d_forward(g, x, w, b),
                        reference::conv_transpose2d_grad_input(g, w, dy),
                        reference::conv_transpose2d_grad_weight(g, x, dy),
                        reference::conv_transpose2d_grad_bias(g, dy),
                    ]
                };
                (
                    run(&f64s(x), &f64s(w), b64.as_deref(), &f64s(dy)),
                    run(&abs(x), &abs(w), b_abs.as_deref(), &abs(dy)),
                )
            }
        };
        let ours = [&y, &dx, &dw, &db];
        let terms = [y_terms, dx_terms, dw_terms, db_terms];
        for (i, name) in ["forward", "grad_input", "grad_weight", "grad_bias"].iter().enumerate() {
            assert_close(name, ours[i], &exact[i], &abs_sum[i], terms[i]);
        }
    }
}
