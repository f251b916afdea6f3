//! Tests of the packed GEMM against an f64 triple loop, over shapes, strides, alpha and beta.
//!
//! Stored matrices have NaN in every element outside the view: a stray read of A or B turns the
//! result into NaN, and a stray write to C overwrites a NaN that must survive.

use dcgan::kernels::packed_gemm::{
    sgemm, sgemm_tiles, sgemm_with_packer, MatMut, MatRef, PackB, PackedB, KC, MC, MR, NC, NR,
    TILE_PANEL_BYTES,
};
use dcgan::rng::Rng;
use dcgan::Error;
use proptest::prelude::*;

/// How a matrix is laid out in its slice.
#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with `pad` unused elements after each row.
    PaddedRowMajor(usize),
    /// Column-major with `pad` unused elements after each column.
    PaddedColMajor(usize),
    /// The transposed view of a row-major `cols x rows` matrix with `pad` after each row.
    TransposedView(usize),
}

/// A logical `rows x cols` matrix stored in a slice with NaN in the gaps.
struct Stored {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Stored {
    /// Stores `value(i, j)` in `layout`, with NaN in every element outside the view.
    fn new(
        rows: usize,
        cols: usize,
        layout: Layout,
        mut value: impl FnMut(usize, usize) -> f32,
    ) -> Self {
        let (row_stride, col_stride, len) = match layout {
            Layout::RowMajor => (cols, 1, rows * cols),
            Layout::ColMajor => (1, rows, rows * cols),
            Layout::PaddedRowMajor(pad) => (cols + pad, 1, rows * (cols + pad)),
            Layout::PaddedColMajor(pad) => (1, rows + pad, cols * (rows + pad)),
            Layout::TransposedView(pad) => (1, rows + pad, cols * (rows + pad)),
        };
        let mut data = vec![f32::NAN; len];
        for i in 0..rows {
            for j in 0..cols {
                data[i * row_stride + j * col_stride] = value(i, j);
            }
        }
        Stored { data, rows, cols, row_stride, col_stride }
    }

    fn view(&self) -> MatRef<'_> {
        let (rows, cols, rs, cs) = (self.rows, self.cols, self.row_stride, self.col_stride);
        MatRef::new(&self.data, rows, cols, rs, cs).unwrap()
    }

    /// Builds the view of a `TransposedView` layout through `MatRef::t` of the stored matrix.
    fn view_via_transpose(&self) -> MatRef<'_> {
        let stored =
            MatRef::new(&self.data, self.cols, self.rows, self.col_stride, self.row_stride);
        stored.unwrap().t()
    }

    fn view_mut(&mut self) -> MatMut<'_> {
        let (rows, cols, rs, cs) = (self.rows, self.cols, self.row_stride, self.col_stride);
        MatMut::new(&mut self.data, rows, cols, rs, cs).unwrap()
    }

    fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Indices of the elements outside the view.
    fn gaps(&self) -> Vec<usize> {
        let mut inside = vec![false; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                inside[i * self.row_stride + j * self.col_stride] = true;
            }
        }
        (0..self.data.len()).filter(|&index| !inside[index]).collect()
    }
}

/// Uniform values in [-1, 1) from `seed`, as a function of position.
fn random_values(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut rng = Rng::from_seed(seed);
    (0..rows * cols).map(|_| 2.0 * rng.uniform() - 1.0).collect()
}

/// `alpha * A * B + beta * C` in f64, and the error bound of an f32 evaluation of each element.
fn reference(alpha: f32, a: &Stored, b: &Stored, beta: f32, c: &Stored) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut expected = vec![0.0; m * n];
    let mut bound = vec![0.0; m * n];
    // A sum of k products, scaled and added to beta * c, rounds at most k + 3 times.
    let unit = (k as f64 + 3.0) * f32::EPSILON as f64;
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut magnitude) = (0.0f64, 0.0f64);
            for p in 0..k {
                let product = a.get(i, p) as f64 * b.get(p, j) as f64;
                sum += product;
                magnitude += product.abs();
            }
            let old = if beta == 0.0 { 0.0 } else { beta as f64 * c.get(i, j) as f64 };
            expected[i * n + j] = alpha as f64 * sum + old;
            bound[i * n + j] = unit * (alpha.abs() as f64 * magnitude + old.abs()) + 1e-30;
        }
    }
    (expected, bound)
}

/// Checks C's view against the reference and that every gap of C still holds NaN.
fn check_against_reference(
    c: &Stored,
    expected: &[f64],
    bound: &[f64],
    gaps: &[usize],
) -> Result<(), TestCaseError> {
    let n = c.cols;
    for i in 0..c.rows {
        for j in 0..n {
            let got = c.get(i, j) as f64;
            let error = (got - expected[i * n + j]).abs();
            prop_assert!(
                error <= bound[i * n + j],
                "C[{i}, {j}] = {got}, expected {} (bound {})",
                expected[i * n + j],
                bound[i * n + j]
            );
        }
    }
    for &index in gaps {
        prop_assert!(c.data[index].is_nan(), "gap element {index} of C was overwritten");
    }
    Ok(())
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::RowMajor),
        Just(Layout::ColMajor),
        (1usize..4).prop_map(Layout::PaddedRowMajor),
        (1usize..4).prop_map(Layout::PaddedColMajor),
        (0usize..3).prop_map(Layout::TransposedView),
    ]
}

fn scale_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0]
}

/// Runs `sgemm` on random data in the given layouts and checks it against the reference.
#[allow(clippy::too_many_arguments)]
fn run_case(
    (m, k, n): (usize, usize, usize),
    layouts: (Layout, Layout, Layout),
    alpha: f32,
    beta: f32,
    seed: u64,
) -> Result<(), TestCaseError> {
    let a_values = random_values(seed, m, k);
    let b_values = random_values(seed + 1, k, n);
    let c_values = random_values(seed + 2, m, n);
    let a = Stored::new(m, k, layouts.0, |i, p| a_values[i * k + p]);
    let b = Stored::new(k, n, layouts.1, |p, j| b_values[p * n + j]);
    // With beta == 0 the old C is NaN everywhere: it must be overwritten, never read.
    let mut c =
        Stored::new(
            m,
            n,
            layouts.2,
            |i, j| {
                if beta == 0.0 {
                    f32::NAN
                } else {
                    c_values[i * n + j]
                }
            },
        );
    let (expected, bound) = reference(alpha, &a, &b, beta, &c);
    let gaps = c.gaps();

    let a_view = match layouts.0 {
        Layout::TransposedView(_) => a.view_via_transpose(),
        _ => a.view(),
    };
    let b_view = match layouts.1 {
        Layout::TransposedView(_) => b.view_via_transpose(),
        _ => b.view(),
    };
    sgemm(alpha, a_view, b_view, beta, c.view_mut()).unwrap();
    check_against_reference(&c, &expected, &bound, &gaps)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sgemm_matches_reference(
        m in 0usize..80,
        k in 0usize..80,
        n in 0usize..80,
        layouts in (layout_strategy(), layout_strategy(), layout_strategy()),
        alpha in scale_strategy(),
        beta in scale_strategy(),
        seed in any::<u64>(),
    ) {
        run_case((m, k, n), layouts, alpha, beta, seed)?;
    }

    #[test]
    fn sgemm_integer_inputs_are_exact(
        m in 1usize..80,
        k in 0usize..80,
        n in 1usize..80,
        beta in prop_oneof![Just(0.0f32), Just(1.0f32), Just(-2.0f32)],
        seed in any::<u64>(),
    ) {
        exact_integer_case((m, k, n), beta, seed)?;
    }

    #[test]
    fn packer_closure_is_bit_identical(
        m in 1usize..40,
        k in 0usize..300,
        n in 1usize..80,
        seed in any::<u64>(),
    ) {
        packer_case((m, k, n), seed)?;
    }

    #[test]
    fn tiles_are_bit_identical_to_sgemm(
        m in 0usize..60,
        k in 0usize..300,
        n in 0usize..80,
        alpha in scale_strategy(),
        seed in any::<u64>(),
    ) {
        tiles_case((m, k, n), alpha, seed)?;
    }
}

/// Integer inputs in [-8, 8] and integer C: every partial sum is exact in f32, so the result
/// must equal the integer reference exactly, whatever the blocking.
fn exact_integer_case(
    (m, k, n): (usize, usize, usize),
    beta: f32,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng::from_seed(seed);
    let mut integer = |_, _| rng.below(17) as f32 - 8.0;
    let a = Stored::new(m, k, Layout::RowMajor, &mut integer);
    let b = Stored::new(k, n, Layout::ColMajor, &mut integer);
    let mut c = Stored::new(m, n, Layout::PaddedRowMajor(1), &mut integer);
    let mut expected = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            let sum: i64 = (0..k).map(|p| a.get(i, p) as i64 * b.get(p, j) as i64).sum();
            let old = if beta == 0.0 { 0 } else { beta as i64 * c.get(i, j) as i64 };
            expected[i * n + j] = sum + old;
        }
    }
    sgemm(1.0, a.view(), b.view(), beta, c.view_mut()).unwrap();
    for i in 0..m {
        for j in 0..n {
            prop_assert_eq!(c.get(i, j), expected[i * n + j] as f32, "C[{}, {}]", i, j);
        }
    }
    Ok(())
}

/// Packs B by the layout documented on `PackB`, element by element, from a row-major copy.
struct DocumentedPacker {
    values: Vec<f32>,
    k: usize,
    n: usize,
}

impl PackB for DocumentedPacker {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        assert!(kc <= KC, "kc = {kc} exceeds KC = {KC}");
        assert!(nc <= NC, "nc = {nc} exceeds NC = {NC}");
        assert!(k0 + kc <= self.k, "rows {k0}..{} past k = {}", k0 + kc, self.k);
        assert!(n0 + nc <= self.n, "columns {n0}..{} past n = {}", n0 + nc, self.n);
        assert_eq!(dst.len(), nc.div_ceil(NR) * NR * kc, "packed B length");
        for s in 0..nc.div_ceil(NR) {
            for p in 0..kc {
                for j in 0..NR {
                    let col = s * NR + j;
                    let value =
                        if col < nc { self.values[(k0 + p) * self.n + n0 + col] } else { 0.0 };
                    dst[s * kc * NR + p * NR + j] = value;
                }
            }
        }
    }
}

fn packer_case((m, k, n): (usize, usize, usize), seed: u64) -> Result<(), TestCaseError> {
    let a_values = random_values(seed, m, k);
    let b_values = random_values(seed + 1, k, n);
    let a = Stored::new(m, k, Layout::RowMajor, |i, p| a_values[i * k + p]);
    let b = Stored::new(k, n, Layout::PaddedColMajor(2), |p, j| b_values[p * n + j]);
    let mut strided = Stored::new(m, n, Layout::RowMajor, |_, _| 0.5);
    let mut packed = Stored::new(m, n, Layout::RowMajor, |_, _| 0.5);
    let mut closure = Stored::new(m, n, Layout::RowMajor, |_, _| 0.5);

    sgemm(0.75, a.view(), b.view(), -1.5, strided.view_mut()).unwrap();
    let packer = DocumentedPacker { values: b_values.clone(), k, n };
    sgemm_with_packer(0.75, a.view(), &packer, -1.5, packed.view_mut()).unwrap();
    let b_view = b.view();
    let as_closure = |k0, kc, n0, nc, dst: &mut [f32]| b_view.pack_b(k0, kc, n0, nc, dst);
    sgemm_with_packer(0.75, a.view(), &as_closure, -1.5, closure.view_mut()).unwrap();

    // B stored whole in the packed layout: the GEMM reads its blocks in place.
    let mut stored = vec![f32::NAN; PackedB::packed_len(k, n).unwrap()];
    for p in 0..k {
        for j in 0..n.next_multiple_of(NR) {
            let value = if j < n { b_values[p * n + j] } else { 0.0 };
            stored[PackedB::offset(k, n, p, j)] = value;
        }
    }
    prop_assert!(stored.iter().all(|v| !v.is_nan()), "the layout leaves a gap");
    let in_place = PackedB::new(&stored, k, n).unwrap();
    let mut read_in_place = Stored::new(m, n, Layout::RowMajor, |_, _| 0.5);
    sgemm_with_packer(0.75, a.view(), &in_place, -1.5, read_in_place.view_mut()).unwrap();

    for (index, &value) in strided.data.iter().enumerate() {
        prop_assert_eq!(packed.data[index].to_bits(), value.to_bits(), "packer, index {}", index);
        prop_assert_eq!(closure.data[index].to_bits(), value.to_bits(), "closure, index {}", index);
        prop_assert_eq!(
            read_in_place.data[index].to_bits(),
            value.to_bits(),
            "packed B, index {}",
            index
        );
    }

    // Its copying fallback writes the same blocks as the documented packer.
    let (kc, nc) = (KC.min(k), NC.min(n));
    let mut expected = vec![f32::NAN; nc.next_multiple_of(NR) * kc];
    let mut copied = expected.clone();
    packer.pack_b(0, kc, 0, nc, &mut expected);
    in_place.pack_b(0, kc, 0, nc, &mut copied);
    prop_assert_eq!(bit_patterns(&copied), bit_patterns(&expected), "packed B copy");
    Ok(())
}

/// Returns the bit patterns of `values`, so that NaN compares equal to itself.
fn bit_patterns(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn tiles_case(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    seed: u64,
) -> Result<(), TestCaseError> {
    let a_values = random_values(seed, m, k);
    let b_values = random_values(seed + 1, k, n);
    let a = Stored::new(m, k, Layout::ColMajor, |i, p| a_values[i * k + p]);
    let b = Stored::new(k, n, Layout::RowMajor, |p, j| b_values[p * n + j]);
    let mut c = Stored::new(m, n, Layout::RowMajor, |_, _| f32::NAN);
    sgemm(alpha, a.view(), b.view(), 0.0, c.view_mut()).unwrap();

    let mut assembled = vec![f32::NAN; m * n];
    let mut visits = vec![0u32; m * n];
    let mut bad_tile = None;
    sgemm_tiles(alpha, a.view(), &b.view(), n, |tile| {
        let fits = tile.rows <= MR && tile.cols <= NR && tile.rows > 0 && tile.cols > 0;
        if !fits || tile.row + tile.rows > m || tile.col + tile.cols > n {
            bad_tile = Some((tile.row, tile.col, tile.rows, tile.cols));
            return;
        }
        for i in 0..tile.rows {
            for (j, &value) in tile.row_values(i).iter().enumerate() {
                assert_eq!(value.to_bits(), tile.get(i, j).to_bits());
                let index = (tile.row + i) * n + tile.col + j;
                assembled[index] = value;
                visits[index] += 1;
            }
        }
    })
    .unwrap();

    prop_assert_eq!(bad_tile, None, "tile (row, col, rows, cols) out of range");
    for index in 0..m * n {
        prop_assert_eq!(visits[index], 1, "element {} visited {} times", index, visits[index]);
        prop_assert_eq!(assembled[index].to_bits(), c.data[index].to_bits(), "element {}", index);
    }
    Ok(())
}

/// Shapes larger than the blocks: several k-blocks, A blocks and B blocks, with edges.
#[test]
fn sgemm_large_shapes_match_reference() {
    let cases = [
        // One sample of a DCGAN conv layer: Y[128, 256] = W[128, 1024] * cols[1024, 256].
        ((128, 1024, 256), (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor)),
        // Partial A, B and k blocks at once.
        ((487, 700, 531), (Layout::TransposedView(1), Layout::RowMajor, Layout::RowMajor)),
        // More columns than one B block holds.
        ((13, 300, NC + 37), (Layout::RowMajor, Layout::ColMajor, Layout::PaddedRowMajor(3))),
        // Single row and column, deep reduction.
        ((1, 3000, 1), (Layout::RowMajor, Layout::RowMajor, Layout::RowMajor)),
        ((70, 1, 90), (Layout::ColMajor, Layout::RowMajor, Layout::ColMajor)),
    ];
    for (index, (shape, layouts)) in cases.into_iter().enumerate() {
        run_case(shape, layouts, 0.5, -1.25, 1000 + index as u64).unwrap();
        run_case(shape, layouts, 1.0, 0.0, 2000 + index as u64).unwrap();
    }
}

/// The last sliver of a width that is not a multiple of `NR` is multiplied only over its vectors
/// with valid columns. Every width of it must still give every element, under whole and partial
/// row blocks, with C's rows contiguous or strided.
#[test]
fn last_sliver_widths_are_computed() {
    for r in 1..=NR {
        let n = 2 * NR + r;
        let seed = 100 * r as u64;
        exact_integer_case((2 * MR, 37, n), 0.0, seed).unwrap();
        exact_integer_case((MR + 3, 37, n), 1.0, seed + 1).unwrap();
        let layouts = (Layout::RowMajor, Layout::RowMajor, Layout::ColMajor);
        run_case((MR + 3, 37, n), layouts, 0.5, -1.25, seed + 2).unwrap();
        tiles_case((MR + 3, 37, n), 1.0, seed + 3).unwrap();
        packer_case((MR + 3, 37, n), seed + 4).unwrap();
    }
}

#[test]
fn sgemm_large_integer_shape_is_exact() {
    // Three k-blocks and an A block edge; every partial sum stays below 2^24.
    exact_integer_case((2 * MR + 5, 2 * KC + 17, 3 * NR + 7), 1.0, 7).unwrap();
}

#[test]
fn tiles_cover_several_column_blocks() {
    // m <= k: the tile sums of all m rows exceed TILE_PANEL_BYTES at this n.
    let (m, k) = (600, 610);
    let n = TILE_PANEL_BYTES / (m * 4) + 2 * NR;
    tiles_case((m, k, n), 1.0, 11).unwrap();
    // m > k: the packed B of all k rows exceeds it, and m spans several A blocks.
    let (m, k) = (2 * MC + 40, 2100);
    let n = TILE_PANEL_BYTES / (k * 4) + 2 * NR;
    tiles_case((m, k, n), -0.5, 12).unwrap();
    // m > k with a short reduction: one k-block, several A blocks.
    tiles_case((MC + 220, 600, 70), -0.5, 13).unwrap();
}

#[test]
fn packer_closure_matches_on_large_shape() {
    packer_case((100, 3 * KC + 1, 2 * NR + 3), 5).unwrap();
}

#[test]
fn zero_alpha_ignores_nan_in_operands() {
    let (m, k, n) = (5, 7, 9);
    let a = vec![f32::NAN; m * k];
    let b = vec![f32::INFINITY; k * n];
    let mut c = vec![2.0; m * n];
    let views = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
    sgemm(0.0, views.0, views.1, 3.0, MatMut::row_major(&mut c, m, n).unwrap()).unwrap();
    assert!(c.iter().all(|&value| value == 6.0), "C = {c:?}");
}

#[test]
fn empty_reduction_scales_or_zeroes_c() {
    let (m, n) = (4, 6);
    let empty: [f32; 0] = [];
    let a = MatRef::row_major(&empty, m, 0).unwrap();
    let b = MatRef::row_major(&empty, 0, n).unwrap();
    let mut c = vec![f32::NAN; m * n];
    sgemm(1.0, a, b, 0.0, MatMut::row_major(&mut c, m, n).unwrap()).unwrap();
    assert!(c.iter().all(|&value| value == 0.0), "beta = 0: C = {c:?}");

    let mut c = vec![3.0; m * n];
    sgemm(1.0, a, b, -0.5, MatMut::row_major(&mut c, m, n).unwrap()).unwrap();
    assert!(c.iter().all(|&value| value == -1.5), "beta = -0.5: C = {c:?}");
}

#[test]
fn result_does_not_depend_on_earlier_calls() {
    // The packing buffers are reused per thread; stale contents from a larger call must not
    // change a later result, so compare against a fresh thread.
    let (m, k, n) = (37, 301, 45);
    let a_values = random_values(1, m, k);
    let b_values = random_values(2, k, n);
    let run = || {
        let mut c = vec![0.0; m * n];
        let a = MatRef::row_major(&a_values, m, k).unwrap();
        let b = MatRef::row_major(&b_values, k, n).unwrap();
        sgemm(1.0, a, b, 0.0, MatMut::row_major(&mut c, m, n).unwrap()).unwrap();
        c.iter().map(|value| value.to_bits()).collect::<Vec<_>>()
    };
    let big = vec![f32::NAN; 600 * 600];
    let mut sink = vec![0.0; 600 * 600];
    let big_view = MatRef::row_major(&big, 600, 600).unwrap();
    sgemm(1.0, big_view, big_view, 0.0, MatMut::row_major(&mut sink, 600, 600).unwrap()).unwrap();
    let after_big_call = run();
    let fresh_thread = std::thread::scope(|scope| scope.spawn(run).join().unwrap());
    assert_eq!(after_big_call, fresh_thread);
}

#[test]
fn microtile_width_matches_build() {
    // The AVX-512 build must use 16-lane vectors; a build without it uses 8-lane ones.
    let lanes = if cfg!(target_feature = "avx512f") { 16 } else { 8 };
    assert_eq!(NR % lanes, 0, "NR = {NR} is not a multiple of {lanes} lanes");
    assert!(NR >= 2 * lanes, "NR = {NR} uses fewer than two vectors per row");
}

#[test]
fn short_slice_is_rejected() {
    let data = vec![0.0; 11];
    let error = MatRef::new(&data, 3, 4, 4, 1).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error}");
    assert!(error.to_string().contains("at least 12"), "{error}");
    // Padded rows: the last row needs no padding after it.
    assert!(MatRef::new(&[0.0; 2 * 6 + 4], 3, 4, 6, 1).is_ok());
}

#[test]
fn overflowing_strides_are_rejected() {
    let data = [0.0; 4];
    let error = MatRef::new(&data, 3, 2, usize::MAX / 2, 1).unwrap_err();
    assert!(matches!(error, Error::Overflow { .. }), "{error}");
}

#[test]
fn overlapping_output_is_rejected() {
    let mut data = vec![0.0; 16];
    let error = MatMut::new(&mut data, 3, 3, 2, 1).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { name: "output strides", .. }), "{error}");
    assert!(MatMut::new(&mut data, 3, 3, 0, 1).is_err(), "zero row stride with 3 rows");
    assert!(MatMut::new(&mut data, 1, 3, 0, 1).is_ok(), "one row needs no row stride");
    assert!(MatMut::new(&mut data, 3, 3, 1, 4).is_ok(), "column-major with padding");
}

#[test]
fn oversized_dimensions_are_rejected() {
    // Zero strides let a view claim 2^40 columns over a single element.
    let one = [1.0f32];
    let wide_row = MatRef::new(&one, 1, 1 << 40, 0, 0).unwrap();
    let tall_column = MatRef::new(&one, 1 << 40, 1, 0, 0).unwrap();
    let mut out = [0.0f32];
    let c = MatMut::row_major(&mut out, 1, 1).unwrap();
    let error = sgemm(1.0, wide_row, tall_column, 0.0, c).unwrap_err();
    assert!(error.to_string().contains("matrix size"), "{error}");

    // A packer that reports no shape, so that only the size check can reject the call.
    let a = MatRef::row_major(&one, 1, 1).unwrap();
    let packer = |_: usize, _: usize, _: usize, _: usize, _: &mut [f32]| {};
    let error = sgemm_tiles(1.0, a, &packer, usize::MAX, |_| {}).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { name: "matrix size", .. }), "{error}");
}

#[test]
fn mismatched_dimensions_are_rejected() {
    let data = vec![0.0; 64];
    let mut out = vec![0.0; 64];
    let a = MatRef::row_major(&data, 2, 3).unwrap();
    let b = MatRef::row_major(&data, 4, 5).unwrap();
    let error = sgemm(1.0, a, b, 0.0, MatMut::row_major(&mut out, 2, 5).unwrap()).unwrap_err();
    assert!(error.to_string().contains("rows of B"), "{error}");

    let b = MatRef::row_major(&data, 3, 5).unwrap();
    let error = sgemm(1.0, a, b, 0.0, MatMut::row_major(&mut out, 2, 6).unwrap()).unwrap_err();
    assert!(error.to_string().contains("columns of B"), "{error}");

    let error = sgemm(1.0, a, b, 0.0, MatMut::row_major(&mut out, 3, 5).unwrap()).unwrap_err();
    assert!(error.to_string().contains("rows of A"), "{error}");
}

#[test]
fn packed_b_of_the_wrong_shape_is_rejected() {
    let (m, k, n) = (4, 10, 5);
    let a = vec![1.0; m * k];
    let a_view = MatRef::row_major(&a, m, k).unwrap();
    for (rows, cols) in [(8, 5), (12, 5), (10, 4)] {
        let data = vec![1.0; PackedB::packed_len(rows, cols).unwrap()];
        let b = PackedB::new(&data, rows, cols).unwrap();
        let mut c = vec![0.0; m * 7];
        let c_view = MatMut::row_major(&mut c[..m * n], m, n).unwrap();
        let result = sgemm_with_packer(1.0, a_view, &b, 0.0, c_view);
        assert!(
            matches!(result, Err(Error::InvalidArgument { .. })),
            "B {rows} x {cols} against A {m} x {k} and C {m} x {n}: {result:?}"
        );
    }
    // A strided B passed as a packer is checked the same way.
    let b_values = vec![1.0; 12 * n];
    let b_view = MatRef::row_major(&b_values, 12, n).unwrap();
    let mut c = vec![0.0; m * n];
    let result =
        sgemm_with_packer(1.0, a_view, &b_view, 0.0, MatMut::row_major(&mut c, m, n).unwrap());
    assert!(matches!(result, Err(Error::InvalidArgument { .. })), "strided B: {result:?}");
}

#[test]
fn packed_b_length_is_checked() {
    assert!(matches!(PackedB::new(&[0.0; 10], 3, 5), Err(Error::InvalidArgument { .. })));
    assert!(PackedB::new(&[0.0; 3 * NR], 3, 5).is_ok());
    assert_eq!(PackedB::packed_len(3, usize::MAX - 2), None);
    let overflow = PackedB::new(&[0.0; 96], 3, usize::MAX - 2);
    assert!(matches!(overflow, Err(Error::Overflow { .. })), "{overflow:?}");
    let too_many_rows = PackedB::new(&[0.0; 96], usize::MAX / 2, 5);
    assert!(matches!(too_many_rows, Err(Error::Overflow { .. })), "{too_many_rows:?}");
}
