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
#[derive(Clone, Copy, Debug)]
pub(super) struct SplitRows {
    /// Image rows.
    pub h: usize,
    /// Tiles across a grid row, a quarter of the image width.
    pub tile_cols: usize,
    /// Samples side by side.
    pub samples: usize,
}

impl SplitRows {
    /// Elements of the layout.
    pub fn len(&self) -> usize {
        (self.h + 2) * RUNS * self.run_len()
    }

    /// Entries of one run.
    pub fn run_len(&self) -> usize {
        self.samples * self.tile_cols
    }

    /// Returns the range of run `q` of padded row `r`.
    pub fn run(&self, r: usize, q: usize) -> std::ops::Range<usize> {
        let start = (r * RUNS + q) * self.run_len();
        start..start + self.run_len()
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
        split[layout.run(r, 0).start..layout.run(r, RUNS - 1).end].fill(0.0);
    }
    let run_len = layout.run_len();
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
            // The six runs of padded row `y + 1` for this sample, `run_len` apart. Plain indexing
            // into one slice: a row of a small image has runs of a few entries, where splitting
            // out six slices and copying whole runs costs more than the copy itself.
            let row =
                &mut split[layout.run(y + 1, 0).start + s * tw..][..(RUNS - 1) * run_len + tw];
            let at = |q: usize, x: usize| q * run_len + x;
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
