//! `image = col2im(W^T * Y) + bias` on the packed GEMM, with col2im done tile by tile.
//!
//! The product behind conv grad-input and transposed-conv forward. Take a [`ConvGeometry`] with
//! weight `W [c_out, k]` and grid `Y [n, c_out, positions]`. The column matrix of sample `b` is
//! `cols = W^T * Y_b`, `[k, positions]`, whose row `r` is a (channel, tap row, tap column) and
//! column `j` a (grid row, grid column). col2im adds entry `(r, j)` into the image pixel that
//! im2col reads it from, and drops entries that fall in the padding.
//!
//! Here [`packed_gemm::sgemm_tiles`] computes `cols` for one block of image channels (the
//! block's rows of `W^T`) and a group of samples side by side, packing the grid from where it
//! lies, and hands each finished `MR x NR` tile to a closure. The closure adds the tile into
//! per-thread phase planes ([`Phases`]), where every run of a tile row within one grid row is a
//! contiguous vector add, and the planes are drained into the image once per item, with the
//! bias. No tile of `cols` is ever stored. When every pixel receives exactly one entry (a 1x1
//! grid whose kernel covers the image, or a pointwise kernel), there is nothing to scatter, and
//! a plain [`packed_gemm::sgemm`] writes the image.
//!
//! Work items are (sample group, channel block) pairs cut from the geometry alone, and each
//! writes only its block's channels of its group's samples. Within an item, one `sgemm_tiles`
//! call on one thread hands out every tile, in the order of its loops, which depends only on
//! `m`, `k`, `n` and compile-time block sizes, and a tile's values depend on the same things.
//! The item adds the tiles in that order and drains the planes in a fixed order. So every pixel
//! receives the same sums in the same order on any number of threads.
//!
//! The sample groups have a size that depends on the layer's shape but not on the batch size, a
//! power of two of at most 64. A sample's offset in its group, and so the order of its sums,
//! stays the same when the sample moves by a multiple of 64 within a batch or to another batch.
//! Other moves can change its last bits, because the column slivers then cut its columns at
//! other places.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::disjoint::DisjointSlice;
use super::elementwise::{add_assign, add_channel_bias, copy, transpose};
use super::geometry::{ConvGeometry, MAX_TENSOR_ELEMENTS};
use super::packed_gemm::{self, MatMut, MatRef, PackB, Tile, NR};

/// Rows of `W^T` per channel block, at least one channel's taps: the `m` of one GEMM. Of 256,
/// 480, 512 and 1024, 512 ran the dcgan64 layers D2-D4 (grad-input) and G2-G4 (forward) at
/// batch 64 fastest. That was on one core of a shared AVX-512 Xeon whose timings varied by up
/// to 30%, so the ranking is an estimate. It packs each block of the grid half as often as 256.
const BLOCK_ROWS: usize = 512;

/// GEMM columns an item aims for when samples have few positions.
const GEMM_COLUMNS: usize = 1024;

/// Work items a call tries to offer rayon, so that threads can balance.
const MIN_ITEMS: usize = 4;

/// The batch size for which sample groups are sized to give [`MIN_ITEMS`] work items, a power
/// of two. The groups do not shrink for smaller batches, which then get fewer items.
const SPLIT_BATCH: usize = 64;

/// The route from the column matrix to the image, chosen from the geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// The kernel covers the whole unpadded image and the grid is 1x1: row `r` of a sample's
    /// column matrix is element `r` of the sample, and every element receives one entry.
    Whole,
    /// A 1x1 kernel, stride 1, no padding, grid as large as the image: entry `(c, j)` is pixel
    /// `j` of channel `c`, and every pixel receives one entry.
    Pointwise,
    /// Anything else: entries are added through phase planes ([`Phases`]).
    Scatter,
}

/// The partition of one call into work items, from the geometry alone.
struct Plan<'g> {
    g: &'g ConvGeometry,
    layout: Layout,
    /// Positions per sample, `out_h * out_w`.
    positions: usize,
    /// Image channels per block.
    block_channels: usize,
    /// Number of channel blocks.
    blocks: usize,
    /// Samples per item.
    group: usize,
    /// Number of sample groups.
    groups: usize,
}

impl<'g> Plan<'g> {
    fn new(g: &'g ConvGeometry) -> Self {
        let taps = g.k_h * g.k_w;
        let block_channels = (BLOCK_ROWS / taps).clamp(1, g.c_in);
        let blocks = g.c_in.div_ceil(block_channels);
        let positions = g.positions();
        // Fold samples up to a full-width GEMM, but keep MIN_ITEMS items for a batch of
        // SPLIT_BATCH when the channel blocks alone are fewer. A sample's offset in its group's
        // GEMM decides which column slivers its tiles span, and so the order in which a pixel's
        // entries are added. The group size is a power of two that does not depend on the
        // batch, so it divides SPLIT_BATCH, and moving a sample by a multiple of SPLIT_BATCH
        // within a batch, or to another batch, leaves its bits unchanged.
        let min_groups = if blocks >= MIN_ITEMS { 1 } else { MIN_ITEMS.div_ceil(blocks) };
        let per_call = GEMM_COLUMNS.div_ceil(positions);
        let spread = (SPLIT_BATCH / min_groups).max(1);
        let target = per_call.min(spread);
        let group = (1 << target.ilog2()).min(g.n);
        Plan {
            g,
            layout: layout(g),
            positions,
            block_channels,
            blocks,
            group,
            groups: g.n.div_ceil(group),
        }
    }

    fn samples(&self, group: usize) -> Range<usize> {
        group * self.group..((group + 1) * self.group).min(self.g.n)
    }

    fn channels(&self, block: usize) -> Range<usize> {
        block * self.block_channels..((block + 1) * self.block_channels).min(self.g.c_in)
    }
}

/// Detects the layouts in which col2im is a copy.
fn layout(g: &ConvGeometry) -> Layout {
    if g.covers_whole_image() {
        Layout::Whole
    } else if g.is_pointwise() {
        Layout::Pointwise
    } else {
        Layout::Scatter
    }
}

/// `image = col2im(W^T * grid) + bias`, overwriting `image [n, c_in, h, w]` from `grid [n,
/// c_out, positions]` and `weight [c_out, k]`, on [`packed_gemm`].
pub(crate) fn grid_to_image(
    g: &ConvGeometry,
    grid: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    image: &mut [f32],
) {
    debug_assert_eq!(grid.len(), g.n * g.c_out * g.positions());
    debug_assert_eq!(weight.len(), g.c_out * g.k());
    debug_assert_eq!(image.len(), g.n * g.c_in * g.h * g.w);
    let plan = Plan::new(g);
    if plan.layout == Layout::Whole {
        return whole_image(&plan, grid, weight, bias, image);
    }

    // With one sample group, each block of W^T is packed once and is read from W's columns.
    // Otherwise W^T [k, c_out] is stored once, so that the blocks, packed once per group, pack
    // from contiguous rows: packing from W's columns, k floats apart, runs several times slower.
    if plan.groups == 1 {
        return scatter_all(&plan, grid, (weight, None), bias, image);
    }
    let (k, c_out) = (g.k(), g.c_out);
    WEIGHT_T.with(|cached| {
        // A call that finds the buffer in use (another convolution stolen by this thread while
        // it waits) allocates its own.
        let mut fresh = Vec::new();
        let mut borrowed = cached.try_borrow_mut();
        let buffer = match borrowed.as_deref_mut() {
            Ok(buffer) => buffer,
            Err(_) => &mut fresh,
        };
        if buffer.len() < k * c_out {
            buffer.resize(k * c_out, 0.0);
        }
        let weight_t = &mut buffer[..k * c_out];
        let rows_per_task = k.div_ceil(MIN_ITEMS).max(1);
        weight_t.par_chunks_mut(rows_per_task * c_out).enumerate().for_each(|(i, dst)| {
            let src = (&weight[i * rows_per_task..], k);
            transpose(src, [c_out, dst.len() / c_out], (dst, c_out));
        });
        scatter_all(&plan, grid, (weight, Some(weight_t)), bias, image);
    });
}

thread_local! {
    /// The transposed weight of a call, reused by later calls from the same thread.
    static WEIGHT_T: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs the work items of [`Layout::Pointwise`] and [`Layout::Scatter`] for [`grid_to_image`],
/// from `W [c_out, k]` and optionally its transpose `W^T [k, c_out]`.
fn scatter_all(
    plan: &Plan<'_>,
    grid: &[f32],
    (weight, weight_t): (&[f32], Option<&[f32]>),
    bias: Option<&[f32]>,
    image: &mut [f32],
) {
    let g = plan.g;
    let (k, c_out) = (g.k(), g.c_out);
    let out = DisjointSlice::new(image);
    (0..plan.groups * plan.blocks).into_par_iter().for_each(|item| {
        let (group, block) = (item / plan.blocks, item % plan.blocks);
        let samples = plan.samples(group);
        let channels = plan.channels(block);
        let plane = g.h * g.w;
        let mut regions: Vec<&mut [f32]> = samples
            .clone()
            .map(|b| {
                let start = (b * g.c_in + channels.start) * plane;
                // SAFETY: item (group, block) requests channels `channels` of each sample of
                // `group`, once. Groups partition the samples and blocks the channels, so no
                // other request overlaps these ranges.
                unsafe { out.range_mut(start..start + channels.len() * plane) }
            })
            .collect();

        // A = W^T[rows, :], [rows, c_out].
        let rows = channels.start * g.k_h * g.k_w..channels.end * g.k_h * g.k_w;
        let a = match weight_t {
            Some(w_t) => {
                MatRef::from_checked(&w_t[rows.start * c_out..], [rows.len(), c_out], [c_out, 1])
            }
            None => MatRef::from_checked(&weight[rows.start..], [rows.len(), c_out], [1, k]),
        };
        let bias = bias.map(|bias| &bias[channels.clone()]);
        if plan.layout == Layout::Pointwise {
            // The image block starts from the bias, and the product adds into it.
            for region in regions.iter_mut() {
                for (c, channel) in region.chunks_exact_mut(plane).enumerate() {
                    channel.fill(bias.map_or(0.0, |bias| bias[c]));
                }
            }
            pointwise(plan, grid, a, &samples, &mut regions);
        } else {
            scatter_item(plan, grid, a, bias, &samples, &mut regions);
        }
    });
}

/// Panics on an error of `packed_gemm`, which views from a checked geometry cannot cause: its
/// tensors have at most `MAX_TENSOR_ELEMENTS` elements and the shapes agree.
fn expect_checked(result: crate::error::Result<()>) {
    result.unwrap_or_else(|e| panic!("grid_to_image: packed_gemm rejected checked views: {e}"));
}

/// Computes [`Layout::Whole`], where the image is `[n, k]` and equals `grid [n, c_out] * W
/// [c_out, k]` plus the bias, one plain GEMM. Blocks of image channels (columns of the product) are the work items,
/// so that each packs its block of `W` once for the whole batch. A block is computed into
/// scratch `[n, block]` and copied into the image, because its columns are strided slices of
/// every sample.
///
/// NOTE: the batch is not split, so an image of fewer than [`MIN_ITEMS`] channel blocks keeps
/// fewer threads busy.
fn whole_image(
    plan: &Plan<'_>,
    grid: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    image: &mut [f32],
) {
    let g = plan.g;
    let (k, plane) = (g.k(), g.h * g.w);
    let out = DisjointSlice::new(image);
    (0..plan.blocks).into_par_iter().for_each(|block| {
        let channels = plan.channels(block);
        let columns = channels.start * plane..channels.end * plane;
        PLANES.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let len = g.n * columns.len();
            if scratch.len() < len {
                scratch.resize(len, 0.0);
            }
            let block_out = &mut scratch[..len];

            // [n, block] = grid [n, c_out] * W[:, block]
            let a = MatRef::from_checked(grid, [g.n, g.c_out], [g.c_out, 1]);
            let b =
                MatRef::from_checked(&weight[columns.start..], [g.c_out, columns.len()], [k, 1]);
            let c = MatMut::from_checked(block_out, [g.n, columns.len()], [columns.len(), 1]);
            expect_checked(packed_gemm::sgemm(1.0, a, b, 0.0, c));

            for (b, values) in block_out.chunks_exact(columns.len()).enumerate() {
                let start = b * k + columns.start;
                // SAFETY: block `block` requests columns `columns` of each sample, once. Blocks
                // partition the columns, so no other request overlaps these ranges.
                let dst = unsafe { out.range_mut(start..start + columns.len()) };
                copy(dst, values);
                if let Some(bias) = bias {
                    add_channel_bias(dst, &bias[channels.clone()], plane);
                }
            }
        });
    });
}

/// Adds `A * grid_b` into each sample's block `[channels, positions]` ([`Layout::Pointwise`]).
fn pointwise(
    plan: &Plan<'_>,
    grid: &[f32],
    a: MatRef<'_>,
    samples: &Range<usize>,
    regions: &mut [&mut [f32]],
) {
    let (c_out, p) = (plan.g.c_out, plan.positions);
    // Chunks of positions keep each product within MAX_TENSOR_ELEMENTS, as in tiles_in_chunks.
    let chunk = (MAX_TENSOR_ELEMENTS / a.rows().max(1)).max(1);
    for (b, region) in samples.clone().zip(regions.iter_mut()) {
        for first in (0..p).step_by(chunk) {
            let columns = chunk.min(p - first);
            let y = MatRef::from_checked(&grid[b * c_out * p + first..], [c_out, columns], [p, 1]);
            let c = MatMut::from_checked(&mut region[first..], [a.rows(), columns], [p, 1]);
            expect_checked(packed_gemm::sgemm(1.0, a, y, 1.0, c));
        }
    }
}

/// The grid of a group of samples read as `B [c_out, samples * positions]`: column `s * positions
/// + j` is position `j` of sample `s`.
struct GroupGrid<'a> {
    /// The group's grid, `[samples, c_out, positions]`.
    grid: &'a [f32],
    c_out: usize,
    positions: usize,
}

impl PackB for GroupGrid<'_> {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        let (c_out, p) = (self.c_out, self.positions);
        for (s, sliver) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let col0 = n0 + s * NR;
            let cols = NR.min(n0 + nc - col0);
            let (rows, _) = sliver.as_chunks_mut::<NR>();
            let (sample, position) = (col0 / p, col0 % p);
            if cols == NR && position + NR <= p {
                // The sliver lies in one sample: whole rows of NR contiguous values.
                for (i, row) in rows.iter_mut().enumerate() {
                    let start = (sample * c_out + k0 + i) * p + position;
                    *row = self.grid[start..start + NR].try_into().expect("NR values");
                }
                continue;
            }

            // Runs of columns within one sample are contiguous in the grid: (first column,
            // length, offset in the grid of channel 0). The same runs hold for every row.
            let mut runs = [(0usize, 0usize, 0usize); NR];
            let mut count = 0;
            let mut j = 0;
            while j < cols {
                let (sample, position) = ((col0 + j) / p, (col0 + j) % p);
                let run = (cols - j).min(p - position);
                runs[count] = (j, run, sample * c_out * p + position);
                count += 1;
                j += run;
            }
            for (i, row) in rows.iter_mut().enumerate() {
                let channel = (k0 + i) * p;
                for &(j, run, offset) in &runs[..count] {
                    let start = offset + channel;
                    copy(&mut row[j..j + run], &self.grid[start..start + run]);
                }
                row[cols..].fill(0.0);
            }
        }
    }
}

thread_local! {
    /// Phase planes of one work item, reused across calls on this thread.
    ///
    /// NOTE: the planes cover the item's whole image block (its samples and channels, each
    /// about `h x w`), not one tile: at most a few MiB on DCGAN's layers, but for one large
    /// sample they grow with the image.
    static PLANES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The phase planes of one work item of [`Layout::Scatter`].
///
/// With the image padded by `pad` on each side, tap `ky` of grid row `oy` reads padded row
/// `oy * stride_h + ky * dilation_h`, which is row `oy + (ky * dilation_h) / stride_h` of phase
/// `(ky * dilation_h) % stride_h`, and likewise along the width. So for one tap, a grid row
/// lands on one contiguous run of one phase plane, and every entry has a slot, padding
/// included. Each (sample, channel, phase) has a `rows x cols` plane, and the planes are drained
/// into the image once the product is done.
///
/// Grids narrower than [`NARROW_GRID`] have short grid rows, and a tile row would be cut into
/// many short runs. For them, planes are kept per (row phase, tap column) instead, `cols =
/// out_w` wide, so that a tap's whole sample is one run. Draining then adds `k_w` planes per
/// pixel row instead of interleaving `stride_w` of them.
struct Phases {
    rows: usize,
    cols: usize,
    /// Planes per channel: `stride_h * stride_w` phases, or `stride_h * k_w` for narrow grids.
    planes: usize,
    /// Whether planes are per (row phase, tap column).
    narrow: bool,
    /// Per tap of the kernel, the offset of its first slot within a channel's planes.
    taps: Vec<usize>,
}

/// Grid width below which [`Phases`] keeps one plane per tap column.
const NARROW_GRID: usize = 8;

impl Phases {
    fn new(g: &ConvGeometry) -> Self {
        let ([s_h, s_w], [d_h, d_w]) = (g.stride, g.dilation);
        let narrow = g.out_w < NARROW_GRID;
        let rows = g.out_h + (g.k_h - 1) * d_h / s_h;
        let cols = if narrow { g.out_w } else { g.out_w + (g.k_w - 1) * d_w / s_w };
        let taps = (0..g.k_h * g.k_w)
            .map(|tap| {
                let (ky, kx) = (tap / g.k_w, tap % g.k_w);
                let (ty, tx) = (ky * d_h, kx * d_w);
                if narrow {
                    ((ty % s_h * g.k_w + kx) * rows + ty / s_h) * cols
                } else {
                    ((ty % s_h * s_w + tx % s_w) * rows + ty / s_h) * cols + tx / s_w
                }
            })
            .collect();
        let planes = s_h * if narrow { g.k_w } else { s_w };
        Phases { rows, cols, planes, narrow, taps }
    }

    /// Elements of one channel's planes.
    fn channel_len(&self) -> usize {
        self.planes * self.rows * self.cols
    }
}

/// Computes one item of [`Layout::Scatter`]: `sgemm_tiles` produces the block's column matrix,
/// each tile is added into phase planes, and the planes are drained into the image block.
fn scatter_item(
    plan: &Plan<'_>,
    grid: &[f32],
    a: MatRef<'_>,
    bias: Option<&[f32]>,
    samples: &Range<usize>,
    regions: &mut [&mut [f32]],
) {
    let g = plan.g;
    let p = plan.positions;
    let phases = Phases::new(g);
    let channels = regions[0].len() / (g.h * g.w);
    let sample_len = channels * phases.channel_len();
    let n = samples.len() * p;

    PLANES.with(|planes| {
        let mut planes = planes.borrow_mut();
        let len = samples.len() * sample_len;
        if planes.len() < len {
            planes.resize(len, 0.0);
        }
        let planes = &mut planes[..len];
        planes.fill(0.0);

        // B = the group's grid, [c_out, samples * positions], packed from where it lies.
        let first = samples.start * g.c_out * p;
        let grid = &grid[first..first + n * g.c_out];
        if p == 1 {
            let b = MatRef::from_checked(grid, [g.c_out, n], [1, g.c_out]);
            tiles_in_chunks(plan, a, &b, n, (&phases, sample_len), planes);
        } else {
            let b = GroupGrid { grid, c_out: g.c_out, positions: p };
            tiles_in_chunks(plan, a, &b, n, (&phases, sample_len), planes);
        }

        for (region, planes) in regions.iter_mut().zip(planes.chunks_exact(sample_len)) {
            let channels = region.chunks_exact_mut(g.h * g.w);
            let planes = planes.chunks_exact(phases.channel_len());
            for (c, (image, planes)) in channels.zip(planes).enumerate() {
                let bias = bias.map_or(0.0, |bias| bias[c]);
                if phases.narrow {
                    drain_narrow(g, &phases, planes, bias, image);
                } else {
                    drain(g, &phases, planes, bias, image);
                }
            }
        }
    });
}

/// Adds the column matrix `A * B` (`n` columns) into the phase planes, one `sgemm_tiles` call
/// per chunk of columns. A chunk keeps its `[rows, columns]` product within the
/// `MAX_TENSOR_ELEMENTS` that `sgemm_tiles` accepts, so only a sample of more than about four
/// million positions is cut. Chunks run in order of their columns.
fn tiles_in_chunks(
    plan: &Plan<'_>,
    a: MatRef<'_>,
    b: &impl PackB,
    n: usize,
    (phases, sample_len): (&Phases, usize),
    planes: &mut [f32],
) {
    let chunk = (MAX_TENSOR_ELEMENTS / a.rows().max(1) / NR * NR).max(NR);
    for first in (0..n).step_by(chunk) {
        let columns = chunk.min(n - first);
        let shifted = |k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]| {
            b.pack_b(k0, kc, first + n0, nc, dst)
        };
        let add = |tile: &Tile<'_>| add_tile(plan, phases, sample_len, (first, tile), planes);
        expect_checked(packed_gemm::sgemm_tiles(1.0, a, &shifted, columns, add));
    }
}

/// Adds one tile of the column matrix into the phase planes: each run of a tile row within one
/// grid row is one contiguous vector add.
fn add_tile(
    plan: &Plan<'_>,
    phases: &Phases,
    sample_len: usize,
    (first, tile): (usize, &Tile<'_>),
    planes: &mut [f32],
) {
    let g = plan.g;
    let (p, taps) = (plan.positions, g.k_h * g.k_w);
    // Column of the whole item's column matrix where the tile starts.
    let col = first + tile.col;

    // The tile's columns cut at grid rows: (first column, length, offset of the run's first
    // slot for tap offset 0). The same cuts hold for every row of the tile.
    let mut runs = [(0usize, 0usize, 0usize); NR];
    let mut count = 0;
    let mut j = 0;
    while j < tile.cols {
        let (sample, position) = ((col + j) / p, (col + j) % p);
        let (oy, ox) = (position / g.out_w, position % g.out_w);
        // Narrow planes continue a run across grid rows, up to the end of the sample.
        let row_end = if phases.narrow { p - position } else { g.out_w - ox };
        let len = (tile.cols - j).min(row_end);
        runs[count] = (j, len, sample * sample_len + oy * phases.cols + ox);
        count += 1;
        j += len;
    }

    // Row r of the block's column matrix is tap r % taps of block channel r / taps.
    let (mut channel, mut tap) = (tile.row / taps, tile.row % taps);
    for i in 0..tile.rows {
        let base = channel * phases.channel_len() + phases.taps[tap];
        let values = tile.row_values(i);
        for &(j, len, offset) in &runs[..count] {
            let start = base + offset;
            add_assign(&mut planes[start..start + len], &values[j..j + len]);
        }
        tap += 1;
        if tap == taps {
            (channel, tap) = (channel + 1, 0);
        }
    }
}

/// Writes `image [h, w]`: each pixel is `bias` plus its slot in one channel's phase planes.
/// Pixels that no slot covers get the bias alone.
fn drain(g: &ConvGeometry, phases: &Phases, planes: &[f32], bias: f32, image: &mut [f32]) {
    let ([s_h, s_w], [pad_h, pad_w]) = (g.stride, g.pad);
    let plane_len = phases.rows * phases.cols;
    for (iy, row) in image.chunks_exact_mut(g.w).enumerate() {
        let (phase_y, slot_y) = ((iy + pad_h) % s_h, (iy + pad_h) / s_h);
        if slot_y >= phases.rows {
            row.fill(bias);
            continue;
        }
        // Pixel ix is slot (ix + pad_w) / s_w of phase (ix + pad_w) % s_w, in plane row slot_y.
        let planes = &planes[phase_y * s_w * plane_len + slot_y * phases.cols..];
        let slot = |phase_x: usize, slot_x: usize| {
            if slot_x < phases.cols {
                planes[phase_x * plane_len + slot_x]
            } else {
                0.0
            }
        };
        if s_w == 2 && (g.w + pad_w).div_ceil(2) <= phases.cols {
            // Two phases alternate along the row; every slot exists.
            let (first, second) = (pad_w % 2, 1 - pad_w % 2);
            let first_row = &planes[first * plane_len..][..phases.cols];
            let second_row = &planes[second * plane_len..][..phases.cols];
            let start = pad_w / 2;
            let (pairs, rest) = row.as_chunks_mut::<2>();
            let slots = first_row[start..].iter().zip(&second_row[start + pad_w % 2..]);
            for (pair, (&a, &b)) in pairs.iter_mut().zip(slots) {
                *pair = [bias + a, bias + b];
            }
            for pixel in rest {
                *pixel = bias + slot(first, (g.w - 1 + pad_w) / 2);
            }
            continue;
        }
        let (mut phase_x, mut slot_x) = (pad_w % s_w, pad_w / s_w);
        for pixel in row.iter_mut() {
            *pixel = bias + slot(phase_x, slot_x);
            phase_x += 1;
            if phase_x == s_w {
                phase_x = 0;
                slot_x += 1;
            }
        }
    }
}

/// Writes `image [h, w]` as [`drain`] does, from planes per (row phase, tap column). Each pixel
/// adds the slots of the tap columns that reach it, in tap order.
fn drain_narrow(g: &ConvGeometry, phases: &Phases, planes: &[f32], bias: f32, image: &mut [f32]) {
    let ([s_h, s_w], [pad_h, pad_w]) = (g.stride, g.pad);
    let plane_len = phases.rows * phases.cols;
    for (iy, row) in image.chunks_exact_mut(g.w).enumerate() {
        row.fill(bias);
        let (phase_y, slot_y) = ((iy + pad_h) % s_h, (iy + pad_h) / s_h);
        if slot_y >= phases.rows {
            continue;
        }
        for kx in 0..g.k_w {
            // Slot ox of this plane row is pixel ox * s_w + kx * d_w - pad_w.
            let plane = (phase_y * g.k_w + kx) * plane_len + slot_y * phases.cols;
            let values = &planes[plane..plane + phases.cols];
            let offset = kx * g.dilation[1];
            let first = pad_w.saturating_sub(offset).div_ceil(s_w);
            for (ox, &value) in values.iter().enumerate().skip(first) {
                let ix = ox * s_w + offset - pad_w;
                if ix >= g.w {
                    break;
                }
                row[ix] += value;
            }
        }
    }
}
