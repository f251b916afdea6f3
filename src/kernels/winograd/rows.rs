//! The transforms of `tiles.rs` run on a whole row of tiles at once, over contiguous slices, so
//! that each loop becomes vector code.
//!
//! A row of image tiles reads, in each of its three plane rows, every fourth pixel from three
//! starting points. [`split_samples`] therefore rearranges each zero-bordered image row of a
//! group of samples once into six runs (see [`SplitRows`]), in which input tile column `e` of
//! phase `px` sits at the same index for every tile of every sample. A tile row of all the
//! samples is then one contiguous range of columns, `(ty * samples + s) * tile_cols + tx`,
//! however few tiles a row has. Grad-input accumulates into the same layout and
//! [`merge_samples`] adds the runs back into image rows. Every loop evaluates the functions of
//! `tiles.rs` lane by lane, so each value is rounded as there.

use wide::{f32x4, f32x8};

use super::super::packed_gemm::prefetch_lines;

use super::tiles::{input_tile, input_tile_adjoint, output_tile, spread_tile, Lane, POINTS};

/// Runs per padded image row in [`SplitRows`].
const RUNS: usize = 6;

/// The split layout of one image channel of `samples` samples, with `w = 4 * tile_cols`. Each
/// padded row `r` in `0..h + 2` has six runs of `samples * tile_cols` entries. Entry `s *
/// tile_cols + x` of run `q` contains padded pixel `(r, col)` of sample `s`, zero outside the
/// image, where `col` is `4x` (run 0), `4x + 1` (1), `4x + 4` (2), `4x + 5` (3), `4x + 2` (4)
/// or `4x + 3` (5). Runs 2 and 3 are runs 0 and 1 shifted by one tile, so that every tap of
/// a tile is at the tile's own index.
///
/// The rows are stored in one of two orders ([`RowOrder`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct SplitRows {
    /// Image rows.
    pub h: usize,
    /// Tiles across a grid row, a quarter of the image width.
    pub tile_cols: usize,
    /// Samples side by side.
    pub samples: usize,
    /// The order of the rows.
    pub order: RowOrder,
}

/// The order of the padded rows of a [`SplitRows`] layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RowOrder {
    /// Row by row, the six runs of a row side by side: `[r][q][entry]`. The col2im side adds
    /// into the nine runs of each tile row and merges a row's six runs, which this keeps close.
    Natural,
    /// Rows grouped by `r % 4`: `[r % 4][q][r / 4][entry]`, so that run `q` of the rows `r`,
    /// `r + 4`, `r + 8`, ... follow each other ([`SplitRows::every_fourth`]). A tap reads rows
    /// four apart in consecutive tile rows, so one call of the image transform covers every
    /// tile row of a phase.
    ByResidue,
}

impl SplitRows {
    /// Elements of the layout.
    pub fn len(&self) -> usize {
        RUNS * self.rows_per_class() * self.classes() * self.run_len()
    }

    /// Entries of one run.
    pub fn run_len(&self) -> usize {
        self.samples * self.tile_cols
    }

    /// Classes of rows stored apart: 4 residues of `r % 4`, or 1.
    fn classes(&self) -> usize {
        match self.order {
            RowOrder::Natural => 1,
            RowOrder::ByResidue => 4,
        }
    }

    /// Padded rows per class.
    fn rows_per_class(&self) -> usize {
        (self.h + 2).div_ceil(self.classes())
    }

    /// Distance from run `q` to run `q + 1` of the same row.
    pub fn run_stride(&self) -> usize {
        match self.order {
            RowOrder::Natural => self.run_len(),
            RowOrder::ByResidue => self.rows_per_class() * self.run_len(),
        }
    }

    /// Returns the range of run `q` of padded row `r`.
    pub fn run(&self, r: usize, q: usize) -> std::ops::Range<usize> {
        let start = match self.order {
            RowOrder::Natural => (r * RUNS + q) * self.run_len(),
            RowOrder::ByResidue => {
                ((r % 4) * RUNS + q) * self.run_stride() + (r / 4) * self.run_len()
            }
        };
        start..start + self.run_len()
    }

    /// Returns the range of run `q` of the `rows` padded rows `r`, `r + 4`, ..., one after
    /// another, in the [`RowOrder::ByResidue`] order.
    pub fn every_fourth(&self, r: usize, q: usize, rows: usize) -> std::ops::Range<usize> {
        debug_assert_eq!(self.order, RowOrder::ByResidue, "rows four apart are not adjacent");
        let start = self.run(r, q).start;
        start..start + rows * self.run_len()
    }

    /// Returns the runs a tap of phase `px` reads along a padded row: columns `4x + px`, `4x + px + 4`
    /// and `4x + px + 2`, i.e. tile columns `e = 0`, `e = 2` and `e = 1`.
    pub fn phase_runs(px: usize) -> [usize; 3] {
        [px, 2 + px, 4 + px]
    }
}

/// Writes channel planes `[h, w]` of the samples (`plane(s)` for sample `s`) into `split` in the
/// layout of [`SplitRows`].
pub(super) fn split_samples<'a>(
    layout: SplitRows,
    plane: impl Fn(usize) -> &'a [f32],
    split: &mut [f32],
) {
    let (tw, w) = (layout.tile_cols, 4 * layout.tile_cols);
    for r in [0, layout.h + 1] {
        for q in 0..RUNS {
            split[layout.run(r, q)].fill(0.0);
        }
    }
    let run_stride = layout.run_stride();
    // Each sample's plane is a separate short stream that the hardware prefetcher picks up
    // late, so planes are requested two samples ahead.
    for s in 0..layout.samples.min(2) {
        prefetch_lines(plane(s));
    }
    for s in 0..layout.samples {
        let src = plane(s);
        if s + 2 < layout.samples {
            prefetch_lines(plane(s + 2));
        }
        for (y, src) in src.chunks_exact(w).enumerate() {
            // The six runs of padded row `y + 1` for this sample, `run_stride` apart. Plain
            // indexing into one slice: a row of a small image has runs of a few entries, where
            // splitting out six slices and copying whole runs costs more than the copy itself.
            let row =
                &mut split[layout.run(y + 1, 0).start + s * tw..][..(RUNS - 1) * run_stride + tw];
            split_row(src, row, run_stride);
        }
    }
}

/// Writes image row `src` (`4 * tw` pixels) into the six runs of one sample in `row`: run `q`
/// at `q * run_stride`, `tw` entries each (see [`SplitRows`]).
///
/// With AVX-512 a width that is a multiple of 4 tiles takes whole vectors of source pixels at
/// once. The result is the same either way, because both only move values.
#[inline(always)]
fn split_row(src: &[f32], row: &mut [f32], run_stride: usize) {
    #[cfg(target_feature = "avx512f")]
    {
        let tw = src.len() / 4;
        if tw.is_multiple_of(8) {
            return split_row_vectors::<8>(src, row, run_stride);
        } else if tw.is_multiple_of(4) {
            return split_row_vectors::<4>(src, row, run_stride);
        }
    }
    split_row_scalar(src, row, run_stride);
}

/// [`split_row`] one tile at a time.
#[inline(always)]
fn split_row_scalar(src: &[f32], row: &mut [f32], run_stride: usize) {
    let tw = src.len() / 4;
    let at = |q: usize, x: usize| q * run_stride + x;
    // Runs 0, 1, 2, 3, 4, 5: padded columns 4x, 4x + 1, 4x + 4, 4x + 5, 4x + 2, 4x + 3,
    // i.e. image columns 4x - 1, 4x, 4x + 3, 4x + 4, 4x + 1, 4x + 2.
    for x in 0..tw {
        row[at(0, x)] = if x > 0 { src[4 * x - 1] } else { 0.0 };
        row[at(1, x)] = src[4 * x];
        row[at(4, x)] = src[4 * x + 1];
        row[at(5, x)] = src[4 * x + 2];
        row[at(2, x)] = src[4 * x + 3];
        row[at(3, x)] = if x + 1 < tw { src[4 * x + 4] } else { 0.0 };
    }
}

/// [`split_row`] for a row of a multiple of `G` tiles (4 or 8), `G` tiles (`4 * G` pixels, one
/// or two vectors) at a time: one two-source permutation per run gathers every fourth pixel.
#[cfg(target_feature = "avx512f")]
#[inline(always)]
fn split_row_vectors<const G: usize>(src: &[f32], row: &mut [f32], run_stride: usize) {
    use safe_arch::{m512i, permute2_i32_m512i, zeroed_m512i};

    const { assert!(G == 4 || G == 8, "groups of 4 or 8 tiles") };
    let load = |pixels: &[f32]| -> m512i {
        let lanes: [f32; 16] = pixels.try_into().expect("16 pixels");
        m512i::from(lanes.map(f32::to_bits).map(|bits| bits as i32))
    };
    // Lane l of column c takes pixel 4l + c of the group, of the 32 in `low` and `high`.
    let column =
        |c: i32| m512i::from(std::array::from_fn(|l| if l < G { 4 * l as i32 + c } else { 0 }));
    let columns = [0, 1, 2, 3].map(column);
    // Run 0 takes column 3 of the tile before, so its lane 0 comes from the previous group's
    // lane G - 1 (index 16 + G - 1, in the second source). Run 3 takes column 0 of the tile
    // after, so its lane G - 1 comes from the next group's first pixel (the second source).
    let shift_in_previous =
        m512i::from(std::array::from_fn(|l| if l == 0 { 16 + G as i32 - 1 } else { l as i32 - 1 }));
    let shift_in_next = m512i::from(std::array::from_fn(|l| {
        if l + 1 < G {
            l as i32 + 1
        } else if l + 1 == G {
            16
        } else {
            0
        }
    }));
    let store = |vector: m512i, q: usize, x: usize, row: &mut [f32]| {
        let lanes: [i32; 16] = vector.into();
        let values = lanes.map(|bits| f32::from_bits(bits as u32));
        row[q * run_stride + x..][..G].copy_from_slice(&values[..G]);
    };

    let tw = src.len() / 4;
    let mut previous_column3 = zeroed_m512i();
    for (g, group) in src.chunks_exact(4 * G).enumerate() {
        let x = g * G;
        let low = load(&group[..16]);
        let high = if G == 8 { load(&group[16..32]) } else { zeroed_m512i() };
        let [c0, c1, c2, c3] = columns.map(|idx| permute2_i32_m512i(low, idx, high));
        let next = if x + G < tw { src[4 * (x + G)] } else { 0.0 };
        let next = m512i::from([next.to_bits() as i32; 16]);
        store(permute2_i32_m512i(c3, shift_in_previous, previous_column3), 0, x, row);
        store(c0, 1, x, row);
        store(c3, 2, x, row);
        store(permute2_i32_m512i(c0, shift_in_next, next), 3, x, row);
        store(c1, 4, x, row);
        store(c2, 5, x, row);
        previous_column3 = c3;
    }
}

/// Overwrites channel planes `[h, w]` of the samples (`plane(s)` for sample `s`) with the sum
/// of the runs of `split` (layout of [`SplitRows`]) that contain each pixel, plus `bias`.
pub(super) fn merge_samples<'a>(
    layout: SplitRows,
    split: &[f32],
    bias: f32,
    mut plane: impl FnMut(usize) -> &'a mut [f32],
) {
    let (tw, w) = (layout.tile_cols, 4 * layout.tile_cols);
    for s in 0..layout.samples {
        let dst = plane(s);
        for (y, dst) in dst.chunks_exact_mut(w).enumerate() {
            let run = |q: usize| &split[layout.run(y + 1, q)][s * tw..(s + 1) * tw];
            let [a0, a1, a0_next, a1_next, b2, b3] = [0, 1, 2, 3, 4, 5].map(run);
            // Image columns 4x, 4x + 1, 4x + 2 and 4x + 3 (padded 4x + 1 to 4x + 4). Padded
            // column 4x + 1 also receives run 3 of the tile before, and padded column 4x + 4
            // receives run 0 of the tile after.
            let last = tw - 1;
            for x in 0..tw {
                let p = &mut dst[4 * x..4 * x + 4];
                p[0] = if x > 0 { a1[x] + a1_next[x - 1] } else { a1[x] } + bias;
                p[1] = b2[x] + bias;
                p[2] = b3[x] + bias;
                p[3] = if x < last { a0[x + 1] + a0_next[x] } else { a0_next[x] } + bias;
            }
        }
    }
}

/// A group of tiles processed together: one `f32`, or a `wide` vector with one tile per lane.
trait Vector: Lane {
    /// Tiles per value.
    const LANES: usize;
    /// Returns `value` in every lane.
    fn splat(value: f32) -> Self;
    /// Loads `LANES` values from the start of `src`.
    fn load(src: &[f32]) -> Self;
    /// Stores the lanes at the start of `dst`.
    fn store(self, dst: &mut [f32]);
    /// Loads `2 * LANES` values from the start of `src`, split into even and odd positions.
    fn load_pairs(src: &[f32]) -> (Self, Self);
    /// Stores `even` and `odd` interleaved at the start of `dst`.
    fn store_pairs(even: Self, odd: Self, dst: &mut [f32]);
}

impl Vector for f32 {
    const LANES: usize = 1;

    #[inline(always)]
    fn splat(value: f32) -> Self {
        value
    }

    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        src[0]
    }

    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        dst[0] = self;
    }

    #[inline(always)]
    fn load_pairs(src: &[f32]) -> (Self, Self) {
        (src[0], src[1])
    }

    #[inline(always)]
    fn store_pairs(even: Self, odd: Self, dst: &mut [f32]) {
        dst[0] = even;
        dst[1] = odd;
    }
}

macro_rules! vector {
    ($t:ty, $lanes:literal) => {
        impl Vector for $t {
            const LANES: usize = $lanes;

            #[inline(always)]
            fn splat(value: f32) -> Self {
                <$t>::splat(value)
            }

            #[inline(always)]
            fn load(src: &[f32]) -> Self {
                let lanes: [f32; $lanes] = src[..$lanes].try_into().expect("a full vector");
                <$t>::from(lanes)
            }

            #[inline(always)]
            fn store(self, dst: &mut [f32]) {
                dst[..$lanes].copy_from_slice(&self.to_array());
            }

            #[inline(always)]
            fn load_pairs(src: &[f32]) -> (Self, Self) {
                let src = &src[..2 * $lanes];
                let even: [f32; $lanes] = std::array::from_fn(|i| src[2 * i]);
                let odd: [f32; $lanes] = std::array::from_fn(|i| src[2 * i + 1]);
                (<$t>::from(even), <$t>::from(odd))
            }

            #[inline(always)]
            fn store_pairs(even: Self, odd: Self, dst: &mut [f32]) {
                let (even, odd, dst) = (even.to_array(), odd.to_array(), &mut dst[..2 * $lanes]);
                for i in 0..$lanes {
                    dst[2 * i] = even[i];
                    dst[2 * i + 1] = odd[i];
                }
            }
        }
    };
}

vector!(f32x4, 4);
vector!(f32x8, 8);

/// Runs `f::<V>(x)` for `x` in `0..n`, `V::LANES` tiles at a time: eight, then four, then one.
macro_rules! by_lanes {
    ($n:expr, |$x:ident, $v:ident| $body:expr) => {{
        let n = $n;
        let mut $x = 0;
        {
            type $v = f32x8;
            while $x + <$v>::LANES <= n {
                $body;
                $x += <$v>::LANES;
            }
        }
        {
            type $v = f32x4;
            while $x + <$v>::LANES <= n {
                $body;
                $x += <$v>::LANES;
            }
        }
        {
            type $v = f32;
            while $x < n {
                $body;
                $x += <$v>::LANES;
            }
        }
    }};
}

/// Transforms one row of image tiles: `a[j]`, `c[j]` and `b[j]` are the runs of
/// [`SplitRows::phase_runs`] of padded row `4 * ty + py + 2 * j` (tile columns `e = 0, 2, 1`),
/// and `out[xi][i]` receives point `xi` of the tile at index `i`.
#[inline(always)]
pub(super) fn image_row([a, c, b]: [[&[f32]; 3]; 3], out: &mut [&mut [f32]; POINTS]) {
    let n = b[0].len();
    by_lanes!(n, |x, V| {
        let d: [[V; 3]; 3] = std::array::from_fn(|j| {
            [V::load(&a[j][x..]), V::load(&b[j][x..]), V::load(&c[j][x..])]
        });
        let v = input_tile(d);
        for (xi, o) in out.iter_mut().enumerate() {
            v[xi / 3][xi % 3].store(&mut o[x..]);
        }
    });
}

/// Adds the adjoint transform of one row of tiles into runs laid out as in [`image_row`]:
/// `v[xi][i]` is point `xi` of the tile at index `i`.
#[inline(always)]
pub(super) fn image_row_adjoint(v: [&[f32]; POINTS], [a, c, b]: [[&mut [f32]; 3]; 3]) {
    let n = b[0].len();
    by_lanes!(n, |x, V| {
        let d = input_tile_adjoint(std::array::from_fn(|u| {
            std::array::from_fn(|w| V::load(&v[u * 3 + w][x..]))
        }));
        for j in 0..3 {
            (V::load(&a[j][x..]) + d[j][0]).store(&mut a[j][x..]);
            (V::load(&b[j][x..]) + d[j][1]).store(&mut b[j][x..]);
            (V::load(&c[j][x..]) + d[j][2]).store(&mut c[j][x..]);
        }
    });
}

/// Transforms one row of 2x2 grid tiles (`A dY A^T`) from grid rows `r0` and `r1` (`2 *
/// tile_cols` values each) into `out[xi][tx]`.
#[inline(always)]
pub(super) fn grid_row(r0: &[f32], r1: &[f32], out: &mut [&mut [f32]; POINTS]) {
    let n = r0.len() / 2;
    by_lanes!(n, |x, V| {
        let (e0, o0) = V::load_pairs(&r0[2 * x..]);
        let (e1, o1) = V::load_pairs(&r1[2 * x..]);
        let m = spread_tile([[e0, o0], [e1, o1]]);
        for (xi, o) in out.iter_mut().enumerate() {
            m[xi / 3][xi % 3].store(&mut o[x..]);
        }
    });
}

/// Transforms one row of products back (`A^T M A`): `m[xi][tx]` is point `xi` of tile `tx`,
/// and grid rows `y0` and `y1` (`2 * tile_cols` values each) receive the 2x2 tiles plus `bias`.
#[inline(always)]
pub(super) fn output_row(m: [&[f32]; POINTS], bias: f32, y0: &mut [f32], y1: &mut [f32]) {
    let n = y0.len() / 2;
    by_lanes!(n, |x, V| {
        let y = output_tile(std::array::from_fn(|u| {
            std::array::from_fn(|v| V::load(&m[u * 3 + v][x..]))
        }));
        let bias = V::splat(bias);
        V::store_pairs(y[0][0] + bias, y[0][1] + bias, &mut y0[2 * x..]);
        V::store_pairs(y[1][0] + bias, y[1][1] + bias, &mut y1[2 * x..]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_layouts_place_every_run_apart() {
        for order in [RowOrder::Natural, RowOrder::ByResidue] {
            let layout = SplitRows { h: 8, tile_cols: 2, samples: 3, order };
            let mut owner = vec![None; layout.len()];
            for r in 0..layout.h + 2 {
                for q in 0..RUNS {
                    let run = layout.run(r, q);
                    assert_eq!(run.len(), layout.run_len());
                    for i in run {
                        assert_eq!(owner[i], None, "{order:?}: entry {i} of runs {r}/{q}");
                        owner[i] = Some((r, q));
                    }
                    let next_run = layout.run(r, q).start + layout.run_stride();
                    if q + 1 < RUNS {
                        assert_eq!(layout.run(r, q + 1).start, next_run, "{order:?}");
                    }
                }
            }
        }
        let layout = SplitRows { h: 8, tile_cols: 2, samples: 3, order: RowOrder::ByResidue };
        for (r, q) in [(0, 0), (1, 5), (3, 2), (5, 1)] {
            let rows = (layout.h + 2 - r).div_ceil(4);
            let range = layout.every_fourth(r, q, rows);
            let expected: Vec<usize> = (0..rows).flat_map(|i| layout.run(r + 4 * i, q)).collect();
            assert_eq!(range.collect::<Vec<_>>(), expected, "rows {r}, {}, ... run {q}", r + 4);
        }
    }

    #[test]
    fn split_row_matches_scalar_split() {
        for tw in [1, 2, 3, 4, 5, 8, 12, 16, 24] {
            let src: Vec<f32> = (0..4 * tw).map(|i| i as f32 + 0.5).collect();
            let run_len = tw + 3;
            let mut fast = vec![f32::NAN; (RUNS - 1) * run_len + tw];
            let mut scalar = fast.clone();
            split_row(&src, &mut fast, run_len);
            split_row_scalar(&src, &mut scalar, run_len);
            let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&scalar), "tw {tw}");
            // Run 0 starts with the zero left of the image, run 3 ends with the one right of it.
            assert_eq!(scalar[0], 0.0, "tw {tw}");
            assert_eq!(scalar[3 * run_len + tw - 1], 0.0, "tw {tw}");
            assert_eq!(scalar[run_len], src[0], "tw {tw}");
        }
    }
}
