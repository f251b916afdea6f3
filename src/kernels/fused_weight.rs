//! The grad-weight product on [`packed_gemm`] with im2col fused into its packing of B.
//!
//! `dW [c_out, k] += sum over samples of grid [c_out, positions] * cols^T [positions, k]` is one
//! GEMM per sample group whose depth is the group's positions, side by side:
//!
//! - A is the grid of one sample, read in place (`[c_out, positions]`, row-major, which
//!   `packed_gemm` transposes in registers while packing), or, when a sample has at most
//!   `FOLD_DEPTH / 2` positions, the grids of a group of samples side by side. Those are
//!   gathered once per call for the whole batch when the grid is small
//!   ([`SHARED_FOLD_ELEMENTS`]), otherwise per group in each work item.
//! - B is `cols^T`, packed straight from the image by a [`PackB`] closure. For each sample a
//!   depth block touches, the channels of the block's `k` rows are copied into a zero-padded
//!   window. Each packed row (one position) is then a list of runs from that window, `k_w`
//!   floats long for a unit-dilation kernel (12 runs of 4 for DCGAN's 4 x 4 kernels).
//! - Layouts where `cols^T` is a strided view of the image ([`Layout::Whole`],
//!   [`Layout::Pointwise`]) hand that view to the packer instead.
//! - When `k` is narrower than a microtile and `c_out` is not ([`narrow`]), the product runs
//!   transposed, `dW^T [k, c_out] = cols * grid^T`: im2col packs `cols` into scratch, and the
//!   grid is B, read in place.
//!
//! Work items are (k tile, batch chunk) pairs, and tiles and chunks are computed from the
//! geometry alone. Each item sums its chunk in sample order into its own accumulator, and the
//! chunks of a tile are added in chunk order, so results are bit-identical on any pool.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use super::disjoint::DisjointSlice;
use super::elementwise::{add_assign, copy};
use super::geometry::ConvGeometry;
use super::im2col::im2col;
use super::packed_gemm::{sgemm_with_packer, MatMut, MatRef, PackB, KC, MR, NR};
use super::phases::{PhasePlan, Tile};

/// Columns of `dW` per work item, at most: a whole number of `NR`-wide slivers, so that tiles
/// after the first start on a sliver boundary, and narrow enough that a large layer has
/// [`MIN_ITEMS`] tiles.
const TILE_COLUMNS: usize = 1024usize.div_ceil(NR) * NR;

/// Work items a call tries to offer rayon: tiles, times batch chunks when there are too few
/// tiles.
const MIN_ITEMS: usize = 4;

/// Largest total of partial sums that splitting the batch into chunks may allocate (64 MiB).
const PARTIAL_ELEMENTS: usize = 1 << 24;

/// GEMM depth a folded group aims for. Samples with fewer positions are gathered side by side
/// until their positions fill this many rows of B. Then `packed_gemm`'s depth blocks of [`KC`]
/// are full, and C is merged once per `KC` products.
const FOLD_DEPTH: usize = 4 * KC;

/// Largest grid that [`weight_product`] folds for the whole batch at once, `[c_out, n *
/// positions]` (8 MiB), so that work items on different `k` tiles share one copy. A larger grid
/// is folded group by group in each item.
const SHARED_FOLD_ELEMENTS: usize = 1 << 21;

/// The source of `cols^T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// The kernel covers the whole unpadded image (a 1x1 grid): row `b` of `cols^T` for the
    /// batch is sample `b`, flattened, and the grid is `[n, c_out]`.
    Whole,
    /// A 1x1 kernel with stride 1, no padding and a grid as large as the image: a sample's
    /// `cols^T` is the sample `[c_in, positions]` read column by column.
    Pointwise,
    /// Anything else: the packer gathers `cols^T` from a padded window of the image.
    Window,
}

/// Everything the pass needs to know about one geometry: the layout and the partition of the
/// work, all computed from the geometry alone.
struct Plan<'g> {
    g: &'g ConvGeometry,
    layout: Layout,
    /// Positions per sample.
    positions: usize,
    /// Samples per GEMM call.
    group: usize,
    /// Width of a `k` tile, a multiple of [`NR`], and the number of tiles.
    tile_columns: usize,
    k_tiles: usize,
    /// Batch chunks per tile.
    chunks: usize,
    /// For a narrow `k` (see [`narrow`]), the phase planes of the im2col that computes
    /// `dW^T = cols * grid^T` instead.
    narrow: Option<PhasePlan>,
}

/// Fraction of the `MR x NR` microtiles of an `m x n` product that lies inside it.
fn tile_use(m: usize, n: usize) -> f64 {
    (m * n) as f64 / (m.next_multiple_of(MR) * n.next_multiple_of(NR)) as f64
}

/// Returns whether `dW^T [k, c_out] = cols * grid^T` fills the microtiles better than `dW =
/// grid * cols^T`. A `k` below one sliver, such as the 16 columns of a one-channel 4 x 4
/// layer, would leave most of each `NR`-wide tile empty.
fn narrow(g: &ConvGeometry) -> bool {
    g.k() < NR && tile_use(g.k(), g.c_out) > tile_use(g.c_out, g.k())
}

impl<'g> Plan<'g> {
    fn new(g: &'g ConvGeometry) -> Self {
        let positions = g.positions();
        let layout = if g.covers_whole_image() {
            Layout::Whole
        } else if g.is_pointwise() && positions >= KC {
            Layout::Pointwise
        } else {
            Layout::Window
        };

        let group = match layout {
            // One call per chunk: the chunk's samples are the depth.
            Layout::Whole => g.n,
            Layout::Pointwise => 1,
            // The narrow product reads each sample's grid in place as B, so it folds only
            // samples too small to fill a depth block of `KC`.
            Layout::Window if narrow(g) => (KC / positions.max(1)).clamp(1, g.n.max(1)),
            Layout::Window => (FOLD_DEPTH / positions.max(1)).clamp(1, g.n.max(1)),
        };

        // Tiles of whole slivers, then enough batch chunks for MIN_ITEMS items.
        let k = g.k();
        let k_tiles = k.div_ceil(TILE_COLUMNS).max(1);
        let tile_columns = k.div_ceil(k_tiles).next_multiple_of(NR);
        let k_tiles = k.div_ceil(tile_columns).max(1);
        let fits = (PARTIAL_ELEMENTS / (g.c_out * tile_columns * k_tiles).max(1)).max(1);
        let chunks = MIN_ITEMS.div_ceil(k_tiles).min(g.n).min(fits).max(1);
        let narrow = (layout == Layout::Window && narrow(g)).then(|| PhasePlan::new(g));
        Plan { g, layout, positions, group, tile_columns, k_tiles, chunks, narrow }
    }

    /// Columns of `dW` in tile `kt`.
    fn tile(&self, kt: usize) -> Range<usize> {
        let k = self.g.k();
        (kt * self.tile_columns).min(k)..((kt + 1) * self.tile_columns).min(k)
    }

    /// Samples of chunk `chunk`.
    fn chunk(&self, chunk: usize) -> Range<usize> {
        chunk * self.g.n / self.chunks..(chunk + 1) * self.g.n / self.chunks
    }

    fn sample_len(&self) -> usize {
        self.g.c_in * self.g.h * self.g.w
    }
}

/// Per-thread scratch, grown on demand and kept for the thread's lifetime.
#[derive(Default)]
struct Scratch {
    /// A folded group's grid, `[c_out, samples * positions]`.
    grid: Vec<f32>,
    /// The accumulator of one work item, `[c_out, tile]`.
    acc: Vec<f32>,
    /// A column-matrix block of a narrow `k`, `[k, samples * positions]`.
    cols: Vec<f32>,
    /// Phase planes of one image channel, for im2col.
    planes: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The padded image window the packer gathers from. It is separate from [`SCRATCH`]
    /// because the work item keeps that borrowed while the GEMM calls the packer.
    static WINDOW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The folded grid and the partial sums of the last call, kept so that the next call of a
/// similar shape reuses their pages instead of allocating and zeroing new ones.
static FOLDED: Mutex<Vec<f32>> = Mutex::new(Vec::new());
static PARTIALS: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// Largest buffer kept in [`FOLDED`] or [`PARTIALS`] between calls (16 MiB).
const KEPT_ELEMENTS: usize = 1 << 22;

/// Takes the buffer kept in `slot`, or an empty one while another call has taken it, grown to
/// at least `len` elements. Its contents are stale, so callers write every element before they
/// read it.
fn take_buffer(slot: &Mutex<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut buffer = std::mem::take(&mut *slot.lock().unwrap_or_else(PoisonError::into_inner));
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    buffer
}

/// Keeps `buffer` in `slot` for the next call, unless it is larger than [`KEPT_ELEMENTS`] or
/// smaller than the buffer already kept there.
fn keep_buffer(slot: &Mutex<Vec<f32>>, buffer: Vec<f32>) {
    if buffer.len() <= KEPT_ELEMENTS {
        let mut kept = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < buffer.len() {
            *kept = buffer;
        }
    }
}

/// Returns the first `len` elements of `buffer`, growing it if needed. Old contents are kept.
fn prefix(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// `dweight += sum over samples of grid * cols^T` on `packed_gemm`, for `image [n, c_in, h,
/// w]`, `grid [n, c_out, positions]` and `dweight [c_out, k]`, with the contract of
/// `lowering::weight_product`.
///
/// One work item per (k tile, batch chunk). With one chunk, an item sums the whole batch in
/// scratch and adds it to its columns of `dweight`. With several, items write partial sums, and
/// each tile then adds its chunks in order.
pub(crate) fn weight_product(g: &ConvGeometry, image: &[f32], grid: &[f32], dweight: &mut [f32]) {
    let plan = Plan::new(g);
    let (k, c_out) = (g.k(), g.c_out);
    if k == 0 || c_out == 0 || g.n == 0 {
        return;
    }

    // [c_out, n * positions]: the samples side by side, when folded groups can share it.
    let p = plan.positions;
    let shares = plan.layout == Layout::Window && plan.group > 1;
    let columns = g.n * p;
    let fold = shares && c_out * columns <= SHARED_FOLD_ELEMENTS;
    let mut folded = if fold { take_buffer(&FOLDED, c_out * columns) } else { Vec::new() };
    if fold {
        let folded = &mut folded[..c_out * columns];
        folded.par_chunks_mut(columns).enumerate().for_each(|(co, row)| {
            for (b, dst) in row.chunks_exact_mut(p).enumerate() {
                copy(dst, &grid[(b * c_out + co) * p..][..p]);
            }
        });
    }
    let grid = Grid { samples: grid, folded: fold.then(|| &folded[..c_out * columns]) };
    let out = DisjointSlice::new(dweight);
    let add_tile = |columns: &Range<usize>, total: &[f32]| {
        for co in 0..c_out {
            // SAFETY: tile `columns` is those columns of every row of dweight. Tiles partition
            // the columns, and each tile is added by one task.
            let dst = unsafe { out.range_mut(co * k + columns.start..co * k + columns.end) };
            add_assign(dst, &total[co * columns.len()..][..columns.len()]);
        }
    };

    if plan.chunks == 1 {
        (0..plan.k_tiles).into_par_iter().for_each(|kt| {
            let columns = plan.tile(kt);
            let samples = 0..g.n;
            with_scratch(|scratch| {
                let mut acc = std::mem::take(&mut scratch.acc);
                let total = prefix(&mut acc, c_out * columns.len());
                item_sum(&plan, (image, grid), (&columns, samples), total, scratch);
                add_tile(&columns, total);
                scratch.acc = acc;
            });
        });
        keep_buffer(&FOLDED, folded);
        return;
    }

    // [k tile][chunk][c_out, tile]
    let tile_len = c_out * plan.tile_columns;
    let len = plan.k_tiles * plan.chunks * tile_len;
    let mut buffer = take_buffer(&PARTIALS, len);
    let partials = &mut buffer[..len];
    partials.par_chunks_mut(tile_len).enumerate().for_each(|(item, acc)| {
        let (kt, chunk) = (item / plan.chunks, item % plan.chunks);
        let columns = plan.tile(kt);
        let acc = &mut acc[..c_out * columns.len()];
        let samples = plan.chunk(chunk);
        with_scratch(|scratch| item_sum(&plan, (image, grid), (&columns, samples), acc, scratch));
    });
    partials.par_chunks_mut(plan.chunks * tile_len).enumerate().for_each(|(kt, parts)| {
        let columns = plan.tile(kt);
        let len = c_out * columns.len();
        let (total, rest) = parts.split_at_mut(tile_len);
        for chunk in rest.chunks(tile_len) {
            add_assign(&mut total[..len], &chunk[..len]);
        }
        add_tile(&columns, &total[..len]);
    });
    keep_buffer(&PARTIALS, buffer);
    keep_buffer(&FOLDED, folded);
}

/// Runs `f` on this thread's scratch. `f` must not start rayon work: a task stolen while the
/// scratch is borrowed would borrow it again.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// The grid `[n, c_out, positions]`, and optionally the same values folded for the whole
/// batch, `[c_out, n * positions]`.
#[derive(Clone, Copy)]
struct Grid<'a> {
    samples: &'a [f32],
    folded: Option<&'a [f32]>,
}

/// `acc [c_out, columns] = sum over samples, in order, of grid * cols[columns, :]^T`: one GEMM
/// per sample group, the first overwriting `acc`, the others adding to it. A narrow plan
/// writes the same sums through the transposed view of `acc`.
fn item_sum(
    plan: &Plan<'_>,
    (image, grid): (&[f32], Grid<'_>),
    (columns, samples): (&Range<usize>, Range<usize>),
    acc: &mut [f32],
    scratch: &mut Scratch,
) {
    let (g, p, sample_len) = (plan.g, plan.positions, plan.sample_len());
    let c_out = g.c_out;
    let width = columns.len();
    let (folded, grid) = (grid.folded, grid.samples);
    let Scratch { grid: gathered, cols, planes, .. } = scratch;
    let mut beta = 0.0;
    let mut first = samples.start;
    while first < samples.end {
        let group = first..(first + plan.group).min(samples.end);
        let depth = group.len() * p;
        let c = MatMut::from_checked(&mut *acc, [c_out, width], [width, 1]);
        let result = match plan.layout {
            Layout::Whole => {
                // A [c_out, samples] from grid [n, c_out]; B [samples, columns] from the image.
                let a =
                    MatRef::from_checked(&grid[group.start * c_out..], [c_out, depth], [1, c_out]);
                let b = MatRef::from_checked(
                    &image[group.start * sample_len + columns.start..],
                    [depth, width],
                    [sample_len, 1],
                );
                sgemm_with_packer(1.0, a, &b, beta, c)
            }
            Layout::Pointwise => {
                // A [c_out, positions] in place; B [positions, columns], the sample read by
                // columns.
                let b = group.start;
                let a = MatRef::from_checked(&grid[b * c_out * p..], [c_out, p], [p, 1]);
                let start = b * sample_len + columns.start * p;
                let b = MatRef::from_checked(&image[start..], [p, width], [1, p]);
                sgemm_with_packer(1.0, a, &b, beta, c)
            }
            Layout::Window => {
                let a = if group.len() == 1 {
                    MatRef::from_checked(&grid[group.start * c_out * p..], [c_out, p], [p, 1])
                } else if let Some(folded) = folded {
                    let ld = g.n * p;
                    MatRef::from_checked(&folded[group.start * p..], [c_out, depth], [ld, 1])
                } else {
                    // [c_out, samples * positions], sample after sample.
                    let block = prefix(gathered, c_out * depth);
                    for (s, b) in group.clone().enumerate() {
                        for co in 0..c_out {
                            let src = &grid[(b * c_out + co) * p..][..p];
                            copy(&mut block[co * depth + s * p..][..p], src);
                        }
                    }
                    MatRef::from_checked(block, [c_out, depth], [depth, 1])
                };
                match &plan.narrow {
                    Some(phases) => {
                        // dW^T [k, c_out] (+)= cols [k, depth] * grid^T [depth, c_out]
                        let cols = prefix(cols, width * depth);
                        let tile = Tile { rows: columns.clone(), positions: 0..p };
                        let planes = prefix(planes, phases.window(g, &tile).len());
                        for (s, b) in group.clone().enumerate() {
                            let x = &image[b * sample_len..][..sample_len];
                            im2col(g, phases, x, &tile, (&mut cols[s * p..], depth), planes);
                        }
                        let cols = MatRef::from_checked(cols, [width, depth], [depth, 1]);
                        let c_t = MatMut::from_checked(&mut *acc, [width, c_out], [1, width]);
                        sgemm_with_packer(1.0, cols, &a.t(), beta, c_t)
                    }
                    None => {
                        let images = &image[group.start * sample_len..group.end * sample_len];
                        let packer = WindowPacker::new(g, images, columns.start);
                        sgemm_with_packer(1.0, a, &packer, beta, c)
                    }
                }
            }
        };
        result
            .unwrap_or_else(|e| panic!("weight_product: packed_gemm rejected checked views: {e}"));
        beta = 1.0;
        first = group.end;
    }
}

/// Packs blocks of `cols^T [samples * positions, k]` for consecutive samples, straight from
/// the images: depth row `s * positions + q` is position `q` of sample `s`, column `j` is row
/// `first_column + j` of the column matrix.
struct WindowPacker<'a> {
    g: &'a ConvGeometry,
    /// Samples `[samples, c_in, h, w]`.
    images: &'a [f32],
    first_column: usize,
}

/// A run of a packed row: `len` floats at `offset` in the window go to entries `j..j + len`.
#[derive(Clone, Copy, Debug)]
struct Run {
    j: usize,
    len: usize,
    offset: usize,
}

/// The part of a sample's zero-padded image held in the window: channels `channels`, padded
/// rows `rows` (image row `r - pad_h` for padded row `r`) and every padded column.
struct WindowShape {
    channels: Range<usize>,
    rows: Range<usize>,
    /// Padded row length, `w + 2 * pad_w`.
    pitch: usize,
}

impl WindowShape {
    fn channel_len(&self) -> usize {
        self.rows.len() * self.pitch
    }

    fn len(&self) -> usize {
        self.channels.len() * self.channel_len()
    }
}

impl<'a> WindowPacker<'a> {
    fn new(g: &'a ConvGeometry, images: &'a [f32], first_column: usize) -> Self {
        WindowPacker { g, images, first_column }
    }

    /// Computes the window that positions `positions` of the column rows `columns` read.
    fn shape(&self, columns: &Range<usize>, positions: &Range<usize>) -> WindowShape {
        let g = self.g;
        let taps = g.k_h * g.k_w;
        let (oy_first, oy_last) = (positions.start / g.out_w, (positions.end - 1) / g.out_w);
        let first_row = oy_first * g.stride[0];
        let end_row = oy_last * g.stride[0] + (g.k_h - 1) * g.dilation[0] + 1;
        WindowShape {
            channels: columns.start / taps..(columns.end - 1) / taps + 1,
            rows: first_row..end_row,
            pitch: g.w + 2 * g.pad[1],
        }
    }

    /// Copies `shape` of sample `image [c_in, h, w]`, zero-padded, into `window`. With
    /// `zeroed`, the padding entries of `window` already hold zeros (the previous fill had the
    /// same shape) and only the image rows are copied.
    fn fill(&self, image: &[f32], shape: &WindowShape, window: &mut [f32], zeroed: bool) {
        let g = self.g;
        let (plane, pad_w) = (g.h * g.w, g.pad[1]);
        // Padded rows `inside` contain image rows, and the others are padding.
        let inside = shape.rows.start.clamp(g.pad[0], g.pad[0] + g.h)
            ..shape.rows.end.clamp(g.pad[0], g.pad[0] + g.h);
        let channels = window.chunks_exact_mut(shape.channel_len());
        for (ci, channel) in shape.channels.clone().zip(channels) {
            if !zeroed {
                channel.fill(0.0);
            }
            if inside.is_empty() {
                continue;
            }
            let first = (inside.start - shape.rows.start) * shape.pitch;
            let rows = channel[first..].chunks_exact_mut(shape.pitch);
            let source =
                &image[ci * plane + (inside.start - g.pad[0]) * g.w..][..inside.len() * g.w];
            for (row, src) in rows.zip(source.chunks_exact(g.w)) {
                copy(&mut row[pad_w..pad_w + g.w], src);
            }
        }
    }

    /// Appends to `runs` the runs of one sliver of packed rows: columns `columns` (at most
    /// `NR`) of the column matrix, read from `shape` at offsets relative to a position's
    /// top-left window entry.
    fn runs(&self, columns: Range<usize>, shape: &WindowShape, runs: &mut Vec<Run>) {
        let g = self.g;
        let taps = g.k_h * g.k_w;
        let first = runs.len();
        for (j, column) in columns.enumerate() {
            let (ci, tap) = (column / taps, column % taps);
            let (ky, kx) = (tap / g.k_w, tap % g.k_w);
            let offset = (ci - shape.channels.start) * shape.channel_len()
                + ky * g.dilation[0] * shape.pitch
                + kx * g.dilation[1];
            match runs[first..].last_mut() {
                Some(run) if run.offset + run.len == offset => run.len += 1,
                _ => runs.push(Run { j, len: 1, offset }),
            }
        }
    }
}

impl PackB for WindowPacker<'_> {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        let g = self.g;
        let p = g.positions();
        let sample_len = g.c_in * g.h * g.w;
        let columns = self.first_column + n0..self.first_column + n0 + nc;
        let (slivers, _) = dst.as_chunks_mut::<NR>();
        // The runs of every sliver, and the window rows and channels they were made for.
        let (mut runs, mut sliver_runs) = (Vec::new(), Vec::new());
        let mut made_for = None;

        WINDOW.with(|window| {
            let mut window = window.borrow_mut();
            // Each sample the depth block touches: positions `positions`, at packed row `row0`.
            let mut depth = k0;
            while depth < k0 + kc {
                let (sample, q0) = (depth / p, depth % p);
                let positions = q0..p.min(q0 + k0 + kc - depth);
                let row0 = depth - k0;
                depth += positions.len();

                // Samples with the same window shape share the runs and the zero padding.
                let shape = self.shape(&columns, &positions);
                let key = (shape.channels.clone(), shape.rows.clone());
                let same = made_for.as_ref() == Some(&key);
                if !same {
                    runs.clear();
                    sliver_runs.clear();
                    for s in 0..nc.div_ceil(NR) {
                        let start = runs.len();
                        let end = columns.end.min(columns.start + (s + 1) * NR);
                        self.runs(columns.start + s * NR..end, &shape, &mut runs);
                        sliver_runs.push((start..runs.len(), end - columns.start - s * NR));
                    }
                    made_for = Some(key);
                }
                let image = &self.images[sample * sample_len..][..sample_len];
                let window = prefix(&mut window, shape.len());
                self.fill(image, &shape, window, same);

                for (sliver, (run_range, width)) in slivers.chunks_exact_mut(kc).zip(&sliver_runs) {
                    let rows = &mut sliver[row0..row0 + positions.len()];
                    let bases = positions.clone().map(|q| {
                        let (oy, ox) = (q / g.out_w, q % g.out_w);
                        (oy * g.stride[0] - shape.rows.start) * shape.pitch + ox * g.stride[1]
                    });
                    gather_rows(window, &runs[run_range.clone()], *width, bases, rows);
                }
            }
        });
    }
}

/// Writes packed row `rows[i]` from `window` at `base_i + run.offset` for each run, and zeros
/// past `width` entries.
#[inline]
fn gather_rows(
    window: &[f32],
    runs: &[Run],
    width: usize,
    bases: impl Iterator<Item = usize>,
    rows: &mut [[f32; NR]],
) {
    const QUADS: usize = NR / 4;
    if width == NR && runs.len() == QUADS && runs.iter().all(|r| r.len == 4) {
        // Unit-dilation 4-wide kernels: every run is 4 floats.
        let offsets: [usize; QUADS] = std::array::from_fn(|i| runs[i].offset);
        for (row, base) in rows.iter_mut().zip(bases) {
            let (quads, _) = row.as_chunks_mut::<4>();
            for (quad, &offset) in quads.iter_mut().zip(&offsets) {
                let start = base + offset;
                *quad = window[start..start + 4].try_into().expect("a run of 4");
            }
        }
        return;
    }
    for (row, base) in rows.iter_mut().zip(bases) {
        for run in runs {
            let start = base + run.offset;
            row[run.j..run.j + run.len].copy_from_slice(&window[start..start + run.len]);
        }
        row[width..].fill(0.0);
    }
}
