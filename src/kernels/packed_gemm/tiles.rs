//! The blocked loops of [`super::sgemm_tiles`].
//!
//! A tile is finished only after its last k-block, so its partial sums live in a buffer until
//! then. Two loop orders keep that buffer bounded, and the one whose bound costs less is used:
//!
//! - `m <= k`: the sums cover all `m` rows of a column block, and B is packed one k-block at a
//!   time, as in [`super::sgemm`].
//! - `m > k`: the packed B covers all `k` rows of a column block, and the sums cover one A block.
//!
//! Either way the column block `nc` shrinks as `min(m, k)` grows, and A is packed once per column
//! block, so the order that bounds by the smaller dimension repacks A least.

use super::driver::{multiply_block, with_buffer, BlockOutput, PACKED_A, PACKED_B, TILE_SUMS};
use super::kernel::{prefetch, Acc, Merge, MR, NR, NV, V};
use super::pack::pack_a;
use super::{MatRef, PackB, Tile, KC, MC, NC, TILE_PANEL_BYTES};

/// The tile sums of a `rows x nc` region of the product, stored tile by tile, column of tiles
/// first, and the block of it being multiplied. After the last k-block, each finished tile goes
/// to `tile`.
struct TileSums<'s, F> {
    sums: &'s mut [V],
    /// Tiles in one column of the region: its rows, padded, divided by `MR`.
    tiles_down: usize,
    /// Row of the product where the region starts.
    region_row0: usize,
    /// Row and column of the product where the current block starts.
    row0: usize,
    col0: usize,
    merge: Merge,
    last_block: bool,
    m: usize,
    n: usize,
    tile: F,
}

impl<F: FnMut(&Tile<'_>)> TileSums<'_, F> {
    /// Returns the range of `sums` holding the microtile at `(i, j)` of the block.
    #[inline(always)]
    fn range(&self, i: usize, j: usize) -> std::ops::Range<usize> {
        let tile_row = (self.row0 - self.region_row0 + i) / MR;
        let start = (j / NR * self.tiles_down + tile_row) * MR * NV;
        start..start + MR * NV
    }
}

impl<F: FnMut(&Tile<'_>)> BlockOutput for TileSums<'_, F> {
    #[inline(always)]
    fn prefetch(&self, i: usize, j: usize) {
        prefetch(bytemuck::cast_slice(&self.sums[self.range(i, j)]));
    }

    #[inline(always)]
    fn update(&mut self, i: usize, j: usize, acc: &Acc) {
        let range = self.range(i, j);
        let sum = &mut self.sums[range];
        for (s, &ab) in sum.iter_mut().zip(acc.as_flattened()) {
            *s = self.merge.vector(ab, *s);
        }
        if self.last_block {
            let (row, col) = (self.row0 + i, self.col0 + j);
            let (rows, cols) = (MR.min(self.m - row), NR.min(self.n - col));
            (self.tile)(&Tile { row, col, rows, cols, values: bytemuck::cast_slice(sum) });
        }
    }
}

/// Returns the widest column block, a multiple of [`NR`] within `NR..=NC`, for which a buffer of
/// `rows x nc` floats fits in [`TILE_PANEL_BYTES`].
fn column_block(rows: usize) -> usize {
    let columns = TILE_PANEL_BYTES / (rows * size_of::<f32>());
    (columns / NR * NR).clamp(NR, NC)
}

/// Hands every tile of `alpha * A * B` to `tile`, as documented on [`super::sgemm_tiles`].
pub fn gemm_tiles(
    alpha: f32,
    a: &MatRef<'_>,
    b: &impl PackB,
    n: usize,
    tile: &mut impl FnMut(&Tile<'_>),
) {
    let (m, k) = (a.rows, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        let zeros = [0.0; MR * NR];
        for col in (0..n).step_by(NR) {
            for row in (0..m).step_by(MR) {
                let (rows, cols) = (MR.min(m - row), NR.min(n - col));
                tile(&Tile { row, col, rows, cols, values: &zeros });
            }
        }
        return;
    }
    if m <= k {
        tiles_with_all_rows(alpha, a, b, n, tile);
    } else {
        tiles_with_all_depth(alpha, a, b, n, tile);
    }
}

/// Computes the tiles for `m <= k`, with tile sums for all `m` rows of a column block and B
/// packed one k-block at a time.
fn tiles_with_all_rows(
    alpha: f32,
    a: &MatRef<'_>,
    b: &impl PackB,
    n: usize,
    tile: &mut impl FnMut(&Tile<'_>),
) {
    let (m, k) = (a.rows, a.cols);
    let m_padded = m.next_multiple_of(MR);
    let nc_step = column_block(m_padded);
    let nc_max = nc_step.min(n.next_multiple_of(NR));
    let kc_max = KC.min(k);
    let mc_max = MC.min(m_padded);
    with_buffer(&PACKED_B, kc_max * nc_max, |b_buffer| {
        with_buffer(&PACKED_A, mc_max * kc_max, |a_buffer| {
            with_buffer(&TILE_SUMS, m_padded * nc_max, |sums| {
                let b_buffer: &mut [f32] = bytemuck::cast_slice_mut(b_buffer);
                let a_buffer: &mut [f32] = bytemuck::cast_slice_mut(a_buffer);

                for jc in (0..n).step_by(nc_step) {
                    let nc = nc_step.min(n - jc);
                    for pc in (0..k).step_by(KC) {
                        let kc = KC.min(k - pc);
                        let last_block = pc + kc == k;
                        let merge = Merge::new(alpha, if pc == 0 { 0.0 } else { 1.0 });

                        // Pack B[pc.., jc..] as [nc / NR slivers][kc][NR].
                        let b_panel = &mut b_buffer[..nc.next_multiple_of(NR) * kc];
                        b.pack_b(pc, kc, jc, nc, b_panel);

                        for ic in (0..m).step_by(MC) {
                            let mc = MC.min(m - ic);
                            let a_block = &mut a_buffer[..mc.next_multiple_of(MR) * kc];
                            pack_a(a, ic, mc, pc, kc, a_block);

                            let mut output = TileSums {
                                sums: &mut *sums,
                                tiles_down: m_padded / MR,
                                region_row0: 0,
                                row0: ic,
                                col0: jc,
                                merge,
                                last_block,
                                m,
                                n,
                                tile: &mut *tile,
                            };
                            multiply_block(kc, nc, a_block, b_panel, &mut output);
                        }
                    }
                }
            })
        })
    })
}

/// Computes the tiles for `m > k`, with B packed for all `k` rows of a column block and tile sums
/// for one A block.
fn tiles_with_all_depth(
    alpha: f32,
    a: &MatRef<'_>,
    b: &impl PackB,
    n: usize,
    tile: &mut impl FnMut(&Tile<'_>),
) {
    let (m, k) = (a.rows, a.cols);
    let kc_max = KC.min(k);
    let mc_max = MC.min(m.next_multiple_of(MR));
    let nc_step = column_block(k.max(mc_max));
    let nc_max = nc_step.min(n.next_multiple_of(NR));
    with_buffer(&PACKED_B, k * nc_max, |b_buffer| {
        with_buffer(&PACKED_A, mc_max * kc_max, |a_buffer| {
            with_buffer(&TILE_SUMS, mc_max * nc_max, |sums| {
                let b_buffer: &mut [f32] = bytemuck::cast_slice_mut(b_buffer);
                let a_buffer: &mut [f32] = bytemuck::cast_slice_mut(a_buffer);

                for jc in (0..n).step_by(nc_step) {
                    let nc = nc_step.min(n - jc);
                    let nc_padded = nc.next_multiple_of(NR);

                    // Pack B[.., jc..] as one [nc / NR][kc][NR] panel per k-block, back to back,
                    // so the panel of the block starting at pc starts at pc * nc_padded.
                    for pc in (0..k).step_by(KC) {
                        let kc = KC.min(k - pc);
                        let start = pc * nc_padded;
                        b.pack_b(pc, kc, jc, nc, &mut b_buffer[start..start + kc * nc_padded]);
                    }

                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);
                        let tiles_down = mc.div_ceil(MR);

                        for pc in (0..k).step_by(KC) {
                            let kc = KC.min(k - pc);
                            let last_block = pc + kc == k;
                            let merge = Merge::new(alpha, if pc == 0 { 0.0 } else { 1.0 });
                            let b_panel = &b_buffer[pc * nc_padded..(pc + kc) * nc_padded];
                            let a_block = &mut a_buffer[..tiles_down * MR * kc];
                            pack_a(a, ic, mc, pc, kc, a_block);

                            let mut output = TileSums {
                                sums: &mut *sums,
                                tiles_down,
                                region_row0: ic,
                                row0: ic,
                                col0: jc,
                                merge,
                                last_block,
                                m,
                                n,
                                tile: &mut *tile,
                            };
                            multiply_block(kc, nc, a_block, b_panel, &mut output);
                        }
                    }
                }
            })
        })
    })
}
