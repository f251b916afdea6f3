//! The B operand of the fused forward product: column-matrix blocks packed straight from the
//! image into the sliver layout of [`PackB`].

use std::cell::Cell;
use std::ops::Range;

use super::{prefix, with_buffer};
use crate::kernels::elementwise::copy_short;
use crate::kernels::geometry::ConvGeometry;
use crate::kernels::im2col::{fill_planes, plane_borders};
use crate::kernels::packed_gemm::{PackB, NR};
use crate::kernels::phases::{for_each_row, PhasePlan, Tile, Window};

thread_local! {
    /// Phase planes of one channel, reused across calls on this thread.
    static PLANES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Even and odd image columns of one channel, reused across calls on this thread.
    static PHASES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Column runs of the block being packed, reused across calls on this thread.
    static RUNS: Cell<Vec<Run>> = const { Cell::new(Vec::new()) };
}

/// The column matrices of consecutive samples side by side, `[k, samples * positions]`, as a
/// B operand: column `s * positions + q` is position `q` of sample `s`. With `ones_row`, B is
/// `[k + 1, samples * positions]` and its last row is all ones.
pub(super) struct ImageColumns<'a> {
    pub g: &'a ConvGeometry,
    pub phases: &'a PhasePlan,
    /// The samples, `[samples, c_in, h, w]`.
    pub images: &'a [f32],
    /// Whether B has a row of ones after the `k` rows of the column matrix.
    pub ones_row: bool,
}

/// Consecutive grid positions of one sample that land in one B sliver: `rows` grid rows from
/// `oy`, `len` columns of each from grid column `ox`, written from offset `dst` of block row 0.
/// With `rows > 1` the run covers whole grid rows (`ox == 0`, `len == out_w`), one after
/// another in the sliver.
#[derive(Clone, Copy, Debug)]
struct Run {
    dst: usize,
    /// Offset of the sample's phase planes in the planes buffer.
    planes: usize,
    oy: usize,
    ox: usize,
    len: usize,
    rows: usize,
}

impl PackB for ImageColumns<'_> {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        let p = self.g.positions();
        // Columns past `nc` in the last sliver must be zero.
        if !nc.is_multiple_of(NR) {
            dst[(nc / NR) * kc * NR..].fill(0.0);
        }
        let k = self.g.k();
        if self.ones_row && k0 + kc > k {
            // Row k, the ones the bias column of A multiplies.
            let i = k - k0;
            for (s, sliver) in dst.chunks_exact_mut(kc * NR).enumerate() {
                let row = &mut sliver[i * NR..(i + 1) * NR];
                let columns = NR.min(nc - s * NR);
                row[..columns].fill(1.0);
                row[columns..].fill(0.0);
            }
        }
        let rows = k0..(k0 + kc).min(k);
        if rows.is_empty() {
            return;
        }
        let aligned = [k0, rows.len(), n0, nc].iter().all(|v| v.is_multiple_of(TAPS_4X4));
        if aligned && is_dcgan_8x8(self.g) {
            self.pack_dcgan_8x8(&rows, kc, n0, nc, dst);
            return;
        }
        let mut column = n0;
        while column < n0 + nc {
            let (first_sample, first) = (column / p, column % p);
            let left = n0 + nc - column;
            // Whole samples go together, so that they share one pass over the block's rows.
            let (samples, positions) = if first == 0 && left >= p {
                (first_sample..first_sample + left / p, 0..p)
            } else {
                (first_sample..first_sample + 1, first..p.min(first + left))
            };
            let block = Block { rows: &rows, positions: &positions, column: column - n0, kc };
            self.pack_samples(samples.clone(), block, dst);
            column += samples.len() * positions.len();
        }
    }
}

/// The part of a B block that one pass packs: rows `rows` of the column matrix and positions
/// `positions` of each of its samples, from block column `column` on, in a block of `kc` rows.
#[derive(Clone, Copy)]
struct Block<'b> {
    rows: &'b Range<usize>,
    positions: &'b Range<usize>,
    column: usize,
    kc: usize,
}

/// Taps of a 4x4 kernel, and positions of a 4x4 grid.
const TAPS_4X4: usize = 16;

/// Returns whether `g` is DCGAN's 4x4 kernel with stride 2, padding 1 and no dilation on an
/// 8x8 image, which gives a 4x4 grid: the smallest-grid layers of DCGAN, whose samples are
/// folded.
fn is_dcgan_8x8(g: &ConvGeometry) -> bool {
    (g.k_h, g.k_w, g.h, g.w) == (4, 4, 8, 8)
        && g.stride == [2, 2]
        && g.pad == [1, 1]
        && g.dilation == [1, 1]
}

/// Returns the four 2D phase planes of an 8x8 image under padding 1. Plane
/// `(phase_y, phase_x)` is the 5x5 array whose entry `(a, b)` is pixel
/// `(2 a + phase_y - 1, 2 b + phase_x - 1)`, zero outside the image.
fn phase_planes_8x8(x: &[f32; 64]) -> [[f32; 25]; 4] {
    let mut planes = [[0.0f32; 25]; 4];
    for (index, plane) in planes.iter_mut().enumerate() {
        let (phase_y, phase_x) = (index / 2, index % 2);
        for a in 0..5 {
            let Some(iy) = (2 * a + phase_y).checked_sub(1).filter(|&iy| iy < 8) else {
                continue;
            };
            for b in 0..5 {
                if let Some(ix) = (2 * b + phase_x).checked_sub(1).filter(|&ix| ix < 8) {
                    plane[a * 5 + b] = x[iy * 8 + ix];
                }
            }
        }
    }
    planes
}

impl ImageColumns<'_> {
    /// Packs the image rows `rows` of a B block of `kc` rows, as [`PackB::pack_b`] would, for
    /// [`is_dcgan_8x8`] geometries. The ends of `rows`, `n0` and `nc` must be multiples of 16,
    /// so the block holds whole channels and whole samples, each sample 16 columns within one
    /// sliver. Tap `(ky, kx)` reads pixel `(2 oy + ky - 1, 2 ox + kx - 1)`, which is entry
    /// `(oy + ky / 2, ox + kx / 2)` of phase plane `(ky % 2, kx % 2)`. Each 16-column row of a
    /// sample is therefore four runs of 4 from one 5x5 plane, at offsets fixed by the tap.
    fn pack_dcgan_8x8(
        &self,
        rows: &Range<usize>,
        kc: usize,
        n0: usize,
        nc: usize,
        dst: &mut [f32],
    ) {
        let sample_len = self.g.c_in * 64;
        let channels = rows.start / TAPS_4X4..rows.end / TAPS_4X4;
        for t in 0..nc / TAPS_4X4 {
            let b = n0 / TAPS_4X4 + t;
            let column = t * TAPS_4X4;
            let sliver = &mut dst[column / NR * kc * NR..][..kc * NR];
            let lane = column % NR;
            for (c, ci) in channels.clone().enumerate() {
                let x = &self.images[b * sample_len + ci * 64..][..64];
                let planes = phase_planes_8x8(x.try_into().expect("an 8x8 image plane"));
                for tap in 0..TAPS_4X4 {
                    let (ky, kx) = (tap / 4, tap % 4);
                    let plane = &planes[(ky % 2) * 2 + kx % 2];
                    let origin = (ky / 2) * 5 + kx / 2;
                    let row = (c * TAPS_4X4 + tap) * NR + lane;
                    let out: &mut [f32; 16] =
                        (&mut sliver[row..row + 16]).try_into().expect("16 columns");
                    for oy in 0..4 {
                        let src: &[f32; 4] =
                            plane[origin + oy * 5..][..4].try_into().expect("a run of 4");
                        out[oy * 4..oy * 4 + 4].copy_from_slice(src);
                    }
                }
            }
        }
    }

    /// Packs the part `block` of a B block for `samples` side by side into `dst` (the sliver
    /// layout of [`PackB`]): sample `first + t` from column `block.column + t * positions`.
    fn pack_samples(&self, samples: Range<usize>, block: Block<'_>, dst: &mut [f32]) {
        let (g, phases) = (self.g, self.phases);
        let tile = Tile { rows: block.rows.clone(), positions: block.positions.clone() };
        let window = phases.window(g, &tile);
        let borders = plane_borders(g, phases, &window);
        let (plane_len, sample_len, window_len) = (g.h * g.w, g.c_in * g.h * g.w, window.len());

        with_buffer(&RUNS, |runs| {
            runs.clear();
            for t in 0..samples.len() {
                let column = block.column + t * block.positions.len();
                column_runs(g, Block { column, ..block }, t * window_len, runs);
            }
            with_buffer(&PLANES, |planes| {
                // The planes of sample `first + t` start at `t * window_len`.
                let planes = prefix(planes, samples.len() * window_len);
                // The zero entries of the planes are the same for every channel: write them once.
                for sample_planes in planes.chunks_exact_mut(window_len.max(1)) {
                    for (slot, &[before, inside, after, _]) in borders.iter().enumerate() {
                        for iy in window.iy.clone() {
                            let row = &mut sample_planes[window.row(slot, iy)..];
                            let row = &mut row[..before + inside + after];
                            row[..before].fill(0.0);
                            row[before + inside..].fill(0.0);
                        }
                    }
                }

                let mut filled = None;
                let pitch = g.stride[0] * window.pitch;
                for_each_row(g, block.rows, |ci, ky, kx, i| {
                    // Split this channel's rows into phases once, at its first row in the block.
                    if filled != Some(ci) {
                        for (t, b) in samples.clone().enumerate() {
                            let plane = &self.images[b * sample_len + ci * plane_len..];
                            let sample_planes = &mut planes[t * window_len..][..window_len];
                            let plane = &plane[..plane_len];
                            if g.stride[1] == 2 && g.w.is_multiple_of(2) {
                                fill_planes_stride2(g, &window, &borders, plane, sample_planes);
                            } else {
                                fill_planes(g, &window, &borders, plane, sample_planes);
                            }
                        }
                        filled = Some(ci);
                    }
                    let (slot, shift) = phases.tap(kx);
                    let inside = phases.rows_inside(ky);
                    for run in runs.iter() {
                        let out = &mut dst[run.dst + i * NR..][..run.rows * run.len];
                        // Grid rows `first..last` of the run read inside the image, the others
                        // read the vertical padding.
                        let end = run.oy + run.rows;
                        let first = inside.start.clamp(run.oy, end);
                        let last = inside.end.clamp(first, end);
                        let (zeros_before, zeros_from) =
                            ((first - run.oy) * run.len, (last - run.oy) * run.len);
                        out[..zeros_before].fill(0.0);
                        out[zeros_from..].fill(0.0);
                        if first < last {
                            let iy = first * g.stride[0] + ky * g.dilation[0] - g.pad[0];
                            let start = run.planes + window.row(slot, iy) + shift + run.ox
                                - window.ox.start;
                            // An explicit count: `chunks_exact` would divide per run.
                            for r in 0..last - first {
                                let out_row = &mut out[zeros_before + r * run.len..][..run.len];
                                copy_short(out_row, &planes[start + r * pitch..][..run.len]);
                            }
                        }
                    }
                });
            });
        });
    }
}

/// Appends the runs of one sample's positions `block.positions`, whose planes start at
/// `planes`: each stays within one B sliver and covers whole grid rows or part of one.
fn column_runs(g: &ConvGeometry, block: Block<'_>, planes: usize, runs: &mut Vec<Run>) {
    let (out_w, end) = (g.out_w, block.positions.end);
    let mut position = block.positions.start;
    while position < end {
        let (oy, ox) = (position / out_w, position % out_w);
        let column = block.column + position - block.positions.start;
        let (sliver, lane) = (column / NR, column % NR);
        let dst = sliver * block.kc * NR + lane;
        let whole_rows =
            if ox == 0 { ((end - position) / out_w).min((NR - lane) / out_w) } else { 0 };
        let run = if whole_rows > 0 {
            Run { dst, planes, oy, ox, len: out_w, rows: whole_rows }
        } else {
            let len = (out_w - ox).min(NR - lane).min(end - position);
            Run { dst, planes, oy, ox, len, rows: 1 }
        };
        runs.push(run);
        position += run.rows * run.len;
    }
}

/// Fills the phase planes like [`fill_planes`], for a horizontal stride of 2 on an image of
/// even width. The window's image rows are split into even and odd columns in one vectorised
/// pass, because with `w` even the even elements of the flattened rows are the even columns.
/// Each plane row is then one contiguous copy of its inside entries.
fn fill_planes_stride2(
    g: &ConvGeometry,
    window: &Window,
    borders: &[[usize; 4]],
    plane: &[f32],
    planes: &mut [f32],
) {
    debug_assert!(g.stride[1] == 2 && g.w.is_multiple_of(2));
    let half = g.w / 2;
    let rows = window.iy.len();
    with_buffer(&PHASES, |phases| {
        // phases [2, rows, w / 2]: even columns, then odd columns.
        let phases = prefix(phases, 2 * rows * half);
        let (even, odd) = phases.split_at_mut(rows * half);
        let image_rows = &plane[window.iy.start * g.w..window.iy.end * g.w];
        deinterleave(image_rows, even, odd);
        for (slot, &[before, inside, _, first]) in borders.iter().enumerate() {
            if inside == 0 {
                continue;
            }
            let source = if first.is_multiple_of(2) { &*even } else { &*odd };
            for (r, iy) in window.iy.clone().enumerate() {
                let dst = &mut planes[window.row(slot, iy) + before..][..inside];
                copy_short(dst, &source[r * half + first / 2..][..inside]);
            }
        }
    });
}

/// Splits `src` (even length) into its even-indexed elements `even` and odd-indexed `odd`.
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let (pairs, _) = src.as_chunks::<32>();
    let (even_chunks, _) = even.as_chunks_mut::<16>();
    let (odd_chunks, _) = odd.as_chunks_mut::<16>();
    let done = pairs.len().min(even_chunks.len()).min(odd_chunks.len());
    for ((pair, e), o) in pairs.iter().zip(even_chunks).zip(odd_chunks) {
        *e = std::array::from_fn(|j| pair[2 * j]);
        *o = std::array::from_fn(|j| pair[2 * j + 1]);
    }
    for j in done * 16..src.len() / 2 {
        even[j] = src[2 * j];
        odd[j] = src[2 * j + 1];
    }
}
