//! A left operand packed once and reused by many products.
//!
//! [`super::sgemm`] packs each `mc x kc` block of A before multiplying it, once per column block
//! of B. When one A meets many B operands (a convolution weight against every sample), the
//! packing is the same each time. [`PackedA`] stores every block of A in the packed layout, so
//! the driver reads the blocks in place.
//!
//! Layout: A is cut into k-blocks of [`KC`] columns (the last one shorter). k-block `q`, with
//! `kc` columns from `k0 = q * KC`, starts at `m_padded * k0` and holds all rows of A as slivers
//! of [`MR`] rows (`m_padded = m.next_multiple_of(MR)`): sliver `t` at `t * kc * MR`, element
//! `(t * MR + r, k0 + p)` at offset `p * MR + r`, zero past row `m`. The block of rows
//! `i0..i0 + mc` of a k-block is then the contiguous range from `i0 * kc` whenever `i0` is a
//! multiple of `MR`, which is what lets [`PackedRows`] select whole slivers.

use std::ops::Range;

use rayon::prelude::*;

use super::driver::PackA;
use super::kernel::MR;
use super::pack::pack_a;
use super::{MatRef, KC};

/// An `m x k` matrix packed into the sliver layout of the module doc.
#[derive(Clone, Debug)]
pub struct PackedA {
    data: Vec<f32>,
    m: usize,
    k: usize,
}

impl PackedA {
    /// Packs `a` on the calling thread.
    pub fn new(a: MatRef<'_>) -> Self {
        Self::pack(a, false)
    }

    /// Packs `a`, one task per k-block on the current rayon pool. The result is identical to
    /// [`PackedA::new`]: packing only moves values.
    pub fn new_parallel(a: MatRef<'_>) -> Self {
        Self::pack(a, true)
    }

    /// Packs `a` in place of the matrix `self` holds, reusing its storage, one task per k-block
    /// on the current rayon pool. The result is identical to [`PackedA::new`].
    pub fn repack_parallel(&mut self, a: MatRef<'_>) {
        let data = std::mem::take(&mut self.data);
        *self = Self::pack_into(data, a, true);
    }

    fn pack(a: MatRef<'_>, parallel: bool) -> Self {
        Self::pack_into(Vec::new(), a, parallel)
    }

    /// Packs `a` into `data`, reusing its storage. Old contents are overwritten, not cleared:
    /// `pack_a` writes every element of a section, zero rows past `m` included.
    fn pack_into(mut data: Vec<f32>, a: MatRef<'_>, parallel: bool) -> Self {
        let (m, k) = (a.rows(), a.cols());
        let m_padded = m.next_multiple_of(MR);
        data.resize(m_padded * k, 0.0);
        let pack_section = |(q, section): (usize, &mut [f32])| {
            let (k0, kc) = (q * KC, section.len() / m_padded);
            pack_a(&a, 0, m, k0, kc, section);
        };
        if m_padded == 0 || k == 0 {
            // Nothing to pack.
        } else if parallel {
            data.par_chunks_mut(m_padded * KC).enumerate().for_each(pack_section);
        } else {
            data.chunks_mut(m_padded * KC).enumerate().for_each(pack_section);
        }
        PackedA { data, m, k }
    }

    /// Rows of A.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Columns of A.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Wraps `data`, an `m x k` matrix already in the layout of the module doc, so that a
    /// caller that computes A can write it packed without a second pass. The matrix is the first
    /// `m.next_multiple_of(MR) * k` floats; any after them are storage kept for reuse.
    ///
    /// # Panics
    /// If `data` has fewer than `m.next_multiple_of(MR) * k` floats.
    pub(crate) fn from_layout(data: Vec<f32>, m: usize, k: usize) -> Self {
        assert!(data.len() >= m.next_multiple_of(MR) * k, "packed {m} x {k} matrix");
        PackedA { data, m, k }
    }

    /// Returns the storage, so that the next matrix can reuse it.
    pub(crate) fn into_data(self) -> Vec<f32> {
        self.data
    }
}

/// Rows `row0..row0 + m` of a [`PackedA`], with `row0` a multiple of [`MR`]: the A operand the
/// driver reads in place.
#[derive(Clone, Copy, Debug)]
pub struct PackedRows<'a> {
    a: &'a PackedA,
    row0: usize,
    m: usize,
}

impl<'a> PackedRows<'a> {
    /// Selects `rows` of `a`; `None` unless `rows.start` is a multiple of [`MR`] and
    /// `rows.start <= rows.end <= a.rows()`.
    pub fn new(a: &'a PackedA, rows: Range<usize>) -> Option<Self> {
        let fits = rows.start <= rows.end && rows.end <= a.m;
        (fits && rows.start.is_multiple_of(MR)).then_some(PackedRows {
            a,
            row0: rows.start,
            m: rows.len(),
        })
    }
}

impl PackA for PackedRows<'_> {
    const USES_SCRATCH: bool = false;

    fn rows(&self) -> usize {
        self.m
    }

    fn cols(&self) -> usize {
        self.a.k
    }

    #[inline(always)]
    fn block<'s>(
        &'s self,
        i0: usize,
        mc: usize,
        k0: usize,
        kc: usize,
        _scratch: &'s mut [f32],
    ) -> &'s [f32] {
        debug_assert!(k0.is_multiple_of(KC) && kc == KC.min(self.a.k - k0), "k-block {k0}+{kc}");
        debug_assert!(i0 + mc <= self.m, "rows {i0}+{mc} of {}", self.m);
        // Sliver-aligned, because row0 and i0 (a multiple of MC) are multiples of MR; the
        // padded rows past `mc` are either zero or rows of A whose products C discards.
        let m_padded = self.a.m.next_multiple_of(MR);
        let start = m_padded * k0 + (self.row0 + i0) * kc;
        &self.a.data[start..start + mc.next_multiple_of(MR) * kc]
    }
}
