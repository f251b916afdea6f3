//! col2im: scatter-adds a tile of one sample's column matrix back into the image.
//!
//! The adjoint of im2col: every entry of the tile is added to the image pixel im2col reads it
//! from, and entries that fall in the padding are dropped. Per image channel, the tile's
//! (tap, grid row) runs are first summed into zeroed phase planes (see `phases.rs`) with
//! contiguous vector adds. Each plane row is then added once into every `stride_w`-th pixel of
//! its image row.

use super::elementwise;
use super::geometry::ConvGeometry;
use super::im2col::plane_borders;
use super::phases::{add_runs, for_each_row, GridRows, PhasePlan, Tile, Window};

/// `dst[j * stride] += src[j]`, with a vectorisable loop for stride 2.
#[inline]
fn scatter_add_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    match stride {
        1 => elementwise::add_assign(&mut dst[..src.len()], src),
        2 => {
            // Chunks of 8 inputs, each updating the 15 outputs from its first to its last.
            let chunks = src.len() / 8;
            for (i, sc) in src.chunks_exact(8).enumerate() {
                let dc: &mut [f32; 15] = (&mut dst[16 * i..16 * i + 15]).try_into().expect("15");
                let mut pairs = *dc;
                for (j, v) in sc.iter().enumerate() {
                    pairs[2 * j] += *v;
                }
                *dc = pairs;
            }
            for j in chunks * 8..src.len() {
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

/// Adds the inside entries of one channel's phase planes into its image plane `[h, w]`.
fn drain_planes(
    g: &ConvGeometry,
    window: &Window,
    borders: &[[usize; 4]],
    planes: &[f32],
    plane: &mut [f32],
) {
    for (slot, &[before, inside, _, first]) in borders.iter().enumerate() {
        if inside == 0 {
            continue;
        }
        for iy in window.iy.clone() {
            let src = &planes[window.row(slot, iy) + before..][..inside];
            scatter_add_strided(&mut plane[iy * g.w + first..(iy + 1) * g.w], src, g.stride[1]);
        }
    }
}

/// Adds `tile` of one sample's column matrix, read from `cols[i * ld + j]` for tile row `i` and
/// column `j`, into `image` `[c_in, h, w]`.
///
/// `planes` is scratch of at least `plan.window(g, tile).len()` elements. Each image pixel
/// receives its contributions in a fixed order (per channel: the tile's rows in order, grid
/// rows in order within each, then the planes), so the result does not depend on the calling
/// thread.
pub(crate) fn col2im_add(
    g: &ConvGeometry,
    plan: &PhasePlan,
    (cols, ld): (&[f32], usize),
    tile: &Tile,
    image: &mut [f32],
    planes: &mut [f32],
) {
    debug_assert_eq!(image.len(), g.c_in * g.h * g.w);
    let window = plan.window(g, tile);
    let grid_rows = GridRows::new(g.out_w, &tile.positions);
    let borders = plane_borders(g, plan, &window);
    let plane_len = g.h * g.w;
    let planes = &mut planes[..window.len()];
    let mut current = None;
    for_each_row(g, &tile.rows, |ci, ky, kx, i| {
        // On reaching a new channel, drain the previous one and start from zero.
        if current != Some(ci) {
            if let Some(done) = current {
                let plane = &mut image[done * plane_len..][..plane_len];
                drain_planes(g, &window, &borders, planes, plane);
            }
            planes.fill(0.0);
            current = Some(ci);
        }
        let (slot, shift) = plan.tap(kx);
        let inside = plan.rows_inside(ky);
        let target = |oy: usize, ox: usize| {
            let iy = oy * g.stride[0] + ky * g.dilation[0] - g.pad[0];
            window.row(slot, iy) + shift + ox - window.ox.start
        };
        let row = &cols[i * ld..i * ld + tile.positions.len()];

        // Partial grid rows at the ends of the tile; entries read from the vertical padding
        // have no pixel to go to.
        for seg in [&grid_rows.head, &grid_rows.tail].into_iter().flatten() {
            if inside.contains(&seg.oy) {
                let src = &row[seg.col..seg.col + seg.ox.len()];
                let to = target(seg.oy, seg.ox.start);
                elementwise::add_assign(&mut planes[to..to + src.len()], src);
            }
        }

        // Whole grid rows inside the image.
        let body = &grid_rows.body;
        let first = inside.start.clamp(body.start, body.end);
        let end = inside.end.clamp(first, body.end);
        if first < end {
            let col = |oy: usize| grid_rows.body_col + (oy - body.start) * g.out_w;
            let pitch = g.stride[0] * window.pitch;
            let to = target(first, 0);
            add_runs(&mut planes[to..], pitch, &row[col(first)..col(end)], end - first, g.out_w);
        }
    });
    if let Some(done) = current {
        let plane = &mut image[done * plane_len..][..plane_len];
        drain_planes(g, &window, &borders, planes, plane);
    }
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
        let plan = PhasePlan::new(&g);
        let mut planes = vec![f32::NAN; plan.window(&g, &tile).len()];
        let x: Vec<f32> = (0..g.image_len()).map(|i| (i * 7 % 13) as f32 - 6.0).collect();
        let ld = tile.positions.len();
        let c: Vec<f32> = (0..tile.rows.len() * ld).map(|i| (i * 5 % 11) as f32 - 5.0).collect();

        let mut cols = vec![f32::NAN; c.len()];
        im2col(&g, &plan, &x, &tile, (&mut cols, ld), &mut planes);
        let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| (a * b) as f64).sum();

        let mut image = vec![0.0; g.image_len()];
        col2im_add(&g, &plan, (&c, ld), &tile, &mut image, &mut planes);
        let rhs: f64 = image.iter().zip(&x).map(|(a, b)| (a * b) as f64).sum();
        assert_eq!(lhs, rhs, "{spec:?} {h}x{w} {tile:?}");
    }

    #[test]
    fn col2im_is_adjoint_of_im2col() {
        let mut spec = Conv2dSpec::new(3, 2, 4).stride(2).padding(1);
        check(spec, 9, 8, Tile { rows: 0..48, positions: 0..16 });
        check(spec, 9, 8, Tile { rows: 7..41, positions: 5..13 });
        check(spec, 40, 40, Tile { rows: 0..48, positions: 0..400 });
        spec.kernel = [3, 2];
        spec.stride = [1, 3];
        spec.padding = [2, 3];
        spec.dilation = [2, 1];
        check(spec, 7, 11, Tile { rows: 1..17, positions: 2..40 });
        spec.stride = [3, 5];
        check(spec, 12, 13, Tile { rows: 0..18, positions: 0..12 });
        check(Conv2dSpec::new(1, 1, 1).stride(2), 40, 40, Tile { rows: 0..1, positions: 0..400 });
        check(Conv2dSpec::new(1, 1, 2).padding(3), 3, 4, Tile { rows: 0..4, positions: 0..80 });
    }

    #[test]
    fn col2im_adds_into_image() {
        // A 1x1 kernel with stride 1: col2im is a plain addition.
        let g = Conv2dSpec::new(2, 1, 1).geometry(1, 3, 5).unwrap().lowering;
        let plan = PhasePlan::new(&g);
        let tile = Tile { rows: 0..2, positions: 0..15 };
        let mut planes = vec![0.0; plan.window(&g, &tile).len()];
        let cols: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let mut image = vec![100.0; 30];
        col2im_add(&g, &plan, (&cols, 15), &tile, &mut image, &mut planes);
        let expected: Vec<f32> = (0..30).map(|i| 100.0 + i as f32).collect();
        assert_eq!(image, expected);
    }
}
