//! The transforms of `tiles.rs` run on a whole row of tiles at once, over contiguous slices, so
//! that the compiler turns each loop into vector code.
//!
//! A tile row of the image reads, in each of its three plane rows, every fourth pixel from three
//! starting points. [`split_columns`] therefore splits each zero-bordered image row by column
//! modulo 4 once: in split plane `m`, entry `x` of a row is padded column `4 * x + m`. Input
//! tile column `e` of phase `px` is then entry `tx` of split plane `px` (`e = 0`), of plane
//! `px + 2` (`e = 1`), or entry `tx + 1` of plane `px` (`e = 2`), contiguous along the tile
//! row. Grad-input accumulates into the same layout and [`merge_columns`] undoes the split.
//! Every loop evaluates the functions of `tiles.rs` lane by lane, so each value is rounded as
//! there.

use super::tiles::{input_tile, input_tile_adjoint, output_tile, spread_tile, POINTS};

/// The split layout of one zero-bordered image plane `[h + 2, w + 2]` with `w = 4 * tile_cols`:
/// `[4, h + 2, tile_cols + 1]`, entry `(m, r, x)` holding padded pixel `(r, 4 * x + m)`, zero
/// outside the image.
#[derive(Clone, Copy, Debug)]
pub(super) struct SplitPlane {
    /// Image rows.
    pub h: usize,
    /// Tiles across a grid row, a quarter of the image width.
    pub tile_cols: usize,
}

impl SplitPlane {
    /// Elements of a split plane.
    pub fn len(&self) -> usize {
        4 * (self.h + 2) * self.row_len()
    }

    /// Entries of one split row.
    pub fn row_len(&self) -> usize {
        self.tile_cols + 1
    }

    /// Offset of split row `r` of plane `m`.
    pub fn row(&self, m: usize, r: usize) -> usize {
        (m * (self.h + 2) + r) * self.row_len()
    }
}

/// Writes the image plane `src [h, 4 * tile_cols]` into `split` in the layout of [`SplitPlane`].
pub(super) fn split_columns(s: SplitPlane, src: &[f32], split: &mut [f32]) {
    let (w, n) = (4 * s.tile_cols, s.row_len());
    for m in 0..4 {
        split[s.row(m, 0)..][..n].fill(0.0);
        split[s.row(m, s.h + 1)..][..n].fill(0.0);
    }
    for (y, src) in src.chunks_exact(w).enumerate() {
        // Padded column `4 * x + m` is image column `4 * x + m - 1`.
        for m in 0..4 {
            let dst = &mut split[s.row(m, y + 1)..][..n];
            for (x, d) in dst.iter_mut().enumerate() {
                *d = (4 * x + m).checked_sub(1).and_then(|c| src.get(c)).copied().unwrap_or(0.0);
            }
        }
    }
}

/// Writes the interior of `split` (layout of [`SplitPlane`]) into the image plane `dst [h, 4 *
/// tile_cols]`, adding `bias` to every pixel.
pub(super) fn merge_columns(s: SplitPlane, split: &[f32], bias: f32, dst: &mut [f32]) {
    let w = 4 * s.tile_cols;
    for (y, dst) in dst.chunks_exact_mut(w).enumerate() {
        for m in 0..4 {
            let src = &split[s.row(m, y + 1)..][..s.row_len()];
            // Image column `c` is padded column `c + 1 = 4 * x + m`.
            for (x, &v) in src.iter().enumerate() {
                if let Some(d) = (4 * x + m).checked_sub(1).and_then(|c| dst.get_mut(c)) {
                    *d = v + bias;
                }
            }
        }
    }
}

/// Transforms one row of image tiles. `a[j]` is split row `4 * ty + py + 2 * j` of plane `px`
/// (`tile_cols + 1` entries), `b[j]` the same row of plane `px + 2` (`tile_cols` entries), and
/// `out[xi][tx]` receives point `xi` of tile `tx`.
#[inline(always)]
pub(super) fn image_row(a: [&[f32]; 3], b: [&[f32]; 3], out: &mut [&mut [f32]; POINTS]) {
    let n = b[0].len();
    let (a, b) = (a.map(|a| &a[..n + 1]), b.map(|b| &b[..n]));
    let mut out = out.each_mut().map(|o| &mut o[..n]);
    for x in 0..n {
        let d = std::array::from_fn(|j| [a[j][x], b[j][x], a[j][x + 1]]);
        let v = input_tile(d);
        for (xi, o) in out.iter_mut().enumerate() {
            o[x] = v[xi / 3][xi % 3];
        }
    }
}

/// Adds the adjoint transform of one row of tiles into split rows laid out as in [`image_row`]:
/// `v[xi][tx]` is point `xi` of tile `tx`.
#[inline(always)]
pub(super) fn image_row_adjoint(v: [&[f32]; POINTS], a: [&mut [f32]; 3], b: [&mut [f32]; 3]) {
    let n = b[0].len();
    let v = v.map(|v| &v[..n]);
    let a = a.map(|a| &mut a[..n + 1]);
    let b = b.map(|b| &mut b[..n]);
    for x in 0..n {
        let d =
            input_tile_adjoint(std::array::from_fn(|u| std::array::from_fn(|w| v[u * 3 + w][x])));
        for j in 0..3 {
            a[j][x] += d[j][0];
            b[j][x] += d[j][1];
            a[j][x + 1] += d[j][2];
        }
    }
}

/// Transforms one row of 2x2 grid tiles (`A dY A^T`) from grid rows `r0` and `r1` (`2 *
/// tile_cols` values each) into `out[xi][tx]`.
#[inline(always)]
pub(super) fn grid_row(r0: &[f32], r1: &[f32], out: &mut [&mut [f32]; POINTS]) {
    let n = r0.len() / 2;
    let (r0, r1) = (&r0[..2 * n], &r1[..2 * n]);
    let mut out = out.each_mut().map(|o| &mut o[..n]);
    for x in 0..n {
        let m = spread_tile([[r0[2 * x], r0[2 * x + 1]], [r1[2 * x], r1[2 * x + 1]]]);
        for (xi, o) in out.iter_mut().enumerate() {
            o[x] = m[xi / 3][xi % 3];
        }
    }
}

/// Transforms one row of products back (`A^T M A`): `m[xi][tx]` is point `xi` of tile `tx`,
/// and grid rows `y0` and `y1` (`2 * tile_cols` values each) receive the 2x2 tiles plus `bias`.
#[inline(always)]
pub(super) fn output_row(m: [&[f32]; POINTS], bias: f32, y0: &mut [f32], y1: &mut [f32]) {
    let n = y0.len() / 2;
    let m = m.map(|m| &m[..n]);
    let (y0, y1) = (&mut y0[..2 * n], &mut y1[..2 * n]);
    for x in 0..n {
        let y = output_tile(std::array::from_fn(|u| std::array::from_fn(|v| m[u * 3 + v][x])));
        y0[2 * x] = y[0][0] + bias;
        y0[2 * x + 1] = y[0][1] + bias;
        y1[2 * x] = y[1][0] + bias;
        y1[2 * x + 1] = y[1][1] + bias;
    }
}
