//! Invalid input to the convolution kernels returns the right error and never panics: wrong
//! buffer lengths, every parameter the geometry rejects, and geometries assembled by hand.

mod conv_support;

use conv_support::Conv;
use dcgan::kernels::{
    conv, conv_transpose, Conv2dGeometry, Conv2dSpec, ConvTranspose2dGeometry, ConvTranspose2dSpec,
};
use dcgan::Error;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Asserts a `LengthMismatch` naming `what`.
fn assert_length_error(result: dcgan::Result<()>, what: &str) {
    match result {
        Err(Error::LengthMismatch { what: got, .. }) => assert_eq!(got, what),
        other => panic!("expected a length error for {what}, got {other:?}"),
    }
}

/// Calls all eight kernels with one buffer one element too long or too short and checks the
/// error names it.
fn check_buffers(conv: &Conv, delta: isize) {
    let [x_len, y_len, w_len, b_len] = conv.lens();
    let resize = |len: usize| (len as isize + delta).max(0) as usize;
    let buffers = |which: usize| -> [Vec<f32>; 4] {
        let lens = [x_len, y_len, w_len, b_len];
        std::array::from_fn(|i| vec![0.0; if i == which { resize(lens[i]) } else { lens[i] }])
    };
    for which in 0..4 {
        let [x, y, mut w, mut b] = buffers(which);
        let (xl, yl, wl, bl) = (x.len(), y.len(), w.len(), b.len());
        let wrong = |len: usize, name: &'static str, right: usize| (len != right).then_some(name);
        match conv {
            Conv::Forward(g) => {
                let results = [
                    (
                        conv::conv2d_forward(g, &x, &w, Some(&b), &mut y.clone()),
                        [
                            wrong(xl, "input", x_len),
                            wrong(wl, "weight", w_len),
                            wrong(bl, "bias", b_len),
                            wrong(yl, "output", y_len),
                        ],
                    ),
                    (
                        conv::conv2d_grad_input(g, &w, &y, &mut x.clone()),
                        [
                            None,
                            wrong(wl, "weight", w_len),
                            wrong(yl, "grad_output", y_len),
                            wrong(xl, "grad_input", x_len),
                        ],
                    ),
                    (
                        conv::conv2d_grad_weight(g, &x, &y, &mut w),
                        [
                            wrong(xl, "input", x_len),
                            wrong(yl, "grad_output", y_len),
                            wrong(wl, "grad_weight", w_len),
                            None,
                        ],
                    ),
                    (
                        conv::conv2d_grad_bias(g, &y, &mut b),
                        [
                            None,
                            wrong(yl, "grad_output", y_len),
                            wrong(bl, "grad_bias", b_len),
                            None,
                        ],
                    ),
                ];
                check_results(results);
            }
            Conv::Transposed(g) => {
                let results = [
                    (
                        conv_transpose::conv_transpose2d_forward(
                            g,
                            &x,
                            &w,
                            Some(&b),
                            &mut y.clone(),
                        ),
                        [
                            wrong(xl, "input", x_len),
                            wrong(wl, "weight", w_len),
                            wrong(bl, "bias", b_len),
                            wrong(yl, "output", y_len),
                        ],
                    ),
                    (
                        conv_transpose::conv_transpose2d_grad_input(g, &w, &y, &mut x.clone()),
                        [
                            None,
                            wrong(wl, "weight", w_len),
                            wrong(yl, "grad_output", y_len),
                            wrong(xl, "grad_input", x_len),
                        ],
                    ),
                    (
                        conv_transpose::conv_transpose2d_grad_weight(g, &x, &y, &mut w),
                        [
                            wrong(xl, "input", x_len),
                            wrong(yl, "grad_output", y_len),
                            wrong(wl, "grad_weight", w_len),
                            None,
                        ],
                    ),
                    (
                        conv_transpose::conv_transpose2d_grad_bias(g, &y, &mut b),
                        [
                            None,
                            wrong(yl, "grad_output", y_len),
                            wrong(bl, "grad_bias", b_len),
                            None,
                        ],
                    ),
                ];
                check_results(results);
            }
        }
    }
}

/// Each kernel checks its buffers in argument order, so the first wrong one is reported; a
/// call whose buffers are all right must succeed.
fn check_results(results: [(dcgan::Result<()>, [Option<&'static str>; 4]); 4]) {
    for (result, wrong) in results {
        match wrong.iter().flatten().next() {
            Some(what) => assert_length_error(result, what),
            None => assert!(result.is_ok(), "{result:?}"),
        }
    }
}

#[test]
fn wrong_buffer_lengths() {
    let g = Conv2dSpec::new(3, 4, 3).stride(2).padding(1).geometry(2, 7, 6).unwrap();
    let gt = ConvTranspose2dSpec::new(4, 3, 3).stride(2).padding(1).geometry(2, 4, 3).unwrap();
    for conv in [Conv::Forward(g), Conv::Transposed(gt)] {
        for delta in [-1, 1, -1000] {
            check_buffers(&conv, delta);
        }
    }
}

fn assert_invalid<T: std::fmt::Debug>(result: dcgan::Result<T>, name: &str) {
    match result {
        Err(Error::InvalidArgument { name: got, .. }) => assert_eq!(got, name),
        other => panic!("expected an invalid {name}, got {other:?}"),
    }
}

fn assert_overflow<T: std::fmt::Debug>(result: dcgan::Result<T>) {
    assert!(matches!(result, Err(Error::Overflow { .. })), "expected an overflow, got {result:?}");
}

#[test]
fn conv_parameters_rejected() {
    let spec = Conv2dSpec::new(3, 4, 3);
    assert_invalid(spec.geometry(0, 5, 5), "batch size");
    assert_invalid(Conv2dSpec::new(0, 4, 3).geometry(1, 5, 5), "c_in");
    assert_invalid(Conv2dSpec::new(3, 0, 3).geometry(1, 5, 5), "c_out");
    assert_invalid(spec.geometry(1, 0, 5), "input height");
    assert_invalid(spec.geometry(1, 5, 0), "input width");
    assert_invalid(Conv2dSpec { kernel: [3, 0], ..spec }.geometry(1, 5, 5), "kernel");
    assert_invalid(spec.stride(0).geometry(1, 5, 5), "stride");
    assert_invalid(spec.dilation(0).geometry(1, 5, 5), "dilation");
    // A dilated kernel wider than the padded input.
    assert_invalid(spec.dilation(3).geometry(1, 5, 5), "kernel height");
    assert_invalid(Conv2dSpec { padding: [2, 0], ..spec }.geometry(1, 2, 2), "kernel width");
    // Sizes whose products overflow usize, and tensors past the crate's size limit.
    assert_overflow(spec.geometry(usize::MAX / 2, 5, 5));
    assert_overflow(Conv2dSpec::new(3, 4, 3).padding(usize::MAX / 2).geometry(1, 5, 5));
    assert_invalid(Conv2dSpec::new(1, 1, 1).geometry(1, 1 << 16, 1 << 16), "tensor size");
}

#[test]
fn conv_transpose_parameters_rejected() {
    let spec = ConvTranspose2dSpec::new(3, 4, 3).stride(2);
    assert_invalid(spec.geometry(0, 5, 5), "batch size");
    assert_invalid(spec.stride(0).geometry(1, 5, 5), "stride");
    assert_invalid(spec.dilation(0).geometry(1, 5, 5), "dilation");
    assert_invalid(ConvTranspose2dSpec { kernel: [0, 3], ..spec }.geometry(1, 5, 5), "kernel");
    // Output padding must stay below the stride or the dilation of its axis.
    assert_invalid(spec.output_padding(2).geometry(1, 5, 5), "output_padding");
    let dilated = ConvTranspose2dSpec { dilation: [3, 1], ..spec.stride(1) };
    assert!(dilated.output_padding(2).geometry(1, 5, 5).is_err());
    assert!(ConvTranspose2dSpec { output_padding: [2, 0], ..dilated }.geometry(1, 5, 5).is_ok());
    // Padding that crops the whole output.
    assert_invalid(ConvTranspose2dSpec::new(1, 1, 1).padding(1).geometry(1, 1, 1), "padding");
    assert_overflow(spec.geometry(1, usize::MAX / 2, 5));
}

#[test]
fn hand_built_geometry_rejected() {
    // A geometry whose fields disagree with its own parameters never reaches the kernels.
    let g = Conv2dSpec::new(2, 3, 3).geometry(1, 6, 6).unwrap();
    let mut bad = g;
    bad.lowering.out_h += 1;
    let l = bad.lowering;
    let (x, w) = (vec![0.0; l.image_len()], vec![0.0; l.weight_len()]);
    let mut y = vec![0.0; l.grid_len()];
    assert_invalid(conv::conv2d_forward(&bad, &x, &w, None, &mut y), "geometry");
    let mut zero_stride = g;
    zero_stride.lowering.stride = [0, 1];
    let mut dy = vec![0.0; zero_stride.lowering.grid_len()];
    let result = conv::conv2d_grad_input(&zero_stride, &w, &dy.clone(), &mut dy);
    assert_invalid(result, "stride");

    let gt = ConvTranspose2dSpec::new(3, 2, 3).stride(2).geometry(1, 4, 4).unwrap();
    let mut bad = gt;
    bad.lowering.h += 3; // output padding 3 would be needed: not below stride 2
    let l = bad.lowering;
    let (x, w) = (vec![0.0; l.grid_len()], vec![0.0; l.weight_len()]);
    let mut y = vec![0.0; l.image_len()];
    assert_invalid(
        conv_transpose::conv_transpose2d_forward(&bad, &x, &w, None, &mut y),
        "output_padding",
    );
    let mut shrunk = gt;
    shrunk.lowering.h -= 5; // smaller than the uncropped output allows
    let l = shrunk.lowering;
    let mut dx = vec![0.0; l.grid_len()];
    let dy = vec![0.0; l.image_len()];
    let result = conv_transpose::conv_transpose2d_grad_input(&shrunk, &w, &dy, &mut dx);
    assert_invalid(result, "geometry");
}

/// Any geometry's fields, perturbed at random.
fn perturbed() -> impl Strategy<Value = (bool, [usize; 12])> {
    (any::<bool>(), prop::array::uniform12(0usize..6))
}

/// Runs the kernels on a geometry with arbitrary small fields: each returns `Ok` or an error,
/// never panics, and accepts only what a spec would have built.
fn check_arbitrary_geometry(transposed: bool, f: [usize; 12]) -> Result<(), TestCaseError> {
    let lowering = dcgan::kernels::ConvGeometry {
        n: f[0],
        c_in: f[1],
        h: f[2],
        w: f[3],
        c_out: f[4],
        out_h: f[5],
        out_w: f[6],
        k_h: f[7],
        k_w: f[8],
        stride: [f[9], f[10]],
        pad: [f[11], f[9] % 2],
        dilation: [1, f[10].max(1)],
    };
    let l = lowering;
    let x = vec![1.0; l.image_len()];
    let y = vec![1.0; l.grid_len()];
    let w = vec![1.0; l.weight_len()];
    if transposed {
        let g = ConvTranspose2dGeometry { lowering };
        let b = vec![1.0; l.c_in];
        let ok = conv_transpose::conv_transpose2d_forward(&g, &y, &w, Some(&b), &mut x.clone());
        if ok.is_ok() {
            // Only a geometry some spec reproduces gets through: search the output paddings.
            let paddings = (0..6).flat_map(|a| (0..6).map(move |b| [a, b]));
            let reproduced = paddings.into_iter().any(|output_padding| {
                let spec = ConvTranspose2dSpec {
                    c_in: l.c_out,
                    c_out: l.c_in,
                    kernel: [l.k_h, l.k_w],
                    stride: l.stride,
                    padding: l.pad,
                    output_padding,
                    dilation: l.dilation,
                };
                spec.geometry(l.n, l.out_h, l.out_w).ok() == Some(g)
            });
            prop_assert!(reproduced, "{:?} accepted", g);
        }
        let _ = conv_transpose::conv_transpose2d_grad_input(&g, &w, &x, &mut y.clone());
        let _ = conv_transpose::conv_transpose2d_grad_weight(&g, &y, &x, &mut w.clone());
    } else {
        let g = Conv2dGeometry { lowering };
        let b = vec![1.0; l.c_out];
        let ok = conv::conv2d_forward(&g, &x, &w, Some(&b), &mut y.clone());
        if ok.is_ok() {
            let spec = Conv2dSpec {
                c_in: l.c_in,
                c_out: l.c_out,
                kernel: [l.k_h, l.k_w],
                stride: l.stride,
                padding: l.pad,
                dilation: l.dilation,
            };
            prop_assert_eq!(spec.geometry(l.n, l.h, l.w).ok(), Some(g));
        }
        let _ = conv::conv2d_grad_input(&g, &w, &y, &mut x.clone());
        let _ = conv::conv2d_grad_weight(&g, &x, &y, &mut w.clone());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_geometry_fields_never_panic((transposed, fields) in perturbed()) {
        check_arbitrary_geometry(transposed, fields)?;
    }
}
