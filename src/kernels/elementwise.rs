//! SIMD loops over flat `f32` slices, written with `wide::f32x8`.
//!
//! `wide` picks its instructions when the crate is compiled: with AVX enabled (this repository
//! builds for x86-64-v4) an `f32x8` is one 256-bit register, otherwise two 128-bit halves, so the
//! same code runs in the portable build too. Every loop works on chunks of 8 from the start of the
//! slice and handles the remainder with scalar code. A result therefore depends only on the data
//! and the length, never on alignment or on the thread that computed it.

use wide::f32x8;

/// Lanes in one SIMD vector of the loops in this module.
pub const LANES: usize = 8;

/// Names the instruction set `wide`'s `f32x8` was compiled for: `"avx"` (one 256-bit register,
/// with FMA when `"avx+fma"`), `"sse2"` (two 128-bit halves) or `"scalar"`.
pub fn simd_backend() -> &'static str {
    if cfg!(all(target_feature = "avx", target_feature = "fma")) {
        "avx+fma"
    } else if cfg!(target_feature = "avx") {
        "avx"
    } else if cfg!(target_feature = "sse2") {
        "sse2"
    } else {
        "scalar"
    }
}

#[inline(always)]
fn load(chunk: &[f32]) -> f32x8 {
    f32x8::new(chunk.try_into().expect("chunk of 8"))
}

#[inline(always)]
fn store(chunk: &mut [f32], v: f32x8) {
    chunk.copy_from_slice(v.as_array());
}

/// Copies `src` into `dst` (equal lengths) with straight-line moves for the short runs that the
/// convolution layouts copy most: 4, 8, 16, 24, 32 and 48 floats (grid rows and GEMM sliver
/// widths), and [`copy`] otherwise. Thousands of such copies per pass made a library call per
/// copy cost more than the moves.
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let dst: &mut [f32; N] = dst.try_into().expect("run of N elements");
        *dst = src.try_into().expect("run of N elements");
    }
    match dst.len() {
        4 => fixed::<4>(dst, src),
        8 => fixed::<8>(dst, src),
        16 => fixed::<16>(dst, src),
        24 => fixed::<24>(dst, src),
        32 => fixed::<32>(dst, src),
        48 => fixed::<48>(dst, src),
        _ => copy(dst, src),
    }
}

/// Copies `src` into `dst` (`dst[i] = src[i]`) with inline vector moves.
///
/// For the short runs im2col copies (one output row, often 4-64 elements) this beats a call to
/// `memcpy`, which a plain loop or `copy_from_slice` of unknown length compiles to.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn copy(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy: lengths differ");
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        store(dc, load(sc));
    }
    for (dv, sv) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *dv = *sv;
    }
}

/// Adds `src` into `dst` (`dst[i] += src[i]`).
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "add_assign: lengths differ");
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (dc, sc) in (&mut d).zip(&mut s) {
        store(dc, load(dc) + load(sc));
    }
    for (dv, sv) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *dv += *sv;
    }
}

/// Transposes the `rows x cols` matrix `src` (row stride `src_ld`) into `dst` (row stride
/// `dst_ld`): `dst[j * dst_ld + i] = src[i * src_ld + j]`, in 8x8 vector blocks.
///
/// # Panics
/// If either slice is too short for its matrix.
pub fn transpose(
    (src, src_ld): (&[f32], usize),
    [rows, cols]: [usize; 2],
    (dst, dst_ld): (&mut [f32], usize),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * src_ld + cols, "transpose: source too short");
    assert!(dst.len() >= (cols - 1) * dst_ld + rows, "transpose: destination too short");
    let (full_rows, full_cols) = (rows / LANES * LANES, cols / LANES * LANES);
    for i in (0..full_rows).step_by(LANES) {
        for j in (0..full_cols).step_by(LANES) {
            let block: [f32x8; LANES] =
                std::array::from_fn(|r| load(&src[(i + r) * src_ld + j..][..LANES]));
            for (c, v) in f32x8::transpose(block).into_iter().enumerate() {
                store(&mut dst[(j + c) * dst_ld + i..][..LANES], v);
            }
        }
    }
    // The right edge, then the bottom edge, element by element.
    for i in 0..full_rows {
        for j in full_cols..cols {
            dst[j * dst_ld + i] = src[i * src_ld + j];
        }
    }
    for i in full_rows..rows {
        for j in 0..cols {
            dst[j * dst_ld + i] = src[i * src_ld + j];
        }
    }
}

/// Adds the scalar `value` to every element of `dst`.
#[inline]
pub fn add_scalar(dst: &mut [f32], value: f32) {
    let splat = f32x8::splat(value);
    let mut d = dst.chunks_exact_mut(LANES);
    for dc in &mut d {
        store(dc, load(dc) + splat);
    }
    for dv in d.into_remainder() {
        *dv += value;
    }
}

/// Adds `bias[c]` to every element of channel `c` of `data`, which contains whole planes of `plane`
/// elements for channels `0, 1, ..., bias.len() - 1, 0, 1, ...` (an NCHW tensor, or a
/// channel-aligned part of one).
///
/// # Panics
/// If `data.len()` is not a multiple of `plane * bias.len()`.
pub fn add_channel_bias(data: &mut [f32], bias: &[f32], plane: usize) {
    let sample = plane * bias.len();
    assert!(
        sample == 0 || data.len().is_multiple_of(sample),
        "add_channel_bias: {} elements are not whole samples of {} channels x {plane}",
        data.len(),
        bias.len(),
    );
    if plane == 0 {
        return;
    }
    for (values, &b) in data.chunks_exact_mut(plane).zip(bias.iter().cycle()) {
        add_scalar(values, b);
    }
}

/// Sums `src` in a fixed order: lane `i` of a vector accumulator adds the elements at offsets
/// `i, i + 8, i + 16, ...` of the whole chunks, the lanes are summed pairwise, and the remainder
/// is added last, in order.
#[inline]
pub fn sum(src: &[f32]) -> f32 {
    let mut acc = f32x8::ZERO;
    let mut s = src.chunks_exact(LANES);
    for sc in &mut s {
        acc += load(sc);
    }
    let lanes = acc.to_array();
    let halves =
        [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    let mut total = (halves[0] + halves[2]) + (halves[1] + halves[3]);
    for v in s.remainder() {
        total += *v;
    }
    total
}

/// Scalar twin of [`sum`]: the same additions in the same order, one element at a time. Tests
/// compare the two to check that the vector loop computes exactly what its documentation states.
pub fn sum_scalar(src: &[f32]) -> f32 {
    let whole = src.len() / LANES * LANES;
    let mut lanes = [0.0f32; LANES];
    for (i, v) in src[..whole].iter().enumerate() {
        lanes[i % LANES] += *v;
    }
    let halves =
        [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    let mut total = (halves[0] + halves[2]) + (halves[1] + halves[3]);
    for v in &src[whole..] {
        total += *v;
    }
    total
}

/// Sums channel `c` of `data` over every sample and every element of its plane: one entry of
/// the bias gradient of an NCHW tensor of `channels` channels and `plane` elements per channel.
///
/// Each sample's plane is summed with [`sum`] and the samples are added in order, so the result
/// is the same whichever thread computes it.
///
/// # Panics
/// If `data.len()` is not a multiple of `plane * channels`, or `c >= channels`.
pub fn channel_sum(data: &[f32], channels: usize, plane: usize, c: usize) -> f32 {
    let sample = plane * channels;
    assert!(c < channels, "channel_sum: channel {c} of {channels}");
    assert!(
        sample == 0 || data.len().is_multiple_of(sample),
        "channel_sum: {} elements are not whole samples of {channels} channels x {plane}",
        data.len(),
    );
    if sample == 0 {
        return 0.0;
    }
    let mut total = 0.0f32;
    for values in data.chunks_exact(sample) {
        total += sum(&values[c * plane..(c + 1) * plane]);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<f32> {
        // Values of mixed magnitude so that a change in summation order changes the bits.
        (0..len)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.0e-3 + (i % 3) as f32 * 1.0e3)
            .collect()
    }

    #[test]
    fn sum_matches_scalar_twin_bit_for_bit() {
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 64, 1000, 1003] {
            let v = data(len);
            assert_eq!(sum(&v).to_bits(), sum_scalar(&v).to_bits(), "length {len}");
        }
    }

    #[test]
    fn sum_order_differs_from_sequential() {
        // Guards the test above: with these values the lane order is observable.
        let v = data(1003);
        let sequential = v.iter().fold(0.0f32, |a, b| a + b);
        assert_ne!(sum(&v).to_bits(), sequential.to_bits());
    }

    #[test]
    fn copy_add_and_scalar_loops() {
        for len in [0, 3, 8, 13, 40] {
            let src = data(len);
            let mut dst = vec![f32::NAN; len];
            copy(&mut dst, &src);
            assert_eq!(dst, src, "copy, length {len}");
            add_assign(&mut dst, &src);
            let doubled: Vec<f32> = src.iter().map(|v| v + v).collect();
            assert_eq!(dst, doubled, "add_assign, length {len}");
            add_scalar(&mut dst, 0.5);
            let shifted: Vec<f32> = doubled.iter().map(|v| v + 0.5).collect();
            assert_eq!(dst, shifted, "add_scalar, length {len}");
        }
    }

    #[test]
    fn transpose_blocks_and_edges() {
        for (rows, cols) in [(1, 1), (3, 5), (8, 8), (9, 17), (16, 24), (21, 8)] {
            let (src_ld, dst_ld) = (cols + 2, rows + 3);
            let src: Vec<f32> = (0..rows * src_ld).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; cols * dst_ld];
            transpose((&src, src_ld), [rows, cols], (&mut dst, dst_ld));
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[j * dst_ld + i],
                        src[i * src_ld + j],
                        "{rows}x{cols} ({i}, {j})"
                    );
                }
            }
            let gaps = (0..cols).flat_map(|j| (rows..dst_ld).map(move |i| j * dst_ld + i));
            assert!(gaps.into_iter().all(|o| dst[o].is_nan()), "{rows}x{cols}: write in a gap");
        }
    }

    #[test]
    fn channel_bias_and_sums() {
        // Two samples, three channels, planes of 5: integer values, so the sums are exact.
        let plane = 5;
        let mut x: Vec<f32> = (0..2 * 3 * plane).map(|i| i as f32).collect();
        let sums: Vec<f32> = (0..3).map(|c| 1.0 + channel_sum(&x, 3, plane, c)).collect();
        let expected: Vec<f32> = (0..3)
            .map(|c| {
                let first: usize = (c * plane..(c + 1) * plane).sum();
                let second: usize = (15 + c * plane..15 + (c + 1) * plane).sum();
                1.0 + (first + second) as f32
            })
            .collect();
        assert_eq!(sums, expected);

        add_channel_bias(&mut x, &[10.0, 20.0, 30.0], plane);
        for (i, v) in x.iter().enumerate() {
            let channel = (i / plane) % 3;
            assert_eq!(*v, i as f32 + 10.0 * (channel + 1) as f32, "element {i}");
        }
    }

    #[test]
    fn backend_matches_compiled_features() {
        let backend = simd_backend();
        #[cfg(target_feature = "avx")]
        {
            assert!(backend.starts_with("avx"), "{backend}");
            // A binary built for AVX only starts on a CPU that has it; confirm the CPU agrees.
            assert!(std::arch::is_x86_feature_detected!("avx"));
        }
        #[cfg(all(target_arch = "x86_64", not(target_feature = "avx")))]
        assert_eq!(backend, "sse2");
    }
}
