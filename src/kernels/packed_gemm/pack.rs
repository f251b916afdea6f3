//! Packing of strided operands into the sliver layouts the microkernel reads.
//!
//! Packed A: the rows `i0..i0 + mc` and columns `k0..k0 + kc` of A, cut into slivers of `MR`
//! rows. Sliver `t` starts at `t * kc * MR` and stores element `(i0 + t * MR + r, k0 + p)` at
//! offset `p * MR + r`. Rows past the end of A are zero.
//!
//! Packed B: see [`super::PackB`].

use super::kernel::{MR, NR};
use super::MatRef;

/// Packs `a[i0..i0 + mc, k0..k0 + kc]` into `dst` (length `mc.div_ceil(MR) * MR * kc`).
pub fn pack_a(a: &MatRef<'_>, i0: usize, mc: usize, k0: usize, kc: usize, dst: &mut [f32]) {
    debug_assert!(i0 + mc <= a.rows() && k0 + kc <= a.cols(), "A block out of range");
    debug_assert_eq!(dst.len(), mc.div_ceil(MR) * MR * kc, "packed A length");
    let data = a.data();
    let (rs, cs) = (a.row_stride(), a.col_stride());

    for (t, sliver) in dst.chunks_exact_mut(kc * MR).enumerate() {
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
                column[..rows].copy_from_slice(&data[start..start + rows]);
            }
        } else if cs == 1 {
            // Row-major A: each row is contiguous, so read along it and write with stride MR.
            for r in 0..rows {
                let start = (row0 + r) * rs + k0;
                for (column, &value) in columns.iter_mut().zip(&data[start..start + kc]) {
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
            // Column-major B: each column is contiguous, so read along it and write with stride NR.
            for j in 0..cols {
                let start = (col0 + j) * cs + k0;
                for (row, &value) in rows.iter_mut().zip(&data[start..start + kc]) {
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
