//! The three products every convolution pass reduces to, cache-blocked and run on rayon.
//!
//! Over a [`ConvGeometry`] with weight `W [c_out, k]` and, per sample, column matrix
//! `cols [k, positions]` of the image and grid `Y [c_out, positions]`:
//!
//! - [`image_to_grid`]: `Y = W * cols` (conv forward, transposed-conv grad-input);
//! - [`grid_to_image`]: `image = col2im(W^T * Y)` (conv grad-input, transposed-conv forward);
//! - [`weight_product`]: `dW += sum over samples of Y * cols^T` (both grad-weights).
//!
//! `cols` is never materialised: a tile of at most [`K_TILE`] rows and about [`TILE_ELEMENTS`]
//! elements is packed (im2col) or produced (GEMM), used, and overwritten by the next, in
//! per-thread scratch. Two layouts need no packing at all, because `cols` is then a strided view
//! of the image ([`Direct`]). Samples with fewer than [`GEMM_COLUMNS`] positions sit side by
//! side in one GEMM, as many as fit while the batch still splits into [`MIN_ITEMS`] groups.
//! Every partition (tiles, sample groups, channel blocks, reduction chunks) is computed from the
//! geometry alone, never from the number of threads, and each output element is summed in one
//! fixed order, so results are bit-identical on any pool.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::col2im::col2im_add;
use super::disjoint::DisjointSlice;
use super::elementwise::{add_assign, add_channel_bias, copy, transpose};
use super::fused_forward;
use super::gemm::{gemm, gemm_backend, GemmBackend, MatMut, MatRef};
use super::geometry::ConvGeometry;
use super::im2col::im2col;
use super::phases::{PhasePlan, Tile};
use super::shallow;
use super::winograd;

/// Rows of the column matrix per tile. It equals matrixmultiply's f32 depth block (`KC = 256`),
/// so cutting `k` into tiles adds no pass over the output that sgemm would not make anyway.
const K_TILE: usize = 256;

/// Elements of one column-matrix tile (1 MiB): one `K_TILE x GEMM_COLUMNS` block, the size of
/// the panel matrixmultiply packs from it.
const TILE_ELEMENTS: usize = K_TILE * GEMM_COLUMNS;

/// GEMM columns a call aims for: matrixmultiply's f32 column block (`NC = 1024`). sgemm packs
/// its left operand (the weight) once per call and column block, so narrower calls pack the
/// weight more often.
const GEMM_COLUMNS: usize = 1024;

/// Minimum columns per position tile when a sample is tiled.
const MIN_COLUMNS: usize = 128;

/// Largest folded grid block `[c_out, samples * positions]` kept in scratch (2 MiB).
const GROUP_ELEMENTS: usize = 1 << 19;

/// Work items a pass tries to offer rayon, so that threads can balance. The forward and
/// grad-input products keep sample groups small enough that a batch of at least
/// `2 * MIN_ITEMS` samples has this many.
const MIN_ITEMS: usize = 4;

/// Largest total of partial sums a split reduction may allocate (64 MiB).
const PARTIAL_ELEMENTS: usize = 1 << 24;

/// Largest slice of the batch's grid that [`weight_product`] transposes at once (2 MiB), at
/// least one folded group.
const SHARED_GRID_ELEMENTS: usize = GROUP_ELEMENTS;

/// Per-thread scratch for tiles, grown on demand and kept for the thread's lifetime, so tiles
/// cost no allocation once every worker has run one call of the largest shape. What a call
/// still allocates is bounded by the weight and the constants above: the transposed weight of
/// [`image_to_grid`], and the partial sums and transposed grid slice of [`weight_product`]
/// (the matrixmultiply backend of [`gemm`] also allocates packing buffers inside each call; the
/// packed backend keeps per-thread ones).
#[derive(Default)]
struct Scratch {
    /// A column-matrix tile.
    cols: Vec<f32>,
    /// A column-matrix tile, transposed.
    cols_t: Vec<f32>,
    /// A folded block of the grid, `[c_out, samples * positions]`.
    grid: Vec<f32>,
    /// An accumulator: a folded output block of [`image_to_grid`], or a weight-gradient tile.
    acc: Vec<f32>,
    /// Phase planes of one image channel (see `phases.rs`).
    planes: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` on this thread's scratch. `f` must not start rayon work: a task stolen while the
/// scratch is borrowed would borrow it again.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// Returns the first `len` elements of `buffer`, growing it if needed. Old contents are kept.
fn prefix(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Part `i` of `0..len` cut into `parts` nearly equal ranges.
pub(super) fn part(len: usize, parts: usize, i: usize) -> Range<usize> {
    i * len / parts..(i + 1) * len / parts
}

/// Lowerings whose column matrix is a strided view of the image, so that im2col and col2im
/// reduce to nothing (or to a copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direct {
    /// The kernel covers the whole unpadded image (a 1x1 grid): column `b` of the batch's column
    /// matrix is sample `b`, flattened. DCGAN's first generator and last discriminator layers.
    Whole,
    /// A 1x1 kernel with stride 1, no padding and a grid as large as the image: a sample's column
    /// matrix is the sample itself, `[c_in, h * w]`.
    Pointwise,
    /// Anything else: im2col and col2im do the work.
    No,
}

/// Everything a pass needs to know about one geometry, computed once per call.
struct Lowering<'g> {
    g: &'g ConvGeometry,
    plan: PhasePlan,
    direct: Direct,
    /// Positions per sample.
    positions: usize,
    /// Samples per GEMM; above 1 only when a sample has fewer than [`GEMM_COLUMNS`] positions.
    group: usize,
    /// Number of sample groups.
    groups: usize,
}

impl<'g> Lowering<'g> {
    /// Plans the lowering of `g` for GEMMs of about [`GEMM_COLUMNS`] columns, with sample
    /// groups small enough that a large batch splits into at least `min_groups` of them.
    fn new(g: &'g ConvGeometry, min_groups: usize) -> Self {
        let positions = g.positions();
        let per_call = GEMM_COLUMNS.div_ceil(positions);
        let spread = (g.n / min_groups).max(1);
        let fits = (GROUP_ELEMENTS / (g.c_out * positions).max(1)).max(1);
        let group = per_call.min(spread).min(fits).min(g.n).max(1);
        let direct = if g.covers_whole_image() {
            Direct::Whole
        } else if g.is_pointwise() {
            Direct::Pointwise
        } else {
            Direct::No
        };
        Lowering {
            g,
            plan: PhasePlan::new(g),
            direct,
            positions,
            group,
            groups: g.n.div_ceil(group),
        }
    }

    fn samples(&self, group: usize) -> Range<usize> {
        group * self.group..((group + 1) * self.group).min(self.g.n)
    }

    fn sample_len(&self) -> usize {
        self.g.c_in * self.g.h * self.g.w
    }

    /// Number of position tiles per sample for tiles of `rows` rows: one when samples are
    /// folded, otherwise enough to keep a tile within [`TILE_ELEMENTS`].
    fn position_tiles(&self, rows: usize) -> usize {
        if self.group > 1 {
            return 1;
        }
        let columns = (TILE_ELEMENTS / rows.max(1)).max(MIN_COLUMNS);
        self.positions.div_ceil(columns)
    }

    /// Rows `rows` of the column matrices of `samples`, positions `positions` of each, side by
    /// side: `[rows, samples * positions]`. A view of `image` when the lowering is [`Direct`],
    /// otherwise packed into `cols`.
    fn columns<'a>(
        &self,
        image: &'a [f32],
        (samples, rows, positions): (&Range<usize>, &Range<usize>, &Range<usize>),
        cols: &'a mut Vec<f32>,
        planes: &mut Vec<f32>,
    ) -> MatRef<'a> {
        let (g, sample_len) = (self.g, self.sample_len());
        let first = samples.start * sample_len;
        match self.direct {
            Direct::Whole => {
                let shape = [rows.len(), samples.len()];
                return MatRef::new(&image[first + rows.start..], shape, [1, sample_len]);
            }
            Direct::Pointwise if samples.len() == 1 => {
                let (p, shape) = (self.positions, [rows.len(), positions.len()]);
                let start = first + rows.start * p + positions.start;
                return MatRef::new(&image[start..], shape, [p, 1]);
            }
            _ => {}
        }
        let ld = samples.len() * positions.len();
        let tile = Tile { rows: rows.clone(), positions: positions.clone() };
        let cols = prefix(cols, rows.len() * ld);
        let planes = prefix(planes, self.plan.window(g, &tile).len());
        for (s, b) in samples.clone().enumerate() {
            let x = &image[b * sample_len..][..sample_len];
            im2col(g, &self.plan, x, &tile, (&mut cols[s * positions.len()..], ld), planes);
        }
        MatRef::row_major(cols, rows.len(), ld)
    }

    /// Positions `positions` of `samples` of `grid [n, c_out, positions]`, side by side:
    /// `[c_out, samples * positions]`. A view when possible, otherwise gathered into `block`.
    fn grid_block<'a>(
        &self,
        grid: &'a [f32],
        (samples, positions): (&Range<usize>, &Range<usize>),
        block: &'a mut Vec<f32>,
    ) -> MatRef<'a> {
        let (c_out, p) = (self.g.c_out, self.positions);
        let first = samples.start * c_out * p;
        if samples.len() == 1 {
            let shape = [c_out, positions.len()];
            return MatRef::new(&grid[first + positions.start..], shape, [p, 1]);
        }
        if p == 1 {
            return MatRef::new(&grid[first..], [c_out, samples.len()], [1, c_out]);
        }
        let columns = samples.len() * p;
        let block = prefix(block, c_out * columns);
        for (s, b) in samples.clone().enumerate() {
            for co in 0..c_out {
                copy(&mut block[co * columns + s * p..][..p], &grid[(b * c_out + co) * p..][..p]);
            }
        }
        MatRef::row_major(block, c_out, columns)
    }
}

/// `grid = W * cols + bias`, overwriting `grid [n, c_out, positions]` from `image [n, c_in, h,
/// w]` and `weight [c_out, k]`.
pub(crate) fn image_to_grid(
    g: &ConvGeometry,
    image: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    grid: &mut [f32],
) {
    if winograd::winograd_applies(g, winograd::Product::ImageToGrid) {
        return winograd::image_to_grid(g, image, weight, bias, grid);
    }
    if shallow::applies(g) {
        return shallow::image_to_grid(g, image, weight, bias, grid);
    }
    let lowering = Lowering::new(g, MIN_ITEMS);
    if gemm_backend() == GemmBackend::Packed {
        let layout = match lowering.direct {
            Direct::Whole => fused_forward::Layout::Whole,
            Direct::Pointwise => fused_forward::Layout::Pointwise,
            Direct::No => fused_forward::Layout::Patches,
        };
        let plan = fused_forward::Plan { layout, group: lowering.group, min_items: MIN_ITEMS };
        return fused_forward::image_to_grid(g, plan, image, weight, bias, grid);
    }
    // sgemm packs its left operand fastest when each column is contiguous, so hand it W^T
    // [k, c_out] read as W: one transpose per call instead of a slow pack per tile.
    let (k, c_out) = (g.k(), g.c_out);
    let mut weight_t = vec![0.0f32; k * c_out];
    let rows_per_task = k.div_ceil(MIN_ITEMS).max(1);
    weight_t.par_chunks_mut(rows_per_task * c_out).enumerate().for_each(|(i, dst)| {
        let first = i * rows_per_task;
        let src = (&weight[first..], k);
        transpose(src, [c_out, dst.len() / c_out], (dst, c_out));
    });
    if lowering.group == 1 {
        image_to_grid_per_sample(&lowering, (image, &weight_t, bias), grid);
    } else {
        image_to_grid_folded(&lowering, (image, &weight_t, bias), grid);
    }
}

/// Image, weight and bias; the weight transposed, `W^T [k, c_out]`.
type Operands<'a> = (&'a [f32], &'a [f32], Option<&'a [f32]>);

/// [`image_to_grid`] one sample per GEMM: one work item per sample (and per block of output
/// channels when the batch is small), writing its rows of `grid` directly, one position tile
/// and one `k` tile at a time.
fn image_to_grid_per_sample(
    lowering: &Lowering<'_>,
    (image, weight_t, bias): Operands<'_>,
    grid: &mut [f32],
) {
    let (g, p) = (lowering.g, lowering.positions);
    let k = g.k();
    let k_tiles = k.div_ceil(K_TILE);
    let p_tiles = lowering.position_tiles(k.div_ceil(k_tiles));
    // A small batch is also split by output channels, keeping at least 16 rows per GEMM; each
    // block packs its own copy of the tiles.
    let blocks =
        if g.n >= MIN_ITEMS { 1 } else { MIN_ITEMS.div_ceil(g.n).min(g.c_out.div_ceil(16)) };
    let block_rows = g.c_out.div_ceil(blocks);

    grid.par_chunks_mut(g.c_out * p).enumerate().for_each(|(b, y)| {
        y.par_chunks_mut(block_rows * p).enumerate().for_each(|(block, y)| {
            let co = block * block_rows..block * block_rows + y.len() / p;
            with_scratch(|scratch| {
                for pt in 0..p_tiles {
                    let positions = part(p, p_tiles, pt);
                    for kt in 0..k_tiles {
                        // y[co, positions] (+)= W[co, rows] * cols[rows, positions]
                        let rows = part(k, k_tiles, kt);
                        let tile = (&(b..b + 1), &rows, &positions);
                        let cols =
                            lowering.columns(image, tile, &mut scratch.cols, &mut scratch.planes);
                        gemm(
                            1.0,
                            MatRef::new(
                                &weight_t[rows.start * g.c_out + co.start..],
                                [co.len(), rows.len()],
                                [1, g.c_out],
                            ),
                            cols,
                            if kt == 0 { 0.0 } else { 1.0 },
                            MatMut::new(
                                &mut y[positions.start..],
                                [co.len(), positions.len()],
                                [p, 1],
                            ),
                        );
                    }
                }
            });
            if let Some(bias) = bias {
                add_channel_bias(y, &bias[co], p);
            }
        });
    });
}

/// `acc [c_out, samples * positions] = W * cols`, summed over `k` tiles in order, for the samples
/// of one group, from the transposed weight `W^T [k, c_out]`.
fn group_product(
    lowering: &Lowering<'_>,
    (image, weight_t): (&[f32], &[f32]),
    samples: &Range<usize>,
    mut acc: MatMut<'_>,
    scratch: &mut Scratch,
) {
    let g = lowering.g;
    let k = g.k();
    let k_tiles = k.div_ceil(K_TILE);
    let positions = 0..lowering.positions;
    let [_, columns] = acc.shape();
    for kt in 0..k_tiles {
        let rows = part(k, k_tiles, kt);
        let tile = (samples, &rows, &positions);
        let cols = lowering.columns(image, tile, &mut scratch.cols, &mut scratch.planes);
        debug_assert_eq!(cols.shape(), [rows.len(), columns]);
        gemm(
            1.0,
            MatRef::new(&weight_t[rows.start * g.c_out..], [g.c_out, rows.len()], [1, g.c_out]),
            cols,
            if kt == 0 { 0.0 } else { 1.0 },
            acc.reborrow(),
        );
    }
}

/// Writes a folded block `acc [c_out, samples * positions]` to `y [samples, c_out, positions]`.
fn scatter_grid(g: &ConvGeometry, acc: &[f32], y: &mut [f32]) {
    let p = g.positions();
    let samples = y.len() / (g.c_out * p);
    for s in 0..samples {
        for co in 0..g.c_out {
            let dst = &mut y[(s * g.c_out + co) * p..][..p];
            copy(dst, &acc[co * samples * p + s * p..][..p]);
        }
    }
}

/// [`image_to_grid`] for small grids: one GEMM per group of samples, computed into scratch and
/// scattered to the samples' rows of `grid`, or written in place when each sample's grid is a
/// single position.
fn image_to_grid_folded(
    lowering: &Lowering<'_>,
    (image, weight_t, bias): Operands<'_>,
    grid: &mut [f32],
) {
    let (g, p) = (lowering.g, lowering.positions);
    grid.par_chunks_mut(g.c_out * lowering.group * p).enumerate().for_each(|(group, y)| {
        let samples = lowering.samples(group);
        let columns = samples.len() * p;
        with_scratch(|scratch| {
            let operands = (image, weight_t);
            if p == 1 {
                // y [samples, c_out] is the block itself, transposed.
                let acc = MatMut::new(y, [g.c_out, columns], [1, g.c_out]);
                group_product(lowering, operands, &samples, acc, scratch);
            } else {
                let mut block = std::mem::take(&mut scratch.acc);
                let acc = prefix(&mut block, g.c_out * columns);
                let view = MatMut::row_major(acc, g.c_out, columns);
                group_product(lowering, operands, &samples, view, scratch);
                scatter_grid(g, acc, y);
                scratch.acc = block;
            }
        });
        if let Some(bias) = bias {
            add_channel_bias(y, bias, p);
        }
    });
}

/// `image = col2im(W^T * grid) + bias`, overwriting `image [n, c_in, h, w]` from `grid [n,
/// c_out, positions]` and `weight [c_out, k]`.
///
/// One work item per (group of samples, block of image channels). The block's rows of `W^T`
/// times the group's grid give its tile of the column matrix. col2im adds that tile into the
/// block's channels only, so items write disjoint parts of `image`. Folded groups are gathered
/// once per group when there are enough blocks per group to run them group after group.
///
/// Under [`GemmBackend::Packed`], `fused_col2im` runs the product instead, scattering tiles
/// from the packed GEMM without this tiling.
pub(crate) fn grid_to_image(
    g: &ConvGeometry,
    grid: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    image: &mut [f32],
) {
    if winograd::winograd_applies(g, winograd::Product::GridToImage) {
        return winograd::grid_to_image(g, grid, weight, bias, image);
    }
    if gemm_backend() == GemmBackend::Packed {
        return super::fused_col2im::grid_to_image(g, grid, weight, bias, image);
    }
    let (k, p, plane, taps) = (g.k(), g.positions(), g.h * g.w, g.k_h * g.k_w);
    let block_channels = (K_TILE / taps).max(1);
    let blocks = g.c_in.div_ceil(block_channels);
    // The channel blocks alone may give the threads enough work; then groups grow to full
    // GEMM width.
    let lowering = Lowering::new(g, if blocks >= MIN_ITEMS { 1 } else { MIN_ITEMS });
    let out = DisjointSlice::new(image);

    // Item (group, block). `shared` is the group's grid gathered side by side, when the caller
    // gathered it once for all blocks.
    let run_item = |group: usize, block: usize, shared: Option<&[f32]>| {
        let samples = lowering.samples(group);
        let channels = block * block_channels..((block + 1) * block_channels).min(g.c_in);
        let block_rows = channels.start * taps..channels.end * taps;
        let row_tiles = block_rows.len().div_ceil(K_TILE);
        let p_tiles = lowering.position_tiles(block_rows.len().div_ceil(row_tiles));
        // Channels `channels` of sample `b`, `[channels, h, w]`.
        let region = |b: usize| {
            let start = (b * g.c_in + channels.start) * plane;
            // SAFETY: item (group, block) requests only channels `channels` of the samples of
            // `group`, one sample at a time. Groups partition the samples and blocks the
            // channels, so no other item requests an overlapping range.
            unsafe { out.range_mut(start..start + channels.len() * plane) }
        };
        let block_geometry = ConvGeometry { c_in: channels.len(), ..*g };

        with_scratch(|scratch| {
            let Scratch { cols, grid: gathered, planes, .. } = scratch;
            let scatters = match lowering.direct {
                Direct::Whole => false,
                Direct::Pointwise => samples.len() > 1,
                Direct::No => true,
            };
            if scatters {
                // col2im adds into the image, so it starts from zero.
                for b in samples.clone() {
                    region(b).fill(0.0);
                }
            }
            for pt in 0..p_tiles {
                let positions = if lowering.group > 1 { 0..p } else { part(p, p_tiles, pt) };
                let y = match shared {
                    Some(block) => MatRef::row_major(block, g.c_out, samples.len() * p),
                    None => lowering.grid_block(grid, (&samples, &positions), gathered),
                };
                let columns = y.shape()[1];
                for rt in 0..row_tiles {
                    // Rows of the tile, within the block and within the whole matrix.
                    let local = part(block_rows.len(), row_tiles, rt);
                    let rows = block_rows.start + local.start..block_rows.start + local.end;
                    let w_t = MatRef::new(&weight[rows.start..], [rows.len(), g.c_out], [1, k]);
                    match lowering.direct {
                        Direct::Pointwise if samples.len() == 1 => {
                            // The tile is the image block itself.
                            let x = &mut region(samples.start)[local.start * p + positions.start..];
                            gemm(1.0, w_t, y, 0.0, MatMut::new(x, [rows.len(), columns], [p, 1]));
                        }
                        Direct::Whole => {
                            // Column s of the tile is sample s's rows; store them sample-major.
                            let tile = prefix(cols, rows.len() * columns);
                            let t = MatMut::new(tile, [rows.len(), columns], [1, rows.len()]);
                            gemm(1.0, w_t, y, 0.0, t);
                            for (s, b) in samples.clone().enumerate() {
                                let src = &tile[s * rows.len()..][..rows.len()];
                                copy(&mut region(b)[local.clone()], src);
                            }
                        }
                        _ => {
                            let tile = prefix(cols, rows.len() * columns);
                            gemm(1.0, w_t, y, 0.0, MatMut::row_major(tile, rows.len(), columns));
                            let t = Tile { rows: local.clone(), positions: positions.clone() };
                            let window = lowering.plan.window(g, &t).len();
                            let planes = prefix(planes, window);
                            for (s, b) in samples.clone().enumerate() {
                                let from = (&tile[s * positions.len()..], columns);
                                let plan = &lowering.plan;
                                col2im_add(&block_geometry, plan, from, &t, region(b), planes);
                            }
                        }
                    }
                }
            }
        });
        if let Some(bias) = bias {
            for b in samples {
                add_channel_bias(region(b), &bias[channels.clone()], plane);
            }
        }
    };

    // A folded group's grid must be gathered side by side. With enough channel blocks to keep
    // the threads busy, groups run one after another and their blocks share one gather.
    if lowering.group > 1 && p > 1 && blocks >= MIN_ITEMS {
        let mut shared = vec![0.0f32; g.c_out * lowering.group * p];
        for group in 0..lowering.groups {
            let samples = lowering.samples(group);
            let columns = samples.len() * p;
            let block = &mut shared[..g.c_out * columns];
            block.par_chunks_mut(columns).enumerate().for_each(|(co, row)| {
                for (s, b) in samples.clone().enumerate() {
                    copy(&mut row[s * p..(s + 1) * p], &grid[(b * g.c_out + co) * p..][..p]);
                }
            });
            let block = &*block;
            (0..blocks).into_par_iter().for_each(|b| run_item(group, b, Some(block)));
        }
    } else {
        (0..lowering.groups * blocks)
            .into_par_iter()
            .for_each(|item| run_item(item / blocks, item % blocks, None));
    }
}

/// `dweight += sum over samples of grid * cols^T`, for `image [n, c_in, h, w]`, `grid [n,
/// c_out, positions]` and `dweight [c_out, k]`.
///
/// One work item per `k` tile, summing all samples in order into a `[c_out, tile]`
/// accumulator. The grid operand needs a transpose (see [`weight_tile`]), which the tiles share:
/// it is done once per slice of the batch, not once per tile. With fewer than [`MIN_ITEMS`]
/// tiles, the batch is also split into chunks, each item transposes its own part of the grid,
/// and the chunks of a tile are added in chunk order. The number of chunks depends on the tile
/// count and the batch size alone.
pub(crate) fn weight_product(g: &ConvGeometry, image: &[f32], grid: &[f32], dweight: &mut [f32]) {
    if winograd::winograd_applies(g, winograd::Product::WeightGradient) {
        return winograd::weight_product(g, image, grid, dweight);
    }
    // The packed backend runs the product with im2col fused into its packing.
    if super::gemm::gemm_backend() == super::gemm::GemmBackend::Packed {
        return super::fused_weight::weight_product(g, image, grid, dweight);
    }
    let (k, c_out) = (g.k(), g.c_out);
    let k_tiles = k.div_ceil(K_TILE);
    // The k tiles alone may give the threads enough work; then groups grow to full GEMM width.
    let lowering = Lowering::new(g, if k_tiles >= MIN_ITEMS { 1 } else { MIN_ITEMS });
    let tile_len = c_out * k.div_ceil(k_tiles);
    let fits = (PARTIAL_ELEMENTS / (tile_len * k_tiles)).max(1);
    let chunks = MIN_ITEMS.div_ceil(k_tiles).min(lowering.groups).min(fits);
    let out = DisjointSlice::new(dweight);
    let add_tile = |rows: &Range<usize>, total: &[f32]| {
        for co in 0..c_out {
            // SAFETY: tile `rows` is columns `rows` of every row of dweight. Tiles partition the
            // columns, and each tile is added by one task.
            let dst = unsafe { out.range_mut(co * k + rows.start..co * k + rows.end) };
            add_assign(dst, &total[co * rows.len()..][..rows.len()]);
        }
    };

    if chunks > 1 {
        // Partial sums per (tile, chunk), then each tile adds its chunks in order.
        let mut partials = vec![0.0f32; k_tiles * chunks * tile_len];
        partials.par_chunks_mut(tile_len).enumerate().for_each(|(item, acc)| {
            let (kt, chunk) = (item / chunks, item % chunks);
            let rows = part(k, k_tiles, kt);
            let groups = part(lowering.groups, chunks, chunk);
            let acc = &mut acc[..c_out * rows.len()];
            let operands = (image, grid, None);
            with_scratch(|scratch| weight_tile(&lowering, operands, (&rows, groups), acc, scratch));
        });
        partials.par_chunks_mut(chunks * tile_len).enumerate().for_each(|(kt, parts)| {
            let rows = part(k, k_tiles, kt);
            let len = c_out * rows.len();
            let (total, rest) = parts.split_at_mut(tile_len);
            for chunk in rest.chunks(tile_len) {
                add_assign(&mut total[..len], &chunk[..len]);
            }
            add_tile(&rows, &total[..len]);
        });
        return;
    }

    // With one position per sample, the grid of a group is already a fast view, and a group
    // too large to transpose at once is transposed tile by tile instead.
    let p = lowering.positions;
    let group_len = c_out * lowering.group * p;
    let shared = !(lowering.group > 1 && p == 1) && group_len <= SHARED_GRID_ELEMENTS;
    let slice_groups = (SHARED_GRID_ELEMENTS / group_len).clamp(1, lowering.groups);
    let mut grid_t = vec![0.0f32; if shared { slice_groups * group_len } else { 0 }];
    let transpose_slice = |grid_t: &mut [f32], groups: &Range<usize>| {
        let first_sample = lowering.samples(groups.start).start;
        if shared {
            // Sample b of the slice becomes rows [b * p, (b + 1) * p) of [positions, c_out].
            let samples = first_sample..lowering.samples(groups.end - 1).end;
            grid_t.par_chunks_mut(p * c_out).zip(samples).for_each(|(dst, b)| {
                transpose((&grid[b * c_out * p..], p), [c_out, p], (dst, c_out));
            });
        }
        first_sample
    };

    if slice_groups == lowering.groups {
        // One slice: each tile sums the whole batch in scratch and adds it to dweight.
        let all = 0..lowering.groups;
        let first_sample = transpose_slice(&mut grid_t, &all);
        let grid_t = shared.then_some((&grid_t[..], first_sample));
        (0..k_tiles).into_par_iter().for_each(|kt| {
            let rows = part(k, k_tiles, kt);
            with_scratch(|scratch| {
                let mut acc = std::mem::take(&mut scratch.acc);
                let tile = prefix(&mut acc, c_out * rows.len());
                tile.fill(0.0);
                let operands = (image, grid, grid_t);
                weight_tile(&lowering, operands, (&rows, all.clone()), tile, scratch);
                add_tile(&rows, tile);
                scratch.acc = acc;
            });
        });
        return;
    }

    // Several slices: each tile keeps its sum across them.
    let mut sums = vec![0.0f32; k_tiles * tile_len];
    for first in (0..lowering.groups).step_by(slice_groups) {
        let groups = first..(first + slice_groups).min(lowering.groups);
        let first_sample = transpose_slice(&mut grid_t, &groups);
        let grid_t = shared.then_some((&grid_t[..], first_sample));
        sums.par_chunks_mut(tile_len).enumerate().for_each(|(kt, acc)| {
            let rows = part(k, k_tiles, kt);
            let acc = &mut acc[..c_out * rows.len()];
            let operands = (image, grid, grid_t);
            let groups = groups.clone();
            with_scratch(|scratch| weight_tile(&lowering, operands, (&rows, groups), acc, scratch));
        });
    }
    sums.par_chunks(tile_len).enumerate().for_each(|(kt, total)| {
        let rows = part(k, k_tiles, kt);
        add_tile(&rows, &total[..c_out * rows.len()]);
    });
}

/// Image, grid, and optionally the grid transposed for a slice of the batch (`[positions,
/// c_out]` per sample) with the slice's first sample.
type WeightOperands<'a> = (&'a [f32], &'a [f32], Option<(&'a [f32], usize)>);

/// `acc [c_out, rows] += sum over groups `groups`, in order, of grid * cols[rows, :]^T`.
///
/// Both operands arrive with the summed index (positions) contiguous, the layout sgemm packs
/// slowest, element by element. So each is transposed with vector blocks: the grid by the
/// caller when it passes `grid_t`, otherwise here once per tile, and the column matrix here,
/// unless it is already a view with the right layout.
fn weight_tile(
    lowering: &Lowering<'_>,
    (image, grid, grid_t): WeightOperands<'_>,
    (rows, groups): (&Range<usize>, Range<usize>),
    acc: &mut [f32],
    scratch: &mut Scratch,
) {
    let (g, p) = (lowering.g, lowering.positions);
    let p_tiles = lowering.position_tiles(rows.len());
    for group in groups {
        let samples = lowering.samples(group);
        for pt in 0..p_tiles {
            let positions = part(p, p_tiles, pt);
            let columns = samples.len() * positions.len();

            // cols^T [columns, rows]
            let tile = (&samples, rows, &positions);
            let cols = lowering.columns(image, tile, &mut scratch.cols, &mut scratch.planes);
            let cols_t = if lowering.direct == Direct::Whole {
                cols.t()
            } else {
                let cols_t = prefix(&mut scratch.cols_t, columns * rows.len());
                cols.transpose_into(cols_t);
                MatRef::row_major(cols_t, columns, rows.len())
            };

            // grid [c_out, columns], stored column by column
            let y = match grid_t {
                Some((grid_t, first_sample)) => {
                    let first_column = (samples.start - first_sample) * p + positions.start;
                    MatRef::new(&grid_t[first_column * g.c_out..], [g.c_out, columns], [1, g.c_out])
                }
                None if samples.len() > 1 && p == 1 => {
                    lowering.grid_block(grid, (&samples, &positions), &mut scratch.grid)
                }
                None => {
                    let y_t = prefix(&mut scratch.grid, columns * g.c_out);
                    for (s, b) in samples.clone().enumerate() {
                        let src = (&grid[b * g.c_out * p + positions.start..], p);
                        let dst = (&mut y_t[s * positions.len() * g.c_out..], g.c_out);
                        transpose(src, [g.c_out, positions.len()], dst);
                    }
                    MatRef::new(y_t, [g.c_out, columns], [1, g.c_out])
                }
            };

            // acc += grid * cols^T
            gemm(1.0, y, cols_t, 1.0, MatMut::row_major(acc, g.c_out, rows.len()));
        }
    }
}
