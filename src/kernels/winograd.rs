//! Stride-2 4x4 convolutions with padding 1 as Winograd F(2x2, 2x2) products on phase planes.
//!
//! DCGAN's down- and up-sampling layers have a 4x4 kernel, stride 2 and padding 1, so that the
//! image is twice the grid: `h = 2 * out_h`, `w = 2 * out_w`. Pad the image by one pixel and
//! split it into its four phases (row and column parity) `P[c, py, px][r, s] = x[c, 2r + py - 1,
//! 2s + px - 1]`, each `(out_h + 1) x (out_w + 1)`. Tap `(ky, kx) = (2a + py, 2b + px)` of grid
//! position `(oy, ox)` reads `P[c, py, px][oy + a, ox + b]`, so the convolution is a stride-1
//! 2x2 correlation over `k = 4 * c_in` planes, with row `4 * c + 2 * py + px` of the reduction.
//!
//! Winograd's F(2x2, 2x2) computes a 2x2 tile of that correlation from a
//! 3x3 tile of the planes with 9 products instead of 16. For each of the 9 transformed points
//! `xi`, the reduction over `k` is one GEMM with `U[xi] = G w G^T` as `[c_out, k]` and the
//! transformed tiles `V[xi] = B^T d B` as `[k, tiles]`, so the products cost 9/16 of the direct
//! lowering's. The three passes on a [`ConvGeometry`] are:
//!
//! - `image_to_grid`: `M[xi] = U[xi] * V[xi]`, then `Y = A^T M A` per tile, plus the bias;
//! - `grid_to_image`: `dM[xi] = A dY A^T`, `dV[xi] = U[xi]^T * dM[xi]`, then each `B dV B^T`
//!   added into the image (neighbouring 3x3 tiles overlap by one row or column);
//! - `weight_product`: `dU[xi] += dM[xi] * V[xi]^T` over the batch, then `dW += G^T dU G`.
//!
//! The forward and col2im-side products run one rayon task per chunk of whole samples. A chunk's
//! transformed values take at most 2 MiB, and the number of chunks is rounded up to a multiple
//! of the thread count, so the chunking depends on the thread count. The task transforms its
//! samples, runs the 9 GEMMs against the kernel packed once per call, and transforms back into
//! its own output planes. The weight gradient runs the batch in slices (4 MiB), each transformed
//! by one task per channel and then multiplied by one task per point and block of rows, adding
//! into `dU` slice after slice. Every reduction's partition comes from
//! the geometry, a chunk's outputs depend only on its own samples, and every element is one GEMM
//! sum in fixed blocks, so the results do not depend on the number of threads.
//!
//! # Accuracy
//!
//! The transforms only add and subtract. Write `S` for the same computation carried out on
//! absolute values: `|A^T| (|G| |w| |G^T| * |B^T| |x| |B|) |A|` summed over `k`, plus `|bias|`.
//! A forward output then differs from the exact value by at most `(k + 8) * 2^-24 * S` to first
//! order. Each product carries the rounding of its two transforms (two additions each) and its
//! own, the sum over `k` adds at most `k` roundings, the output transform two and the bias one.
//! The col2im side has `c_out + 13` in place of `k + 8`: its adjoint input transform rounds
//! twice per axis and a pixel sums up to four overlapping tiles. The weight gradient sums one
//! product per tile of the whole batch, `t = n * out_h * out_w / 4` of them, and its bound is
//! `2 * t + 8`. The tests check all three bounds against a double-precision reference on random
//! layers.

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

use rayon::prelude::*;
use wide::f32x8;

use super::disjoint::DisjointSlice;
use super::elementwise::{add_assign, copy_short, transpose};
use super::gemm::{gemm_backend, GemmBackend};
use super::geometry::ConvGeometry;
use super::packed_gemm::{
    sgemm_prepacked, sgemm_with_packer, with_aligned_buffer, AlignedBuffer, MatMut, MatRef,
    PackedA, PackedB, KC, LANES, MR, NR,
};

mod rows;
mod tiles;

use rows::{
    grid_row, image_row, image_row_adjoint, merge_samples, output_row, split_samples, RowOrder,
    SplitRows,
};
use tiles::{output_tile, spread_tile, POINTS};

/// Phases of a stride-2 image: two row parities times two column parities.
const PHASES: usize = 4;

/// Largest transformed operand of one chunk of the batch, in floats (2 MiB), so that it is
/// still in cache when the products read it.
const CHUNK_ELEMENTS: usize = 1 << 19;

/// Largest transformed operand of one slice of the batch in the weight gradient, in floats
/// (4 MiB), so that the transformed image and grid of a slice stay in L3.
const SLICE_ELEMENTS: usize = 1 << 20;

/// Most rows of a weight-gradient product one task takes.
const MAX_BLOCK_ROWS: usize = 256;

/// Minimum number of image and grid channels for which the Winograd path can be taken.
pub const MIN_CHANNELS: usize = 32;

/// Minimum number of image and grid channels for which [`Winograd::Measured`] takes the
/// Winograd path.
pub const MEASURED_CHANNELS: usize = 64;

/// When convolutions whose shape fits run as Winograd products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Winograd {
    /// Never: every product runs on the direct lowering.
    Off,
    /// On the layer sizes where it was measured faster than the direct lowering on the packed
    /// GEMM (see [`winograd_applies`]).
    #[default]
    Measured,
    /// For every product of every shape that fits, layers of 32 to 63 channels included.
    Always,
}

/// The three products a convolution pass reduces to (see the `kernels` module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// `grid = W * cols + bias`: conv forward, transposed-conv grad-input.
    ImageToGrid,
    /// `image = col2im(W^T * grid) + bias`: conv grad-input, transposed-conv forward.
    GridToImage,
    /// `dW += grid * cols^T`: both grad-weights.
    WeightGradient,
}

/// The current [`Winograd`] setting, as its discriminant.
static SETTING: AtomicU8 = AtomicU8::new(Winograd::Measured as u8);

/// Selects when later convolutions, in this process and on every thread, run as Winograd
/// products. [`Winograd::Measured`] is the default.
///
/// The Winograd path runs only under [`GemmBackend::Packed`], for a 4x4 kernel with stride 2,
/// padding 1 and dilation 1 whose image is exactly twice the grid, with even grid sides and at
/// least [`MIN_CHANNELS`] channels on both sides. Its results differ from the direct lowering's
/// in the last bits (see the module doc for the bound), so a run that must repeat another bit
/// for bit uses the same setting.
pub fn set_winograd(setting: Winograd) {
    SETTING.store(setting as u8, Ordering::Relaxed);
}

/// Returns the current [`Winograd`] setting.
pub fn winograd() -> Winograd {
    match SETTING.load(Ordering::Relaxed) {
        x if x == Winograd::Off as u8 => Winograd::Off,
        x if x == Winograd::Always as u8 => Winograd::Always,
        _ => Winograd::Measured,
    }
}

/// Returns whether `product` of a convolution with lowering `g` runs as Winograd products under
/// the current settings.
///
/// [`Winograd::Measured`] takes every product of a layer whose shape fits and whose image and
/// grid both have at least [`MEASURED_CHANNELS`] channels. On the DCGAN layers of that size
/// (batch 64) each such product ran faster than the direct lowering on an AMD Zen 4 core, by
/// 1.25-1.66x on one thread and 1.16-1.78x on two (`docs/performance.md`). On an Intel AVX-512
/// core all but one did, by 1.02-1.70x and 0.94-1.73x (`docs/performance-intel.md`). Narrower
/// layers were not measured alone, and on the MNIST default model the one 32-channel layer made
/// a step slower.
pub fn winograd_applies(g: &ConvGeometry, product: Product) -> bool {
    if gemm_backend() != GemmBackend::Packed || !fits(g) {
        return false;
    }
    match (winograd(), product) {
        (Winograd::Off, _) => false,
        (Winograd::Always, _) => true,
        (Winograd::Measured, _) => g.c_in.min(g.c_out) >= MEASURED_CHANNELS,
    }
}

/// Returns whether `g` has the shape the Winograd path handles.
fn fits(g: &ConvGeometry) -> bool {
    (g.k_h, g.k_w) == (4, 4)
        && g.stride == [2, 2]
        && g.pad == [1, 1]
        && g.dilation == [1, 1]
        && (g.h, g.w) == (2 * g.out_h, 2 * g.out_w)
        && g.out_h >= 2
        && g.out_w >= 2
        && g.out_h.is_multiple_of(2)
        && g.out_w.is_multiple_of(2)
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
}

thread_local! {
    /// Packed transformed kernel, reused across calls on this thread.
    static PACKED_KERNEL: Cell<Option<PackedA>> = const { Cell::new(None) };
    /// Transformed image tiles of one slice, reused across calls on this thread.
    static IMAGE_TILES: AlignedBuffer = const { Cell::new(Vec::new()) };
    /// Transformed grid tiles of one slice, reused across calls on this thread.
    static GRID_TILES: AlignedBuffer = const { Cell::new(Vec::new()) };
    /// Transformed weight gradient, reused across calls on this thread.
    static KERNEL_GRADIENT: AlignedBuffer = const { Cell::new(Vec::new()) };
    /// A work item's product block, reused across items on this thread.
    static BLOCK: AlignedBuffer = const { Cell::new(Vec::new()) };
    /// One image channel in the split layout, reused across tasks on this thread.
    static PLANE: AlignedBuffer = const { Cell::new(Vec::new()) };
    /// Grid or output rows of a group of samples side by side, reused on this thread.
    static GRID_ROWS: AlignedBuffer = const { Cell::new(Vec::new()) };
    /// One transformed row of tiles per point, before it is copied into a packed operand.
    static POINT_ROWS: AlignedBuffer = const { Cell::new(Vec::new()) };
}

/// The tile layout of one call, from the geometry alone.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    /// Tiles down and across one grid plane: `out_h / 2` and `out_w / 2`.
    tile_rows: usize,
    tile_cols: usize,
}

impl Tiling {
    fn new(g: &ConvGeometry) -> Self {
        debug_assert!(fits(g), "no Winograd tiling for {g:?}");
        Tiling {
            n: g.n,
            c_in: g.c_in,
            c_out: g.c_out,
            h: g.h,
            w: g.w,
            out_h: g.out_h,
            out_w: g.out_w,
            tile_rows: g.out_h / 2,
            tile_cols: g.out_w / 2,
        }
    }

    /// Rows of the reduction: `4 * c_in`, row `4 * c + phase`.
    fn k(&self) -> usize {
        PHASES * self.c_in
    }

    /// Tiles of one sample, the columns it adds to a product.
    fn tiles(&self) -> usize {
        self.tile_rows * self.tile_cols
    }

    /// Cuts the batch into slices whose transformed image and grid each stay within
    /// [`SLICE_ELEMENTS`], so that a weight-gradient product sums over many columns at once.
    fn slices(&self) -> impl Iterator<Item = Range<usize>> {
        let per_sample = POINTS * self.k().max(self.c_out) * self.tiles();
        batch_parts(self.n, (SLICE_ELEMENTS / per_sample).max(1))
    }

    /// Cuts the batch into chunks of whole samples, in units of samples whose tiles fill whole
    /// vectors of microtile columns ([`LANES`]).
    ///
    /// A chunk keeps one transformed operand of `depth` rows within [`CHUNK_ELEMENTS`]. Within
    /// that, chunks are as few and as large as possible, so each row of the kernel serves as
    /// many columns as possible. Their count is a multiple of rayon's thread count (or one
    /// chunk per unit, for a batch of fewer units) and their sizes differ by at most one unit,
    /// so the threads get equal shares. Every output column depends only on its own sample, so
    /// the chunking changes no result.
    ///
    /// Units of whole vectors rather than whole slivers ([`NR`]) waste nothing, because the GEMM
    /// multiplies a partial last sliver only over its vectors with valid columns.
    fn chunks(&self, depth: usize) -> impl Iterator<Item = Range<usize>> {
        let tiles = self.tiles();
        let unit = LANES / gcd(LANES, tiles);
        let max_units = (CHUNK_ELEMENTS / (POINTS * depth * tiles * unit)).max(1);
        let units = self.n.div_ceil(unit);
        let threads = rayon::current_num_threads().max(1);
        let count = units.div_ceil(max_units).next_multiple_of(threads).min(units);
        let n = self.n;
        (0..count).map(move |i| {
            let start = i * units / count * unit;
            let end = (i + 1) * units / count * unit;
            start.min(n)..end.min(n)
        })
    }
}

/// Cuts `0..n` into consecutive ranges of `samples` (the last one shorter).
fn batch_parts(n: usize, samples: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n.div_ceil(samples)).map(move |i| i * samples..((i + 1) * samples).min(n))
}

/// Returns the greatest common divisor of `a` and `b`.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Returns the transformed kernel `U = G w G^T` of [`MR`] phase kernels at once, one per lane,
/// where `tap(a, b)` is tap `(a, b)` of each lane's 2x2 phase kernel. Tap `(a, b)` of phase
/// `2 * py + px` of the kernel from channel `c` to output channel `o` is weight element `[o, c,
/// 2a + py, 2b + px]`.
#[inline(always)]
fn kernel_columns(tap: impl Fn(usize, usize) -> Column) -> [[Column; 3]; 3] {
    spread_tile([[tap(0, 0), tap(0, 1)], [tap(1, 0), tap(1, 1)]])
}

/// Writes point `xi` of `u` into column `p` of sliver `xi` of `slivers`, for every point.
#[inline(always)]
fn store_columns(slivers: &mut [&mut [f32]; POINTS], p: usize, u: &[[Column; 3]; 3]) {
    for (xi, sliver) in slivers.iter_mut().enumerate() {
        let column: &mut [f32; MR] = (&mut sliver[p * MR..][..MR]).try_into().expect("MR rows");
        *column = u[xi / 3][xi % 3].0;
    }
}

/// Writes the transformed kernel `U[xi] = G w G^T` into `packed`, straight in the layout of
/// [`PackedA`], and returns the rows of one point's block.
///
/// With `transposed == false`, A is `[POINTS * rows, k]` with point `xi`, output channel `o`
/// at row `xi * rows + o` and column `4c + phase`, where `rows` is `c_out` rounded up to whole
/// slivers of four microtile rows. Otherwise A is `[POINTS * rows, c_out]` with row `xi * rows +
/// 4c + phase`, column `o`, and `rows` is `k` rounded up the same way. Padding rows are zero.
/// One rayon task writes one sliver ([`MR`] rows) of every point, in every k-block.
fn pack_kernel(t: &Tiling, weight: &[f32], transposed: bool, packed: &mut PackedA) -> usize {
    let k = t.k();
    let (rows, cols) = if transposed { (k, t.c_out) } else { (t.c_out, k) };
    let rows_padded = rows.next_multiple_of(PHASES * MR);
    let m = POINTS * rows_padded;
    let empty = PackedA::from_layout(Vec::new(), 0, 0);
    let mut data = std::mem::replace(packed, empty).into_data();
    // The loop below writes every element of the first `m * cols`, so the storage only grows.
    // Shrinking it would make the next, larger kernel zero the difference first.
    if data.len() < m * cols {
        data.resize(m * cols, 0.0);
    }

    let out = DisjointSlice::new(&mut data[..m * cols]);
    let blocks = cols.div_ceil(KC);
    (0..rows_padded / MR).into_par_iter().for_each(|g| {
        // Sliver `g` of each point, in each k-block: `[kc][MR]` floats from `m * k0`.
        let region = |xi: usize, q: usize| {
            let (k0, kc) = (q * KC, KC.min(cols - q * KC));
            let start = m * k0 + ((xi * rows_padded) / MR + g) * kc * MR;
            start..start + kc * MR
        };
        // SAFETY: task `g` alone writes sliver `g` of each point's rows, in every k-block.
        let mut slivers: Vec<[&mut [f32]; POINTS]> = (0..blocks)
            .map(|q| std::array::from_fn(|xi| unsafe { out.range_mut(region(xi, q)) }))
            .collect();

        let first_row = g * MR;
        if !transposed {
            // Row r: output channel first_row + r; column 4c + phase. The MR rows of one
            // column are contiguous. Each channel's 16 taps of the sliver's output channels are
            // copied tap-major, and each phase is transformed with those channels as lanes.
            let lanes = MR.min(t.c_out - first_row.min(t.c_out));
            let mut taps = [Column::default(); 16];
            for c in 0..t.c_in {
                for r in 0..lanes {
                    let src: &[f32; 16] = weight[((first_row + r) * t.c_in + c) * 16..][..16]
                        .try_into()
                        .expect("16 taps");
                    for (tap, &value) in taps.iter_mut().zip(src) {
                        tap.0[r] = value;
                    }
                }
                let (q, p) = ((PHASES * c) / KC, (PHASES * c) % KC);
                for phase in 0..PHASES {
                    let (py, px) = (phase / 2, phase % 2);
                    let u = kernel_columns(|a, b| taps[4 * (2 * a + py) + 2 * b + px]);
                    store_columns(&mut slivers[q], p + phase, &u);
                }
            }
        } else {
            // Row r: 4c + phase = first_row + r; column o. The MR rows of one column are
            // contiguous, so each output channel is transformed with the sliver's rows as lanes,
            // zero past row `k`.
            for o in 0..t.c_out {
                let (q, p) = (o / KC, o % KC);
                let u = kernel_columns(|a, b| {
                    Column(std::array::from_fn(|r| {
                        let (c, phase) = ((first_row + r) / PHASES, (first_row + r) % PHASES);
                        let (py, px) = (phase / 2, phase % 2);
                        let tap = 4 * (2 * a + py) + 2 * b + px;
                        if c < t.c_in {
                            weight[(o * t.c_in + c) * 16 + tap]
                        } else {
                            0.0
                        }
                    }))
                });
                store_columns(&mut slivers[q], p, &u);
            }
        }
    });
    *packed = PackedA::from_layout(data, m, cols);
    rows_padded
}

/// The values of one column of an A sliver, one per row, added and subtracted lane by lane.
#[derive(Clone, Copy, Debug, Default)]
struct Column([f32; MR]);

impl std::ops::Add for Column {
    type Output = Column;

    #[inline(always)]
    fn add(self, other: Column) -> Column {
        Column(std::array::from_fn(|r| self.0[r] + other.0[r]))
    }
}

impl std::ops::Sub for Column {
    type Output = Column;

    #[inline(always)]
    fn sub(self, other: Column) -> Column {
        Column(std::array::from_fn(|r| self.0[r] - other.0[r]))
    }
}

/// Runs `f` on this thread's packed-kernel storage.
fn with_packed_kernel<R>(f: impl FnOnce(&mut PackedA) -> R) -> R {
    let mut packed = PACKED_KERNEL
        .take()
        .unwrap_or_else(|| PackedA::new(MatRef::from_checked(&[], [0, 0], [0, 1])));
    let result = f(&mut packed);
    PACKED_KERNEL.set(Some(packed));
    result
}

/// Elements `at + xi * stride..at + xi * stride + len` of `buffer` for every point `xi`.
fn point_rows(buffer: &mut [f32], at: usize, stride: usize, len: usize) -> [&mut [f32]; POINTS] {
    let mut rows = buffer[at..].chunks_mut(stride).map(|row| &mut row[..len]);
    std::array::from_fn(|_| rows.next().expect("a row for every point"))
}

/// Returns the split layout of one image channel of `samples` samples (see `rows.rs`).
fn split_rows(t: &Tiling, samples: usize, order: RowOrder) -> SplitRows {
    SplitRows { h: t.h, tile_cols: t.tile_cols, samples, order }
}

/// The layout of a transform's output `[POINTS, rows, columns]`, with column `(ty *
/// samples.len() + b - samples.start) * tile_cols + tx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// Row-major matrices, written by one rayon task per channel: the weight gradient's
    /// operands, which it packs transposed.
    RowMajor,
    /// Each point's matrix in the layout of [`PackedB`], written on the calling thread: the B
    /// operands of the forward and col2im-side products, which the GEMM then reads in place.
    Packed,
}

/// Floats of a `[rows, columns]` matrix in the layout of [`PackedB`], for sizes that come from
/// a checked geometry.
fn packed_len(rows: usize, columns: usize) -> usize {
    PackedB::packed_len(rows, columns).expect("a checked geometry's operand fits in memory")
}

/// Copies `rows [POINTS, run_len]`, one transformed row of tiles per point, into row `row` of
/// each point's `[depth, columns]` matrix in the layout of [`PackedB`], from column `first`.
///
/// The image transform writes a whole run into `rows` and then copies it piece by piece. When
/// it transformed each piece of a sliver (at most [`NR`] columns) in place, setting up nine input
/// and nine output rows per piece cost more than the arithmetic. The copies made the dcgan32 D2
/// forward 12-17% faster. The grid transform, with two input rows, measured no gain from them.
fn scatter_packed(
    rows: &[f32],
    (depth, columns, row): (usize, usize, usize),
    first: usize,
    points: &mut [&mut [f32]; POINTS],
) {
    let run_len = rows.len() / POINTS;
    for (point, values) in points.iter_mut().zip(rows.chunks_exact(run_len)) {
        sliver_pieces(first, run_len, |piece| {
            let at = PackedB::offset(depth, columns, row, first + piece.start);
            copy_short(&mut point[at..at + piece.len()], &values[piece]);
        });
    }
}

/// Calls `f(x0..x1)` for the pieces of a run of `len` columns from column `first` that stay
/// within one sliver of [`NR`] columns of the packed layout, with `x0` and `x1` relative to
/// `first`.
fn sliver_pieces(first: usize, len: usize, mut f: impl FnMut(Range<usize>)) {
    let mut x = 0;
    while x < len {
        let end = (x + NR - (first + x) % NR).min(len);
        f(x..end);
        x = end;
    }
}

/// Zeroes the padding columns `columns..` of the last sliver of every row of each packed point
/// matrix in `points`, each `[rows, columns]`.
fn zero_padding(points: &mut [f32], rows: usize, columns: usize) {
    let padded = columns.next_multiple_of(NR);
    if padded == columns {
        return;
    }
    for point in points.chunks_exact_mut(packed_len(rows, columns)) {
        for row in 0..rows {
            let at = PackedB::offset(rows, columns, row, columns);
            point[at..at + padded - columns].fill(0.0);
        }
    }
}

/// Transforms the image tiles of `samples` into `v [POINTS, k, columns]` laid out as `output`.
fn transform_image(
    t: &Tiling,
    image: &[f32],
    samples: Range<usize>,
    v: &mut [f32],
    output: Output,
) {
    let (k, columns) = (t.k(), samples.len() * t.tiles());
    let channel = |c: usize, points: &mut [&mut [f32]; POINTS]| {
        let len = split_rows(t, samples.len(), RowOrder::ByResidue).len();
        with_aligned_buffer(&PLANE, len, |plane| {
            transform_image_channel(t, image, samples.clone(), c, (points, output), plane);
        });
    };
    match output {
        Output::RowMajor => {
            let out = DisjointSlice::new(v);
            (0..t.c_in).into_par_iter().for_each(|c| {
                let rows = |xi: usize| {
                    (xi * k + PHASES * c) * columns..(xi * k + PHASES * (c + 1)) * columns
                };
                // SAFETY: task `c` alone writes rows `4 * c..4 * c + 4` of each point's matrix.
                let mut points = std::array::from_fn(|xi| unsafe { out.range_mut(rows(xi)) });
                channel(c, &mut points);
            });
        }
        Output::Packed => {
            let len = packed_len(k, columns);
            zero_padding(&mut v[..POINTS * len], k, columns);
            for c in 0..t.c_in {
                channel(c, &mut point_rows(v, 0, len, len));
            }
        }
    }
}

/// Transforms image channel `c` of `samples` into rows `4 * c..4 * c + 4` of each point's
/// matrix, using `plane` as the split plane. With [`Output::RowMajor`], `points[xi]` contains just
/// those rows, `[4, columns]`. With [`Output::Packed`], it is the whole packed `[k, columns]`.
fn transform_image_channel(
    t: &Tiling,
    image: &[f32],
    samples: Range<usize>,
    c: usize,
    (points, output): (&mut [&mut [f32]; POINTS], Output),
    plane: &mut [f32],
) {
    let (plane_len, columns) = (t.h * t.w, samples.len() * t.tiles());
    let layout = split_rows(t, samples.len(), RowOrder::ByResidue);
    let sample_plane =
        |s: usize| &image[((samples.start + s) * t.c_in + c) * plane_len..][..plane_len];
    split_samples(layout, sample_plane, plane);
    for phase in 0..PHASES {
        let (py, px) = (phase / 2, phase % 2);
        // Tile row `ty` reads padded rows `4 * ty + py + 2 * j`, so every tile row of the phase
        // is one contiguous range of each run, in the order of the output columns.
        let runs = SplitRows::phase_runs(px).map(|q| {
            std::array::from_fn(|j| &plane[layout.every_fourth(py + 2 * j, q, t.tile_rows)])
        });
        match output {
            Output::RowMajor => {
                let at = phase * columns;
                let mut row = points.each_mut().map(|p| &mut p[at..at + columns]);
                image_row(runs, &mut row);
            }
            Output::Packed => {
                with_aligned_buffer(&POINT_ROWS, POINTS * columns, |rows| {
                    image_row(runs, &mut point_rows(rows, 0, columns, columns));
                    let row = PHASES * c + phase;
                    scatter_packed(rows, (t.k(), columns, row), 0, points);
                });
            }
        }
    }
}

/// Transforms the grid tiles of `samples` into `dm [POINTS, c_out, columns]` (`A dY A^T`), with
/// the columns of [`transform_image`], laid out as `output`.
fn transform_grid(t: &Tiling, grid: &[f32], samples: Range<usize>, dm: &mut [f32], output: Output) {
    let columns = samples.len() * t.tiles();
    match output {
        Output::RowMajor => {
            let out = DisjointSlice::new(dm);
            (0..t.c_out).into_par_iter().for_each(|o| {
                let row =
                    |xi: usize| (xi * t.c_out + o) * columns..(xi * t.c_out + o + 1) * columns;
                // SAFETY: task `o` alone writes row `o` of each point's matrix.
                let mut points = std::array::from_fn(|xi| unsafe { out.range_mut(row(xi)) });
                transform_grid_channel(t, grid, samples.clone(), o, (&mut points, output));
            });
        }
        Output::Packed => {
            let len = packed_len(t.c_out, columns);
            zero_padding(&mut dm[..POINTS * len], t.c_out, columns);
            for o in 0..t.c_out {
                let mut points = point_rows(dm, 0, len, len);
                transform_grid_channel(t, grid, samples.clone(), o, (&mut points, output));
            }
        }
    }
}

/// Transforms grid channel `o` of `samples` into row `o` of each point's matrix. With
/// [`Output::RowMajor`], `points[xi]` contains just that row, `[columns]`. With
/// [`Output::Packed`], it is the whole packed `[c_out, columns]`.
fn transform_grid_channel(
    t: &Tiling,
    grid: &[f32],
    samples: Range<usize>,
    o: usize,
    (points, output): (&mut [&mut [f32]; POINTS], Output),
) {
    let (plane_len, width, samples_len) = (t.out_h * t.out_w, t.out_w, samples.len());
    let (run_len, columns) = (samples_len * t.tile_cols, samples_len * t.tiles());
    with_aligned_buffer(&GRID_ROWS, 2 * samples_len * width, |rows| {
        let (r0, r1) = rows.split_at_mut(samples_len * width);
        for ty in 0..t.tile_rows {
            // Grid rows 2 * ty and 2 * ty + 1 of every sample, side by side.
            for (s, b) in samples.clone().enumerate() {
                let plane = &grid[(b * t.c_out + o) * plane_len..][..plane_len];
                copy_short(&mut r0[s * width..][..width], &plane[2 * ty * width..][..width]);
                copy_short(&mut r1[s * width..][..width], &plane[(2 * ty + 1) * width..][..width]);
            }
            let first = ty * run_len;
            match output {
                Output::RowMajor => {
                    let mut row = points.each_mut().map(|p| &mut p[first..first + run_len]);
                    grid_row(r0, r1, &mut row);
                }
                Output::Packed => sliver_pieces(first, run_len, |piece| {
                    let at = PackedB::offset(t.c_out, columns, o, first + piece.start);
                    let mut row = points.each_mut().map(|p| &mut p[at..at + piece.len()]);
                    let pairs = 2 * piece.start..2 * piece.end;
                    grid_row(&r0[pairs.clone()], &r1[pairs], &mut row);
                }),
            }
        }
    });
}

/// Multiplies the packed kernel by `operand [POINTS, depth, columns]`, each point's matrix in the
/// layout of [`PackedB`], into `block [POINTS, rows_padded, columns]`, one GEMM per point.
fn block_products(
    packed: &PackedA,
    rows_padded: usize,
    (operand, depth, columns): (&[f32], usize, usize),
    block: &mut [f32],
) {
    let len = packed_len(depth, columns);
    for (xi, product) in block.chunks_exact_mut(rows_padded * columns).enumerate() {
        let b = PackedB::new(&operand[xi * len..][..len], depth, columns)
            .unwrap_or_else(|e| panic!("winograd: packed_gemm rejected a checked operand: {e}"));
        let c = MatMut::from_checked(product, [rows_padded, columns], [columns, 1]);
        let a_rows = xi * rows_padded..(xi + 1) * rows_padded;
        sgemm_prepacked(1.0, packed, a_rows, &b, 0.0, c)
            .unwrap_or_else(|e| panic!("winograd: packed_gemm rejected checked views: {e}"));
    }
}

/// Packs the block `[p0..p0 + kc, n0..n0 + nc]` of `B = V^T` into `dst` in the sliver layout of
/// [`PackB`](super::packed_gemm::PackB), where `v [_, columns]` is row-major: sliver `s` is
/// the transpose of rows `n0 + s * NR..` (columns `p0..p0 + kc`) of `v`, zero past `n0 + nc`.
fn pack_transposed(v: &[f32], columns: usize, [p0, kc, n0, nc]: [usize; 4], dst: &mut [f32]) {
    for (s, sliver) in dst.chunks_exact_mut(kc * NR).enumerate() {
        let first = n0 + s * NR;
        let width = NR.min(n0 + nc - first);
        transpose((&v[first * columns + p0..], columns), [width, kc], (sliver, NR));
        if width < NR {
            for row in sliver.chunks_exact_mut(NR) {
                row[width..].fill(0.0);
            }
        }
    }
}

/// Returns row `row`, columns `columns` of every point of `block [POINTS, rows, block_columns]`.
fn block_rows(block: &[f32], rows: usize, row: usize, columns: Range<usize>) -> [&[f32]; POINTS] {
    let block_columns = block.len() / (POINTS * rows);
    std::array::from_fn(|xi| &block[(xi * rows + row) * block_columns..][columns.clone()])
}

/// `grid = W * cols + bias` (conv forward, transposed-conv grad-input) for a geometry where
/// [`winograd_applies`] holds, overwriting `grid [n, c_out, out_h, out_w]` from `image [n, c_in,
/// h, w]`, `weight [c_out, c_in, 4, 4]` and an optional `bias [c_out]`.
pub(crate) fn image_to_grid(
    g: &ConvGeometry,
    image: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    grid: &mut [f32],
) {
    let t = Tiling::new(g);
    let (k, tiles, plane_len, tw) = (t.k(), t.tiles(), t.out_h * t.out_w, t.tile_cols);
    with_packed_kernel(|packed| {
        // U [POINTS, c_out, k], packed.
        let rows_padded = pack_kernel(&t, weight, false, packed);
        let out = DisjointSlice::new(grid);
        let chunks: Vec<Range<usize>> = t.chunks(k.max(rows_padded)).collect();
        chunks.into_par_iter().for_each(|samples| {
            let columns = samples.len() * tiles;
            let v_len = POINTS * packed_len(k, columns);
            with_aligned_buffer(&IMAGE_TILES, v_len, |v| {
                // V [POINTS, k, columns], packed.
                transform_image(&t, image, samples.clone(), v, Output::Packed);

                // M = U * V [POINTS, c_out, columns], then Y = A^T M A plus the bias.
                with_aligned_buffer(&BLOCK, POINTS * rows_padded * columns, |m| {
                    block_products(packed, rows_padded, (v, k, columns), m);
                    let (width, run_len) = (t.out_w, samples.len() * tw);
                    with_aligned_buffer(&GRID_ROWS, 2 * samples.len() * width, |rows| {
                        let (y0, y1) = rows.split_at_mut(samples.len() * width);
                        for o in 0..t.c_out {
                            let bias = bias.map_or(0.0, |bias| bias[o]);
                            for ty in 0..t.tile_rows {
                                // Grid rows 2 * ty and 2 * ty + 1 of every sample, side by side.
                                let first = ty * run_len;
                                let m = block_rows(m, rows_padded, o, first..first + run_len);
                                output_row(m, bias, y0, y1);
                                for (s, b) in samples.clone().enumerate() {
                                    let at = (b * t.c_out + o) * plane_len + 2 * ty * width;
                                    // SAFETY: plane (b, o) belongs to this chunk of samples
                                    // alone, and this borrow ends before the next.
                                    let dst = unsafe { out.range_mut(at..at + 2 * width) };
                                    copy_short(&mut dst[..width], &y0[s * width..][..width]);
                                    copy_short(&mut dst[width..], &y1[s * width..][..width]);
                                }
                            }
                        }
                    });
                });
            });
        });
    });
}

/// `image = col2im(W^T * grid) + bias` (conv grad-input, transposed-conv forward) for a
/// geometry where [`winograd_applies`] holds, overwriting `image [n, c_in, h, w]` from `grid
/// [n, c_out, out_h, out_w]`, `weight [c_out, c_in, 4, 4]` and an optional `bias [c_in]`.
pub(crate) fn grid_to_image(
    g: &ConvGeometry,
    grid: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    image: &mut [f32],
) {
    let t = Tiling::new(g);
    let (tiles, plane_len) = (t.tiles(), t.h * t.w);
    with_packed_kernel(|packed| {
        // U^T [POINTS, k, c_out], packed.
        let rows_padded = pack_kernel(&t, weight, true, packed);
        let out = DisjointSlice::new(image);
        let chunks: Vec<Range<usize>> = t.chunks(t.c_out.max(rows_padded)).collect();
        chunks.into_par_iter().for_each(|samples| {
            let columns = samples.len() * tiles;
            let dm_len = POINTS * packed_len(t.c_out, columns);
            with_aligned_buffer(&GRID_TILES, dm_len, |dm| {
                // dM [POINTS, c_out, columns], packed.
                transform_grid(&t, grid, samples.clone(), dm, Output::Packed);

                // dV = U^T * dM [POINTS, k, columns], then B dV B^T added into split planes
                // and merged into the image with the bias.
                with_aligned_buffer(&BLOCK, POINTS * rows_padded * columns, |dv| {
                    block_products(packed, rows_padded, (dm, t.c_out, columns), dv);
                    let layout = split_rows(&t, samples.len(), RowOrder::Natural);
                    let run_len = layout.run_len();
                    with_aligned_buffer(&PLANE, layout.len(), |plane| {
                        for c in 0..t.c_in {
                            plane.fill(0.0);
                            for phase in 0..PHASES {
                                let (py, px) = (phase / 2, phase % 2);
                                for ty in 0..t.tile_rows {
                                    let first = ty * run_len;
                                    let row = PHASES * c + phase;
                                    let v =
                                        block_rows(dv, rows_padded, row, first..first + run_len);
                                    let [qa, qc, qb] = SplitRows::phase_runs(px);
                                    let run =
                                        |q: usize, j: usize| layout.run(4 * ty + py + 2 * j, q);
                                    let [a0, a1, a2, c0, c1, c2, b0, b1, b2] = plane
                                        .get_disjoint_mut([
                                            run(qa, 0),
                                            run(qa, 1),
                                            run(qa, 2),
                                            run(qc, 0),
                                            run(qc, 1),
                                            run(qc, 2),
                                            run(qb, 0),
                                            run(qb, 1),
                                            run(qb, 2),
                                        ])
                                        .expect("nine distinct runs");
                                    image_row_adjoint(
                                        v,
                                        [[a0, a1, a2], [c0, c1, c2], [b0, b1, b2]],
                                    );
                                }
                            }
                            let bias = bias.map_or(0.0, |bias| bias[c]);
                            merge_samples(layout, plane, bias, |s| {
                                let at = ((samples.start + s) * t.c_in + c) * plane_len;
                                // SAFETY: plane (b, c) belongs to this chunk of samples alone,
                                // and `merge_samples` drops each borrow before the next.
                                unsafe { out.range_mut(at..at + plane_len) }
                            });
                        }
                    });
                });
            });
        });
    });
}

/// `dweight += sum over the batch of grid * cols^T` (both grad-weights) for a geometry where
/// [`winograd_applies`] holds, from `image [n, c_in, h, w]` and `grid [n, c_out, out_h, out_w]`
/// into `dweight [c_out, c_in, 4, 4]`.
///
/// The slices of the batch run one after another, each adding into `dU` in slice order. In a
/// slice, one task per image or grid channel transforms, then one task per point and block of
/// rows multiplies.
pub(crate) fn weight_product(g: &ConvGeometry, image: &[f32], grid: &[f32], dweight: &mut [f32]) {
    let t = Tiling::new(g);
    let (k, tiles) = (t.k(), t.tiles());
    with_aligned_buffer(&KERNEL_GRADIENT, POINTS * t.c_out * k, |du| {
        // dU [POINTS, c_out, k], summed slice after slice.
        du.fill(0.0);
        for samples in t.slices() {
            let columns = samples.len() * tiles;
            with_aligned_buffer(&IMAGE_TILES, POINTS * k * columns, |v| {
                with_aligned_buffer(&GRID_TILES, POINTS * t.c_out * columns, |dm| {
                    rayon::join(
                        || transform_image(&t, image, samples.clone(), v, Output::RowMajor),
                        || transform_grid(&t, grid, samples.clone(), dm, Output::RowMajor),
                    );

                    // dU[xi] += dM[xi] * V[xi]^T, one task per point and block of rows. B =
                    // V[xi]^T is packed by transposing blocks of V[xi] [k, columns].
                    let row_blocks = t.c_out.div_ceil(MAX_BLOCK_ROWS).max(2);
                    let step = t.c_out.div_ceil(row_blocks);
                    let tasks = du.par_chunks_mut(t.c_out * k).enumerate().flat_map(|(xi, du)| {
                        du.par_chunks_mut(step * k)
                            .enumerate()
                            .map(move |(i, dst)| (xi, i * step, dst))
                    });
                    tasks.for_each(|(xi, r0, dst)| {
                        let rows = dst.len() / k;
                        let a = MatRef::from_checked(
                            &dm[(xi * t.c_out + r0) * columns..],
                            [rows, columns],
                            [columns, 1],
                        );
                        let v = &v[xi * k * columns..][..k * columns];
                        let c = MatMut::from_checked(dst, [rows, k], [k, 1]);
                        let b = |p0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]| {
                            pack_transposed(v, columns, [p0, kc, n0, nc], dst);
                        };
                        sgemm_with_packer(1.0, a, &b, 1.0, c).unwrap_or_else(|e| {
                            panic!("winograd: packed_gemm rejected checked views: {e}")
                        });
                    });
                });
            });
        }

        // dW += G^T dU G, one task per output channel. Row o of each dU[xi] lists the
        // (channel, phase) pairs in order, and eight consecutive pairs (two channels) are
        // transformed at once. With an odd c_in the last eight contain one channel and zeros.
        dweight.par_chunks_mut(t.c_in * 16).enumerate().for_each(|(o, dw)| {
            let rows: [&[f32]; POINTS] =
                std::array::from_fn(|xi| &du[(xi * t.c_out + o) * k..][..k]);
            for j0 in (0..k).step_by(8) {
                let point = |xi: usize| {
                    let values: [f32; 8] = match rows[xi][j0..].first_chunk::<8>() {
                        Some(values) => *values,
                        None => std::array::from_fn(|i| rows[xi].get(j0 + i).map_or(0.0, |v| *v)),
                    };
                    f32x8::from(values)
                };
                let u = std::array::from_fn(|u| std::array::from_fn(|v| point(u * 3 + v)));
                let gw = output_tile(u).map(|row| row.map(|lanes| lanes.to_array()));
                // Lanes 0-3 are the phases of channel j0 / 4 and lanes 4-7 those of the next.
                for half in 0..2 {
                    let c = j0 / PHASES + half;
                    if c == t.c_in {
                        break;
                    }
                    let mut taps = [0.0f32; 16];
                    for phase in 0..PHASES {
                        let (py, px) = (phase / 2, phase % 2);
                        for (a, gw) in gw.iter().enumerate() {
                            for (b, gw) in gw.iter().enumerate() {
                                taps[(2 * a + py) * 4 + 2 * b + px] = gw[half * PHASES + phase];
                            }
                        }
                    }
                    add_assign(&mut dw[c * 16..(c + 1) * 16], &taps);
                }
            }
        });
    });
}
