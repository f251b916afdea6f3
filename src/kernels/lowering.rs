//! The three products every convolution pass reduces to, cache-blocked and run on rayon.
//!
//! Over a [`ConvGeometry`] with weight `W [c_out, k]` and, per sample, column matrix
//! `cols [k, positions]` of the image and grid `Y [c_out, positions]`:
//!
//! - [`image_to_grid`]: `Y = W * cols` (conv forward, transposed-conv grad-input);
//! - [`grid_to_image`]: `image = col2im(W^T * Y)` (conv grad-input, transposed-conv forward);
//! - [`weight_product`]: `dW += sum over samples of Y * cols^T` (both grad-weights).
//!
//! `cols` is never materialised: a tile of at most [`K_TILE`] rows and [`TILE_ELEMENTS`]
//! elements is packed (im2col) or produced (GEMM), used, and overwritten by the next, in
//! per-thread scratch. Grids with fewer than [`MIN_COLUMNS`] positions per sample put several
//! samples side by side in one GEMM. Every partition below (tiles, sample groups, channel blocks,
//! reduction chunks) is computed from the geometry alone, never from the number of threads, and
//! each output element is summed in one fixed order, so results are bit-identical on any pool.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::col2im::col2im_add;
use super::disjoint::DisjointSlice;
use super::elementwise::{add_assign, add_channel_bias, copy};
use super::gemm::{gemm, MatMut, MatRef};
use super::geometry::ConvGeometry;
use super::im2col::{im2col, RowTaps, Tile};

/// Rows of the column matrix per tile. It equals matrixmultiply's f32 depth block (`KC = 256`),
/// so cutting `k` into tiles adds no pass over the output that sgemm would not make anyway.
const K_TILE: usize = 256;

/// Elements of one column-matrix tile (512 KiB): half of a 1 MiB L2 cache, leaving the other
/// half for the copy sgemm packs from it.
const TILE_ELEMENTS: usize = 128 * 1024;

/// Fewest GEMM columns worth a call: grids with fewer positions per sample fold samples together.
const MIN_COLUMNS: usize = 128;

/// Largest folded grid block `[c_out, samples * positions]` kept in scratch (4 MiB).
const GROUP_ELEMENTS: usize = 1 << 20;

/// Work items a pass tries to offer rayon, so that threads can balance.
const MIN_ITEMS: usize = 8;

/// Largest total of partial sums a split reduction may allocate (64 MiB).
const PARTIAL_ELEMENTS: usize = 1 << 24;

/// Per-thread scratch, grown on demand and kept for the thread's lifetime, so a call allocates
/// nothing once every worker has run one call of the largest shape.
#[derive(Default)]
struct Scratch {
    /// A column-matrix tile.
    cols: Vec<f32>,
    /// A folded block of the grid, `[c_out, samples * positions]`.
    grid: Vec<f32>,
    /// An accumulator: a folded output block, or a weight-gradient tile.
    acc: Vec<f32>,
    /// Phase slots of one image row (see `RowTaps`).
    slots: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` on this thread's scratch. `f` must not start rayon work: a task stolen while the
/// scratch is borrowed would borrow it again.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// The first `len` elements of `buffer`, growing it if needed; old contents are kept.
fn prefix(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Part `i` of `0..len` cut into `parts` nearly equal ranges.
fn part(len: usize, parts: usize, i: usize) -> Range<usize> {
    i * len / parts..(i + 1) * len / parts
}

/// How a batch is cut into GEMM columns: groups of `group` samples, the last possibly shorter.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Positions per sample.
    positions: usize,
    /// Samples per group; above 1 only when a sample has fewer than [`MIN_COLUMNS`] positions.
    group: usize,
    /// Number of groups.
    groups: usize,
    n: usize,
}

impl Layout {
    fn new(g: &ConvGeometry) -> Self {
        let positions = g.positions();
        let group = if positions >= MIN_COLUMNS {
            1
        } else {
            let wanted = MIN_COLUMNS.div_ceil(positions);
            let fits = (GROUP_ELEMENTS / (g.c_out * positions).max(1)).max(1);
            wanted.min(fits).min(g.n)
        };
        Layout { positions, group, groups: g.n.div_ceil(group), n: g.n }
    }

    fn samples(&self, group: usize) -> Range<usize> {
        group * self.group..((group + 1) * self.group).min(self.n)
    }

    /// Number of position tiles per sample for column tiles of `rows` rows: one when samples
    /// are folded, otherwise enough to keep a tile within [`TILE_ELEMENTS`].
    fn position_tiles(&self, rows: usize) -> usize {
        if self.group > 1 {
            return 1;
        }
        let columns = (TILE_ELEMENTS / rows.max(1)).max(MIN_COLUMNS);
        self.positions.div_ceil(columns)
    }
}

/// Copies samples `samples` of `grid [n, c_out, positions]` into `block [c_out, samples *
/// positions]`.
fn gather_grid(g: &ConvGeometry, grid: &[f32], samples: &Range<usize>, block: &mut [f32]) {
    let (p, columns) = (g.positions(), samples.len() * g.positions());
    for (s, b) in samples.clone().enumerate() {
        for co in 0..g.c_out {
            copy(&mut block[co * columns + s * p..][..p], &grid[(b * g.c_out + co) * p..][..p]);
        }
    }
}

/// Packs rows `rows` of the column matrices of samples `samples`, side by side, into `cols`
/// `[rows, samples * positions]`.
fn pack_group(
    g: &ConvGeometry,
    taps: &RowTaps,
    image: &[f32],
    (samples, rows): (&Range<usize>, &Range<usize>),
    cols: &mut [f32],
    slots: &mut [f32],
) {
    let (p, sample_len) = (g.positions(), g.c_in * g.h * g.w);
    let ld = samples.len() * p;
    for (s, b) in samples.clone().enumerate() {
        let tile = Tile { rows: rows.clone(), positions: 0..p };
        let x = &image[b * sample_len..][..sample_len];
        im2col(g, taps, x, &tile, (&mut cols[s * p..], ld), slots);
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
    let layout = Layout::new(g);
    let taps = RowTaps::new(g);
    if layout.group == 1 {
        image_to_grid_per_sample(g, &layout, &taps, (image, weight, bias), grid);
    } else {
        image_to_grid_folded(g, &layout, &taps, (image, weight, bias), grid);
    }
}

type Operands<'a> = (&'a [f32], &'a [f32], Option<&'a [f32]>);

/// [`image_to_grid`] for grids of at least [`MIN_COLUMNS`] positions: one work item per sample
/// (and per block of output channels when the batch is small), writing its rows of `grid`
/// directly, one position tile and one `k` tile at a time.
fn image_to_grid_per_sample(
    g: &ConvGeometry,
    layout: &Layout,
    taps: &RowTaps,
    (image, weight, bias): Operands<'_>,
    grid: &mut [f32],
) {
    let (k, p) = (g.k(), layout.positions);
    let k_tiles = k.div_ceil(K_TILE);
    let p_tiles = layout.position_tiles(k.div_ceil(k_tiles));
    let blocks =
        if g.n >= MIN_ITEMS { 1 } else { MIN_ITEMS.div_ceil(g.n).min(g.c_out.div_ceil(16)) };
    let block_rows = g.c_out.div_ceil(blocks);
    let sample_len = g.c_in * g.h * g.w;

    grid.par_chunks_mut(g.c_out * p).zip(image.par_chunks(sample_len)).for_each(|(y, x)| {
        y.par_chunks_mut(block_rows * p).enumerate().for_each(|(block, y)| {
            let co = block * block_rows..block * block_rows + y.len() / p;
            with_scratch(|scratch| {
                let slots = prefix(&mut scratch.slots, taps.buffer_len());
                for pt in 0..p_tiles {
                    let positions = part(p, p_tiles, pt);
                    let columns = positions.len();
                    for kt in 0..k_tiles {
                        // Pack the tile [rows, columns], then y[co, positions] (+)= W * tile.
                        let rows = part(k, k_tiles, kt);
                        let cols = prefix(&mut scratch.cols, rows.len() * columns);
                        let tile = Tile { rows: rows.clone(), positions: positions.clone() };
                        im2col(g, taps, x, &tile, (cols, columns), slots);
                        gemm(
                            1.0,
                            MatRef::new(
                                &weight[co.start * k + rows.start..],
                                [co.len(), rows.len()],
                                [k, 1],
                            ),
                            MatRef::row_major(cols, rows.len(), columns),
                            if kt == 0 { 0.0 } else { 1.0 },
                            MatMut::new(&mut y[positions.start..], [co.len(), columns], [p, 1]),
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

/// `acc [c_out, samples * positions] = sum over k tiles `k_tiles` of W[:, tile] * cols[tile, :]`
/// for the samples of one group.
fn group_product(
    g: &ConvGeometry,
    taps: &RowTaps,
    (image, weight): (&[f32], &[f32]),
    (samples, k_tiles): (&Range<usize>, Range<usize>),
    acc: &mut [f32],
    scratch: &mut Scratch,
) {
    let k = g.k();
    let tiles = k.div_ceil(K_TILE);
    let columns = samples.len() * g.positions();
    let slots = prefix(&mut scratch.slots, taps.buffer_len());
    for kt in k_tiles.clone() {
        let rows = part(k, tiles, kt);
        let cols = prefix(&mut scratch.cols, rows.len() * columns);
        pack_group(g, taps, image, (samples, &rows), cols, slots);
        gemm(
            1.0,
            MatRef::new(&weight[rows.start..], [g.c_out, rows.len()], [k, 1]),
            MatRef::row_major(cols, rows.len(), columns),
            if kt == k_tiles.start { 0.0 } else { 1.0 },
            MatMut::row_major(acc, g.c_out, columns),
        );
    }
}

/// Writes a folded block `acc [c_out, samples * positions]` to `y [samples, c_out, positions]`,
/// adding the bias.
fn scatter_grid(g: &ConvGeometry, acc: &[f32], y: &mut [f32], bias: Option<&[f32]>) {
    let p = g.positions();
    let samples = y.len() / (g.c_out * p);
    for s in 0..samples {
        for co in 0..g.c_out {
            let dst = &mut y[(s * g.c_out + co) * p..][..p];
            copy(dst, &acc[co * samples * p + s * p..][..p]);
        }
    }
    if let Some(bias) = bias {
        add_channel_bias(y, bias, p);
    }
}

/// [`image_to_grid`] for small grids: one GEMM per group of samples. When there are too few
/// groups to keep the threads busy, `k` is also split into chunks whose partial products are
/// summed in chunk order.
fn image_to_grid_folded(
    g: &ConvGeometry,
    layout: &Layout,
    taps: &RowTaps,
    (image, weight, bias): Operands<'_>,
    grid: &mut [f32],
) {
    let k_tiles = g.k().div_ceil(K_TILE);
    let block_len = g.c_out * layout.group * layout.positions;
    let fits = (PARTIAL_ELEMENTS / (block_len * layout.groups)).max(1);
    let chunks = MIN_ITEMS.div_ceil(layout.groups).min(k_tiles).min(fits);

    if chunks == 1 {
        grid.par_chunks_mut(block_len).enumerate().for_each(|(group, y)| {
            let samples = layout.samples(group);
            with_scratch(|scratch| {
                let mut acc = std::mem::take(&mut scratch.acc);
                let block = prefix(&mut acc, g.c_out * samples.len() * layout.positions);
                group_product(g, taps, (image, weight), (&samples, 0..k_tiles), block, scratch);
                scatter_grid(g, block, y, bias);
                scratch.acc = acc;
            });
        });
        return;
    }

    // Split k: partial products per (group, chunk), then each group sums its chunks in order.
    let mut partials = vec![0.0f32; layout.groups * chunks * block_len];
    partials.par_chunks_mut(block_len).enumerate().for_each(|(item, acc)| {
        let (group, chunk) = (item / chunks, item % chunks);
        let samples = layout.samples(group);
        let acc = &mut acc[..g.c_out * samples.len() * layout.positions];
        let k_range = part(k_tiles, chunks, chunk);
        with_scratch(|scratch| {
            group_product(g, taps, (image, weight), (&samples, k_range), acc, scratch)
        });
    });
    partials.par_chunks_mut(chunks * block_len).zip(grid.par_chunks_mut(block_len)).for_each(
        |(parts, y)| {
            let len = y.len();
            let (total, rest) = parts.split_at_mut(block_len);
            for chunk in rest.chunks(block_len) {
                add_assign(&mut total[..len], &chunk[..len]);
            }
            scatter_grid(g, &total[..len], y, bias);
        },
    );
}

/// `image = col2im(W^T * grid) + bias`, overwriting `image [n, c_in, h, w]` from `grid [n,
/// c_out, positions]` and `weight [c_out, k]`.
///
/// One work item per (group of samples, block of image channels): the block's rows of `W^T`
/// times the group's grid give its tile of the column matrix, which col2im adds into the block's
/// channels only, so items write disjoint parts of `image`.
pub(crate) fn grid_to_image(
    g: &ConvGeometry,
    grid: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    image: &mut [f32],
) {
    let layout = Layout::new(g);
    let taps = RowTaps::new(g);
    let (k, p, plane, taps_per_channel) = (g.k(), g.positions(), g.h * g.w, g.k_h * g.k_w);
    let block_channels = (K_TILE / taps_per_channel).max(1);
    let blocks = g.c_in.div_ceil(block_channels);
    let out = DisjointSlice::new(image);

    (0..layout.groups * blocks).into_par_iter().for_each(|item| {
        let (group, block) = (item / blocks, item % blocks);
        let samples = layout.samples(group);
        let channels = block * block_channels..((block + 1) * block_channels).min(g.c_in);
        let block_rows = channels.start * taps_per_channel..channels.end * taps_per_channel;
        let row_tiles = block_rows.len().div_ceil(K_TILE);
        let p_tiles = layout.position_tiles(block_rows.len().div_ceil(row_tiles));
        let region = |b: usize| {
            let start = (b * g.c_in + channels.start) * plane;
            // SAFETY: item (group, block) touches only channels `channels` of the samples of
            // `group`; groups partition the samples and blocks the channels, so no other item
            // asks for an overlapping range.
            unsafe { out.range_mut(start..start + channels.len() * plane) }
        };

        with_scratch(|scratch| {
            let Scratch { cols, grid: grid_block, slots, .. } = scratch;
            let slots = prefix(slots, taps.buffer_len());
            let columns_max =
                if layout.group > 1 { samples.len() * p } else { p.div_ceil(p_tiles) };

            // The grid operand: the sample itself, or the group's samples gathered side by side.
            let (operand, ld) = if layout.group > 1 {
                let block = prefix(grid_block, g.c_out * samples.len() * p);
                gather_grid(g, grid, &samples, block);
                (&*block, samples.len() * p)
            } else {
                (&grid[samples.start * g.c_out * p..][..g.c_out * p], p)
            };

            for (s, b) in samples.clone().enumerate() {
                let x = region(b);
                x.fill(0.0);
                for pt in 0..p_tiles {
                    let positions = part(p, p_tiles, pt);
                    let first_column = if layout.group > 1 { s * p } else { positions.start };
                    for rt in 0..row_tiles {
                        // tile [rows, columns] = W^T[rows, :] * grid[:, columns], then col2im.
                        let r = part(block_rows.len(), row_tiles, rt);
                        let rows = block_rows.start + r.start..block_rows.start + r.end;
                        let tile_cols = prefix(cols, rows.len() * columns_max);
                        let columns = positions.len();
                        gemm(
                            1.0,
                            MatRef::new(&weight[rows.start..], [rows.len(), g.c_out], [1, k]),
                            MatRef::new(&operand[first_column..], [g.c_out, columns], [ld, 1]),
                            0.0,
                            MatMut::row_major(tile_cols, rows.len(), columns),
                        );
                        let local = rows.start - channels.start * taps_per_channel
                            ..rows.end - channels.start * taps_per_channel;
                        let tile = Tile { rows: local, positions: positions.clone() };
                        let block_geometry = ConvGeometry { c_in: channels.len(), ..*g };
                        col2im_add(&block_geometry, &taps, (tile_cols, columns), &tile, x, slots);
                    }
                }
                if let Some(bias) = bias {
                    add_channel_bias(x, &bias[channels.clone()], plane);
                }
            }
        });
    });
}

/// `dweight += sum over samples of grid * cols^T`, for `image [n, c_in, h, w]`, `grid [n,
/// c_out, positions]` and `dweight [c_out, k]`.
///
/// One work item per (`k` tile, chunk of samples). Each item sums its samples in order into a
/// `[c_out, tile]` accumulator; the chunks of a tile are then added in chunk order. The batch
/// is split into chunks only when there are fewer than [`MIN_ITEMS`] tiles, and the number of
/// chunks depends on the tile count and the batch size alone.
pub(crate) fn weight_product(g: &ConvGeometry, image: &[f32], grid: &[f32], dweight: &mut [f32]) {
    let layout = Layout::new(g);
    let taps = RowTaps::new(g);
    let k = g.k();
    let k_tiles = k.div_ceil(K_TILE);
    let tile_len = g.c_out * k.div_ceil(k_tiles);
    let fits = (PARTIAL_ELEMENTS / (tile_len * k_tiles)).max(1);
    let chunks = MIN_ITEMS.div_ceil(k_tiles).min(layout.groups).min(fits);
    let out = DisjointSlice::new(dweight);
    let add_tile = |rows: &Range<usize>, acc: &[f32]| {
        for co in 0..g.c_out {
            // SAFETY: the ranges of tile `rows` are columns `rows` of dweight's rows; tiles
            // partition the columns, and each tile is added by one task.
            let dst = unsafe { out.range_mut(co * k + rows.start..co * k + rows.end) };
            add_assign(dst, &acc[co * rows.len()..][..rows.len()]);
        }
    };

    if chunks == 1 {
        (0..k_tiles).into_par_iter().for_each(|kt| {
            let rows = part(k, k_tiles, kt);
            with_scratch(|scratch| {
                let mut acc = std::mem::take(&mut scratch.acc);
                let tile = prefix(&mut acc, g.c_out * rows.len());
                let groups = 0..layout.groups;
                weight_tile(g, &layout, &taps, (image, grid), (&rows, groups), tile, scratch);
                add_tile(&rows, tile);
                scratch.acc = acc;
            });
        });
        return;
    }

    let mut partials = vec![0.0f32; k_tiles * chunks * tile_len];
    partials.par_chunks_mut(tile_len).enumerate().for_each(|(item, acc)| {
        let (kt, chunk) = (item / chunks, item % chunks);
        let rows = part(k, k_tiles, kt);
        let groups = part(layout.groups, chunks, chunk);
        let acc = &mut acc[..g.c_out * rows.len()];
        with_scratch(|scratch| {
            weight_tile(g, &layout, &taps, (image, grid), (&rows, groups), acc, scratch)
        });
    });
    partials.par_chunks_mut(chunks * tile_len).enumerate().for_each(|(kt, parts)| {
        let rows = part(k, k_tiles, kt);
        let len = g.c_out * rows.len();
        let (total, rest) = parts.split_at_mut(tile_len);
        for chunk in rest.chunks(tile_len) {
            add_assign(&mut total[..len], &chunk[..len]);
        }
        add_tile(&rows, &total[..len]);
    });
}

/// `acc [c_out, rows] = sum over groups `groups`, in order, of grid * cols[rows, :]^T`.
fn weight_tile(
    g: &ConvGeometry,
    layout: &Layout,
    taps: &RowTaps,
    (image, grid): (&[f32], &[f32]),
    (rows, groups): (&Range<usize>, Range<usize>),
    acc: &mut [f32],
    scratch: &mut Scratch,
) {
    let Scratch { cols, grid: grid_block, slots, .. } = scratch;
    let slots = prefix(slots, taps.buffer_len());
    let (p, sample_len) = (layout.positions, g.c_in * g.h * g.w);
    let p_tiles = layout.position_tiles(rows.len());
    let mut first = true;
    for group in groups {
        let samples = layout.samples(group);
        for pt in 0..p_tiles {
            // Pack cols[rows, columns] and find the matching grid block [c_out, columns].
            let (operand, columns, ld) = if layout.group > 1 {
                let columns = samples.len() * p;
                let tile = prefix(cols, rows.len() * columns);
                pack_group(g, taps, image, (&samples, rows), tile, slots);
                let block = prefix(grid_block, g.c_out * columns);
                gather_grid(g, grid, &samples, block);
                (&*block, columns, columns)
            } else {
                let b = samples.start;
                let positions = part(p, p_tiles, pt);
                let tile = prefix(cols, rows.len() * positions.len());
                let x = &image[b * sample_len..][..sample_len];
                let t = Tile { rows: rows.clone(), positions: positions.clone() };
                im2col(g, taps, x, &t, (tile, positions.len()), slots);
                (&grid[b * g.c_out * p + positions.start..], positions.len(), p)
            };

            // acc (+)= grid_block * cols^T
            gemm(
                1.0,
                MatRef::new(operand, [g.c_out, columns], [ld, 1]),
                MatRef::row_major(&cols[..rows.len() * columns], rows.len(), columns).t(),
                if first { 0.0 } else { 1.0 },
                MatMut::row_major(acc, g.c_out, rows.len()),
            );
            first = false;
        }
    }
}
