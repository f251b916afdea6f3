//! The grad-weight product on the packed GEMM backend, where im2col is fused into the packing.
//! The tests compare it with the f64 reference on random shapes and on DCGAN-like shapes. The
//! shapes reach each branch: folded sample groups, per-sample calls, several `k` tiles, batch
//! chunks, the 1x1-grid and pointwise layouts, kernels whose rows are not runs of 4, and the
//! transposed product of a narrow `k`. They also check accumulation into the gradient and bit-identical
//! results on rayon pools of 1, 2 and 7 threads.
//!
//! Every test here selects `GemmBackend::Packed`, the only backend this binary uses, so the
//! tests can run concurrently.

mod conv_support;

use conv_support::*;
use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::kernels::{conv, conv_transpose, Conv2dSpec, ConvTranspose2dSpec};
use proptest::prelude::*;

/// Adds the grad-weight of `conv` for input `x` and output gradient `dy` into `dw`.
fn grad_weight(conv: &Conv, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    set_gemm_backend(GemmBackend::Packed);
    match conv {
        Conv::Forward(g) => conv::conv2d_grad_weight(g, x, dy, dw).unwrap(),
        Conv::Transposed(g) => conv_transpose::conv_transpose2d_grad_weight(g, x, dy, dw).unwrap(),
    }
}

/// Checks the grad-weight of `conv` on normal data from `seed` against the f64 reference,
/// within twice `gamma(terms)` of the sum of absolute products (the bound of
/// `conv_backends.rs`), and returns it.
fn check_against_reference(name: &str, conv: &Conv, seed: u64) -> Vec<f32> {
    let [x_len, y_len, w_len, _] = conv.lens();
    let (x, dy) = (normal(seed, x_len), normal(seed ^ 1, y_len));
    let mut dw = vec![0.0; w_len];
    grad_weight(conv, &x, &dy, &mut dw);
    let zeros = vec![0.0; conv.lens()[2]];
    let [_, exact, _] = conv.grads64(&to_f64(&x), &zeros, &to_f64(&dy));
    let [_, abs, _] = conv.grads64(&abs64(&x), &zeros, &abs64(&dy));
    let terms = conv.terms()[2];
    let bound: Vec<f64> = abs.iter().map(|a| 2.0 * gamma(terms, U32) * a).collect();
    assert_close(&format!("{name}: grad_weight"), &dw, &exact, &bound);
    dw
}

fn dcgan(c_in: usize, c_out: usize) -> Conv2dSpec {
    Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1)
}

fn dcgan_t(c_in: usize, c_out: usize) -> ConvTranspose2dSpec {
    ConvTranspose2dSpec::new(c_in, c_out, 4).stride(2).padding(1)
}

/// Shapes that reach each branch of the fused pass. `k` is `c_in * 16` for the 4 x 4 kernels
/// (the image side: a transposed convolution's output channels), tiles hold up to 1056
/// columns, and samples with at most 512 positions are folded (128 for a narrow `k`).
fn shapes() -> Vec<(&'static str, Conv)> {
    let conv = |spec: Conv2dSpec, n, h, w| Conv::Forward(spec.geometry(n, h, w).unwrap());
    let conv_t =
        |spec: ConvTranspose2dSpec, n, h, w| Conv::Transposed(spec.geometry(n, h, w).unwrap());
    vec![
        // 64 positions, k = 320: one tile, four chunks of folded groups.
        ("folded groups, chunks", conv(dcgan(20, 24), 16, 16, 16)),
        // A grid of 64 x 130 x 256 floats, too large to fold for the whole batch at once:
        // each item folds its own groups of 4 samples.
        ("folded per item", conv(dcgan(3, 64), 130, 32, 32)),
        // k = 16 below one sliver: dW^T = cols * grid^T, one sample per call at 256
        // positions, folded groups at 64 (shared, or per item for a 64 x 520 x 64 grid).
        ("narrow k", conv(dcgan(1, 64), 6, 32, 32)),
        ("narrow k, transposed", conv_t(dcgan_t(64, 1), 6, 16, 16)),
        ("narrow k, folded", conv(dcgan(1, 64), 6, 16, 16)),
        ("narrow k, folded per item", conv(dcgan(1, 64), 520, 16, 16)),
        ("narrow k, per sample", conv(Conv2dSpec::new(2, 64, 3).padding(1), 3, 40, 40)),
        // k = 3200: four tiles and one chunk, groups of 16 positions folded.
        ("four k tiles", conv(dcgan(200, 8), 3, 8, 8)),
        // k = 1600: two tiles, two chunks.
        ("two tiles, two chunks", conv_t(dcgan_t(12, 100), 5, 4, 4)),
        // 1024 positions: one sample per call, depth blocks inside a sample; k = 48.
        ("per-sample calls", conv(dcgan(3, 16), 2, 64, 64)),
        ("per-sample transposed", conv_t(dcgan_t(16, 3), 2, 32, 32)),
        // 3 x 3 kernels: runs of 3, 576 positions.
        ("runs of 3", conv(Conv2dSpec::new(5, 9, 3).padding(1), 3, 24, 24)),
        // Dilation and stride 3: runs of 1, partial slivers.
        ("dilated", conv(Conv2dSpec::new(4, 7, 3).stride(3).padding(2).dilation(2), 4, 13, 11)),
        // A 1x1 grid: the DCGAN generator's first layer and discriminator's last.
        ("whole image, transposed", conv_t(ConvTranspose2dSpec::new(10, 32, 4), 8, 1, 1)),
        ("whole image", conv(Conv2dSpec::new(64, 1, 4), 8, 4, 4)),
        // 1x1 kernels: 256 positions read as a strided view; 25 positions through the window.
        ("pointwise", conv(Conv2dSpec::new(6, 10, 1), 3, 16, 16)),
        ("pointwise, small grid", conv(Conv2dSpec::new(6, 10, 1), 3, 5, 5)),
    ]
}

#[test]
fn dcgan_shapes_match_reference_and_ignore_thread_count() {
    let pools: Vec<_> = [1, 2, 7]
        .map(|threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap())
        .into();
    for (name, conv) in shapes() {
        let one = pools[0].install(|| check_against_reference(name, &conv, 21));
        for (pool, threads) in pools.iter().zip([1, 2, 7]).skip(1) {
            let other = pool.install(|| check_against_reference(name, &conv, 21));
            let same = one.iter().zip(&other).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: results differ between 1 and {threads} threads");
        }
    }
}

#[test]
fn adds_into_the_gradient() {
    // Small integers keep every sum exact, so the result must equal the reference exactly.
    for (name, conv) in shapes() {
        let [x_len, y_len, w_len, _] = conv.lens();
        let (x, dy) = (integers(31, x_len, 3), integers(32, y_len, 3));
        let start = integers(33, w_len, 50);
        let mut dw = start.clone();
        grad_weight(&conv, &x, &dy, &mut dw);
        let [_, exact, _] = conv.grads64(&to_f64(&x), &vec![0.0; w_len], &to_f64(&dy));
        for (i, ((&got, &s), &e)) in dw.iter().zip(&start).zip(&exact).enumerate() {
            assert_eq!(got as f64, s as f64 + e, "{name}: element {i}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn grad_weight_matches_reference(conv in random_conv(), seed in any::<u64>()) {
        check_against_reference("random shape", &conv, seed);
    }
}
