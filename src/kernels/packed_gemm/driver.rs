//! The blocked loops of [`super::sgemm`] around the microkernel, and the parts they share with
//! [`super::sgemm_tiles`]: the per-thread packing buffers and the block multiplication.

use std::cell::Cell;
use std::thread::LocalKey;

use super::kernel::{acc_to_array, microkernel, prefetch, Acc, BRow, Merge, LANES, MR, NR, NV, V};
use super::pack::pack_a;
use super::{MatMut, MatRef, PackB, KC, MC, NC};

thread_local! {
    /// Packed A block, reused across calls on this thread.
    pub static PACKED_A: Cell<Vec<V>> = const { Cell::new(Vec::new()) };
    /// Packed B panel, reused across calls on this thread.
    pub static PACKED_B: Cell<Vec<V>> = const { Cell::new(Vec::new()) };
    /// Tile sums of [`super::sgemm_tiles`], reused across calls on this thread.
    pub static TILE_SUMS: Cell<Vec<V>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's buffer `slot`, grown to at least `len` floats.
///
/// The buffer is taken out of the slot while `f` runs, so a nested GEMM call (from a packer or a
/// tile closure) allocates its own instead of aliasing this one. Old contents are left in place,
/// because callers overwrite what they read. A buffer keeps its largest size for the life of the
/// thread: 480 KiB for packed A, and about 4 MiB for packed B and for tile sums. The last two grow
/// past that only in a tile-path call where even `min(m, k) x NR` floats exceed
/// `TILE_PANEL_BYTES`, because the column block cannot shrink below `NR`.
pub fn with_buffer<R>(
    slot: &'static LocalKey<Cell<Vec<V>>>,
    len: usize,
    f: impl FnOnce(&mut [V]) -> R,
) -> R {
    let mut buffer = slot.take();
    let vectors = len.div_ceil(LANES);
    if buffer.len() < vectors {
        buffer.resize(vectors, V::ZERO);
    }
    let result = f(&mut buffer[..vectors]);
    slot.set(buffer);
    result
}

/// The destination of the microtiles of one block: C itself, or the tile sums of
/// [`super::sgemm_tiles`].
pub trait BlockOutput {
    /// Hints the cache to load the destination of the microtile at `(i, j)` of the block.
    fn prefetch(&self, i: usize, j: usize);
    /// Combines the `MR x NR` product at `(i, j)` of the block with its destination.
    fn update(&mut self, i: usize, j: usize, acc: &Acc);
}

/// Multiplies a packed `mc x kc` A block by a packed `kc x nc` B panel, one microtile at a time.
///
/// Slivers are visited B-major, so one B sliver stays in cache while the A slivers stream past it.
/// Each microtile's destination is prefetched before its product is computed. `nc` is the number
/// of valid columns in the panel: a last sliver with fewer than `NR` of them is multiplied only
/// over the vectors that contain some, so its padding costs no multiply-adds. The microtile's
/// other vectors are zero.
#[inline(always)]
pub fn multiply_block(
    kc: usize,
    nc: usize,
    a_block: &[f32],
    b_panel: &[f32],
    output: &mut impl BlockOutput,
) {
    // Slivers whose vectors all contain valid columns, and the vectors of the last one that do.
    let (whole, last_vectors) = match (nc % NR).div_ceil(LANES) {
        vectors if vectors == 0 || vectors == NV => (nc.div_ceil(NR), 0),
        vectors => (nc / NR, vectors),
    };
    let (whole_panel, last_sliver) = b_panel.split_at(whole * kc * NR);
    let (b_rows, _) = whole_panel.as_chunks::<NR>();
    for (jr, b_sliver) in b_rows.chunks_exact(kc).enumerate() {
        sliver_products(kc, jr, a_block, b_sliver_rows(b_sliver), output);
    }
    if last_vectors > 0 {
        let (b_rows, _) = last_sliver.as_chunks::<NR>();
        narrow_sliver_products(kc, whole, last_vectors, a_block, b_sliver_rows(b_rows), output);
    }
}

/// Multiplies every A sliver of a block by the whole B sliver `jr`.
///
/// Kept out of line, so that the loop over whole slivers compiles on its own, apart from the
/// edge case of [`narrow_sliver_products`].
#[inline(never)]
fn sliver_products(
    kc: usize,
    jr: usize,
    a_block: &[f32],
    b_sliver: &[BRow],
    output: &mut impl BlockOutput,
) {
    for (ir, a_sliver) in a_block.chunks_exact(kc * MR).enumerate() {
        output.prefetch(ir * MR, jr * NR);
        let acc = microkernel::<NV>(a_sliver, b_sliver);
        output.update(ir * MR, jr * NR, &acc);
    }
}

/// Multiplies every A sliver of a block by the B sliver `jr`, over its first `vectors` vectors
/// (fewer than [`NV`]).
///
/// Kept out of line so that the loop over whole slivers in [`multiply_block`] compiles as if this
/// case did not exist.
#[inline(never)]
fn narrow_sliver_products(
    kc: usize,
    jr: usize,
    vectors: usize,
    a_block: &[f32],
    b_sliver: &[BRow],
    output: &mut impl BlockOutput,
) {
    for (ir, a_sliver) in a_block.chunks_exact(kc * MR).enumerate() {
        output.prefetch(ir * MR, jr * NR);
        let acc = if vectors <= 1 {
            microkernel::<1>(a_sliver, b_sliver)
        } else {
            microkernel::<{ NV - 1 }>(a_sliver, b_sliver)
        };
        output.update(ir * MR, jr * NR, &acc);
    }
}

/// Views rows of `NR` floats as rows of `NV` vectors' worth of lanes.
#[inline(always)]
fn b_sliver_rows(rows: &[[f32; NR]]) -> &[BRow] {
    let flat = rows.as_flattened();
    let (lanes, _) = flat.as_chunks::<LANES>();
    let (brows, _) = lanes.as_chunks::<NV>();
    brows
}

/// The block of C at `(row0, col0)`, merged into with `merge`.
struct CBlock<'c, 'd> {
    c: &'c mut MatMut<'d>,
    row0: usize,
    col0: usize,
    merge: Merge,
}

impl CBlock<'_, '_> {
    /// Returns the rows and columns of the microtile at `(row, col)` of C that lie inside C.
    #[inline(always)]
    fn extent(&self, row: usize, col: usize) -> (usize, usize) {
        (MR.min(self.c.rows - row), NR.min(self.c.cols - col))
    }
}

impl BlockOutput for CBlock<'_, '_> {
    #[inline(always)]
    fn prefetch(&self, i: usize, j: usize) {
        let (row, col) = (self.row0 + i, self.col0 + j);
        let (rows, cols) = self.extent(row, col);
        if self.c.col_stride == 1 {
            for r in row..row + rows {
                let start = r * self.c.row_stride + col;
                prefetch(&self.c.data[start..start + cols]);
            }
        }
    }

    /// Uses vector loads and stores when the tile is whole and C's rows are contiguous, and
    /// [`CBlock::update_edge`] otherwise.
    #[inline(always)]
    fn update(&mut self, i: usize, j: usize, acc: &Acc) {
        let (row, col) = (self.row0 + i, self.col0 + j);
        let (rows, cols) = self.extent(row, col);
        let (rs, cs) = (self.c.row_stride, self.c.col_stride);
        let merge = self.merge;

        if rows == MR && cols == NR && cs == 1 {
            // C's slice in a local, so that the stores below cannot change where it points and
            // the loop unrolls with the tile in registers.
            let data = &mut *self.c.data;
            for (r, acc_row) in acc.iter().enumerate() {
                let start = (row + r) * rs + col;
                let (c_vectors, _) = data[start..start + NR].as_chunks_mut::<LANES>();
                for (c_vector, &ab) in c_vectors.iter_mut().zip(acc_row) {
                    *c_vector = merge.vector(ab, V::new(*c_vector)).to_array();
                }
            }
        } else {
            self.update_edge(row, col, rows, cols, &acc_to_array(acc));
        }
    }
}

impl CBlock<'_, '_> {
    /// Merges the `rows x cols` corner of a microtile cut off by C's edge, or any tile of a C
    /// whose rows are not contiguous.
    ///
    /// Whole vectors of a contiguous row use vector loads and stores, and the rest goes element
    /// by element, with identical arithmetic. It takes the tile as an array rather than the
    /// accumulators, so that the whole-tile path of [`BlockOutput::update`] keeps them in
    /// registers.
    #[inline(always)]
    fn update_edge(
        &mut self,
        row: usize,
        col: usize,
        rows: usize,
        cols: usize,
        values: &[[f32; NR]; MR],
    ) {
        let (rs, cs) = (self.c.row_stride, self.c.col_stride);
        let merge = self.merge;
        if cs == 1 {
            for (r, value_row) in values.iter().enumerate().take(rows) {
                let start = (row + r) * rs + col;
                let c_row = &mut self.c.data[start..start + cols];
                let (c_vectors, c_rest) = c_row.as_chunks_mut::<LANES>();
                let (ab_vectors, _) = value_row.as_chunks::<LANES>();
                for (c_vector, &ab) in c_vectors.iter_mut().zip(ab_vectors) {
                    *c_vector = merge.vector(V::new(ab), V::new(*c_vector)).to_array();
                }
                let whole = c_vectors.len() * LANES;
                for (c, &ab) in c_rest.iter_mut().zip(&value_row[whole..]) {
                    *c = merge.scalar(ab, *c);
                }
            }
        } else {
            for (r, value_row) in values.iter().enumerate().take(rows) {
                for (s, &ab) in value_row.iter().enumerate().take(cols) {
                    let index = (row + r) * rs + (col + s) * cs;
                    self.c.data[index] = merge.scalar(ab, self.c.data[index]);
                }
            }
        }
    }
}

/// Sets `C = beta * C`, writing zeros without reading C when `beta == 0`.
pub(crate) fn scale_c(c: &mut MatMut<'_>, beta: f32) {
    if beta == 1.0 {
        return;
    }
    for i in 0..c.rows {
        for j in 0..c.cols {
            let index = i * c.row_stride + j * c.col_stride;
            c.data[index] = if beta == 0.0 { 0.0 } else { beta * c.data[index] };
        }
    }
}

/// Supplies packed blocks of the A operand of a product, in the layout of [`pack_a`].
pub trait PackA {
    /// Whether [`PackA::block`] packs into its scratch argument; when false the driver gives it
    /// an empty one.
    const USES_SCRATCH: bool;

    /// Rows of A.
    fn rows(&self) -> usize;

    /// Columns of A.
    fn cols(&self) -> usize;

    /// Returns the packed block `A[i0..i0 + mc, k0..k0 + kc]`, `mc.div_ceil(MR) * MR * kc`
    /// floats, either packed into `scratch` (of at least that length) or stored in `self`.
    /// The driver requests only blocks whose `i0` and `k0` are multiples of [`MC`] and [`KC`].
    fn block<'s>(
        &'s self,
        i0: usize,
        mc: usize,
        k0: usize,
        kc: usize,
        scratch: &'s mut [f32],
    ) -> &'s [f32];
}

impl PackA for MatRef<'_> {
    const USES_SCRATCH: bool = true;

    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    #[inline(always)]
    fn block<'s>(
        &'s self,
        i0: usize,
        mc: usize,
        k0: usize,
        kc: usize,
        scratch: &'s mut [f32],
    ) -> &'s [f32] {
        let block = &mut scratch[..mc.next_multiple_of(MR) * kc];
        pack_a(self, i0, mc, k0, kc, block);
        block
    }
}

/// `C = alpha * A * B + beta * C`; dimensions are checked by the caller.
pub fn gemm_into<A: PackA>(alpha: f32, a: &A, b: &impl PackB, beta: f32, c: &mut MatMut<'_>) {
    let (m, k, n) = (c.rows, a.cols(), c.cols);
    debug_assert_eq!(a.rows(), m, "rows of A and C differ");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale_c(c, beta);
        return;
    }

    let kc_max = KC.min(k);
    let nc_max = NC.min(n.next_multiple_of(NR));
    let mc_max = MC.min(m.next_multiple_of(MR));
    let a_scratch = if A::USES_SCRATCH { mc_max * kc_max } else { 0 };
    with_buffer(&PACKED_B, kc_max * nc_max, |b_buffer| {
        with_buffer(&PACKED_A, a_scratch, |a_buffer| {
            let b_buffer: &mut [f32] = bytemuck::cast_slice_mut(b_buffer);
            let a_buffer: &mut [f32] = bytemuck::cast_slice_mut(a_buffer);

            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    // The first k-block applies beta; later ones add to what it wrote.
                    let merge = Merge::new(alpha, if pc == 0 { beta } else { 1.0 });

                    // B[pc.., jc..] as [nc / NR slivers][kc][NR], in place or packed here.
                    let len = nc.next_multiple_of(NR) * kc;
                    let b_panel = match b.packed_block(pc, kc, jc, nc) {
                        Some(panel) if panel.len() == len => panel,
                        _ => {
                            let panel = &mut b_buffer[..len];
                            b.pack_b(pc, kc, jc, nc, panel);
                            &*panel
                        }
                    };

                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);

                        // A[ic.., pc..] as [mc / MR slivers][kc][MR].
                        let a_block = a.block(ic, mc, pc, kc, a_buffer);

                        let mut output = CBlock { c: &mut *c, row0: ic, col0: jc, merge };
                        multiply_block(kc, nc, a_block, b_panel, &mut output);
                    }
                }
            }
        })
    })
}
