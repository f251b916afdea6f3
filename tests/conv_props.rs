//! Property tests of both convolutions over random shapes and parameters: the forward pass
//! against the f64 reference, every gradient against central finite differences, and
//! adjointness of conv2d and conv_transpose2d.

mod conv_support;

use conv_support::*;
use dcgan::kernels::{
    conv, conv_transpose, Conv2dGeometry, Conv2dSpec, ConvTranspose2dGeometry, ConvTranspose2dSpec,
};
use proptest::prelude::*;

/// Finite-difference step: a power of two, so `x +- H` and the division by `2 H` add no error
/// of their own beyond rounding `x +- H`.
const H: f64 = 1.0 / 16.0;

/// Parameters of one case: either convolution, with or without bias, and a data seed.
#[derive(Clone, Debug)]
struct Case {
    conv: Conv,
    bias: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (random_conv(), any::<bool>(), any::<u64>()).prop_map(|(conv, bias, seed)| Case {
        conv,
        bias,
        seed,
    })
}

/// Per-element bound on the error of a forward pass: `gamma(terms)` times the forward pass
/// over absolute values.
fn forward_bound(conv: &Conv, x: &[f32], w: &[f32], b: Option<&[f32]>, u: f64) -> Vec<f64> {
    let abs_b = b.map(abs64);
    let abs_y = conv.forward64(&abs64(x), &abs64(w), abs_b.as_deref());
    let gamma = gamma(conv.terms()[0], u);
    abs_y.iter().map(|v| gamma * v).collect()
}

fn check_forward(case: &Case) {
    let conv = &case.conv;
    let [x_len, _, w_len, b_len] = conv.lens();
    let x = normal(case.seed, x_len);
    let w = normal(case.seed ^ 1, w_len);
    let b = case.bias.then(|| normal(case.seed ^ 2, b_len));
    let dy = normal(case.seed ^ 3, conv.lens()[1]);
    let ours = conv.passes(&x, &w, b.as_deref(), &dy);

    let exact = conv.forward64(&to_f64(&x), &to_f64(&w), b.as_deref().map(to_f64).as_deref());
    // Our f32 result and the f64 reference each lie within gamma(terms) |.| of the exact value.
    let bound: Vec<f64> = forward_bound(conv, &x, &w, b.as_deref(), U32)
        .iter()
        .zip(forward_bound(conv, &x, &w, b.as_deref(), U64))
        .map(|(a, c)| a + c)
        .collect();
    assert_close("forward", &ours.y, &exact, &bound);
}

/// The loss `L = <forward(x, w, b), r>` in f64 on the reference.
fn loss(conv: &Conv, x: &[f64], w: &[f64], b: Option<&[f64]>, r: &[f64]) -> f64 {
    dot(&conv.forward64(x, w, b), r)
}

/// Checks every gradient against central differences of [`loss`] at a few coordinates.
///
/// Tolerance: the loss is affine in each of x, w and b, so the central difference
/// `(L(v + H e) - L(v - H e)) / (2 H)` has no truncation error; all of its error is the f64
/// rounding of the two loss values, each at most `E = gamma64(terms + outputs) * A` with
/// `A = <|r|, forward(|x| + H, |w| + H, |b| + H)>`, giving at most `2 E / (2 H) = E / H`. Our f32
/// gradient is a sum of `m` products, off by at most `gamma32(m)` times the same gradient over
/// absolute values. The test allows the sum of the two.
fn check_gradients(case: &Case) {
    let conv = &case.conv;
    let [x_len, y_len, w_len, b_len] = conv.lens();
    let x = normal(case.seed, x_len);
    let w = normal(case.seed ^ 1, w_len);
    let b = normal(case.seed ^ 2, b_len);
    let dy = normal(case.seed ^ 3, y_len);
    let ours = conv.passes(&x, &w, case.bias.then_some(&b[..]), &dy);

    // Rounding bound of the finite differences.
    let r = to_f64(&dy);
    let shifted = |v: &[f32]| v.iter().map(|a| (*a as f64).abs() + H).collect::<Vec<_>>();
    let abs_y = conv.forward64(&shifted(&x), &shifted(&w), Some(&shifted(&b)));
    let a = dot(&abs64(&dy), &abs_y);
    let fd_error = gamma(conv.terms()[0] + y_len, U64) * a / H;

    // Rounding bounds of our gradients.
    let [dx_abs, dw_abs, db_abs] = conv.grads64(&abs64(&x), &abs64(&w), &abs64(&dy));
    let [_, dx_terms, dw_terms] = conv.terms();
    let db_terms = y_len / b_len;

    let (x64, w64, b64) = (to_f64(&x), to_f64(&w), to_f64(&b));
    let mut rng = dcgan::rng::Rng::from_seed(case.seed ^ 4);
    let checks: [(&str, &[f32], &[f64], usize); 3] = [
        ("grad_input", &ours.dx, &dx_abs, dx_terms),
        ("grad_weight", &ours.dw, &dw_abs, dw_terms),
        ("grad_bias", &ours.db, &db_abs, db_terms),
    ];
    for (which, (name, grad, abs_grad, terms)) in checks.into_iter().enumerate() {
        for _ in 0..4 {
            let i = rng.below(grad.len());
            let at = |step: f64| {
                let (mut x, mut w, mut b) = (x64.clone(), w64.clone(), b64.clone());
                [&mut x, &mut w, &mut b][which][i] += step;
                loss(conv, &x, &w, Some(&b), &r)
            };
            let fd = (at(H) - at(-H)) / (2.0 * H);
            let bound = gamma(terms, U32) * abs_grad[i] + fd_error;
            let err = (grad[i] as f64 - fd).abs();
            assert!(
                err <= bound,
                "{name}[{i}]: kernel {}, finite difference {fd}, error {err:e} > {bound:e}",
                grad[i]
            );
        }
    }
}

/// `<conv(x), y> == <x, conv_transpose(y)>` for the convolution of `case` and the transposed
/// convolution with the same parameters (output padding chosen to give back `x`'s size), both
/// without bias, within the rounding of the two passes. A transposed case is checked through
/// the convolution of its lowering, unless its output padding reaches the stride, where no
/// convolution has that lowering.
fn check_adjoint(case: &Case) {
    let (Conv::Forward(Conv2dGeometry { lowering })
    | Conv::Transposed(ConvTranspose2dGeometry { lowering })) = case.conv;
    let spec = Conv2dSpec {
        c_in: lowering.c_in,
        c_out: lowering.c_out,
        kernel: [lowering.k_h, lowering.k_w],
        stride: lowering.stride,
        padding: lowering.pad,
        dilation: lowering.dilation,
    };
    let g = spec.geometry(lowering.n, lowering.h, lowering.w).unwrap();
    if g.lowering != lowering {
        return;
    }
    let conv_case = Conv::Forward(g);
    let l = &g.lowering;
    let output_padding = [0, 1].map(|axis| {
        let (size, out, k) = [(l.h, l.out_h, l.k_h), (l.w, l.out_w, l.k_w)][axis];
        size + 2 * l.pad[axis] - ((out - 1) * l.stride[axis] + l.dilation[axis] * (k - 1) + 1)
    });
    let spec = ConvTranspose2dSpec {
        c_in: l.c_out,
        c_out: l.c_in,
        kernel: [l.k_h, l.k_w],
        stride: l.stride,
        padding: l.pad,
        output_padding,
        dilation: l.dilation,
    };
    let gt = spec.geometry(l.n, l.out_h, l.out_w).unwrap();
    assert_eq!(gt.output_shape(), g.input_shape());

    let x = normal(case.seed, l.image_len());
    let w = normal(case.seed ^ 1, l.weight_len());
    let y = normal(case.seed ^ 2, l.grid_len());
    let mut conv_x = vec![f32::NAN; l.grid_len()];
    conv::conv2d_forward(&g, &x, &w, None, &mut conv_x).unwrap();
    let mut convt_y = vec![f32::NAN; l.image_len()];
    conv_transpose::conv_transpose2d_forward(&gt, &y, &w, None, &mut convt_y).unwrap();
    let lhs = dot(&to_f64(&conv_x), &to_f64(&y));
    let rhs = dot(&to_f64(&x), &to_f64(&convt_y));

    // Both sides approximate the trilinear form sum |y| |w| |x|, T, to within gamma of their
    // own sum lengths; the f64 dot products add gamma64(length) T each.
    let t = dot(&conv_case.forward64(&abs64(&x), &abs64(&w), None), &abs64(&y));
    let [grid_terms, image_terms, _] = conv_case.terms();
    let bound = (gamma(grid_terms, U32) + gamma(image_terms, U32)) * t
        + 2.0 * gamma(l.image_len().max(l.grid_len()), U64) * t;
    assert!(
        (lhs - rhs).abs() <= bound,
        "<conv x, y> = {lhs}, <x, convT y> = {rhs}, bound {bound:e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn forward_matches_reference(case in case()) {
        check_forward(&case);
    }

    #[test]
    fn gradients_match_finite_differences(case in case()) {
        check_gradients(&case);
    }

    #[test]
    fn conv_transpose_is_adjoint_of_conv(case in case()) {
        check_adjoint(&case);
    }
}
