//! im2col: packs a tile of one sample's column matrix.
//!
//! Row `r = (ci * k_h + ky) * k_w + kx` and column `p = oy * out_w + ox` of the column matrix hold
//! image pixel `(ci, oy * stride_h + ky * dilation_h - pad_h, ox * stride_w + kx * dilation_w -
//! pad_w)`, or zero where that lies in the padding. Along a row of the grid, tap `kx` reads every
//! `stride_w`-th pixel of one image row. Splitting the image row into its `stride_w` phases (the
//! pixels `φ, φ + stride_w, ...`), zero-extended on both sides, turns each tap into a contiguous
//! run of one phase, so the inner loops are plain vector copies with no bounds tests: per image
//! row, [`RowTaps`] gathers the phases once into a small slot buffer and every tap copies from it.
//! col2im runs the same plan backwards.

use std::ops::Range;

use super::elementwise;
use super::geometry::ConvGeometry;

/// A rectangle of one sample's column matrix: rows of `k = c_in * k_h * k_w` and grid positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tile {
    /// Rows of the column matrix, `(ci * k_h + ky) * k_w + kx`.
    pub rows: Range<usize>,
    /// Grid positions, `oy * out_w + ox`.
    pub positions: Range<usize>,
}

/// One zero-extended phase of an image row: `slot[j] = row[base + j * stride_w]`, zero where that
/// index lies outside the row.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Image column read by `j = 0`; may be negative.
    base: isize,
    /// Offset of the slot in the slot buffer.
    offset: usize,
    /// Smallest and one past the largest `start` of the taps that read this slot.
    starts: [usize; 2],
}

/// Where tap `kx` reads: grid column `ox` takes `slot[start + ox]` of slot `slot`.
#[derive(Clone, Copy, Debug)]
struct Tap {
    slot: usize,
    start: usize,
}

/// The plan for reading one image row through every kernel column `kx`, shared by im2col and
/// col2im. Built once per kernel call from the geometry.
#[derive(Clone, Debug)]
pub(crate) struct RowTaps {
    slots: Vec<Slot>,
    taps: Vec<Tap>,
    buffer_len: usize,
}

impl RowTaps {
    /// Plans the taps of `g` along the width axis.
    ///
    /// With `stride_w <= k_w` the slots are the phases of the row, and tap `kx`, whose first pixel
    /// is `t = kx * dilation_w - pad_w = q * stride_w + φ`, reads phase `φ` from `q`; each phase
    /// is gathered once and read by about `k_w / stride_w` taps. With a larger stride no two taps
    /// share a phase, and each tap gets a slot of its own.
    pub fn new(g: &ConvGeometry) -> Self {
        let (s, k_w) = (g.stride[1] as isize, g.k_w);
        let first = |kx: usize| (kx * g.dilation[1]) as isize - g.pad[1] as isize;
        let mut slots: Vec<Slot> = Vec::new();
        let mut taps = Vec::with_capacity(k_w);
        let mut buffer_len = 0;
        if g.stride[1] <= k_w {
            let q_min = first(0).div_euclid(s);
            let q_max = first(k_w - 1).div_euclid(s);
            let len = g.out_w + (q_max - q_min) as usize;
            let mut slot_of_phase = vec![usize::MAX; g.stride[1]];
            for kx in 0..k_w {
                let (q, phase) = (first(kx).div_euclid(s), first(kx).rem_euclid(s));
                let start = (q - q_min) as usize;
                if slot_of_phase[phase as usize] == usize::MAX {
                    slot_of_phase[phase as usize] = slots.len();
                    slots.push(Slot {
                        base: q_min * s + phase,
                        offset: buffer_len,
                        starts: [start, start + 1],
                    });
                    buffer_len += len;
                }
                let slot = slot_of_phase[phase as usize];
                let starts = &mut slots[slot].starts;
                *starts = [starts[0].min(start), starts[1].max(start + 1)];
                taps.push(Tap { slot, start });
            }
        } else {
            for kx in 0..k_w {
                taps.push(Tap { slot: slots.len(), start: 0 });
                slots.push(Slot { base: first(kx), offset: buffer_len, starts: [0, 1] });
                buffer_len += g.out_w;
            }
        }
        RowTaps { slots, taps, buffer_len }
    }

    /// Length of the slot buffer that [`im2col`] and col2im need.
    pub fn buffer_len(&self) -> usize {
        self.buffer_len
    }

    /// Range of `slot`'s entries that grid columns `ox` read, as offsets into the slot buffer,
    /// with the image column of its first entry.
    pub fn slot_span(
        &self,
        slot: usize,
        ox: &Range<usize>,
        stride: usize,
    ) -> (Range<usize>, isize) {
        let s = &self.slots[slot];
        let j = ox.start + s.starts[0]..ox.end + s.starts[1] - 1;
        (s.offset + j.start..s.offset + j.end, s.base + (j.start * stride) as isize)
    }

    /// Offset in the slot buffer of the value tap `kx` reads for grid column `ox`.
    pub fn tap_offset(&self, kx: usize, ox: usize) -> usize {
        let tap = self.taps[kx];
        self.slots[tap.slot].offset + tap.start + ox
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Whether any of the taps `kx` reads `slot`.
    pub fn slot_used(&self, slot: usize, kx: &Range<usize>) -> bool {
        self.taps[kx.clone()].iter().any(|tap| tap.slot == slot)
    }
}

/// One run of a tile that shares an image row: kernel row `ky` of channel `ci`, taps `kx` (tile
/// rows `row`, `row + 1`, ...), grid row `oy`, grid columns `ox` (tile columns `col`, ...).
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub ci: usize,
    /// Image row read by this segment; `None` when it lies in the padding.
    pub iy: Option<usize>,
    pub kx: Range<usize>,
    /// Tile row of tap `kx.start`.
    pub row: usize,
    pub ox: Range<usize>,
    /// Tile column of grid column `ox.start`.
    pub col: usize,
}

/// Calls `visit` for every segment of `tile`, channel by channel, then kernel row by kernel
/// row, then grid row by grid row.
pub(crate) fn for_each_segment(g: &ConvGeometry, tile: &Tile, mut visit: impl FnMut(Segment)) {
    let taps = g.k_h * g.k_w;
    let rows = &tile.rows;
    if rows.is_empty() || tile.positions.is_empty() {
        return;
    }
    for ci in rows.start / taps..=(rows.end - 1) / taps {
        let channel_rows = (ci * taps).max(rows.start)..((ci + 1) * taps).min(rows.end);
        for ky in
            (channel_rows.start - ci * taps) / g.k_w..=(channel_rows.end - 1 - ci * taps) / g.k_w
        {
            let ky_first = ci * taps + ky * g.k_w;
            let kx = channel_rows.start.max(ky_first) - ky_first
                ..channel_rows.end.min(ky_first + g.k_w) - ky_first;
            let row = ky_first + kx.start - rows.start;
            let mut p = tile.positions.start;
            while p < tile.positions.end {
                let (oy, ox_start) = (p / g.out_w, p % g.out_w);
                let ox = ox_start..g.out_w.min(ox_start + tile.positions.end - p);
                let iy = (oy * g.stride[0] + ky * g.dilation[0]).checked_sub(g.pad[0]);
                let iy = iy.filter(|&iy| iy < g.h);
                let col = p - tile.positions.start;
                p += ox.len();
                visit(Segment { ci, iy, kx: kx.clone(), row, ox, col });
            }
        }
    }
}

/// Image columns `base, base + stride, ...` (`len` of them) split into the leading run that lies
/// left of the row, the run inside `[0, w)`, and the trailing run right of it; returns the three
/// lengths and the first image column of the inside run.
pub(crate) fn split_strided(base: isize, stride: usize, len: usize, w: usize) -> [usize; 4] {
    let s = stride as isize;
    let before = if base < 0 { ((-base + s - 1) / s) as usize } else { 0 }.min(len);
    let last_inside = w as isize - 1 - base; // j * s <= last_inside
    let end = if last_inside < 0 { 0 } else { (last_inside / s + 1) as usize }.clamp(before, len);
    let first_column = base + (before as isize) * s;
    [before, end - before, len - end, first_column.max(0) as usize]
}

/// `dst[j] = src[j * stride]`, with a vectorisable loop for stride 2.
#[inline]
fn gather_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    match stride {
        1 => elementwise::copy(dst, &src[..dst.len()]),
        2 => {
            // Whole chunks of 8 outputs whose 16 inputs all lie in `src`.
            let full = (dst.len() / 8).min(src.len() / 16);
            for (dc, sc) in dst.chunks_exact_mut(8).zip(src.chunks_exact(16)).take(full) {
                let sc: &[f32; 16] = sc.try_into().expect("chunk of 16");
                let even: [f32; 8] = std::array::from_fn(|i| sc[2 * i]);
                dc.copy_from_slice(&even);
            }
            for j in full * 8..dst.len() {
                dst[j] = src[2 * j];
            }
        }
        _ => {
            for (dv, sv) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                *dv = *sv;
            }
        }
    }
}

/// Packs `tile` of one sample's column matrix into `cols`: tile row `i`, column `j` goes to
/// `cols[i * ld + j]`.
///
/// `image` is one sample `[c_in, h, w]`; `slots` is scratch of at least
/// [`RowTaps::buffer_len`] elements. Every element of the tile is written; nothing else is.
pub(crate) fn im2col(
    g: &ConvGeometry,
    taps: &RowTaps,
    image: &[f32],
    tile: &Tile,
    (cols, ld): (&mut [f32], usize),
    slots: &mut [f32],
) {
    debug_assert_eq!(image.len(), g.c_in * g.h * g.w);
    debug_assert!(slots.len() >= taps.buffer_len());
    for_each_segment(g, tile, |seg| {
        let len = seg.ox.len();
        let Some(iy) = seg.iy else {
            for i in 0..seg.kx.len() {
                let at = (seg.row + i) * ld + seg.col;
                cols[at..at + len].fill(0.0);
            }
            return;
        };

        // Gather the phases of image row `iy` that these grid columns read.
        let row = &image[(seg.ci * g.h + iy) * g.w..][..g.w];
        for slot in (0..taps.slot_count()).filter(|&slot| taps.slot_used(slot, &seg.kx)) {
            let (span, base) = taps.slot_span(slot, &seg.ox, g.stride[1]);
            let dst = &mut slots[span];
            let [before, inside, _, first] = split_strided(base, g.stride[1], dst.len(), g.w);
            let (head, rest) = dst.split_at_mut(before);
            let (mid, tail) = rest.split_at_mut(inside);
            head.fill(0.0);
            tail.fill(0.0);
            if inside > 0 {
                gather_strided(mid, &row[first..], g.stride[1]);
            }
        }

        // Each tap is one contiguous run of a slot.
        for (i, kx) in seg.kx.clone().enumerate() {
            let from = taps.tap_offset(kx, seg.ox.start);
            let at = (seg.row + i) * ld + seg.col;
            elementwise::copy(&mut cols[at..at + len], &slots[from..from + len]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::geometry::Conv2dSpec;

    /// Column matrix entry straight from the definition.
    fn entry(g: &ConvGeometry, image: &[f32], r: usize, p: usize) -> f32 {
        let (ci, ky, kx) = (r / (g.k_h * g.k_w), (r / g.k_w) % g.k_h, r % g.k_w);
        let (oy, ox) = (p / g.out_w, p % g.out_w);
        let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pad[0] as isize;
        let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.pad[1] as isize;
        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
            return 0.0;
        }
        image[(ci * g.h + iy as usize) * g.w + ix as usize]
    }

    fn check(spec: Conv2dSpec, h: usize, w: usize, tile: Tile) {
        let g = spec.geometry(1, h, w).unwrap().lowering;
        let image: Vec<f32> = (0..g.image_len()).map(|i| i as f32 + 1.0).collect();
        let taps = RowTaps::new(&g);
        let ld = tile.positions.len() + 3;
        let mut cols = vec![f32::NAN; tile.rows.len() * ld];
        let mut slots = vec![f32::NAN; taps.buffer_len()];
        im2col(&g, &taps, &image, &tile, (&mut cols, ld), &mut slots);
        for (i, r) in tile.rows.clone().enumerate() {
            for (j, p) in tile.positions.clone().enumerate() {
                let got = cols[i * ld + j];
                assert_eq!(got, entry(&g, &image, r, p), "{spec:?} {h}x{w} row {r} position {p}");
            }
            assert!(cols[i * ld + tile.positions.len()..][..3].iter().all(|v| v.is_nan()));
        }
    }

    #[test]
    fn im2col_whole_and_partial_tiles() {
        let mut spec = Conv2dSpec::new(3, 2, 4).stride(2).padding(1);
        check(spec, 9, 8, Tile { rows: 0..48, positions: 0..16 });
        check(spec, 9, 8, Tile { rows: 5..38, positions: 3..14 });
        spec.kernel = [3, 2];
        spec.stride = [1, 3];
        spec.padding = [2, 3];
        spec.dilation = [2, 1];
        check(spec, 7, 11, Tile { rows: 1..17, positions: 2..40 });
        spec.stride = [3, 5]; // stride wider than the kernel: one slot per tap
        check(spec, 12, 13, Tile { rows: 0..18, positions: 0..12 });
        spec = Conv2dSpec::new(2, 1, 1).stride(4).padding(3);
        check(spec, 11, 11, Tile { rows: 0..2, positions: 0..16 });
    }

    #[test]
    fn split_strided_runs() {
        // base -3, stride 2, 6 columns in a row of 5: -3 -1 | 1 3 | 5 7
        assert_eq!(split_strided(-3, 2, 6, 5), [2, 2, 2, 1]);
        // Entirely left of the row.
        assert_eq!(split_strided(-9, 2, 3, 5), [3, 0, 0, 0]);
        // Entirely right of the row.
        assert_eq!(split_strided(6, 1, 3, 5), [0, 0, 3, 6]);
    }
}
