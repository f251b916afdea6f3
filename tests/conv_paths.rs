//! Shapes large enough to reach every tiling path of the kernels (several `k` tiles, several
//! position tiles, folded sample groups, channel blocks, split weight reductions, the layouts
//! that skip im2col), each checked against the f64 reference, and each checked to give
//! bit-identical results on rayon pools of 1, 2 and 7 threads.

mod conv_support;

use conv_support::*;
use dcgan::kernels::{Conv2dSpec, ConvTranspose2dSpec};

/// A named shape and the path it is there to reach.
struct Shape {
    name: &'static str,
    conv: Conv,
}

fn conv(n: usize, spec: Conv2dSpec, hw: [usize; 2]) -> Conv {
    Conv::Forward(spec.geometry(n, hw[0], hw[1]).unwrap())
}

fn convt(n: usize, spec: ConvTranspose2dSpec, hw: [usize; 2]) -> Conv {
    Conv::Transposed(spec.geometry(n, hw[0], hw[1]).unwrap())
}

fn shapes() -> Vec<Shape> {
    let dcgan = |c_in, c_out| Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    let dcgan_t = |c_in, c_out| ConvTranspose2dSpec::new(c_in, c_out, 4).stride(2).padding(1);
    vec![
        Shape {
            // 4 samples of 8x8 grids per GEMM, 2 k tiles, 2 channel blocks, 2 reduction chunks.
            name: "folded groups",
            conv: conv(16, dcgan(20, 24), [16, 16]),
        },
        Shape {
            // 2 samples of 1681 positions: position tiles, output-channel blocks.
            name: "per-sample tiles",
            conv: conv(2, Conv2dSpec::new(20, 40, 4).stride(2).padding(1), [82, 82]),
        },
        Shape {
            // k = 1024: four k tiles, one reduction chunk, the grid transposed once for all
            // tiles; two samples per group.
            name: "many k tiles, folded",
            conv: conv(8, dcgan(64, 8), [8, 8]),
        },
        Shape {
            // The same with one sample per group.
            name: "many k tiles, per sample",
            conv: conv(3, dcgan(64, 6), [10, 10]),
        },
        Shape {
            // A 17x17 kernel has 289 taps per channel: tiles split a channel's rows.
            name: "rows split inside a channel",
            conv: conv(3, Conv2dSpec::new(2, 5, 17).padding(2), [20, 22]),
        },
        Shape {
            // The kernel covers the 1x1-grid image: no im2col, no col2im.
            name: "whole-image kernel",
            conv: convt(8, ConvTranspose2dSpec::new(30, 20, 4), [1, 1]),
        },
        Shape {
            // Same, as a convolution, batch large enough to fold, k = 1024 in four tiles.
            name: "whole-image conv",
            conv: conv(9, Conv2dSpec::new(64, 3, 4), [4, 4]),
        },
        Shape {
            // 1x1 kernel, stride 1: the image is its own column matrix.
            name: "pointwise per sample",
            conv: conv(3, Conv2dSpec::new(12, 20, 1), [36, 40]),
        },
        Shape {
            // 1x1 kernel on small grids: folded, so it goes through im2col after all.
            name: "pointwise folded",
            conv: convt(10, ConvTranspose2dSpec::new(12, 20, 1), [5, 6]),
        },
        Shape {
            // Four channel blocks of a folded group share one gather of the group's grid.
            name: "transposed, shared grid gather",
            conv: convt(8, dcgan_t(16, 64), [4, 4]),
        },
        Shape {
            // DCGAN's generator shape with output padding and odd sizes.
            name: "transposed dcgan",
            conv: convt(
                12,
                ConvTranspose2dSpec { output_padding: [1, 0], ..dcgan_t(24, 10) },
                [7, 9],
            ),
        },
    ]
}

#[test]
fn paths_match_reference() {
    for shape in shapes() {
        let conv = &shape.conv;
        let [x_len, y_len, w_len, b_len] = conv.lens();
        let (x, w, b, dy) =
            (normal(1, x_len), normal(2, w_len), normal(3, b_len), normal(4, y_len));
        let ours = conv.passes(&x, &w, Some(&b), &dy);

        let (x64, w64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&dy));
        let exact_y = conv.forward64(&x64, &w64, Some(&to_f64(&b)));
        let [exact_dx, exact_dw, exact_db] = conv.grads64(&x64, &w64, &dy64);
        let abs_y = conv.forward64(&abs64(&x), &abs64(&w), Some(&abs64(&b)));
        let [abs_dx, abs_dw, abs_db] = conv.grads64(&abs64(&x), &abs64(&w), &abs64(&dy));
        let [y_terms, dx_terms, dw_terms] = conv.terms();
        // Each f32 result is a sum of at most `terms` products: within gamma(terms) of exact,
        // relative to the same sum over absolute values (the f64 reference adds a negligible
        // gamma64 of its own, covered by doubling).
        let bound = |abs: &[f64], terms: usize| -> Vec<f64> {
            abs.iter().map(|a| 2.0 * gamma(terms, U32) * a).collect()
        };
        let name = shape.name;
        assert_close(&format!("{name}: forward"), &ours.y, &exact_y, &bound(&abs_y, y_terms));
        assert_close(
            &format!("{name}: grad_input"),
            &ours.dx,
            &exact_dx,
            &bound(&abs_dx, dx_terms),
        );
        assert_close(
            &format!("{name}: grad_weight"),
            &ours.dw,
            &exact_dw,
            &bound(&abs_dw, dw_terms),
        );
        let db_terms = y_len / b_len;
        assert_close(&format!("{name}: grad_bias"), &ours.db, &exact_db, &bound(&abs_db, db_terms));
    }
}

#[test]
fn weight_gradient_over_grid_slices() {
    // A grid of 24 x 100 x 256 = 614400 elements, more than the weight gradient transposes at
    // once, with k = 784 in four tiles. Integer data keeps every sum exact in f32, so the
    // result must equal the f64 reference exactly.
    let g = Conv2dSpec::new(49, 100, 4).stride(2).padding(1).geometry(24, 32, 32).unwrap();
    let l = &g.lowering;
    let x = integers(1, l.image_len(), 2);
    let dy = integers(2, l.grid_len(), 2);
    let mut dw = vec![0.0; l.weight_len()];
    dcgan::kernels::conv2d_grad_weight(&g, &x, &dy, &mut dw).unwrap();
    let exact = dcgan::kernels::reference::conv2d_grad_weight(&g, &to_f64(&x), &to_f64(&dy));
    for (i, (got, want)) in dw.iter().zip(&exact).enumerate() {
        assert_eq!(*got as f64, *want, "grad_weight[{i}]");
    }
}

/// The bits of every output of every pass.
fn bits(p: &Passes) -> [Vec<u32>; 4] {
    [&p.y, &p.dx, &p.dw, &p.db].map(|v| v.iter().map(|x| x.to_bits()).collect())
}

#[test]
fn results_independent_of_thread_count() {
    for shape in shapes() {
        let conv = &shape.conv;
        let [x_len, y_len, w_len, b_len] = conv.lens();
        let (x, w, b, dy) =
            (normal(5, x_len), normal(6, w_len), normal(7, b_len), normal(8, y_len));
        // Gradients accumulate into non-zero buffers, as they do across passes.
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut passes = pool.install(|| conv.passes(&x, &w, Some(&b), &dy));
            let (mut dw, mut db) = (passes.dw.clone(), passes.db.clone());
            pool.install(|| conv.accumulate_grads(&x, &dy, &mut dw, &mut db));
            (passes.dw, passes.db) = (dw, db);
            bits(&passes)
        };
        let one = run(1);
        for threads in [2, 7] {
            let many = run(threads);
            for (pass, (a, b)) in ["forward", "grad_input", "grad_weight", "grad_bias"]
                .iter()
                .zip(one.iter().zip(&many))
            {
                assert!(a == b, "{}: {pass} differs between 1 and {threads} threads", shape.name);
            }
        }
    }
}
