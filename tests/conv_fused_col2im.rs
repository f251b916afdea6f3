//! The fused grid-to-image product on the packed backend: conv2d grad-input and
//! conv_transpose2d forward against the f64 reference, on random small shapes and on DCGAN-like
//! shapes that reach every layout and partition, and bit-identical on 1, 2 and 7 threads and
//! for a sample moved by 64 places.
//!
//! Every test here selects `GemmBackend::Packed` and none selects another, so tests running
//! concurrently in this binary cannot disturb one another.

mod conv_support;

use conv_support::*;
use dcgan::kernels::gemm::{gemm_backend, set_gemm_backend, GemmBackend};
use dcgan::kernels::{conv, conv_transpose, Conv2dSpec, ConvTranspose2dSpec};
use proptest::prelude::*;

/// Runs the pass of `conv` that is a grid-to-image product: grad-input of a convolution (from
/// `grid` as the output gradient) or forward of a transposed convolution (from `grid` as its
/// input, with `bias`). The output starts as NaN, so a pixel the pass misses shows up.
fn grid_to_image(conv: &Conv, grid: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    set_gemm_backend(GemmBackend::Packed);
    assert_eq!(gemm_backend(), GemmBackend::Packed);
    match conv {
        Conv::Forward(g) => {
            let mut dx = vec![f32::NAN; conv.lens()[0]];
            conv::conv2d_grad_input(g, w, grid, &mut dx).unwrap();
            dx
        }
        Conv::Transposed(g) => {
            let mut y = vec![f32::NAN; conv.lens()[1]];
            conv_transpose::conv_transpose2d_forward(g, grid, w, bias, &mut y).unwrap();
            y
        }
    }
}

/// Computes the exact result of [`grid_to_image`] in f64, and the same on absolute values.
fn reference(conv: &Conv, grid: &[f32], w: &[f32], bias: Option<&[f32]>) -> [Vec<f64>; 2] {
    let run = |grid: &[f64], w: &[f64], bias: Option<&[f64]>| match conv {
        Conv::Forward(_) => {
            // grads64 needs an input only for the weight gradient; its values do not matter.
            let x = vec![0.0; conv.lens()[0]];
            let [dx, _, _] = conv.grads64(&x, w, grid);
            dx
        }
        Conv::Transposed(_) => conv.forward64(grid, w, bias),
    };
    let bias64 = bias.map(to_f64);
    let abs_bias = bias.map(abs64);
    [
        run(&to_f64(grid), &to_f64(w), bias64.as_deref()),
        run(&abs64(grid), &abs64(w), abs_bias.as_deref()),
    ]
}

/// Inputs of the pass from `seed`: grid, weight and bias.
fn inputs(conv: &Conv, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [x_len, y_len, w_len, b_len] = conv.lens();
    let grid_len = match conv {
        Conv::Forward(_) => y_len,
        Conv::Transposed(_) => x_len,
    };
    (normal(seed, grid_len), normal(seed ^ 1, w_len), normal(seed ^ 2, b_len))
}

/// Checks the pass on `conv` against the reference, within twice `gamma(terms)` of the sum of
/// absolute values (the doubling covers the reference's own rounding).
fn check(name: &str, conv: &Conv, seed: u64, with_bias: bool) {
    let (grid, w, b) = inputs(conv, seed);
    let bias = (with_bias && matches!(conv, Conv::Transposed(_))).then_some(&b[..]);
    let ours = grid_to_image(conv, &grid, &w, bias);
    let [exact, abs] = reference(conv, &grid, &w, bias);
    let terms = match conv {
        Conv::Forward(_) => conv.terms()[1],
        Conv::Transposed(_) => conv.terms()[0],
    };
    let bound: Vec<f64> = abs.iter().map(|a| 2.0 * gamma(terms, U32) * a).collect();
    assert_close(name, &ours, &exact, &bound);
}

fn dcgan(c_in: usize, c_out: usize) -> Conv2dSpec {
    Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1)
}

fn dcgan_t(c_in: usize, c_out: usize) -> ConvTranspose2dSpec {
    ConvTranspose2dSpec::new(c_in, c_out, 4).stride(2).padding(1)
}

/// DCGAN-like shapes, each reaching one layout or partition of the fused path.
fn shapes() -> Vec<(&'static str, Conv)> {
    let whole = ConvTranspose2dSpec::new(20, 24, 4);
    let pointwise = Conv2dSpec::new(24, 40, 1);
    vec![
        // 4x4 grids: samples folded into one GEMM, columns crossing samples.
        ("folded groups", Conv::Forward(dcgan(24, 32).geometry(16, 8, 8).unwrap())),
        // A 40x40 grid: one sample per GEMM, several column blocks of sgemm_tiles.
        ("per-sample tiles", Conv::Forward(dcgan(20, 40).geometry(2, 80, 80).unwrap())),
        // c_out = 300 > 256: several depth blocks before a tile is finished.
        ("several k tiles", Conv::Forward(dcgan(40, 300).geometry(3, 12, 12).unwrap())),
        // 40 channels of 16 taps: two channel blocks of at most 512 rows, the last one short.
        ("channel blocks", Conv::Transposed(dcgan_t(16, 40).geometry(4, 5, 7).unwrap())),
        // A 1x1 grid with a kernel covering the whole image (the generator's first layer).
        ("whole image", Conv::Transposed(whole.geometry(12, 1, 1).unwrap())),
        ("whole image, one sample", Conv::Transposed(whole.geometry(1, 1, 1).unwrap())),
        // A 1x1 kernel, stride 1, no padding: col2im is a copy.
        ("pointwise", Conv::Forward(pointwise.geometry(6, 9, 11).unwrap())),
        ("pointwise, per sample", Conv::Forward(pointwise.geometry(2, 40, 40).unwrap())),
        // Grids at least 8 wide keep one plane per phase. With stride 2 and no padding, the
        // drain alternates two phases from the first pixel, and an odd width leaves one over.
        (
            "wide grid, stride 2",
            Conv::Forward(Conv2dSpec::new(5, 9, 3).stride(2).geometry(3, 21, 19).unwrap()),
        ),
        (
            "wide grid, stride 3, dilation 2",
            Conv::Forward(
                Conv2dSpec::new(6, 12, 3)
                    .stride(3)
                    .padding(2)
                    .dilation(2)
                    .geometry(2, 40, 31)
                    .unwrap(),
            ),
        ),
        // Stride 3, dilation 2 and padding 3 leave taps entirely in the padding.
        (
            "padding, stride, dilation",
            Conv::Forward(
                Conv2dSpec::new(10, 12, 3)
                    .stride(3)
                    .padding(3)
                    .dilation(2)
                    .geometry(5, 13, 11)
                    .unwrap(),
            ),
        ),
    ]
}

#[test]
fn dcgan_shapes_match_reference() {
    for (seed, (name, conv)) in shapes().iter().enumerate() {
        check(&format!("{name}, no bias"), conv, seed as u64, false);
        check(&format!("{name}, bias"), conv, seed as u64, true);
    }
}

#[test]
fn dcgan_shapes_ignore_thread_count() {
    let pools: Vec<_> = [1, 2, 7]
        .map(|threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap())
        .into();
    for (seed, (name, conv)) in shapes().iter().enumerate() {
        let (grid, w, b) = inputs(conv, 100 + seed as u64);
        let runs: Vec<Vec<u32>> = pools
            .iter()
            .map(|pool| {
                let out = pool.install(|| grid_to_image(conv, &grid, &w, Some(&b)));
                out.iter().map(|v| v.to_bits()).collect()
            })
            .collect();
        assert!(runs[1] == runs[0], "{name}: results differ between 1 and 2 threads");
        assert!(runs[2] == runs[0], "{name}: results differ between 1 and 7 threads");
    }
}

/// A layer as a function of its batch size.
type ConvOfBatch = fn(usize) -> Conv;

/// Moving a sample by 64 places, here from place 64 + s of a batch of 130 to place s of a
/// batch of 66, keeps its bits, because the sample groups divide 64 at any batch size.
#[test]
fn sample_moved_by_64_keeps_bits() {
    let cases: [(&str, ConvOfBatch); 3] = [
        // The DCGAN generator's last layer: a 16x16 grid, groups of 4 samples.
        ("last generator layer", |n| Conv::Transposed(dcgan_t(64, 1).geometry(n, 16, 16).unwrap())),
        // A 5x8 grid with one channel block: groups of 16 samples, whose 40 columns cut
        // column slivers at different places for different offsets.
        ("5x8 grid", |n| Conv::Transposed(dcgan_t(32, 16).geometry(n, 5, 8).unwrap())),
        // Grad-input of a narrow discriminator layer with the same grid.
        ("5x8 grid, grad-input", |n| Conv::Forward(dcgan(16, 32).geometry(n, 10, 16).unwrap())),
    ];
    for (name, conv) in cases {
        let (full, tail) = (conv(130), conv(66));
        let (grid, w, b) = inputs(&full, 7);
        let all = grid_to_image(&full, &grid, &w, Some(&b));
        let (grid_per_sample, out_per_sample) = (grid.len() / 130, all.len() / 130);
        let moved = grid_to_image(&tail, &grid[64 * grid_per_sample..], &w, Some(&b));
        let expected = &all[64 * out_per_sample..];
        let differing = moved.iter().zip(expected).filter(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(differing.count(), 0, "{name}: moved samples changed bits");
    }
}

/// Generates a random small convolution of either kind, with a data seed and a bias switch.
fn case() -> impl Strategy<Value = (Conv, u64, bool)> {
    (random_conv(), any::<u64>(), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_shapes_match_reference((conv, seed, bias) in case()) {
        check(&format!("{conv:?}"), &conv, seed, bias);
    }
}

#[test]
fn column_matrix_beyond_max_tensor_runs_in_chunks() {
    // One 2048x2048 channel, a 32x32 kernel, padding 16: the column matrix of the sample is
    // 1024 rows times 2049^2 positions, beyond the 2^31 elements one packed product accepts.
    let spec = Conv2dSpec::new(1, 1, 32).padding(16);
    let g = spec.geometry(1, 2048, 2048).unwrap();
    let l = g.lowering;
    assert!(l.k() * l.positions() > 1 << 31);
    set_gemm_backend(GemmBackend::Packed);
    let w = vec![1.0f32; l.weight_len()];
    let dy = vec![1.0f32; l.grid_len()];
    let mut dx = vec![f32::NAN; l.image_len()];
    conv::conv2d_grad_input(&g, &w, &dy, &mut dx).unwrap();

    // With ones everywhere, pixel (iy, ix) receives one entry per (grid position, tap) pair
    // that reads it: a product of per-axis counts, each an integer at most 32, so exact.
    let count = |i: usize| {
        let reads = |k: &usize| (i + 16).checked_sub(*k).is_some_and(|o| o < l.out_h);
        (0..32).filter(reads).count()
    };
    for iy in 0..l.h {
        for ix in 0..l.w {
            let expected = (count(iy) * count(ix)) as f32;
            assert_eq!(dx[iy * l.w + ix], expected, "pixel ({iy}, {ix})");
        }
    }
}
