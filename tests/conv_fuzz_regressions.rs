//! Cases the fuzz targets in `fuzz/` found, kept as ordinary tests. Each is checked like the
//! fuzz targets check: every pass against the f64 reference within the rounding bound.

mod conv_support;

use conv_support::*;
use dcgan::kernels::ConvTranspose2dSpec;

fn check_against_reference(conv: Conv) {
    let [x_len, y_len, w_len, b_len] = conv.lens();
    let (x, w, b, dy) =
        (normal(21, x_len), normal(22, w_len), normal(23, b_len), normal(24, y_len));
    let ours = conv.passes(&x, &w, Some(&b), &dy);
    let exact_y = conv.forward64(&to_f64(&x), &to_f64(&w), Some(&to_f64(&b)));
    let exact = conv.grads64(&to_f64(&x), &to_f64(&w), &to_f64(&dy));
    let abs_y = conv.forward64(&abs64(&x), &abs64(&w), Some(&abs64(&b)));
    let abs = conv.grads64(&abs64(&x), &abs64(&w), &abs64(&dy));
    let [y_terms, dx_terms, dw_terms] = conv.terms();
    let bound =
        |a: &[f64], terms: usize| a.iter().map(|v| 2.0 * gamma(terms, U32) * v).collect::<Vec<_>>();
    assert_close("forward", &ours.y, &exact_y, &bound(&abs_y, y_terms));
    assert_close("grad_input", &ours.dx, &exact[0], &bound(&abs[0], dx_terms));
    assert_close("grad_weight", &ours.dw, &exact[1], &bound(&abs[1], dw_terms));
    assert_close("grad_bias", &ours.db, &exact[2], &bound(&abs[2], y_len / b_len));
}

#[test]
fn pointwise_transposed_with_output_padding() {
    // A 1x1 kernel with stride 1 looks pointwise, but output padding 1 (legal below dilation
    // 3) makes the output one row taller than the input: the extra row contains the bias alone,
    // and treating the input as its own column matrix left it unwritten.
    let spec = ConvTranspose2dSpec {
        output_padding: [1, 0],
        dilation: [3, 1],
        ..ConvTranspose2dSpec::new(3, 1, 1)
    };
    let g = spec.geometry(3, 1, 1).unwrap();
    assert_eq!(g.output_shape(), [3, 1, 2, 1]);
    check_against_reference(Conv::Transposed(g));
}
