//! The direct path of `kernels::shallow` for forward products with a short reduction. Conv2d
//! forward and conv_transpose2d grad-input are checked against the f64 reference, with and
//! without a bias, on shapes that reach each register block and edge of the path. Results must
//! also be bit-identical across thread counts.
//!
//! Every test selects `GemmBackend::Packed`, the only backend the path runs on. Tests in one
//! binary run concurrently, and all of them set the same backend, so they cannot see each
//! other's switch.

mod conv_support;

use conv_support::*;
use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::kernels::{conv, shallow, Conv2dSpec, ConvGeometry, ConvTranspose2dSpec};
use proptest::prelude::*;

/// Returns the lowering of either convolution kind.
fn lowering(conv: &Conv) -> &ConvGeometry {
    match conv {
        Conv::Forward(g) => &g.lowering,
        Conv::Transposed(g) => &g.lowering,
    }
}

/// Asserts that `conv`'s forward product takes the direct path.
fn assert_direct(name: &str, conv: &Conv) {
    set_gemm_backend(GemmBackend::Packed);
    assert!(shallow::applies(lowering(conv)), "{name}: {conv:?} is not on the direct path");
}

/// Shapes that reach each register block and edge of the direct path.
fn shapes() -> Vec<(&'static str, Conv)> {
    let forward = |spec: Conv2dSpec, n, h, w| Conv::Forward(spec.geometry(n, h, w).unwrap());
    let transposed =
        |spec: ConvTranspose2dSpec, n, h, w| Conv::Transposed(spec.geometry(n, h, w).unwrap());
    let dcgan = |c_in, c_out| Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    vec![
        // The first discriminator layers: 32-wide grid rows (two vectors of 16 lanes), and
        // 16-wide ones (two rows per block).
        ("dcgan64 first layer", forward(dcgan(3, 64), 2, 64, 64)),
        ("dcgan32 first layer", forward(dcgan(1, 64), 3, 32, 32)),
        ("MNIST first layer", forward(dcgan(1, 16), 2, 32, 32)),
        // The generator's last layer, grad-input: the same product from the other side.
        (
            "transposed grad-input",
            transposed(ConvTranspose2dSpec::new(24, 3, 4).stride(2).padding(1), 2, 16, 16),
        ),
        // One sample: its 23 grid rows are split into parts of two or three, and a part of three
        // leaves one row after the two-row block (15-wide rows, one partial vector).
        ("one sample, odd rows", forward(dcgan(2, 16), 1, 46, 30)),
        // Three vectors per row: a pair, then a single one cut at the row's end.
        ("three vectors, partial", forward(Conv2dSpec::new(2, 24, 3).padding(1), 2, 5, 40)),
        // Stride 3, no padding, a kernel wider than tall whose last column (kx = 3) reads the
        // next entry of phase 0.
        (
            "stride 3, uneven kernel",
            forward(
                Conv2dSpec { kernel: [2, 4], stride: [3, 3], ..Conv2dSpec::new(4, 16, 1) },
                2,
                9,
                60,
            ),
        ),
        // Padding wider than the kernel reaches: rows and columns entirely outside the image.
        ("wide padding", forward(Conv2dSpec::new(1, 32, 3).stride(2).padding(3), 2, 7, 24)),
        // The maximum reduction length the path takes.
        ("depth 64", forward(Conv2dSpec::new(4, 16, 4).padding(2), 2, 12, 20)),
    ]
}

#[test]
fn direct_shapes_match_reference() {
    for (seed, (name, conv)) in shapes().into_iter().enumerate() {
        assert_direct(name, &conv);
        check_image_to_grid(name, &conv, 300 + 10 * seed as u64);
    }
}

#[test]
fn forward_without_bias_matches_reference() {
    set_gemm_backend(GemmBackend::Packed);
    let g = Conv2dSpec::new(3, 16, 4).stride(2).padding(1).geometry(2, 32, 32).unwrap();
    assert!(shallow::applies(&g.lowering));
    let l = &g.lowering;
    let (x, w) = (normal(1, l.image_len()), normal(2, l.weight_len()));
    let mut y = vec![f32::NAN; l.grid_len()];
    conv::conv2d_forward(&g, &x, &w, None, &mut y).unwrap();
    let conv = Conv::Forward(g);
    let exact = conv.forward64(&to_f64(&x), &to_f64(&w), None);
    let abs = conv.forward64(&abs64(&x), &abs64(&w), None);
    let bound: Vec<f64> = abs.iter().map(|a| 2.0 * gamma(l.k(), U32) * a).collect();
    assert_close("no bias", &y, &exact, &bound);
}

#[test]
fn thread_count_does_not_change_bits() {
    for (name, conv) in shapes() {
        assert_direct(name, &conv);
        assert_same_bits_on_threads(name, &[1, 2, 3], || run_image_to_grid(&conv, 11).1);
    }
}

/// Draws a small forward product the direct path takes: batch 1-3, 1-4 image channels, 16 or
/// 24 output channels, and per axis kernel 1-4, stride 1-3 and padding 0-3.
fn direct_conv() -> impl Strategy<Value = Conv> {
    let sizes = (1..=3usize, 1..=4usize, prop::sample::select(vec![16usize, 24]), 1..=20usize);
    let pairs = (
        prop::array::uniform2(1..=4usize),
        prop::array::uniform2(1..=3usize),
        prop::array::uniform2(0..=3usize),
    );
    (sizes, 8..=70usize, pairs, any::<bool>()).prop_filter_map(
        "not on the direct path",
        |((n, c_image, c_grid, h), w, (kernel, stride, padding), transposed)| {
            set_gemm_backend(GemmBackend::Packed);
            let forward = Conv2dSpec {
                c_in: c_image,
                c_out: c_grid,
                kernel,
                stride,
                padding,
                dilation: [1, 1],
            };
            let g = forward.geometry(n, h, w).ok()?;
            let conv = if transposed {
                // The grad-input of a transposed convolution with `c_image` outputs runs the
                // forward product of the matching convolution over its output gradient.
                let spec = ConvTranspose2dSpec {
                    c_in: c_grid,
                    c_out: c_image,
                    kernel,
                    stride,
                    padding,
                    output_padding: [0, 0],
                    dilation: [1, 1],
                };
                Conv::Transposed(spec.geometry(n, g.out_h(), g.out_w()).ok()?)
            } else {
                Conv::Forward(g)
            };
            shallow::applies(lowering(&conv)).then_some(conv)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_shapes_match_reference(conv in direct_conv(), seed in 0u64..1000) {
        check_image_to_grid(&format!("{conv:?}"), &conv, seed);
    }
}
