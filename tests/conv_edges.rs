//! Edge cases of both convolutions, each its own test, and hand-checkable known values.
//! Outputs of forward and grad-input passes start out NaN-filled (see `conv_support`), so an
//! element the kernels forget to write fails the comparison.

mod conv_support;

use conv_support::*;
use dcgan::kernels::{
    conv, conv_transpose, elementwise, Conv2dSpec, ConvTranspose2dGeometry, ConvTranspose2dSpec,
};

/// Checks every pass of `conv` against the f64 reference on normal data, within the rounding
/// bound `2 gamma(terms)` times the same pass over absolute values.
fn check_against_reference(what: &str, conv: Conv) {
    let [x_len, y_len, w_len, b_len] = conv.lens();
    let (x, w, b, dy) =
        (normal(11, x_len), normal(12, w_len), normal(13, b_len), normal(14, y_len));
    let ours = conv.passes(&x, &w, Some(&b), &dy);
    let exact_y = conv.forward64(&to_f64(&x), &to_f64(&w), Some(&to_f64(&b)));
    let exact = conv.grads64(&to_f64(&x), &to_f64(&w), &to_f64(&dy));
    let abs_y = conv.forward64(&abs64(&x), &abs64(&w), Some(&abs64(&b)));
    let abs = conv.grads64(&abs64(&x), &abs64(&w), &abs64(&dy));
    let [y_terms, dx_terms, dw_terms] = conv.terms();
    let bound =
        |a: &[f64], terms: usize| a.iter().map(|v| 2.0 * gamma(terms, U32) * v).collect::<Vec<_>>();
    assert_eq!(
        (ours.y.len(), ours.dx.len(), ours.dw.len(), ours.db.len()),
        (y_len, x_len, w_len, b_len)
    );
    assert_close(&format!("{what}: forward"), &ours.y, &exact_y, &bound(&abs_y, y_terms));
    assert_close(&format!("{what}: grad_input"), &ours.dx, &exact[0], &bound(&abs[0], dx_terms));
    assert_close(&format!("{what}: grad_weight"), &ours.dw, &exact[1], &bound(&abs[1], dw_terms));
    assert_close(
        &format!("{what}: grad_bias"),
        &ours.db,
        &exact[2],
        &bound(&abs[2], y_len / b_len),
    );
}

#[test]
fn output_padding_from_dilation() {
    // output_padding 2 >= stride 1 is legal because it is below dilation 3.
    let spec = ConvTranspose2dSpec {
        stride: [1, 2],
        output_padding: [2, 1],
        dilation: [3, 2],
        ..ConvTranspose2dSpec::new(3, 2, 2)
    };
    let g = spec.geometry(2, 4, 5).unwrap();
    // (4 - 1) * 1 + 3 * (2 - 1) + 2 + 1 = 9 rows; (5 - 1) * 2 + 2 * (2 - 1) + 1 + 1 = 12 columns.
    assert_eq!(g.output_shape(), [2, 2, 9, 12]);
    check_against_reference("output padding 2 with stride 1, dilation 3", Conv::Transposed(g));
}

#[test]
fn unreached_pixels_get_zero_gradient() {
    // Stride 4 over 11 pixels with a 2-wide kernel reads columns 0 1 4 5 8 9 only.
    let g = Conv2dSpec::new(2, 3, 2).stride(4).geometry(2, 11, 11).unwrap();
    assert_eq!(g.output_shape(), [2, 3, 3, 3]);
    let conv = Conv::Forward(g);
    check_against_reference("stride 4 over 11 pixels", conv);

    let [x_len, y_len, w_len, b_len] = conv.lens();
    let ours = conv.passes(
        &normal(1, x_len),
        &normal(2, w_len),
        Some(&normal(3, b_len)),
        &normal(4, y_len),
    );
    let reached = |i: usize| i % 4 < 2 && i < 10;
    for (i, v) in ours.dx.iter().enumerate() {
        let (iy, ix) = ((i / 11) % 11, i % 11);
        if !reached(iy) || !reached(ix) {
            assert_eq!(v.to_bits(), 0.0f32.to_bits(), "grad_input at ({iy}, {ix})");
        } else {
            assert_ne!(*v, 0.0, "grad_input at ({iy}, {ix}) should be reached");
        }
    }
}

#[test]
fn unreached_outputs_of_transposed_conv() {
    // The transposed twin: stride 4 with a 2-wide kernel paints output rows and columns
    // 0 1, 4 5, 8 9 of 10 and leaves 2 3 6 7 to the bias.
    let spec = ConvTranspose2dSpec::new(2, 3, 2).stride(4);
    let g = spec.geometry(2, 3, 3).unwrap();
    assert_eq!(g.output_shape(), [2, 3, 10, 10]);
    let conv = Conv::Transposed(g);
    check_against_reference("transposed stride 4", conv);

    let [x_len, y_len, w_len, _] = conv.lens();
    let (x, w, b) = (normal(1, x_len), normal(2, w_len), [0.5, -1.5, 2.5]);
    let dy = normal(4, y_len);
    let ours = conv.passes(&x, &w, Some(&b), &dy);
    let reached = |i: usize| i % 4 < 2;
    for (i, v) in ours.y.iter().enumerate() {
        let (co, oy, ox) = ((i / 100) % 3, (i / 10) % 10, i % 10);
        if !reached(oy) || !reached(ox) {
            assert_eq!(*v, b[co], "output ({co}, {oy}, {ox}) is the bias alone");
        }
    }
    // The gradient w.r.t. the input ignores the output gradient at unreached pixels.
    let mut noisy = dy.clone();
    for (i, v) in noisy.iter_mut().enumerate() {
        if !reached((i / 10) % 10) || !reached(i % 10) {
            *v = 1.0e6;
        }
    }
    let again = conv.passes(&x, &w, Some(&b), &noisy);
    assert_eq!(again.dx, ours.dx);
    assert_eq!(again.dw, ours.dw);
}

#[test]
fn padding_larger_than_kernel() {
    let spec = Conv2dSpec { padding: [3, 4], ..Conv2dSpec::new(2, 3, 2) };
    let g = spec.geometry(2, 5, 4).unwrap();
    assert_eq!(g.output_shape(), [2, 3, 10, 11]);
    check_against_reference("conv, padding 3x4 around a 2x2 kernel", Conv::Forward(g));

    let spec =
        ConvTranspose2dSpec { padding: [3, 4], ..ConvTranspose2dSpec::new(3, 2, 2).stride(3) };
    let g = spec.geometry(2, 5, 6).unwrap();
    assert_eq!(g.output_shape(), [2, 2, 8, 9]);
    check_against_reference("transposed, padding 3x4 around a 2x2 kernel", Conv::Transposed(g));
}

#[test]
fn pointwise_kernels_with_stride_or_padding() {
    for (stride, padding) in [(2, 0), (1, 2), (3, 1)] {
        let spec = Conv2dSpec::new(3, 4, 1).stride(stride).padding(padding);
        let g = spec.geometry(2, 7, 6).unwrap();
        check_against_reference(
            &format!("1x1 conv, stride {stride}, padding {padding}"),
            Conv::Forward(g),
        );
        let spec = ConvTranspose2dSpec::new(4, 3, 1).stride(stride);
        let spec = ConvTranspose2dSpec { padding: [padding.min(2), 0], ..spec };
        let g = spec.geometry(2, 7, 6).unwrap();
        check_against_reference(&format!("1x1 transposed, stride {stride}"), Conv::Transposed(g));
    }
}

#[test]
fn non_square_everything() {
    let spec = Conv2dSpec {
        c_in: 3,
        c_out: 5,
        kernel: [3, 2],
        stride: [2, 1],
        padding: [1, 2],
        dilation: [1, 3],
    };
    let g = spec.geometry(3, 7, 10).unwrap();
    check_against_reference("conv, all parameters non-square", Conv::Forward(g));
    let spec = ConvTranspose2dSpec {
        c_in: 5,
        c_out: 3,
        kernel: [3, 2],
        stride: [2, 3],
        padding: [1, 2],
        output_padding: [1, 2],
        dilation: [1, 3],
    };
    let g = spec.geometry(3, 7, 10).unwrap();
    check_against_reference("transposed, all parameters non-square", Conv::Transposed(g));
}

/// Runs the transposed forward pass on integer data.
fn convt_forward(g: &ConvTranspose2dGeometry, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = vec![f32::NAN; g.lowering.image_len()];
    conv_transpose::conv_transpose2d_forward(g, x, w, Some(b), &mut y).unwrap();
    y
}

#[test]
fn transposed_padding_crops_and_output_padding_extends() {
    // Integer data keeps every sum exact, so outputs can be compared bit for bit.
    let full_spec = ConvTranspose2dSpec::new(2, 3, 3).stride(2);
    let full = full_spec.geometry(2, 4, 5).unwrap();
    let [n, c, full_h, full_w] = full.output_shape();
    let x = integers(1, 2 * 2 * 4 * 5, 3);
    let w = integers(2, 2 * 3 * 9, 3);
    let b = [1.0, -2.0, 3.0];
    let y_full = convt_forward(&full, &x, &w, &b);

    for (padding, output_padding) in [([1, 0], [0, 0]), ([1, 2], [1, 1]), ([0, 1], [1, 0])] {
        let spec = ConvTranspose2dSpec { padding, output_padding, ..full_spec };
        let g = spec.geometry(2, 4, 5).unwrap();
        let [_, _, h, w_out] = g.output_shape();
        assert_eq!(h, full_h - 2 * padding[0] + output_padding[0]);
        assert_eq!(w_out, full_w - 2 * padding[1] + output_padding[1]);
        let y = convt_forward(&g, &x, &w, &b);
        // Row r of the cropped output is row r + padding of the full one; rows past the full
        // output (output padding beyond the crop) hold the bias alone.
        for bc in 0..n * c {
            for r in 0..h {
                for col in 0..w_out {
                    let (fr, fc) = (r + padding[0], col + padding[1]);
                    let expected = if fr < full_h && fc < full_w {
                        y_full[(bc * full_h + fr) * full_w + fc]
                    } else {
                        b[bc % c]
                    };
                    let got = y[(bc * h + r) * w_out + col];
                    let case = format!("padding {padding:?}, output padding {output_padding:?}");
                    assert_eq!(got, expected, "{case}: ({bc}, {r}, {col})");
                }
            }
        }
    }
}

#[test]
fn pointwise_kernel_is_per_pixel_matrix_product() {
    let (n, c_in, c_out, h, w) = (3, 4, 5, 6, 7);
    let x = integers(3, n * c_in * h * w, 4);
    let wt = integers(4, c_out * c_in, 4);
    let b = integers(5, c_out, 4);
    let g = Conv2dSpec::new(c_in, c_out, 1).geometry(n, h, w).unwrap();
    let mut y = vec![f32::NAN; n * c_out * h * w];
    conv::conv2d_forward(&g, &x, &wt, Some(&b), &mut y).unwrap();
    let gt = ConvTranspose2dSpec::new(c_in, c_out, 1).geometry(n, h, w).unwrap();
    let wt_t = integers(6, c_in * c_out, 4); // [c_in, c_out]
    let mut yt = vec![f32::NAN; n * c_out * h * w];
    conv_transpose::conv_transpose2d_forward(&gt, &x, &wt_t, Some(&b), &mut yt).unwrap();
    for bi in 0..n {
        for co in 0..c_out {
            for p in 0..h * w {
                let pixel = |ci: usize| x[(bi * c_in + ci) * h * w + p];
                let conv: f32 =
                    b[co] + (0..c_in).map(|ci| wt[co * c_in + ci] * pixel(ci)).sum::<f32>();
                let convt: f32 =
                    b[co] + (0..c_in).map(|ci| wt_t[ci * c_out + co] * pixel(ci)).sum::<f32>();
                let at = (bi * c_out + co) * h * w + p;
                assert_eq!(y[at], conv, "conv ({bi}, {co}, {p})");
                assert_eq!(yt[at], convt, "transposed ({bi}, {co}, {p})");
            }
        }
    }
}

#[test]
fn stride_equal_to_kernel_is_patch_product() {
    // Non-overlapping 2x3 patches: each output of the conv sums one patch, each input pixel of
    // the transposed conv paints one patch, and the weight gradient sums patch by patch.
    let (n, c_in, c_out, oh, ow) = (2, 3, 2, 3, 4);
    let (kh, kw) = (2, 3);
    let (h, w) = (oh * kh, ow * kw);
    let spec = Conv2dSpec { kernel: [kh, kw], stride: [kh, kw], ..Conv2dSpec::new(c_in, c_out, 1) };
    let g = spec.geometry(n, h, w).unwrap();
    let x = integers(7, n * c_in * h * w, 3);
    let wt = integers(8, c_out * c_in * kh * kw, 3);
    let dy = integers(9, n * c_out * oh * ow, 3);
    let mut y = vec![f32::NAN; dy.len()];
    conv::conv2d_forward(&g, &x, &wt, None, &mut y).unwrap();
    let mut dw = vec![0.0; wt.len()];
    conv::conv2d_grad_weight(&g, &x, &dy, &mut dw).unwrap();

    let spec_t = ConvTranspose2dSpec {
        kernel: [kh, kw],
        stride: [kh, kw],
        ..ConvTranspose2dSpec::new(c_out, c_in, 1)
    };
    let gt = spec_t.geometry(n, oh, ow).unwrap();
    let wt_t = integers(10, c_out * c_in * kh * kw, 3); // [c_out (input), c_in (output), kh, kw]
    let mut yt = vec![f32::NAN; x.len()];
    conv_transpose::conv_transpose2d_forward(&gt, &dy, &wt_t, None, &mut yt).unwrap();

    let xi = |b: usize, ci: usize, iy: usize, ix: usize| x[((b * c_in + ci) * h + iy) * w + ix];
    for b in 0..n {
        for co in 0..c_out {
            for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                let mut patch = 0.0;
                for ci in 0..c_in {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let wv = wt[((co * c_in + ci) * kh + ky) * kw + kx];
                            patch += wv * xi(b, ci, oy * kh + ky, ox * kw + kx);
                            // The transposed conv: dy pixel (oy, ox) paints patch (ky, kx).
                            let painted =
                                yt[((b * c_in + ci) * h + oy * kh + ky) * w + ox * kw + kx];
                            let from: f32 = (0..c_out)
                                .map(|c| {
                                    wt_t[((c * c_in + ci) * kh + ky) * kw + kx]
                                        * dy[((b * c_out + c) * oh + oy) * ow + ox]
                                })
                                .sum();
                            assert_eq!(
                                painted,
                                from,
                                "transposed ({b}, {ci}, {}, {})",
                                oy * kh + ky,
                                ox * kw + kx
                            );
                        }
                    }
                }
                assert_eq!(
                    y[((b * c_out + co) * oh + oy) * ow + ox],
                    patch,
                    "conv ({b}, {co}, {oy}, {ox})"
                );
            }
        }
    }
    for co in 0..c_out {
        for ci in 0..c_in {
            for (ky, kx) in (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx))) {
                let mut sum = 0.0;
                for b in 0..n {
                    for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                        sum += dy[((b * c_out + co) * oh + oy) * ow + ox]
                            * xi(b, ci, oy * kh + ky, ox * kw + kx);
                    }
                }
                assert_eq!(
                    dw[((co * c_in + ci) * kh + ky) * kw + kx],
                    sum,
                    "grad_weight ({co}, {ci}, {ky}, {kx})"
                );
            }
        }
    }
}

/// Peak resident memory of this process in KiB (Linux's VmHWM), if the platform reports it.
fn peak_resident_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn column_matrix_beyond_u32_runs_in_tiles() {
    // One 2048x2048 channel, a 32x32 kernel, padding 16: k = 1024 rows times 2049^2 positions
    // is 4.3e9 > 2^32 column-matrix elements (17 GB as f32), which must never be allocated.
    let spec = Conv2dSpec::new(1, 1, 32).padding(16);
    let g = spec.geometry(1, 2048, 2048).unwrap();
    let l = g.lowering;
    assert!((l.k() as u64) * (l.positions() as u64) > 1 << 32);
    let x = vec![1.0f32; l.image_len()];
    let w = vec![1.0f32; l.weight_len()];
    let mut y = vec![f32::NAN; l.grid_len()];
    conv::conv2d_forward(&g, &x, &w, None, &mut y).unwrap();

    // With ones everywhere, output (oy, ox) counts the taps inside the image: a product of the
    // per-axis counts, each an integer at most 32, so every sum is exact.
    let inside = |o: usize| (0..32).filter(|k| (16..2048 + 16).contains(&(o + k))).count() as f32;
    for oy in 0..l.out_h {
        for ox in 0..l.out_w {
            let got = y[oy * l.out_w + ox];
            assert_eq!(got, inside(oy) * inside(ox), "output ({oy}, {ox})");
        }
    }
    if let Some(peak) = peak_resident_kib() {
        assert!(
            peak < 1 << 20,
            "peak resident memory {peak} KiB: was the column matrix materialised?"
        );
    }
}

#[test]
fn simd_loops_compiled_for_this_build() {
    // The crate is built for x86-64-v4 here (see .cargo/config.toml), so wide's f32x8 must be
    // one AVX register, and the CPU running the test must have AVX.
    let backend = elementwise::simd_backend();
    if cfg!(target_feature = "avx") {
        assert!(backend.starts_with("avx"), "backend {backend}");
    }
    #[cfg(target_arch = "x86_64")]
    if backend.starts_with("avx") {
        assert!(std::arch::is_x86_feature_detected!("avx"));
    }
}
