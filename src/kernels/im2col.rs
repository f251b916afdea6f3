//! im2col: packs a tile of one sample's column matrix.
//!
//! For each image channel the tile touches, the image rows it needs are first split into phase
//! planes (see `phases.rs`), one strided gather per plane row. Every (tap, grid row) pair of the
//! tile is then one contiguous copy from a plane row, or a zero fill when its image row lies in
//! the vertical padding.

use super::elementwise;
use super::geometry::ConvGeometry;
use super::phases::{copy_runs, for_each_row, split_strided, GridRows, PhasePlan, Tile, Window};

/// `dst[j] = src[j * stride]`, with a vectorisable loop for stride 2.
#[inline]
fn gather_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    match stride {
        1 => elementwise::copy(dst, &src[..dst.len()]),
        2 => {
            // Chunks of 8 outputs from 16 inputs, two plain vector loads. When the input ends
            // one short of the last chunk's 16, that chunk reads exactly 15.
            let mut done = (dst.len() / 8).min(src.len() / 16) * 8;
            for (dc, sc) in dst.chunks_exact_mut(8).zip(src.chunks_exact(16)) {
                let sc: &[f32; 16] = sc.try_into().expect("16 inputs");
                let even: [f32; 8] = std::array::from_fn(|j| sc[2 * j]);
                dc.copy_from_slice(&even);
            }
            if dst.len() - done >= 8 {
                let sc: &[f32; 15] = src[2 * done..2 * done + 15].try_into().expect("15 inputs");
                let even: [f32; 8] = std::array::from_fn(|j| sc[2 * j]);
                dst[done..done + 8].copy_from_slice(&even);
                done += 8;
            }
            for j in done..dst.len() {
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

/// Computes where each phase plane's rows meet the image: per plane, the counts of leading zero
/// entries, entries inside the image row and trailing zero entries, and the first image column
/// inside.
pub(crate) fn plane_borders(
    g: &ConvGeometry,
    plan: &PhasePlan,
    window: &Window,
) -> Vec<[usize; 4]> {
    (0..window.planes)
        .map(|slot| {
            let (len, base) = plan.plane_row(slot, window, g.stride[1]);
            split_strided(base, g.stride[1], len, g.w)
        })
        .collect()
}

/// Gathers the phases of channel `plane` (one `[h, w]` image plane) into the inside entries of
/// `planes`. The caller writes the zero entries around them once per tile.
pub(crate) fn fill_planes(
    g: &ConvGeometry,
    window: &Window,
    borders: &[[usize; 4]],
    plane: &[f32],
    planes: &mut [f32],
) {
    for (slot, &[before, inside, _, first]) in borders.iter().enumerate() {
        if inside == 0 {
            continue;
        }
        for iy in window.iy.clone() {
            let dst = &mut planes[window.row(slot, iy) + before..][..inside];
            gather_strided(dst, &plane[iy * g.w + first..(iy + 1) * g.w], g.stride[1]);
        }
    }
}

/// Packs `tile` of one sample's column matrix into `cols`: tile row `i`, column `j` goes to
/// `cols[i * ld + j]`.
///
/// `image` is one sample `[c_in, h, w]`; `planes` is scratch of at least
/// `plan.window(g, tile).len()` elements. Every element of the tile is written; no other
/// element of `cols` is.
pub(crate) fn im2col(
    g: &ConvGeometry,
    plan: &PhasePlan,
    image: &[f32],
    tile: &Tile,
    (cols, ld): (&mut [f32], usize),
    planes: &mut [f32],
) {
    debug_assert_eq!(image.len(), g.c_in * g.h * g.w);
    let window = plan.window(g, tile);
    let grid_rows = GridRows::new(g.out_w, &tile.positions);
    let plane_len = g.h * g.w;

    // The zero entries of the planes are the same for every channel: write them once.
    let borders = plane_borders(g, plan, &window);
    for (slot, &[before, inside, after, _]) in borders.iter().enumerate() {
        for iy in window.iy.clone() {
            let row = &mut planes[window.row(slot, iy)..][..before + inside + after];
            row[..before].fill(0.0);
            row[before + inside..].fill(0.0);
        }
    }

    let mut filled = None;
    for_each_row(g, &tile.rows, |ci, ky, kx, i| {
        // Split this channel's rows into phases once, at its first tile row.
        if filled != Some(ci) {
            let plane = &image[ci * plane_len..][..plane_len];
            fill_planes(g, &window, &borders, plane, planes);
            filled = Some(ci);
        }
        let (slot, shift) = plan.tap(kx);
        let inside = plan.rows_inside(ky);
        let source = |oy: usize, ox: usize| {
            let iy = oy * g.stride[0] + ky * g.dilation[0] - g.pad[0];
            window.row(slot, iy) + shift + ox - window.ox.start
        };
        let out = &mut cols[i * ld..i * ld + tile.positions.len()];

        // Partial grid rows at the ends of the tile.
        for seg in [&grid_rows.head, &grid_rows.tail].into_iter().flatten() {
            let dst = &mut out[seg.col..seg.col + seg.ox.len()];
            if inside.contains(&seg.oy) {
                elementwise::copy(dst, &planes[source(seg.oy, seg.ox.start)..][..dst.len()]);
            } else {
                dst.fill(0.0);
            }
        }

        // Whole grid rows: zeros where the tap reads the vertical padding, runs elsewhere.
        let body = &grid_rows.body;
        if !body.is_empty() {
            let first = inside.start.clamp(body.start, body.end);
            let end = inside.end.clamp(first, body.end);
            let col = |oy: usize| grid_rows.body_col + (oy - body.start) * g.out_w;
            out[col(body.start)..col(first)].fill(0.0);
            out[col(end)..col(body.end)].fill(0.0);
            if first < end {
                let pitch = g.stride[0] * window.pitch;
                let src = &planes[source(first, 0)..];
                copy_runs(&mut out[col(first)..col(end)], src, pitch, end - first, g.out_w);
            }
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
        let plan = PhasePlan::new(&g);
        let ld = tile.positions.len() + 3;
        let mut cols = vec![f32::NAN; tile.rows.len() * ld];
        let mut planes = vec![f32::NAN; plan.window(&g, &tile).len()];
        im2col(&g, &plan, &image, &tile, (&mut cols, ld), &mut planes);
        for (i, r) in tile.rows.clone().enumerate() {
            for (j, p) in tile.positions.clone().enumerate() {
                let got = cols[i * ld + j];
                assert_eq!(got, entry(&g, &image, r, p), "{spec:?} {h}x{w} row {r} position {p}");
            }
            let gap = &cols[i * ld + tile.positions.len()..][..3];
            assert!(gap.iter().all(|v| v.is_nan()), "write outside the tile in row {r}");
        }
    }

    #[test]
    fn im2col_whole_and_partial_tiles() {
        let mut spec = Conv2dSpec::new(3, 2, 4).stride(2).padding(1);
        check(spec, 9, 8, Tile { rows: 0..48, positions: 0..16 });
        check(spec, 9, 8, Tile { rows: 5..38, positions: 3..14 });
        check(spec, 9, 8, Tile { rows: 5..38, positions: 6..7 });
        check(spec, 40, 40, Tile { rows: 0..48, positions: 0..400 });
        spec.kernel = [3, 2];
        spec.stride = [1, 3];
        spec.padding = [2, 3];
        spec.dilation = [2, 1];
        check(spec, 7, 11, Tile { rows: 1..17, positions: 2..40 });
        spec.stride = [3, 5]; // stride wider than the kernel: one plane per tap
        check(spec, 12, 13, Tile { rows: 0..18, positions: 0..12 });
        spec = Conv2dSpec::new(2, 1, 1).stride(4).padding(3);
        check(spec, 11, 11, Tile { rows: 0..2, positions: 0..16 });
        // Padding larger than the kernel: whole rows and columns of zeros.
        spec = Conv2dSpec::new(1, 1, 2).padding(3);
        check(spec, 3, 4, Tile { rows: 0..4, positions: 0..80 });
    }
}
