//! Packing of strided operands into the sliver layouts the microkernel reads.
//!
//! Packed A: the rows `i0..i0 + mc` and columns `k0..k0 + kc` of A, cut into slivers of `MR`
//! rows. Sliver `t` starts at `t * kc * MR` and stores element `(i0 + t * MR + r, k0 + p)` at
//! offset `p * MR + r`. Rows past the end of A are zero.
//!
//! Packed B: see [`super::PackB`].
//!
//! A row-major A and a column-major B have to be transposed while packing. With AVX-512 that
//! runs on 16 x 16 blocks in registers ([`transpose16`]); element-wise stores, one per value,
//! cost several times as much.

use super::kernel::{prefetch, MR, NR};
use super::MatRef;

/// Side of the square blocks that [`transpose16`] transposes.
const BLOCK: usize = 16;

/// How far ahead, in elements, a transposing packer prefetches each strided source stream.
const PREFETCH_DISTANCE: usize = 4 * BLOCK;

/// Packs `a[i0..i0 + mc, k0..k0 + kc]` into `dst` (length `mc.div_ceil(MR) * MR * kc`).
pub fn pack_a(a: &MatRef<'_>, i0: usize, mc: usize, k0: usize, kc: usize, dst: &mut [f32]) {
    debug_assert!(i0 + mc <= a.rows() && k0 + kc <= a.cols(), "A block out of range");
    debug_assert_eq!(dst.len(), mc.div_ceil(MR) * MR * kc, "packed A length");
    let data = a.data();
    let (rs, cs) = (a.row_stride(), a.col_stride());
    let paired = if cs == 1 && rs != 1 { pack_row_pairs(data, i0, mc, rs, k0, kc, dst) } else { 0 };

    for (t, sliver) in dst.chunks_exact_mut(kc * MR).enumerate().skip(paired) {
        let row0 = i0 + t * MR;
        let rows = MR.min(i0 + mc - row0);
        if rows < MR {
            sliver.fill(0.0);
        }
        let (columns, _) = sliver.as_chunks_mut::<MR>();

        if rs == 1 {
            // Column-major A: each column of the sliver is contiguous in memory.
            for (p, column) in columns.iter_mut().enumerate() {
                let start = row0 + (k0 + p) * cs;
                if rows == MR {
                    // A fixed-length copy compiles to vector moves, not a call to memcpy.
                    *column = data[start..start + MR].try_into().expect("MR values");
                } else {
                    column[..rows].copy_from_slice(&data[start..start + rows]);
                }
            }
        } else if cs == 1 {
            // Row-major A: transpose blocks of 16 columns, then finish the rest element-wise.
            let done = pack_rows_transposed(data, row0, rows, rs, k0, kc, columns);
            for r in 0..rows {
                let start = (row0 + r) * rs + k0;
                for (column, &value) in
                    columns[done..].iter_mut().zip(&data[start + done..start + kc])
                {
                    column[r] = value;
                }
            }
        } else {
            for (p, column) in columns.iter_mut().enumerate() {
                for (r, slot) in column[..rows].iter_mut().enumerate() {
                    *slot = data[(row0 + r) * rs + (k0 + p) * cs];
                }
            }
        }
    }
}

/// Packs the leading pairs of whole slivers of a row-major A block (`a[i0..i0 + mc, k0..k0 +
/// kc]` with row stride `rs` and column stride 1) and returns how many slivers it packed.
///
/// With AVX-512 and `2 * MR == 16`, the 16 rows of a pair share each 16 x 16 transpose, where
/// [`pack_rows_transposed`] would fill half of every block with zeros. Otherwise it packs none.
fn pack_row_pairs(
    data: &[f32],
    i0: usize,
    mc: usize,
    rs: usize,
    k0: usize,
    kc: usize,
    dst: &mut [f32],
) -> usize {
    if !cfg!(target_feature = "avx512f") || 2 * MR != BLOCK {
        return 0;
    }
    let pairs = mc / BLOCK;
    let blocks = kc / BLOCK;
    for (q, pair) in dst.chunks_exact_mut(2 * kc * MR).take(pairs).enumerate() {
        let row0 = i0 + q * BLOCK;
        let (first, second) = pair.split_at_mut(kc * MR);
        let (first, _) = first.as_chunks_mut::<MR>();
        let (second, _) = second.as_chunks_mut::<MR>();

        // Blocks of 16 columns: rows 0..MR of each transposed column go to the first sliver,
        // the rest to the second.
        for b in 0..blocks {
            let p0 = b * BLOCK;
            let block: [[f32; BLOCK]; BLOCK] = core::array::from_fn(|r| {
                let start = (row0 + r) * rs + k0 + p0;
                data[start..start + BLOCK].try_into().expect("slice of BLOCK elements")
            });
            for (p, transposed) in transpose16(block).iter().enumerate() {
                first[p0 + p].copy_from_slice(&transposed[..MR]);
                second[p0 + p].copy_from_slice(&transposed[MR..]);
            }
        }

        // The remaining columns element by element.
        for r in 0..BLOCK {
            let start = (row0 + r) * rs + k0;
            let (columns, row) = if r < MR { (&mut *first, r) } else { (&mut *second, r - MR) };
            for p in blocks * BLOCK..kc {
                columns[p][row] = data[start + p];
            }
        }
    }
    2 * pairs
}

/// Packs `b[k0..k0 + kc, n0..n0 + nc]` into `dst` in the layout of [`super::PackB`].
pub fn pack_b_strided(b: &MatRef<'_>, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
    debug_assert!(k0 + kc <= b.rows() && n0 + nc <= b.cols(), "B block out of range");
    debug_assert_eq!(dst.len(), nc.div_ceil(NR) * NR * kc, "packed B length");
    let data = b.data();
    let (rs, cs) = (b.row_stride(), b.col_stride());

    for (s, sliver) in dst.chunks_exact_mut(kc * NR).enumerate() {
        let col0 = n0 + s * NR;
        let cols = NR.min(n0 + nc - col0);
        if cols < NR {
            sliver.fill(0.0);
        }
        let (rows, _) = sliver.as_chunks_mut::<NR>();

        if cs == 1 {
            // Row-major B: each row of the sliver is contiguous in memory.
            for (p, row) in rows.iter_mut().enumerate() {
                let start = (k0 + p) * rs + col0;
                row[..cols].copy_from_slice(&data[start..start + cols]);
            }
        } else if rs == 1 {
            // Column-major B: transpose blocks of 16 rows, then finish the rest element-wise.
            let done = pack_columns_transposed(data, col0, cols, cs, k0, kc, rows);
            for j in 0..cols {
                let start = (col0 + j) * cs + k0;
                for (row, &value) in rows[done..].iter_mut().zip(&data[start + done..start + kc]) {
                    row[j] = value;
                }
            }
        } else {
            for (p, row) in rows.iter_mut().enumerate() {
                for (j, slot) in row[..cols].iter_mut().enumerate() {
                    *slot = data[(k0 + p) * rs + (col0 + j) * cs];
                }
            }
        }
    }
}

/// Writes `columns[p][r] = data[(row0 + r) * rs + k0 + p]` for `r < rows` and `p` below the
/// returned count, a multiple of 16; the caller packs the remaining columns.
fn pack_rows_transposed(
    data: &[f32],
    row0: usize,
    rows: usize,
    rs: usize,
    k0: usize,
    kc: usize,
    columns: &mut [[f32; MR]],
) -> usize {
    if !cfg!(target_feature = "avx512f") || rows != MR || MR > BLOCK {
        return 0;
    }
    let blocks = kc / BLOCK;
    for q in 0..blocks {
        let p0 = q * BLOCK;
        let block: [[f32; BLOCK]; BLOCK] = core::array::from_fn(|r| {
            if r < MR {
                let start = (row0 + r) * rs + k0 + p0;
                data[start..start + BLOCK].try_into().expect("slice of BLOCK elements")
            } else {
                [0.0; BLOCK]
            }
        });
        for (column, transposed) in columns[p0..p0 + BLOCK].iter_mut().zip(transpose16(block)) {
            column.copy_from_slice(&transposed[..MR]);
        }
    }
    blocks * BLOCK
}

/// Writes `rows[p][j] = data[(col0 + j) * cs + k0 + p]` for `j < cols` and `p` below the
/// returned count, a multiple of 16; the caller packs the remaining rows.
fn pack_columns_transposed(
    data: &[f32],
    col0: usize,
    cols: usize,
    cs: usize,
    k0: usize,
    kc: usize,
    rows: &mut [[f32; NR]],
) -> usize {
    if !cfg!(target_feature = "avx512f") || cols != NR || !NR.is_multiple_of(BLOCK) {
        return 0;
    }
    let blocks = kc / BLOCK;
    for q in 0..blocks {
        let p0 = q * BLOCK;
        for j0 in (0..NR).step_by(BLOCK) {
            let block: [[f32; BLOCK]; BLOCK] = core::array::from_fn(|j| {
                let start = (col0 + j0 + j) * cs + k0 + p0;
                // Each column is its own stream, too many for the hardware prefetcher.
                if let Some(ahead) =
                    data.get(start + PREFETCH_DISTANCE..start + PREFETCH_DISTANCE + 1)
                {
                    prefetch(ahead);
                }
                data[start..start + BLOCK].try_into().expect("slice of BLOCK elements")
            });
            for (row, transposed) in rows[p0..p0 + BLOCK].iter_mut().zip(transpose16(block)) {
                row[j0..j0 + BLOCK].copy_from_slice(&transposed);
            }
        }
    }
    blocks * BLOCK
}

/// Returns the transpose of a 16 x 16 block: `out[j][i] = block[i][j]`.
///
/// Four rounds of two-source lane permutes: the round with distance `d` (8, 4, 2, 1) swaps the
/// `d x d` sub-blocks off the diagonal of every `2d x 2d` block.
#[cfg(target_feature = "avx512f")]
#[inline(always)]
fn transpose16(block: [[f32; BLOCK]; BLOCK]) -> [[f32; BLOCK]; BLOCK] {
    use safe_arch::m512i;

    let mut rows: [m512i; BLOCK] =
        core::array::from_fn(|i| m512i::from(bytemuck::cast::<_, [i32; BLOCK]>(block[i])));
    swap_off_diagonal::<8>(&mut rows);
    swap_off_diagonal::<4>(&mut rows);
    swap_off_diagonal::<2>(&mut rows);
    swap_off_diagonal::<1>(&mut rows);
    core::array::from_fn(|i| bytemuck::cast(<[i32; BLOCK]>::from(rows[i])))
}

/// One round of [`transpose16`]: for each pair of rows `i` and `i + D` with `i & D == 0`, row
/// `i` takes lanes `l & D != 0` from row `i + D` (shifted down by `D`), and row `i + D` takes
/// lanes `l & D == 0` from row `i` (shifted up by `D`).
#[cfg(target_feature = "avx512f")]
#[inline(always)]
fn swap_off_diagonal<const D: usize>(rows: &mut [safe_arch::m512i; BLOCK]) {
    use safe_arch::{m512i, shuffle_abv_i32_all_m512i};

    // Index l < 16 picks lane l of the first source, 16 + l lane l of the second.
    let mut low = [0i32; BLOCK];
    let mut high = [0i32; BLOCK];
    for l in 0..BLOCK {
        let (same, other) = if l & D == 0 { (l, l + D) } else { (BLOCK + l - D, BLOCK + l) };
        low[l] = same as i32;
        high[l] = other as i32;
    }
    let (low, high) = (m512i::from(low), m512i::from(high));
    for i in 0..BLOCK {
        if i & D == 0 {
            let (upper, lower) = (rows[i], rows[i + D]);
            rows[i] = shuffle_abv_i32_all_m512i(upper, low, lower);
            rows[i + D] = shuffle_abv_i32_all_m512i(upper, high, lower);
        }
    }
}

/// Returns the transpose of a 16 x 16 block: `out[j][i] = block[i][j]`.
#[cfg(not(target_feature = "avx512f"))]
#[inline(always)]
fn transpose16(block: [[f32; BLOCK]; BLOCK]) -> [[f32; BLOCK]; BLOCK] {
    core::array::from_fn(|j| core::array::from_fn(|i| block[i][j]))
}
