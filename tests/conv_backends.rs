//! Both GEMM backends under the convolution kernels: each matches the f64 reference on shapes
//! that reach the main tiling paths, and each gives bit-identical results on rayon pools of 1, 2
//! and 7 threads.
//!
//! The backend is a process-wide setting, so this file holds a single test that switches it;
//! tests in one binary run concurrently, and a second one would see the switches.

mod conv_support;

use conv_support::*;
use dcgan::kernels::gemm::{gemm, gemm_backend, set_gemm_backend, GemmBackend, MatMut, MatRef};
use dcgan::kernels::{Conv2dSpec, ConvTranspose2dSpec};

/// Shapes with several `k` tiles, position tiles, folded sample groups and channel blocks.
fn shapes() -> Vec<(&'static str, Conv)> {
    let dcgan = |c_in, c_out| Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    let dcgan_t = |c_in, c_out| ConvTranspose2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    vec![
        ("folded groups", Conv::Forward(dcgan(20, 24).geometry(16, 16, 16).unwrap())),
        ("many k tiles", Conv::Forward(dcgan(64, 8).geometry(8, 8, 8).unwrap())),
        (
            "per-sample tiles",
            Conv::Forward(
                Conv2dSpec::new(20, 40, 4).stride(2).padding(1).geometry(2, 82, 82).unwrap(),
            ),
        ),
        ("transposed dcgan", Conv::Transposed(dcgan_t(24, 10).geometry(12, 7, 9).unwrap())),
        ("transposed, wide", Conv::Transposed(dcgan_t(16, 64).geometry(8, 4, 4).unwrap())),
    ]
}

/// The bits of every output of every pass.
fn bits(p: &Passes) -> [Vec<u32>; 4] {
    [&p.y, &p.dx, &p.dw, &p.db].map(|v| v.iter().map(|x| x.to_bits()).collect())
}

/// Checks one shape's four passes on the current backend against the f64 reference.
fn check_against_reference(name: &str, conv: &Conv, ours: &Passes, inputs: [&[f32]; 4]) {
    let [x, w, b, dy] = inputs;
    let (x64, w64, dy64) = (to_f64(x), to_f64(w), to_f64(dy));
    let exact_y = conv.forward64(&x64, &w64, Some(&to_f64(b)));
    let [exact_dx, exact_dw, exact_db] = conv.grads64(&x64, &w64, &dy64);
    let abs_y = conv.forward64(&abs64(x), &abs64(w), Some(&abs64(b)));
    let [abs_dx, abs_dw, abs_db] = conv.grads64(&abs64(x), &abs64(w), &abs64(dy));
    let [y_terms, dx_terms, dw_terms] = conv.terms();
    // A sum of `terms` f32 products lies within gamma(terms) of exact, relative to the sum of
    // absolute values; doubling covers the f64 reference's own rounding.
    let bound = |abs: &[f64], terms: usize| -> Vec<f64> {
        abs.iter().map(|a| 2.0 * gamma(terms, U32) * a).collect()
    };
    assert_close(&format!("{name}: forward"), &ours.y, &exact_y, &bound(&abs_y, y_terms));
    assert_close(&format!("{name}: grad_input"), &ours.dx, &exact_dx, &bound(&abs_dx, dx_terms));
    assert_close(&format!("{name}: grad_weight"), &ours.dw, &exact_dw, &bound(&abs_dw, dw_terms));
    let db_terms = dy.len() / b.len();
    assert_close(&format!("{name}: grad_bias"), &ours.db, &exact_db, &bound(&abs_db, db_terms));
}

#[test]
fn both_backends_match_reference_and_ignore_thread_count() {
    // The packed backend is the default exactly when its SIMD width is fixed at compile time.
    let simd =
        cfg!(any(target_feature = "avx512f", all(target_feature = "avx2", target_feature = "fma")));
    let expected = if simd { GemmBackend::Packed } else { GemmBackend::MatrixMultiply };
    assert_eq!(gemm_backend(), expected, "the default backend");
    assert_eq!(GemmBackend::default(), expected, "GemmBackend::default");
    let pools: Vec<_> = [1, 2, 7]
        .map(|threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap())
        .into();
    for (name, conv) in shapes() {
        let [x_len, y_len, w_len, b_len] = conv.lens();
        let (x, w, b, dy) =
            (normal(11, x_len), normal(12, w_len), normal(13, b_len), normal(14, y_len));
        for backend in [GemmBackend::MatrixMultiply, GemmBackend::Packed] {
            set_gemm_backend(backend);
            assert_eq!(gemm_backend(), backend);
            let runs: Vec<Passes> = pools
                .iter()
                .map(|pool| pool.install(|| conv.passes(&x, &w, Some(&b), &dy)))
                .collect();
            let what = format!("{name} on {backend:?}");
            check_against_reference(&what, &conv, &runs[0], [&x, &w, &b, &dy]);
            let one = bits(&runs[0]);
            for (run, threads) in runs.iter().zip([1, 2, 7]).skip(1) {
                assert!(bits(run) == one, "{what}: results differ between 1 and {threads} threads");
            }
        }
    }
    // Backends are switched only in this test, because the selection is process-wide.
    for backend in [GemmBackend::MatrixMultiply, GemmBackend::Packed] {
        set_gemm_backend(backend);
        zero_alpha_leaves_a_and_b_unread(backend);
    }
    set_gemm_backend(GemmBackend::Packed);
}

/// `gemm` with `alpha == 0` gives `beta * C` even when A and B hold NaN, as in BLAS.
fn zero_alpha_leaves_a_and_b_unread(backend: GemmBackend) {
    let (m, k, n) = (3, 4, 5);
    let a = vec![f32::NAN; m * k];
    let b = vec![f32::INFINITY; k * n];
    let old: Vec<f32> = (0..m * n).map(|i| i as f32 - 7.0).collect();
    for beta in [0.0, 1.0, -0.5] {
        let mut c = old.clone();
        let (a_view, b_view) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        gemm(0.0, a_view, b_view, beta, MatMut::row_major(&mut c, m, n));
        let expected: Vec<f32> =
            old.iter().map(|&x| if beta == 0.0 { 0.0 } else { beta * x }).collect();
        assert_eq!(c, expected, "alpha 0, beta {beta} on {backend:?}");
    }
}
