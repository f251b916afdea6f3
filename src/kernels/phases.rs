//! Phase planes: the layout im2col reads from and col2im accumulates into.
//!
//! Row `r = (ci * k_h + ky) * k_w + kx` and column `p = oy * out_w + ox` of a sample's column
//! matrix hold image pixel `(ci, oy * stride_h + ky * dilation_h - pad_h, ox * stride_w + kx *
//! dilation_w - pad_w)`, or zero in the padding. Along a grid row, tap `kx` reads every
//! `stride_w`-th pixel of one image row, starting at `t = kx * dilation_w - pad_w`. Writing
//! `t = q * stride_w + φ`, that is the run `q, q + 1, ...` of the row's phase `φ` (its pixels
//! `φ, φ + stride_w, ...`). A *phase plane* stores one phase of every image row a tile needs,
//! zero-extended on both sides. Each (tap, grid row) pair of the tile then reads one contiguous
//! run of a plane row, a plain vector copy with no bounds tests.

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

/// One phase plane: entry `j` of a plane row contains image column `base + j * stride_w`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    base: isize,
    /// Smallest and one past the largest `start` of the taps that read this plane.
    starts: [usize; 2],
}

/// Tap `kx` reads entry `start + ox` of plane `slot` for grid column `ox`.
#[derive(Clone, Copy, Debug)]
struct Tap {
    slot: usize,
    start: usize,
}

/// The mapping from kernel columns to the phase planes they read, for one geometry.
#[derive(Clone, Debug)]
pub(crate) struct PhasePlan {
    slots: Vec<Slot>,
    taps: Vec<Tap>,
    /// Largest `starts[1] - 1 - starts[0]` over the planes: extra entries a plane row needs
    /// beyond one per grid column.
    spread: usize,
    /// For each kernel row `ky`, the grid rows whose tap reads inside the image.
    inside: Vec<Range<usize>>,
}

/// The part of one channel's phase planes that a tile uses.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    /// Image rows held; every row the tile reads inside the image is among them.
    pub iy: Range<usize>,
    /// Grid columns covered.
    pub ox: Range<usize>,
    /// Entries per plane row.
    pub pitch: usize,
    /// Number of planes.
    pub planes: usize,
}

impl Window {
    /// Elements of the planes of one channel.
    pub fn len(&self) -> usize {
        self.planes * self.iy.len() * self.pitch
    }

    /// Offset of plane `slot`, image row `iy` in the planes of one channel.
    pub fn row(&self, slot: usize, iy: usize) -> usize {
        (slot * self.iy.len() + iy - self.iy.start) * self.pitch
    }
}

impl PhasePlan {
    /// Plans the phase planes of `g`.
    ///
    /// With `stride_w <= k_w` there is one plane per phase, each read by about
    /// `k_w / stride_w` taps. With a larger stride no two taps share a phase, and each tap gets
    /// a plane of its own (a strided gather of exactly the pixels it reads).
    pub fn new(g: &ConvGeometry) -> Self {
        let s = g.stride[1] as isize;
        let first = |kx: usize| (kx * g.dilation[1]) as isize - g.pad[1] as isize;
        let mut slots: Vec<Slot> = Vec::new();
        let mut taps = Vec::with_capacity(g.k_w);
        if g.stride[1] <= g.k_w {
            let q_min = first(0).div_euclid(s);
            let mut slot_of_phase = vec![usize::MAX; g.stride[1]];
            for kx in 0..g.k_w {
                let (q, phase) = (first(kx).div_euclid(s), first(kx).rem_euclid(s) as usize);
                let start = (q - q_min) as usize;
                if slot_of_phase[phase] == usize::MAX {
                    slot_of_phase[phase] = slots.len();
                    let base = q_min * s + phase as isize;
                    slots.push(Slot { base, starts: [start, start + 1] });
                }
                let slot = slot_of_phase[phase];
                let starts = &mut slots[slot].starts;
                *starts = [starts[0].min(start), starts[1].max(start + 1)];
                taps.push(Tap { slot, start });
            }
        } else {
            for kx in 0..g.k_w {
                taps.push(Tap { slot: slots.len(), start: 0 });
                slots.push(Slot { base: first(kx), starts: [0, 1] });
            }
        }
        let spread = slots.iter().map(|s| s.starts[1] - 1 - s.starts[0]).max().unwrap_or(0);
        let inside = (0..g.k_h).map(|ky| rows_inside(g, ky)).collect();
        PhasePlan { slots, taps, spread, inside }
    }

    /// Returns the window of the planes that `tile` uses.
    pub fn window(&self, g: &ConvGeometry, tile: &Tile) -> Window {
        let (first, last) = (tile.positions.start, tile.positions.end.max(1) - 1);
        let (oy_first, oy_last) = (first / g.out_w, last / g.out_w);
        let ox = if oy_first == oy_last { first % g.out_w..last % g.out_w + 1 } else { 0..g.out_w };
        let reach = (g.k_h - 1) * g.dilation[0];
        let iy_start = (oy_first * g.stride[0]).saturating_sub(g.pad[0]).min(g.h);
        let iy_end = (oy_last * g.stride[0] + reach + 1).saturating_sub(g.pad[0]).min(g.h);
        let pitch = ox.len() + self.spread;
        Window { iy: iy_start..iy_end.max(iy_start), ox, pitch, planes: self.slots.len() }
    }

    /// Grid rows whose tap in kernel row `ky` reads inside the image.
    pub fn rows_inside(&self, ky: usize) -> Range<usize> {
        self.inside[ky].clone()
    }

    /// For tap `kx`: its plane, and the offset in a plane row of the entry it reads for grid
    /// column `window.ox.start`.
    pub fn tap(&self, kx: usize) -> (usize, usize) {
        let tap = self.taps[kx];
        (tap.slot, tap.start - self.slots[tap.slot].starts[0])
    }

    /// For plane `slot` of `window`: the number of entries a row holds, and the image column of
    /// its first entry.
    pub fn plane_row(&self, slot: usize, window: &Window, stride: usize) -> (usize, isize) {
        let s = &self.slots[slot];
        let first = window.ox.start + s.starts[0];
        (window.ox.len() + s.starts[1] - 1 - s.starts[0], s.base + (first * stride) as isize)
    }
}

/// One grid row's share of a tile: grid row `oy`, columns `ox`, at tile column `col`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub oy: usize,
    pub ox: Range<usize>,
    pub col: usize,
}

/// A tile's positions as grid rows: a partial first row, whole rows, a partial last row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GridRows {
    pub head: Option<Segment>,
    /// Whole grid rows; row `oy` starts at tile column `body_col + (oy - body.start) * out_w`.
    pub body: Range<usize>,
    pub body_col: usize,
    pub tail: Option<Segment>,
}

impl GridRows {
    pub fn new(out_w: usize, positions: &Range<usize>) -> Self {
        let (start, end) = (positions.start, positions.end);
        let (first_row, first_ox) = (start / out_w, start % out_w);
        let (last_row, last_ox) = (end / out_w, end % out_w);
        if first_row == last_row {
            // Inside one grid row, never a whole one.
            let head =
                (start < end).then_some(Segment { oy: first_row, ox: first_ox..last_ox, col: 0 });
            return GridRows { head, body: 0..0, body_col: 0, tail: None };
        }
        let head = (first_ox > 0).then_some(Segment { oy: first_row, ox: first_ox..out_w, col: 0 });
        let body_start = if first_ox > 0 { first_row + 1 } else { first_row };
        let body_col = head.as_ref().map_or(0, |h| h.ox.len());
        let tail_col = body_col + (last_row - body_start) * out_w;
        let tail = (last_ox > 0).then_some(Segment { oy: last_row, ox: 0..last_ox, col: tail_col });
        GridRows { head, body: body_start..last_row, body_col, tail }
    }
}

/// Grid rows whose tap in kernel row `ky` reads inside the image: `0 <= oy * stride_h + ky *
/// dilation_h - pad_h < h`.
fn rows_inside(g: &ConvGeometry, ky: usize) -> Range<usize> {
    let (s, offset) = (g.stride[0], ky * g.dilation[0]);
    let first = g.pad[0].saturating_sub(offset).div_ceil(s);
    let end = match (g.h + g.pad[0]).checked_sub(offset + 1) {
        Some(last) => (last / s + 1).min(g.out_h),
        None => 0,
    };
    first.min(end)..end
}

/// Calls `visit(ci, ky, kx, tile_row)` for every row of `rows`, in order.
pub(crate) fn for_each_row(
    g: &ConvGeometry,
    rows: &Range<usize>,
    mut visit: impl FnMut(usize, usize, usize, usize),
) {
    // Divide once, then count: the loop runs once per tile row, often for short rows.
    let taps = g.k_h * g.k_w;
    let (mut ci, tap) = (rows.start / taps, rows.start % taps);
    let (mut ky, mut kx) = (tap / g.k_w, tap % g.k_w);
    for i in 0..rows.len() {
        visit(ci, ky, kx, i);
        kx += 1;
        if kx == g.k_w {
            (kx, ky) = (0, ky + 1);
            if ky == g.k_h {
                (ky, ci) = (0, ci + 1);
            }
        }
    }
}

/// Copies `rows` runs of `len` elements: run `r` from `src[r * src_pitch..]` to
/// `dst[r * len..]`, with straight-line moves for the run lengths of common grids.
pub(crate) fn copy_runs(dst: &mut [f32], src: &[f32], src_pitch: usize, rows: usize, len: usize) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32], pitch: usize, rows: usize) {
        for (r, d) in dst[..rows * N].chunks_exact_mut(N).enumerate() {
            d.copy_from_slice(&src[r * pitch..r * pitch + N]);
        }
    }
    match len {
        4 => fixed::<4>(dst, src, src_pitch, rows),
        8 => fixed::<8>(dst, src, src_pitch, rows),
        16 => fixed::<16>(dst, src, src_pitch, rows),
        32 => fixed::<32>(dst, src, src_pitch, rows),
        _ => {
            for r in 0..rows {
                elementwise::copy(&mut dst[r * len..][..len], &src[r * src_pitch..][..len]);
            }
        }
    }
}

/// Adds `rows` runs of `len` elements: run `r` from `src[r * len..]` into
/// `dst[r * dst_pitch..]`. The adjoint of [`copy_runs`].
pub(crate) fn add_runs(dst: &mut [f32], dst_pitch: usize, src: &[f32], rows: usize, len: usize) {
    fn fixed<const N: usize>(dst: &mut [f32], pitch: usize, src: &[f32], rows: usize) {
        for (r, s) in src[..rows * N].chunks_exact(N).enumerate() {
            elementwise::add_assign(&mut dst[r * pitch..r * pitch + N], s);
        }
    }
    match len {
        4 => fixed::<4>(dst, dst_pitch, src, rows),
        8 => fixed::<8>(dst, dst_pitch, src, rows),
        16 => fixed::<16>(dst, dst_pitch, src, rows),
        32 => fixed::<32>(dst, dst_pitch, src, rows),
        _ => {
            for r in 0..rows {
                elementwise::add_assign(&mut dst[r * dst_pitch..][..len], &src[r * len..][..len]);
            }
        }
    }
}

/// Splits the image columns `base, base + stride, ...` (`len` of them) into those left of a
/// row of `w` pixels, those inside it and those right of it. Returns the three counts and the
/// first inside column.
pub(crate) fn split_strided(base: isize, stride: usize, len: usize, w: usize) -> [usize; 4] {
    let s = stride as isize;
    let before = if base < 0 { ((-base + s - 1) / s) as usize } else { 0 }.min(len);
    let last_inside = w as isize - 1 - base; // j * s <= last_inside
    let end = if last_inside < 0 { 0 } else { (last_inside / s + 1) as usize }.clamp(before, len);
    let first_column = base + (before as isize) * s;
    [before, end - before, len - end, first_column.max(0) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::geometry::Conv2dSpec;

    #[test]
    fn split_strided_runs() {
        // base -3, stride 2, 6 columns in a row of 5: -3 -1 | 1 3 | 5 7
        assert_eq!(split_strided(-3, 2, 6, 5), [2, 2, 2, 1]);
        // Entirely left of the row.
        assert_eq!(split_strided(-9, 2, 3, 5), [3, 0, 0, 0]);
        // Entirely right of the row.
        assert_eq!(split_strided(6, 1, 3, 5), [0, 0, 3, 6]);
    }

    #[test]
    fn for_each_row_counts_like_division() {
        let g =
            Conv2dSpec { kernel: [3, 2], ..Conv2dSpec::new(4, 1, 1) }.geometry(1, 5, 5).unwrap();
        let mut visited = Vec::new();
        for_each_row(&g.lowering, &(5..20), |ci, ky, kx, i| visited.push((ci, ky, kx, i)));
        let expected: Vec<_> = (5..20).map(|r| (r / 6, (r / 2) % 3, r % 2, r - 5)).collect();
        assert_eq!(visited, expected);
    }

    #[test]
    fn grid_rows_of_tiles() {
        let seg = |oy, ox, col| Some(Segment { oy, ox, col });
        let rows = GridRows::new(5, &(3..13));
        assert_eq!(
            rows,
            GridRows { head: seg(0, 3..5, 0), body: 1..2, body_col: 2, tail: seg(2, 0..3, 7) }
        );
        let rows = GridRows::new(5, &(5..15));
        assert_eq!(rows, GridRows { head: None, body: 1..3, body_col: 0, tail: None });
        let rows = GridRows::new(5, &(6..8));
        assert_eq!(rows, GridRows { head: seg(1, 1..3, 0), body: 0..0, body_col: 0, tail: None });
        let rows = GridRows::new(5, &(4..6));
        assert_eq!(
            rows,
            GridRows { head: seg(0, 4..5, 0), body: 1..1, body_col: 1, tail: seg(1, 0..1, 1) }
        );
    }

    /// Image row read by grid row `oy` through kernel row `ky`, if it lies inside the image.
    fn image_row(g: &ConvGeometry, oy: usize, ky: usize) -> Option<usize> {
        (oy * g.stride[0] + ky * g.dilation[0]).checked_sub(g.pad[0]).filter(|&iy| iy < g.h)
    }

    #[test]
    fn rows_inside_matches_image_row() {
        for (k, s, p, d, h) in [(4, 2, 1, 1, 8), (3, 1, 3, 2, 5), (2, 4, 0, 1, 11), (1, 3, 3, 1, 4)]
        {
            let spec = Conv2dSpec::new(1, 1, k).stride(s).padding(p).dilation(d);
            let g = spec.geometry(1, h, h).unwrap().lowering;
            for ky in 0..k {
                let expected: Vec<usize> =
                    (0..g.out_h).filter(|&oy| image_row(&g, oy, ky).is_some()).collect();
                let got: Vec<usize> = rows_inside(&g, ky).collect();
                assert_eq!(got, expected, "k {k} s {s} p {p} d {d} h {h} ky {ky}");
            }
        }
    }

    #[test]
    fn runs_copy_and_add() {
        for len in [3, 4, 8, 16, 32, 40] {
            let src: Vec<f32> = (0..3 * (len + 2)).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; 3 * len + 1];
            copy_runs(&mut dst, &src, len + 2, 3, len);
            for r in 0..3 {
                assert_eq!(dst[r * len..(r + 1) * len], src[r * (len + 2)..][..len], "len {len}");
            }
            assert!(dst[3 * len].is_nan(), "len {len}: write past the runs");
            let mut acc = vec![1.0; 3 * (len + 2)];
            add_runs(&mut acc, len + 2, &dst[..3 * len], 3, len);
            for (i, v) in acc.iter().enumerate() {
                let expected = if i % (len + 2) < len { 1.0 + i as f32 } else { 1.0 };
                assert_eq!(*v, expected, "len {len}, element {i}");
            }
        }
    }

    #[test]
    fn plan_of_dcgan_kernel() {
        // k 4, stride 2, pad 1: taps start at -1, 0, 1, 2 = phases 1, 0, 1, 0 from q = -1, 0, 0, 1.
        let g = Conv2dSpec::new(1, 1, 4).stride(2).padding(1).geometry(1, 8, 8).unwrap().lowering;
        let plan = PhasePlan::new(&g);
        assert_eq!(
            (0..4).map(|kx| plan.tap(kx)).collect::<Vec<_>>(),
            [(0, 0), (1, 0), (0, 1), (1, 1)]
        );
        let window = plan.window(&g, &Tile { rows: 0..16, positions: 0..16 });
        assert_eq!((window.iy, window.ox, window.pitch, window.planes), (0..8, 0..4, 5, 2));
        // Plane 0 (phase 1) starts at column -1, plane 1 (phase 0) at column 0.
        assert_eq!(plan.plane_row(0, &window_of(&plan, &g), 2), (5, -1));
        assert_eq!(plan.plane_row(1, &window_of(&plan, &g), 2), (5, 0));
    }

    fn window_of(plan: &PhasePlan, g: &ConvGeometry) -> Window {
        plan.window(g, &Tile { rows: 0..16, positions: 0..16 })
    }
}
