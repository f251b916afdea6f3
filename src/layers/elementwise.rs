//! SIMD loops over flat `f32` slices, eight lanes at a time (`wide::f32x8`).
//!
//! Each element's result depends only on that element, so splitting the slice into parallel
//! chunks cannot change a bit. The tail of a slice runs through the same vector code, padded
//! with zeros, so the scalar and vector paths cannot disagree either.

use rayon::prelude::*;
use wide::f32x8;

/// Lanes per vector.
pub(crate) const LANES: usize = 8;

/// Elements per parallel work item: large enough that rayon's overhead stays small.
pub(crate) const PAR_CHUNK: usize = 1 << 14;

/// Loads the first eight elements of `xs`.
#[inline(always)]
pub(crate) fn load(xs: &[f32]) -> f32x8 {
    let array: [f32; LANES] = xs[..LANES].try_into().expect("eight elements");
    f32x8::new(array)
}

/// Stores `v` into the first eight elements of `out`.
#[inline(always)]
pub(crate) fn store(out: &mut [f32], v: f32x8) {
    out[..LANES].copy_from_slice(&v.to_array());
}

/// Loads up to eight elements, padding with zeros.
#[inline(always)]
pub(crate) fn load_partial(xs: &[f32]) -> f32x8 {
    let mut array = [0.0f32; LANES];
    array[..xs.len()].copy_from_slice(xs);
    f32x8::new(array)
}

/// Stores the first `out.len()` (at most eight) lanes of `v`.
#[inline(always)]
pub(crate) fn store_partial(out: &mut [f32], v: f32x8) {
    let n = out.len();
    out.copy_from_slice(&v.to_array()[..n]);
}

/// Applies `f` to a slice, vector by vector, on the calling thread.
#[inline(always)]
pub(crate) fn map_serial(xs: &mut [f32], f: &impl Fn(f32x8) -> f32x8) {
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        store(c, f(load(c)));
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        store_partial(tail, f(load_partial(tail)));
    }
}

/// Replaces every element `x` of `xs` with `f(x)`, in parallel.
pub(crate) fn map_in_place(xs: &mut [f32], f: impl Fn(f32x8) -> f32x8 + Sync) {
    xs.par_chunks_mut(PAR_CHUNK).for_each(|chunk| map_serial(chunk, &f));
}

/// Replaces every element `a` of `a_all` with `f(a, b)`, `b` the matching element of `b_all`,
/// in parallel. The slices must have the same length.
pub(crate) fn zip_in_place(
    a_all: &mut [f32],
    b_all: &[f32],
    f: impl Fn(f32x8, f32x8) -> f32x8 + Sync,
) {
    debug_assert_eq!(a_all.len(), b_all.len());
    a_all.par_chunks_mut(PAR_CHUNK).zip(b_all.par_chunks(PAR_CHUNK)).for_each(|(a, b)| {
        let mut a_chunks = a.chunks_exact_mut(LANES);
        let mut b_chunks = b.chunks_exact(LANES);
        for (ac, bc) in (&mut a_chunks).zip(&mut b_chunks) {
            store(ac, f(load(ac), load(bc)));
        }
        let (a_tail, b_tail) = (a_chunks.into_remainder(), b_chunks.remainder());
        if !a_tail.is_empty() {
            store_partial(a_tail, f(load_partial(a_tail), load_partial(b_tail)));
        }
    });
}

/// Records `x > 0` for every element, one bit per element, eight elements per byte (bit `j` of
/// byte `i` is element `8 * i + j`).
pub(crate) fn positive_mask(xs: &[f32]) -> Vec<u8> {
    let mut mask = vec![0u8; xs.len().div_ceil(LANES)];
    mask.par_chunks_mut(PAR_CHUNK / LANES).zip(xs.par_chunks(PAR_CHUNK)).for_each(|(m, x)| {
        for (byte, c) in m.iter_mut().zip(x.chunks(LANES)) {
            let v = if c.len() == LANES { load(c) } else { load_partial(c) };
            *byte = (v.simd_gt(f32x8::ZERO).to_bitmask() & 0xff) as u8;
        }
    });
    mask
}

/// Expands one mask byte to a lane mask: all ones where the bit is set.
#[inline(always)]
fn expand_mask(byte: u8) -> f32x8 {
    let bits: [f32; LANES] =
        std::array::from_fn(|j| if byte >> j & 1 == 1 { f32::from_bits(u32::MAX) } else { 0.0 });
    f32x8::new(bits)
}

/// Multiplies each element of `dy` by 1 where its bit in `mask` is set and by `slope` elsewhere:
/// the backward pass of ReLU (`slope = 0`) and LeakyReLU.
pub(crate) fn masked_scale(dy: &mut [f32], mask: &[u8], slope: f32) {
    let slope_v = f32x8::splat(slope);
    dy.par_chunks_mut(PAR_CHUNK).zip(mask.par_chunks(PAR_CHUNK / LANES)).for_each(|(d, m)| {
        for (c, &byte) in d.chunks_mut(LANES).zip(m) {
            let keep = expand_mask(byte);
            if c.len() == LANES {
                let v = load(c);
                store(c, keep.select(v, v * slope_v));
            } else {
                let v = load_partial(c);
                store_partial(c, keep.select(v, v * slope_v));
            }
        }
    });
}

/// Returns whether every element is finite, checked eight lanes at a time.
pub(crate) fn all_finite(xs: &[f32]) -> bool {
    xs.par_chunks(PAR_CHUNK).all(|chunk| {
        let mut ok = f32x8::splat(f32::from_bits(u32::MAX));
        let mut chunks = chunk.chunks_exact(LANES);
        for c in &mut chunks {
            ok &= load(c).is_finite();
        }
        ok.all() && chunks.remainder().iter().all(|v| v.is_finite())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_covers_tail() {
        let mut xs: Vec<f32> = (0..19).map(|i| i as f32).collect();
        map_in_place(&mut xs, |v| v * 2.0);
        let expected: Vec<f32> = (0..19).map(|i| 2.0 * i as f32).collect();
        assert_eq!(xs, expected);
    }

    #[test]
    fn mask_round_trip() {
        let xs: Vec<f32> = (0..21).map(|i| if i % 3 == 0 { 1.0 } else { -1.0 }).collect();
        let mask = positive_mask(&xs);
        let mut dy = vec![2.0f32; 21];
        masked_scale(&mut dy, &mask, 0.25);
        for (i, d) in dy.iter().enumerate() {
            let expected = if i % 3 == 0 { 2.0 } else { 0.5 };
            assert_eq!(*d, expected, "element {i}");
        }
    }

    #[test]
    fn finite_check_sees_tail_and_body() {
        let mut xs = vec![1.0f32; 21];
        assert!(all_finite(&xs));
        xs[20] = f32::NAN;
        assert!(!all_finite(&xs));
        xs[20] = 0.0;
        xs[3] = f32::INFINITY;
        assert!(!all_finite(&xs));
    }
}
