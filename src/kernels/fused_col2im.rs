//! `image = col2im(W^T * Y) + bias` on the packed GEMM, with col2im done tile by tile.
//!
//! The product behind conv grad-input and transposed-conv forward. Over a [`ConvGeometry`] with
//! weight `W [c_out, k]` and grid `Y [n, c_out, positions]`, the column matrix of a sample is
//! `cols = W^T * Y_b`, `[k, positions]`, and col2im adds entry `(r, j)` into the image pixel
//! that im2col reads it from (row `r` is channel, tap row and tap column; column `j` is grid row
//! and grid column), dropping entries that fall in the padding.
//!
//! Here [`packed_gemm::sgemm_tiles`] computes `cols` for one block of image channels (the
//! block's rows of `W^T`, read in place) and a group of samples side by side, and hands each
//! finished `MR x NR` tile to a closure that adds it straight into the image. No tile of `cols`
//! is ever stored, and the grid is packed from where it lies. The image block starts from the
//! bias (or zero) before the product. When every pixel receives exactly one entry (a 1x1 grid
//! whose kernel covers the image, or a pointwise kernel), tiles are stored instead and the fill
//! is skipped.
//!
//! Work items are (sample group, channel block) pairs cut from the geometry alone, and each
//! writes only its block's channels of its group's samples. Within an item, one `sgemm_tiles`
//! call on one thread produces every contribution, in the order of its loops, which depends only
//! on `m`, `k`, `n` and compile-time block sizes. A tile's values depend on the same things. So
//! every pixel receives the same sums in the same order on any number of threads.

use std::ops::Range;

use rayon::prelude::*;

use super::col2im::scatter_add_strided;
use super::disjoint::DisjointSlice;
use super::geometry::ConvGeometry;
use super::packed_gemm::{self, MatRef, PackB, Tile};

/// Rows of `W^T` per channel block, at least one channel's taps: the `m` of one GEMM.
const BLOCK_ROWS: usize = 256;

/// GEMM columns an item aims for when samples have few positions.
const GEMM_COLUMNS: usize = 1024;

/// Work items a call tries to offer rayon, so that threads can balance.
const MIN_ITEMS: usize = 4;

/// How the entries of one column-matrix tile reach the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// The kernel covers the whole unpadded image and the grid is 1x1: row `r` of a sample's
    /// column matrix is element `r` of the sample, and every element receives one entry.
    Whole,
    /// A 1x1 kernel, stride 1, no padding, grid as large as the image: entry `(c, j)` is pixel
    /// `j` of channel `c`, and every pixel receives one entry.
    Pointwise,
    /// Anything else: entries are added, each tap's grid row as one strided run.
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
        // Fold samples up to a full-width GEMM, but keep MIN_ITEMS items when the channel blocks
        // alone are fewer.
        let min_groups = if blocks >= MIN_ITEMS { 1 } else { MIN_ITEMS.div_ceil(blocks) };
        let per_call = GEMM_COLUMNS.div_ceil(positions);
        let spread = (g.n / min_groups).max(1);
        let group = per_call.min(spread).clamp(1, g.n);
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
    let unit_dilation = |axis: usize, k: usize| g.dilation[axis] == 1 || k == 1;
    let unpadded = g.pad == [0, 0];
    if unpadded
        && (g.k_h, g.k_w) == (g.h, g.w)
        && (g.out_h, g.out_w) == (1, 1)
        && unit_dilation(0, g.k_h)
        && unit_dilation(1, g.k_w)
    {
        Layout::Whole
    } else if unpadded
        && (g.k_h, g.k_w) == (1, 1)
        && g.stride == [1, 1]
        // A transposed convolution's output padding can make the image larger than the grid.
        && (g.out_h, g.out_w) == (g.h, g.w)
    {
        Layout::Pointwise
    } else {
        Layout::Scatter
    }
}

/// Returns whether the fused path is expected to beat the tiled im2col path of `lowering.rs`
/// on `g`. It loses when the reduction over grid channels is too short to hide the per-tile
/// scatter.
pub(crate) fn suits(g: &ConvGeometry) -> bool {
    let _ = g;
    true
}

/// `image = col2im(W^T * grid) + bias`, overwriting `image [n, c_in, h, w]` from `grid [n,
/// c_out, positions]` and `weight [c_out, k]`, on [`packed_gemm::sgemm_tiles`].
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
        let bias = bias.map(|bias| &bias[channels.clone()]);
        run_item(&plan, (grid, weight, bias), (&samples, &channels), &mut regions);
    });
}

/// Computes item (`samples`, `channels`) into `regions`, the block's channels of each sample,
/// `[channels, h, w]`.
fn run_item(
    plan: &Plan<'_>,
    (grid, weight, bias): (&[f32], &[f32], Option<&[f32]>),
    (samples, channels): (&Range<usize>, &Range<usize>),
    regions: &mut [&mut [f32]],
) {
    let g = plan.g;
    let (k, taps, plane, p) = (g.k(), g.k_h * g.k_w, g.h * g.w, plan.positions);

    // A = W^T[rows, :], [rows, c_out], read in place from W [c_out, k].
    let rows = channels.start * taps..channels.end * taps;
    let a = MatRef::from_checked(&weight[rows.start..], [rows.len(), g.c_out], [1, k]);
    let n = samples.len() * p;

    // A scatter adds into the image, so the block starts from the bias.
    if plan.layout == Layout::Scatter {
        for region in regions.iter_mut() {
            for (c, channel) in region.chunks_exact_mut(plane).enumerate() {
                channel.fill(bias.map_or(0.0, |bias| bias[c]));
            }
        }
    }

    // B = the group's grid, [c_out, samples * positions], packed from where it lies.
    let first = samples.start * g.c_out * p;
    let grid = &grid[first..first + samples.len() * g.c_out * p];
    let result = if samples.len() == 1 {
        let b = MatRef::from_checked(grid, [g.c_out, p], [p, 1]);
        multiply(plan, a, &b, n, bias, regions)
    } else if p == 1 {
        let b = MatRef::from_checked(grid, [g.c_out, samples.len()], [1, g.c_out]);
        multiply(plan, a, &b, n, bias, regions)
    } else {
        let b = GroupGrid { grid, c_out: g.c_out, positions: p };
        multiply(plan, a, &b, n, bias, regions)
    };
    // The views come from a checked geometry, whose tensors have at most MAX_TENSOR_ELEMENTS
    // elements, so the size check of sgemm_tiles cannot fail.
    result.unwrap_or_else(|e| panic!("grid_to_image: sgemm_tiles rejected checked views: {e}"));
}

/// Runs `sgemm_tiles` with the tile closure of `plan`'s layout.
fn multiply(
    plan: &Plan<'_>,
    a: MatRef<'_>,
    b: &impl PackB,
    n: usize,
    bias: Option<&[f32]>,
    regions: &mut [&mut [f32]],
) -> crate::error::Result<()> {
    match plan.layout {
        Layout::Whole => packed_gemm::sgemm_tiles(1.0, a, b, n, |tile| {
            store_whole(plan, tile, bias, regions)
        }),
        Layout::Pointwise => packed_gemm::sgemm_tiles(1.0, a, b, n, |tile| {
            store_pointwise(plan, tile, bias, regions)
        }),
        Layout::Scatter => {
            let taps = Taps::new(plan.g);
            packed_gemm::sgemm_tiles(1.0, a, b, n, |tile| scatter(plan, &taps, tile, regions))
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
        for (s, sliver) in dst.chunks_exact_mut(kc * packed_gemm::NR).enumerate() {
            let col0 = n0 + s * packed_gemm::NR;
            let cols = packed_gemm::NR.min(n0 + nc - col0);
            let (rows, _) = sliver.as_chunks_mut::<{ packed_gemm::NR }>();
            for (i, row) in rows.iter_mut().enumerate() {
                let co = k0 + i;
                // Runs of columns within one sample are contiguous in the grid.
                let mut j = 0;
                while j < cols {
                    let (sample, position) = ((col0 + j) / p, (col0 + j) % p);
                    let run = (cols - j).min(p - position);
                    let src = &self.grid[(sample * c_out + co) * p + position..][..run];
                    row[j..j + run].copy_from_slice(src);
                    j += run;
                }
                row[cols..].fill(0.0);
            }
        }
    }
}

/// Stores a tile of the [`Layout::Whole`] column matrix: entry `(r, s)` is element `r` of the
/// block of sample `s`.
fn store_whole(
    plan: &Plan<'_>,
    tile: &Tile<'_>,
    bias: Option<&[f32]>,
    regions: &mut [&mut [f32]],
) {
    let plane = plan.g.h * plan.g.w;
    for i in 0..tile.rows {
        let r = tile.row + i;
        let shift = bias.map_or(0.0, |bias| bias[r / plane]);
        for (j, &value) in tile.row_values(i).iter().enumerate() {
            regions[tile.col + j][r] = value + shift;
        }
    }
}

/// Stores a tile of the [`Layout::Pointwise`] column matrix: entry `(c, s * positions + j)` is
/// pixel `j` of channel `c` of sample `s`.
fn store_pointwise(
    plan: &Plan<'_>,
    tile: &Tile<'_>,
    bias: Option<&[f32]>,
    regions: &mut [&mut [f32]],
) {
    let p = plan.positions;
    for i in 0..tile.rows {
        let c = tile.row + i;
        let shift = bias.map_or(0.0, |bias| bias[c]);
        let values = tile.row_values(i);
        let mut j = 0;
        while j < values.len() {
            let (sample, position) = ((tile.col + j) / p, (tile.col + j) % p);
            let run = (values.len() - j).min(p - position);
            let dst = &mut regions[sample][c * p + position..][..run];
            for (d, &v) in dst.iter_mut().zip(&values[j..j + run]) {
                *d = v + shift;
            }
            j += run;
        }
    }
}

/// For every tap index along each axis, the grid indices whose pixel lies inside the image and
/// the pixel offset of grid index 0 (negative when the tap starts in the padding).
struct Taps {
    rows: Vec<(Range<usize>, isize)>,
    cols: Vec<(Range<usize>, isize)>,
}

impl Taps {
    fn new(g: &ConvGeometry) -> Self {
        let axis = |taps: usize, axis: usize, out: usize, size: usize| {
            (0..taps)
                .map(|t| {
                    let offset = (t * g.dilation[axis]) as isize - g.pad[axis] as isize;
                    (inside(out, size, g.stride[axis], offset), offset)
                })
                .collect()
        };
        Taps { rows: axis(g.k_h, 0, g.out_h, g.h), cols: axis(g.k_w, 1, g.out_w, g.w) }
    }
}

/// The indices `o` in `0..out` with `0 <= o * stride + offset < size`.
fn inside(out: usize, size: usize, stride: usize, offset: isize) -> Range<usize> {
    let (stride, size) = (stride as isize, size as isize);
    // First o with o * stride + offset >= 0, and first o with o * stride + offset >= size.
    let first = if offset >= 0 { 0 } else { (-offset + stride - 1) / stride };
    let end = if offset >= size { 0 } else { (size - offset + stride - 1) / stride };
    let end = (end as usize).min(out);
    (first as usize).min(end)..end
}

/// Adds a tile of the column matrix into the image: each run of a tile row that lies in one grid
/// row goes to one image row, every `stride_w`-th pixel, with the entries in the padding dropped.
fn scatter(plan: &Plan<'_>, taps: &Taps, tile: &Tile<'_>, regions: &mut [&mut [f32]]) {
    let g = plan.g;
    let (p, plane, tap_count) = (plan.positions, g.h * g.w, g.k_h * g.k_w);
    for i in 0..tile.rows {
        // Row r of the block's column matrix is tap (ky, kx) of block channel c.
        let r = tile.row + i;
        let (c, tap) = (r / tap_count, r % tap_count);
        let (oy_inside, y_offset) = &taps.rows[tap / g.k_w];
        let (ox_inside, x_offset) = &taps.cols[tap % g.k_w];
        let values = tile.row_values(i);
        let mut j = 0;
        while j < values.len() {
            let (sample, position) = ((tile.col + j) / p, (tile.col + j) % p);
            let (oy, ox) = (position / g.out_w, position % g.out_w);
            let run = (values.len() - j).min(g.out_w - ox);
            let first = ox.max(ox_inside.start);
            let end = (ox + run).min(ox_inside.end);
            if oy_inside.contains(&oy) && first < end {
                let iy = (oy * g.stride[0]) as isize + y_offset;
                let ix = (first * g.stride[1]) as isize + x_offset;
                // Both lie in the image: oy and first are inside indices of their taps.
                let row_start = c * plane + iy as usize * g.w;
                let dst = &mut regions[sample][row_start + ix as usize..row_start + g.w];
                let src = &values[j + first - ox..j + end - ox];
                scatter_add_strided(dst, src, g.stride[1]);
            }
            j += run;
        }
    }
}
