//! The Winograd F(2x2, 2x2) path of stride-2 4x4 convolutions: every pass of both convolution
//! kinds against the f64 reference within the error bound of `kernels::winograd`, bit identity
//! across thread counts, and a check that the path really runs.
//!
//! The bound of each element is `gamma(depth) * S`. `S` is the Winograd computation carried out
//! on absolute values, with every transform matrix replaced by its absolute value. `depth` counts
//! the roundings one product meets: its transforms, the sum, the transform back, overlapping
//! tiles and the bias. `S` is computed here from the 1-D coefficients of
//! `|A^T| (|G| * |B^T|)`, independently of the library.
//!
//! Tests that switch the Winograd path or the backend hold [`SWITCH`] while they run, because
//! tests in one binary run concurrently and the switches are process-wide.

mod conv_support;

use std::sync::Mutex;

use conv_support::*;
use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::kernels::{set_winograd, winograd_applies, ConvGeometry, Product, Winograd};
use dcgan::kernels::{Conv2dSpec, ConvTranspose2dSpec};
use proptest::prelude::*;

static SWITCH: Mutex<()> = Mutex::new(());

/// `C[i][a][j]`: the weight with which input `j` of a 3-wide tile meets tap `a` in output `i`
/// when the 1-D transforms run on absolute values, `sum over u of |A^T|[i][u] |G|[u][a]
/// |B^T|[u][j]` with `A^T = [[1, 1, 0], [0, 1, 1]]`, `G = [[1, 0], [1, 1], [0, 1]]` and
/// `B^T = [[1, -1, 0], [0, 1, 0], [0, -1, 1]]`.
fn coefficients() -> [[[f64; 3]; 2]; 2] {
    let a_t = [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]];
    let g = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
    let b_t: [[f64; 3]; 3] = [[1.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 1.0]];
    std::array::from_fn(|i| {
        std::array::from_fn(|a| {
            std::array::from_fn(|j| (0..3).map(|u| a_t[i][u] * g[u][a] * b_t[u][j].abs()).sum())
        })
    })
}

/// Computes the absolute sums `S` of the three products over lowering `l`, from absolute values of the
/// image, grid and weight: `[grid side, image side, weight side]`, i.e. the `S` of
/// `image_to_grid`, `grid_to_image` and `weight_product`.
fn absolute_sums(l: &ConvGeometry, image: &[f64], grid: &[f64], weight: &[f64]) -> [Vec<f64>; 3] {
    let c = coefficients();
    let mut s = [vec![0.0; grid.len()], vec![0.0; image.len()], vec![0.0; weight.len()]];
    for b in 0..l.n {
        for o in 0..l.c_out {
            for ci in 0..l.c_in {
                for (py, px) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    for oy in 0..l.out_h {
                        for ox in 0..l.out_w {
                            let (ty, tx, i, i2) = (oy / 2, ox / 2, oy % 2, ox % 2);
                            let gi = ((b * l.c_out + o) * l.out_h + oy) * l.out_w + ox;
                            for (a, bb, j, e) in taps() {
                                let iy = (4 * ty + 2 * j + py) as isize - 1;
                                let ix = (4 * tx + 2 * e + px) as isize - 1;
                                if iy < 0 || ix < 0 || iy >= l.h as isize || ix >= l.w as isize {
                                    continue;
                                }
                                let xi =
                                    ((b * l.c_in + ci) * l.h + iy as usize) * l.w + ix as usize;
                                let wi = ((o * l.c_in + ci) * 4 + 2 * a + py) * 4 + 2 * bb + px;
                                let coef = c[i][a][j] * c[i2][bb][e];
                                s[0][gi] += coef * weight[wi] * image[xi];
                                s[1][xi] += coef * weight[wi] * grid[gi];
                                s[2][wi] += coef * grid[gi] * image[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    s
}

/// Returns every (tap row, tap column, tile row, tile column) combination: `2 * 2 * 3 * 3`.
fn taps() -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..2).flat_map(|a| {
        (0..2).flat_map(move |b| (0..3).flat_map(move |j| (0..3).map(move |e| (a, b, j, e))))
    })
}

fn lowering(conv: &Conv) -> ConvGeometry {
    match conv {
        Conv::Forward(g) => g.lowering,
        Conv::Transposed(g) => g.lowering,
    }
}

/// Draws a convolution the Winograd path takes: batch 1-3, 32-40 channels on each side, and a
/// grid of 1-3 by 1-4 tiles (2x2 to 6x8). A row of tiles across the batch then spans from one
/// lane to more than eight.
fn winograd_conv() -> impl Strategy<Value = Conv> {
    (1..=3usize, 32..=40usize, 32..=40usize, 1..=3usize, 1..=4usize, any::<bool>()).prop_map(
        |(n, c_in, c_out, tile_rows, tile_cols, transposed)| {
            let (out_h, out_w) = (2 * tile_rows, 2 * tile_cols);
            if transposed {
                let spec = ConvTranspose2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
                Conv::Transposed(spec.geometry(n, out_h, out_w).unwrap())
            } else {
                let spec = Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
                Conv::Forward(spec.geometry(n, 2 * out_h, 2 * out_w).unwrap())
            }
        },
    )
}

/// Runs the four passes under `setting`, on the packed backend, from inputs drawn from `seed`:
/// `([x, w, b, dy], passes)`.
fn run(conv: &Conv, setting: Winograd, seed: u64) -> ([Vec<f32>; 4], Passes) {
    let [x_len, y_len, w_len, b_len] = conv.lens();
    let inputs = [
        normal(seed, x_len),
        normal(seed + 1, w_len),
        normal(seed + 2, b_len),
        normal(seed + 3, y_len),
    ];
    set_gemm_backend(GemmBackend::Packed);
    set_winograd(setting);
    let products = [Product::ImageToGrid, Product::GridToImage, Product::WeightGradient];
    for product in products {
        let applies = winograd_applies(&lowering(conv), product);
        assert_eq!(applies, setting == Winograd::Always, "{conv:?} {product:?}");
    }
    let passes = conv.passes(&inputs[0], &inputs[1], Some(&inputs[2]), &inputs[3]);
    set_winograd(Winograd::default());
    (inputs, passes)
}

/// Returns the four results as bit patterns.
fn bits(p: &Passes) -> Vec<Vec<u32>> {
    [&p.y, &p.dx, &p.dw, &p.db].iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect()
}

fn check_bounds(conv: &Conv, seed: u64) {
    let _switch = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let ([x, w, b, dy], ours) = run(conv, Winograd::Always, seed);
    let l = lowering(conv);
    let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
    let exact_y = conv.forward64(&x64, &w64, Some(&b64));
    let [exact_dx, exact_dw, _] = conv.grads64(&x64, &w64, &dy64);
    let (ax, aw, ab, ady) = (abs64(&x), abs64(&w), abs64(&b), abs64(&dy));
    let columns = l.n * l.positions() / 4;

    // Depths: image_to_grid k + 8, grid_to_image c_out + 13, weight_product 2 * columns + 8,
    // with k = 4 * c_in the rows of the Winograd products.
    let (depth_grid, depth_image, depth_weight) = (l.k() / 4 + 8, l.c_out + 13, 2 * columns + 8);
    // The reference's own rounding in f64, with room to spare.
    let slack = gamma(l.k() + l.n * l.positions(), U64) * 16.0;
    let bound = |depth: usize, s: &[f64], bias: Option<&[f64]>| -> Vec<f64> {
        let bias = |i: usize| bias.map_or(0.0, |b| b[i]);
        s.iter().enumerate().map(|(i, &s)| gamma(depth, U32) * (s + bias(i)) + slack * s).collect()
    };
    // The bias of every element of an output `[n, channels, ...]`.
    let per_element = |len: usize, channels: usize| -> Vec<f64> {
        let plane = len / l.n / channels;
        (0..len).map(|i| ab[i / plane % channels]).collect()
    };
    match conv {
        Conv::Forward(_) => {
            // Image x, grid dy.
            let [s_grid, s_image, s_weight] = absolute_sums(&l, &ax, &ady, &aw);
            let bias = per_element(s_grid.len(), l.c_out);
            assert_close("conv y", &ours.y, &exact_y, &bound(depth_grid, &s_grid, Some(&bias)));
            assert_close("conv dx", &ours.dx, &exact_dx, &bound(depth_image, &s_image, None));
            assert_close("conv dw", &ours.dw, &exact_dw, &bound(depth_weight, &s_weight, None));
        }
        Conv::Transposed(_) => {
            // The input x is the grid and the output gradient dy lies on the image.
            let [s_grid, s_image, s_weight] = absolute_sums(&l, &ady, &ax, &aw);
            let bias = per_element(s_image.len(), l.c_in);
            assert_close("convT y", &ours.y, &exact_y, &bound(depth_image, &s_image, Some(&bias)));
            assert_close("convT dx", &ours.dx, &exact_dx, &bound(depth_grid, &s_grid, None));
            assert_close("convT dw", &ours.dw, &exact_dw, &bound(depth_weight, &s_weight, None));
        }
    }
}

/// Layers deeper than one k-block of the GEMM (`KC` rows), whose transformed operands span
/// several row blocks of the packed layout. 72 image channels give the forward side `k = 288`,
/// and 264 grid channels give the col2im side a depth of 264. Each chunk of samples spans
/// several slivers of columns, the last one partial (128 and 144 columns).
#[test]
fn deep_layers_are_within_the_error_bound() {
    let spec = |c_in, c_out| Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    let forward_deep = Conv::Forward(spec(72, 40).geometry(2, 32, 32).unwrap());
    let col2im_deep = Conv::Forward(spec(36, 264).geometry(4, 24, 24).unwrap());
    for (seed, conv) in [forward_deep, col2im_deep].iter().enumerate() {
        check_bounds(conv, 50 + seed as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn every_pass_is_within_the_error_bound(conv in winograd_conv(), seed in 0u64..1000) {
        check_bounds(&conv, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// The Winograd path gives the same bits on any number of threads, and it really runs: its
    /// forward, grad-input and grad-weight differ from the direct lowering's in some bits. Each
    /// pass has over a thousand outputs, each a sum of hundreds of normal products, so equal
    /// roundings everywhere would be a far smaller chance than any test's noise.
    #[test]
    fn threads_agree_and_path_runs(conv in winograd_conv(), seed in 0u64..1000) {
        let _switch = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| bits(&run(&conv, Winograd::Always, seed).1))
        };
        let single_thread = on(1);
        prop_assert_eq!(&single_thread, &on(2));
        prop_assert_eq!(&single_thread, &on(3));
        let direct = bits(&run(&conv, Winograd::Off, seed).1);
        for (pass, (w, d)) in ["y", "dx", "dw"].iter().zip(single_thread.iter().zip(&direct)) {
            prop_assert!(w != d, "{} of {:?} equals the direct lowering's bit for bit", pass, conv);
        }
    }
}
