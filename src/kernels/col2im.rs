//! col2im: scatter-adds a tile of one sample's column matrix back into the image.
//!
//! The adjoint of [`im2col`](super::im2col::im2col): every entry of the tile is added to the
//! image pixel im2col would have read it from, and entries that fall in the padding are dropped.
//! Per image row, the taps first sum into the zeroed phase slots of [`RowTaps`] with contiguous
//! vector adds, then each slot is added into every `stride_w`-th pixel of the row once.

use super::elementwise;
use super::geometry::ConvGeometry;
use super::im2col::{for_each_segment, split_strided, RowTaps, Tile};

/// `dst[j * stride] += src[j]`, with a vectorisable loop for stride 2.
#[inline]
fn scatter_add_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    match stride {
        1 => elementwise::add_assign(&mut dst[..src.len()], src),
        2 => {
            // Whole chunks of 8 inputs whose 16 outputs all lie in `dst`.
            let full = (src.len() / 8).min(dst.len() / 16);
            for (dc, sc) in dst.chunks_exact_mut(16).zip(src.chunks_exact(8)).take(full) {
                let mut pairs: [f32; 16] = (&*dc).try_into().expect("chunk of 16");
                for (i, v) in sc.iter().enumerate() {
                    pairs[2 * i] += *v;
                }
                dc.copy_from_slice(&pairs);
            }
            for j in full * 8..src.len() {
                dst[2 * j] += src[j];
            }
        }
        _ => {
            for (dv, sv) in dst.iter_mut().step_by(stride).zip(src) {
                *dv += *sv;
            }
        }
    }
}

/// Adds `tile` of one sample's column matrix, read from `cols[i * ld + j]` for tile row `i` and
/// column `j`, into `image` `[c_in, h, w]`.
///
/// `slots` is scratch of at least [`RowTaps::buffer_len`] elements. Each image pixel receives its
/// contributions in a fixed order (channel, kernel row, grid row, then kernel column), so the
/// result does not depend on the caller's thread.
pub(crate) fn col2im_add(
    g: &ConvGeometry,
    taps: &RowTaps,
    (cols, ld): (&[f32], usize),
    tile: &Tile,
    image: &mut [f32],
    slots: &mut [f32],
) {
    debug_assert_eq!(image.len(), g.c_in * g.h * g.w);
    debug_assert!(slots.len() >= taps.buffer_len());
    for_each_segment(g, tile, |seg| {
        // Entries read from the padding have no pixel to go to.
        let Some(iy) = seg.iy else { return };
        let len = seg.ox.len();
        let used = |slot: &usize| taps.slot_used(*slot, &seg.kx);

        // Sum the taps into the zeroed slots.
        for slot in (0..taps.slot_count()).filter(used) {
            slots[taps.slot_span(slot, &seg.ox, g.stride[1]).0].fill(0.0);
        }
        for (i, kx) in seg.kx.clone().enumerate() {
            let to = taps.tap_offset(kx, seg.ox.start);
            let at = (seg.row + i) * ld + seg.col;
            elementwise::add_assign(&mut slots[to..to + len], &cols[at..at + len]);
        }

        // Add each slot into the pixels of its phase.
        let row = &mut image[(seg.ci * g.h + iy) * g.w..][..g.w];
        for slot in (0..taps.slot_count()).filter(used) {
            let (span, base) = taps.slot_span(slot, &seg.ox, g.stride[1]);
            let [before, inside, _, first] = split_strided(base, g.stride[1], span.len(), g.w);
            if inside > 0 {
                let src = &slots[span.start + before..span.start + before + inside];
                scatter_add_strided(&mut row[first..], src, g.stride[1]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::geometry::Conv2dSpec;
    use crate::kernels::im2col::im2col;

    /// Checks adjointness on integer data, which makes both sides exact:
    /// `<im2col(x), c> == <x, col2im(c)>`.
    fn check(spec: Conv2dSpec, h: usize, w: usize, tile: Tile) {
        let g = spec.geometry(1, h, w).unwrap().lowering;
        let taps = RowTaps::new(&g);
        let mut slots = vec![f32::NAN; taps.buffer_len()];
        let x: Vec<f32> = (0..g.image_len()).map(|i| (i * 7 % 13) as f32 - 6.0).collect();
        let ld = tile.positions.len();
        let c: Vec<f32> = (0..tile.rows.len() * ld).map(|i| (i * 5 % 11) as f32 - 5.0).collect();

        let mut cols = vec![f32::NAN; c.len()];
        im2col(&g, &taps, &x, &tile, (&mut cols, ld), &mut slots);
        let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| (a * b) as f64).sum();

        let mut image = vec![0.0; g.image_len()];
        col2im_add(&g, &taps, (&c, ld), &tile, &mut image, &mut slots);
        let rhs: f64 = image.iter().zip(&x).map(|(a, b)| (a * b) as f64).sum();
        assert_eq!(lhs, rhs, "{spec:?} {h}x{w} {tile:?}");
    }

    #[test]
    fn col2im_is_adjoint_of_im2col() {
        let mut spec = Conv2dSpec::new(3, 2, 4).stride(2).padding(1);
        check(spec, 9, 8, Tile { rows: 0..48, positions: 0..16 });
        check(spec, 9, 8, Tile { rows: 7..41, positions: 5..13 });
        spec.kernel = [3, 2];
        spec.stride = [1, 3];
        spec.padding = [2, 3];
        spec.dilation = [2, 1];
        check(spec, 7, 11, Tile { rows: 1..17, positions: 2..40 });
        spec.stride = [3, 5];
        check(spec, 12, 13, Tile { rows: 0..18, positions: 0..12 });
        check(Conv2dSpec::new(1, 1, 1).stride(2), 40, 40, Tile { rows: 0..1, positions: 0..400 });
    }

    #[test]
    fn col2im_adds_into_image() {
        // A 1x1 kernel with stride 1: col2im is a plain addition.
        let g = Conv2dSpec::new(2, 1, 1).geometry(1, 3, 5).unwrap().lowering;
        let taps = RowTaps::new(&g);
        let mut slots = vec![0.0; taps.buffer_len()];
        let cols: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let mut image = vec![100.0; 30];
        let tile = Tile { rows: 0..2, positions: 0..15 };
        col2im_add(&g, &taps, (&cols, 15), &tile, &mut image, &mut slots);
        let expected: Vec<f32> = (0..30).map(|i| 100.0 + i as f32).collect();
        assert_eq!(image, expected);
    }
}
