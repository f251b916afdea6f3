//! The register-blocked microkernel and the vector type it is built on.
//!
//! One call multiplies an `MR x kc` sliver of packed A by a `kc x NR` sliver of packed B and
//! returns the `MR x NR` product in registers: `MR * NV` accumulators of `NV` vectors per row.
//! Each step over `p` loads one row of B (`NV` vectors), broadcasts each of the `MR` values of
//! column `p` of A, and issues `MR * NV` independent fused multiply-adds.

#[cfg(target_feature = "avx512f")]
mod width {
    /// The vector type of the microkernel: one AVX-512 register.
    pub type V = wide::f32x16;
    /// Lanes per vector.
    pub const LANES: usize = 16;
    /// Rows of the microtile.
    pub const MR: usize = 8;
    /// Vectors per row of the microtile.
    pub const NV: usize = 3;
}

#[cfg(not(target_feature = "avx512f"))]
mod width {
    /// The vector type of the microkernel: one AVX register (emulated without AVX).
    pub type V = wide::f32x8;
    /// Lanes per vector.
    pub const LANES: usize = 8;
    /// Rows of the microtile.
    pub const MR: usize = 6;
    /// Vectors per row of the microtile.
    pub const NV: usize = 2;
}

pub use width::{LANES, MR, NV, V};

/// Columns of the microtile, the width of a packed B sliver.
pub const NR: usize = NV * LANES;

/// One row of a packed B sliver: `NR` values as `NV` vectors.
pub type BRow = [[f32; LANES]; NV];

/// The `MR x NR` accumulators of one microtile, row by row.
pub type Acc = [[V; NV]; MR];

/// Multiplies a packed A sliver by the first `W` vectors of each row of a packed B sliver:
/// `acc[i][v][l] = sum_p a[p][i] * b[p][v][l]` for `v < W`, and zero for the other vectors.
///
/// `a` contains `kc` columns of `MR` values (`a[p * MR + i]`), `b` contains `kc` rows of `NR`
/// values. `W` is [`NV`] for a whole sliver, and fewer for the last sliver of a matrix whose
/// width is not a multiple of `NR`.
/// The sum runs over `p` in increasing order, one fused multiply-add per step (a multiply and an
/// add when the build has no FMA), so each value depends only on the inputs, whatever `W` is.
#[inline(always)]
pub fn microkernel<const W: usize>(a: &[f32], b: &[BRow]) -> Acc {
    const { assert!(W >= 1 && W <= NV, "a microkernel computes 1 to NV vectors per row") };
    let (a_columns, a_rest) = a.as_chunks::<MR>();
    debug_assert!(a_rest.is_empty(), "A sliver length {} is not a multiple of MR", a.len());
    debug_assert_eq!(a_columns.len(), b.len(), "A and B slivers differ in kc");

    let mut acc = [[V::ZERO; NV]; MR];
    for (a_column, b_row) in a_columns.iter().zip(b) {
        let b_vectors: [V; W] = core::array::from_fn(|v| V::new(b_row[v]));
        for (acc_row, &a_value) in acc.iter_mut().zip(a_column) {
            let a_broadcast = V::splat(a_value);
            for (acc_vector, &b_vector) in acc_row.iter_mut().zip(&b_vectors) {
                *acc_vector = a_broadcast.mul_add(b_vector, *acc_vector);
            }
        }
    }
    acc
}

/// The rule that combines a finished product `alpha * AB` with the value already in C.
#[derive(Clone, Copy, Debug)]
pub enum Merge {
    /// `c = alpha * ab`: the old value is never read, so NaN in it does not propagate.
    Overwrite {
        /// Scale of the product.
        alpha: f32,
    },
    /// `c = alpha * ab + beta * c`.
    Scale {
        /// Scale of the product.
        alpha: f32,
        /// Scale of the old value.
        beta: f32,
    },
}

impl Merge {
    /// Picks [`Merge::Overwrite`] for `beta == 0` (BLAS semantics) and [`Merge::Scale`] otherwise.
    pub fn new(alpha: f32, beta: f32) -> Self {
        if beta == 0.0 {
            Merge::Overwrite { alpha }
        } else {
            Merge::Scale { alpha, beta }
        }
    }

    /// Combines one product value with one old value.
    ///
    /// Uses a separate multiply and add, exactly as [`Merge::vector`] does per lane, so the
    /// scalar and vector paths give identical bits.
    #[inline(always)]
    pub fn scalar(self, ab: f32, c: f32) -> f32 {
        match self {
            Merge::Overwrite { alpha } => alpha * ab,
            Merge::Scale { alpha, beta } => alpha * ab + beta * c,
        }
    }

    /// Combines one vector of products with one vector of old values.
    #[inline(always)]
    pub fn vector(self, ab: V, c: V) -> V {
        match self {
            Merge::Overwrite { alpha } => ab * V::splat(alpha),
            Merge::Scale { alpha, beta } => ab * V::splat(alpha) + c * V::splat(beta),
        }
    }
}

/// Copies the accumulators into a row-major `MR x NR` array.
#[inline(always)]
pub fn acc_to_array(acc: &Acc) -> [[f32; NR]; MR] {
    let mut out = [[0.0; NR]; MR];
    for (out_row, acc_row) in out.iter_mut().zip(acc) {
        let (out_vectors, _) = out_row.as_chunks_mut::<LANES>();
        for (out_vector, acc_vector) in out_vectors.iter_mut().zip(acc_row) {
            *out_vector = acc_vector.to_array();
        }
    }
    out
}

/// Hints the cache to load the lines holding the first and the last element of `values`.
#[inline(always)]
pub fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(first), Some(last)) = (values.first(), values.last()) {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for address in [first as *const f32, last as *const f32] {
            // SAFETY: a prefetch is a hint that never faults and changes no program state, and
            // both addresses point into `values`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// Hints the cache to load every line of `values`, for a short slice that is read soon after
/// but whose start the hardware prefetcher would otherwise wait on.
#[inline(always)]
pub fn prefetch_lines(values: &[f32]) {
    /// Floats per 64-byte cache line.
    const LINE: usize = 16;
    for line in values.chunks(LINE) {
        prefetch(&line[..1]);
    }
}
