//! The fused forward product on the packed GEMM: conv2d forward and conv_transpose2d grad-input
//! (the two passes that run `image_to_grid`) against the f64 reference, bit identity across
//! thread counts, and the pre-packed A entry point of the packed GEMM against matrixmultiply.
//!
//! Every test that runs a convolution selects `GemmBackend::Packed`. Tests in one binary run
//! concurrently, and all of them set the same backend, so they cannot see each other's switch.

mod conv_support;

use conv_support::*;
use dcgan::kernels::packed_gemm::{sgemm, sgemm_prepacked, MatMut, MatRef, PackedA, KC, MC, MR};
use dcgan::kernels::{Conv2dSpec, ConvTranspose2dSpec};
use proptest::prelude::*;

/// DCGAN's 4x4, stride 2, padding 1 convolution.
fn dcgan(c_in: usize, c_out: usize) -> Conv2dSpec {
    Conv2dSpec::new(c_in, c_out, 4).stride(2).padding(1)
}

/// DCGAN's 4x4, stride 2, padding 1 transposed convolution.
fn dcgan_t(c_in: usize, c_out: usize) -> ConvTranspose2dSpec {
    ConvTranspose2dSpec::new(c_in, c_out, 4).stride(2).padding(1)
}

/// Shapes that reach each branch of the fused path.
fn branch_shapes() -> Vec<(&'static str, Conv)> {
    let forward = |spec: Conv2dSpec, n, h, w| Conv::Forward(spec.geometry(n, h, w).unwrap());
    let transposed =
        |spec: ConvTranspose2dSpec, n, h, w| Conv::Transposed(spec.geometry(n, h, w).unwrap());
    vec![
        // 32x32 grids, one sample per GEMM, k = 48 in one k-block (12 output channels keep
        // the layer off the direct path of `kernels::shallow`).
        ("per-sample, first layer", forward(dcgan(3, 12), 4, 64, 64)),
        // Batch below four: output channels split into blocks of whole slivers.
        ("per-sample, channel blocks", forward(dcgan(8, 40), 2, 34, 34)),
        // k = 40 * 16 = 640: three k-blocks, the last one short.
        ("per-sample, three k-blocks", forward(dcgan(40, 12), 4, 34, 30)),
        // 4x4 grids: samples folded side by side, k = 1024 in four k-blocks.
        ("folded groups", forward(dcgan(64, 24), 16, 8, 8)),
        // More output channels than one block of A rows.
        ("two row blocks of A", forward(dcgan(2, MC + 2 * MR + 3), 2, 8, 8)),
        // Positions past one column block of B (70 x 70 > NC).
        ("several column blocks", forward(Conv2dSpec::new(2, 9, 3).padding(1), 1, 70, 70)),
        // The kernel covers the image: a 1x1 grid read as a strided view.
        ("whole image", forward(Conv2dSpec::new(32, 1, 4), 12, 4, 4)),
        ("whole image, wide", forward(Conv2dSpec::new(20, 24, 4), 9, 4, 4)),
        // Pointwise kernels, per sample and folded.
        ("pointwise per sample", forward(Conv2dSpec::new(6, 10, 1), 2, 40, 40)),
        ("pointwise folded", forward(Conv2dSpec::new(6, 10, 1), 16, 5, 5)),
        // Transposed-convolution grad-input: the generator's layers, folded and per sample,
        // and the first generator layer (a 1x1 grid under the whole kernel).
        ("transposed grad-input", transposed(dcgan_t(24, 16), 8, 8, 8)),
        ("transposed grad-input, large", transposed(dcgan_t(8, 3), 2, 32, 32)),
        (
            "transposed grad-input, 1x1 input",
            transposed(ConvTranspose2dSpec::new(16, 32, 4), 10, 1, 1),
        ),
        // Dilation, uneven strides and padding wider than the kernel.
        (
            "dilated, uneven",
            forward(
                Conv2dSpec {
                    kernel: [3, 2],
                    stride: [1, 3],
                    padding: [2, 3],
                    ..Conv2dSpec::new(3, 5, 1)
                }
                .dilation(2),
                3,
                11,
                13,
            ),
        ),
    ]
}

#[test]
fn branches_match_reference() {
    for (seed, (name, conv)) in branch_shapes().into_iter().enumerate() {
        check_image_to_grid(name, &conv, 100 + 10 * seed as u64);
    }
}

#[test]
fn thread_count_does_not_change_bits() {
    for (name, conv) in branch_shapes() {
        assert_same_bits_on_threads(name, &[1, 2, 7], || run_image_to_grid(&conv, 7).1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn small_shapes_match_reference(conv in random_conv(), seed in 0u64..1000) {
        check_image_to_grid(&format!("{conv:?}"), &conv, seed);
    }
}

/// `rows x cols` integers in `-4..=4`, row-major.
fn small_integers(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    integers(seed, rows * cols, 4)
}

/// Runs `C = alpha * A[rows, :] * B + beta * C` through the pre-packed entry point and through
/// matrixmultiply, with integer inputs whose products and sums are exact in f32, and checks that
/// the two agree exactly and that the pre-packed result is bit-identical to `sgemm`.
fn prepacked_case((m, k, n): (usize, usize, usize), rows: std::ops::Range<usize>, beta: f32) {
    let what = format!("m {m} k {k} n {n} rows {rows:?} beta {beta}");
    let a = small_integers(1, m, k);
    let b = small_integers(2, k, n);
    let c0 = small_integers(3, rows.len(), n);
    let packed = PackedA::new(MatRef::row_major(&a, m, k).unwrap());
    let a_rows = &a[rows.start * k..rows.end * k];

    let mut ours = c0.clone();
    let b_view = MatRef::row_major(&b, k, n).unwrap();
    let c_view = MatMut::row_major(&mut ours, rows.len(), n).unwrap();
    sgemm_prepacked(2.0, &packed, rows.clone(), &b_view, beta, c_view).unwrap();

    let mut plain = c0.clone();
    let a_view = MatRef::row_major(a_rows, rows.len(), k).unwrap();
    sgemm(2.0, a_view, b_view, beta, MatMut::row_major(&mut plain, rows.len(), n).unwrap())
        .unwrap();

    let mut reference = c0;
    // SAFETY: the pointers and strides describe the row-major `rows.len() x k`, `k x n` and
    // `rows.len() x n` matrices in `a_rows`, `b` and `reference`, which live for the call.
    unsafe {
        matrixmultiply::sgemm(
            rows.len(),
            k,
            n,
            2.0,
            a_rows.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            beta,
            reference.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    assert_eq!(ours, reference, "{what}: pre-packed differs from matrixmultiply");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&ours), bits(&plain), "{what}: pre-packed differs from sgemm");
}

#[test]
fn prepacked_matches_matrixmultiply_on_odd_shapes() {
    let k_blocks = 2 * KC + 13;
    for (shape, rows) in [
        ((1, 1, 1), 0..1),
        ((7, 5, 3), 0..7),
        ((13, 17, 50), MR..13),
        ((MC + 3 * MR + 1, 9, 61), 0..MC + 3 * MR + 1),
        ((MC + 5, 33, 7), MR..MC + 5),
        ((19, k_blocks, 97), 2 * MR..19),
        ((3 * MR, k_blocks, 5), MR..2 * MR),
        ((11, 300, 4100), 0..11),
    ] {
        prepacked_case(shape, rows.clone(), 0.0);
        prepacked_case(shape, rows, 1.0);
    }
}

#[test]
fn prepacked_rejects_unaligned_rows() {
    let a = vec![1.0; 20 * 4];
    let packed = PackedA::new(MatRef::row_major(&a, 20, 4).unwrap());
    let b = vec![1.0; 4 * 3];
    let b_view = MatRef::row_major(&b, 4, 3).unwrap();
    let mut c = vec![0.0; 19 * 3];
    let unaligned = sgemm_prepacked(
        1.0,
        &packed,
        1..20,
        &b_view,
        0.0,
        MatMut::row_major(&mut c, 19, 3).unwrap(),
    );
    assert!(unaligned.is_err(), "rows starting at 1 accepted");
    let mut c = vec![0.0; 21 * 3];
    let past_end = sgemm_prepacked(
        1.0,
        &packed,
        0..21,
        &b_view,
        0.0,
        MatMut::row_major(&mut c, 21, 3).unwrap(),
    );
    assert!(past_end.is_err(), "rows past the end accepted");
    let mut c = vec![0.0; 5 * 3];
    let mismatched =
        sgemm_prepacked(1.0, &packed, 0..8, &b_view, 0.0, MatMut::row_major(&mut c, 5, 3).unwrap());
    assert!(mismatched.is_err(), "8 rows of A against 5 rows of C accepted");
}
