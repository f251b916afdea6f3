//! Direct convolution of shallow images: the forward product when the reduction is short.
//!
//! When `k = c_in * k_h * k_w` is small (a discriminator's first layer reads 1 or 3 channels,
//! so `k` is 16 or 48), the lowered GEMM spends as long packing its columns and merging each
//! microtile into C as it spends multiplying. This path skips the column matrix. Each sample's
//! image is rewritten once into *column-phase rows*: for padded image row `r` and column phase
//! `φ < stride_w`, entry `q` contains pixel `(r - pad_h, q * stride_w + φ - pad_w)`, or zero in the
//! padding. Tap `(ky, kx)` of grid row `oy` then reads entries `kx / stride_w + ox` of row
//! `oy * stride_h + ky`, phase `kx % stride_w`: one contiguous run, loaded as vectors along the
//! grid row. A block of [`CHANNELS`] output channels keeps its accumulators in registers and
//! broadcasts one weight per channel and tap, so the grid is written once, in its own layout,
//! with the bias already added.
//!
//! Every output element is one sum over the taps in the order of the weight's rows, started from
//! the bias, whatever the partition of the work, so results do not depend on the thread count.

use std::cell::Cell;

use rayon::prelude::*;

use super::disjoint::DisjointSlice;
use super::fused_forward::{prefix, with_buffer};
use super::gemm::{gemm_backend, GemmBackend};
use super::geometry::ConvGeometry;
use super::lowering::part;
use super::packed_gemm::{LANES, V};

/// Maximum reduction length, `c_in * k_h * k_w`, that runs on this path.
pub const MAX_DEPTH: usize = 64;

/// Minimum number of output channels for this path: those of the narrowest layer measured, the
/// MNIST model's first discriminator layer.
pub const MIN_CHANNELS: usize = 16;

/// Output channels of one register block; the path takes only whole blocks.
pub const CHANNELS: usize = 8;

/// Narrowest grid row, in positions, that runs on this path: half a vector of the build, so 8
/// with AVX-512 and 4 otherwise.
pub const MIN_WIDTH: usize = LANES / 2;

/// Work items a call tries to offer rayon.
const MIN_ITEMS: usize = 8;

thread_local! {
    /// One sample's column-phase rows, reused across items on this thread.
    static ROWS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The weight in channel blocks, reused across calls on this thread.
    static BLOCKS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Returns whether the forward product of the lowering `g` (conv2d forward, conv_transpose2d
/// grad-input) runs on this path under the current backend.
///
/// `g` is the `lowering` field of a [`Conv2dGeometry`](super::Conv2dGeometry) or a
/// [`ConvTranspose2dGeometry`](super::ConvTranspose2dGeometry). For a transposed convolution its
/// image is the output and its grid the input, so the forward product is the grad-input. It
/// runs on the packed GEMM backend, without dilation, for a reduction `c_in * k_h * k_w` of at
/// most [`MAX_DEPTH`], at least [`MIN_CHANNELS`] grid channels in whole blocks of [`CHANNELS`],
/// and grid rows of at least [`MIN_WIDTH`] positions.
///
/// The choice depends on the shape alone, so results stay bit-identical across thread counts.
/// In `conv_gflops` on one AMD EPYC Zen 4 core at batch 64, the forward of the DCGAN first
/// discriminator layers ran 1.07-1.18x (dcgan64) and 1.32-1.36x (dcgan32) faster this way than
/// on the lowered GEMM.
pub fn applies(g: &ConvGeometry) -> bool {
    gemm_backend() == GemmBackend::Packed
        && g.dilation == [1, 1]
        && g.k() <= MAX_DEPTH
        && g.c_out >= MIN_CHANNELS
        && g.c_out.is_multiple_of(CHANNELS)
        && g.out_w >= MIN_WIDTH
}

/// The layout of one sample's column-phase rows.
#[derive(Clone, Copy, Debug)]
struct Rows {
    /// Padded image rows the grid reads: `(out_h - 1) * stride_h + k_h`.
    height: usize,
    /// Column phases: `stride_w`.
    phases: usize,
    /// Entries of one row: whole vectors for the grid row, plus the widest tap offset.
    len: usize,
    /// Vectors along one grid row.
    vectors: usize,
}

impl Rows {
    fn new(g: &ConvGeometry) -> Self {
        let vectors = g.out_w.div_ceil(LANES);
        Rows {
            height: (g.out_h - 1) * g.stride[0] + g.k_h,
            phases: g.stride[1],
            len: vectors * LANES + (g.k_w - 1) / g.stride[1],
            vectors,
        }
    }

    /// Floats of one sample's rows.
    fn sample_len(&self, c_in: usize) -> usize {
        c_in * self.height * self.phases * self.len
    }

    /// Start of row `r`, phase `phase` of channel `c`.
    fn start(&self, c: usize, r: usize, phase: usize) -> usize {
        ((c * self.height + r) * self.phases + phase) * self.len
    }
}

/// `grid = W * cols + bias`, overwriting `grid [n, c_out, out_h, out_w]` from `image [n, c_in,
/// h, w]`, `weight [c_out, k]` and an optional `bias [c_out]`, for a `g` that [`applies`].
pub(crate) fn image_to_grid(
    g: &ConvGeometry,
    image: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    grid: &mut [f32],
) {
    debug_assert!(applies(g), "no shallow path for {g:?}");
    debug_assert_eq!(image.len(), g.image_len());
    debug_assert_eq!(weight.len(), g.weight_len());
    debug_assert_eq!(grid.len(), g.grid_len());
    let rows = Rows::new(g);
    let k = g.k();
    let blocks = g.c_out.div_ceil(CHANNELS);
    // Offset of each tap's run from the start of a sample's rows, for grid row 0.
    let mut taps = [0; MAX_DEPTH];
    for (t, tap) in taps[..k].iter_mut().enumerate() {
        let (c, ky, kx) = (t / (g.k_h * g.k_w), t / g.k_w % g.k_h, t % g.k_w);
        *tap = rows.start(c, ky, kx % g.stride[1]) + kx / g.stride[1];
    }
    let taps = &taps[..k];
    let row_step = g.stride[0] * rows.phases * rows.len;

    with_buffer(&BLOCKS, |buffer| {
        // Block `b` contains `[k, CHANNELS]`: tap `t` of channel `b * CHANNELS + j` at `t *
        // CHANNELS + j`.
        let packed = prefix(buffer, blocks * k * CHANNELS);
        for (b, block) in packed.chunks_exact_mut(k * CHANNELS).enumerate() {
            for (t, taps) in block.chunks_exact_mut(CHANNELS).enumerate() {
                for (j, value) in taps.iter_mut().enumerate() {
                    *value = weight[(b * CHANNELS + j) * k + t];
                }
            }
        }
        let packed = &*packed;

        let parts = MIN_ITEMS.div_ceil(g.n).min(g.out_h);
        let out = DisjointSlice::new(grid);
        let plane = g.out_h * g.out_w;
        (0..g.n * parts).into_par_iter().for_each(|item| {
            let sample = item / parts;
            let grid_rows = part(g.out_h, parts, item % parts);
            let sample_image = &image[sample * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
            with_buffer(&ROWS, |buffer| {
                let phase_rows = prefix(buffer, rows.sample_len(g.c_in));
                fill_rows(g, &rows, sample_image, phase_rows);
                // One channel block after another, so that each channel's rows are written in
                // order instead of eight planes apart at every step.
                for b in 0..blocks {
                    let block = Block {
                        rows: phase_rows,
                        taps,
                        row_step,
                        weights: &packed[b * k * CHANNELS..][..k * CHANNELS],
                        bias: std::array::from_fn(|j| {
                            bias.map_or(0.0, |bias| bias[b * CHANNELS + j])
                        }),
                        width: g.out_w,
                        first_row: grid_rows.start,
                    };
                    let mut dst: [&mut [f32]; CHANNELS] = std::array::from_fn(|j| {
                        let at = (sample * g.c_out + b * CHANNELS + j) * plane;
                        let span = at + grid_rows.start * g.out_w..at + grid_rows.end * g.out_w;
                        // SAFETY: this item alone writes grid rows `grid_rows` of `sample`, for
                        // every channel.
                        unsafe { out.range_mut(span) }
                    });
                    if rows.vectors == 1 {
                        // One vector per grid row: two rows at a time share each weight.
                        let mut oy = grid_rows.start;
                        while oy + 2 <= grid_rows.end {
                            block.write::<2, 1>(oy, 0, &mut dst);
                            oy += 2;
                        }
                        if oy < grid_rows.end {
                            block.write::<1, 1>(oy, 0, &mut dst);
                        }
                        continue;
                    }
                    for oy in grid_rows.clone() {
                        let mut v = 0;
                        while v + 2 <= rows.vectors {
                            block.write::<1, 2>(oy, v, &mut dst);
                            v += 2;
                        }
                        if v < rows.vectors {
                            block.write::<1, 1>(oy, v, &mut dst);
                        }
                    }
                }
            });
        });
    });
}

/// Writes one sample's column-phase rows (see the module doc) into `out`.
fn fill_rows(g: &ConvGeometry, rows: &Rows, image: &[f32], out: &mut [f32]) {
    let stride = g.stride[1];
    for c in 0..g.c_in {
        for r in 0..rows.height {
            let y = (r as isize - g.pad[0] as isize) as usize;
            for phase in 0..rows.phases {
                let row = &mut out[rows.start(c, r, phase)..][..rows.len];
                if y >= g.h {
                    // Above or below the image (a negative row wraps past `h`).
                    row.fill(0.0);
                    continue;
                }
                // Entry `q` reads column `q * stride + phase - pad_w`: entries `first..last`
                // fall inside the image.
                let offset = phase as isize - g.pad[1] as isize;
                let first = ((-offset).max(0) as usize).div_ceil(stride);
                let last = ((g.w as isize - offset).max(0) as usize).div_ceil(stride).max(first);
                let (first, last) = (first.min(rows.len), last.min(rows.len));
                let pixels = &image[(c * g.h + y) * g.w..][..g.w];
                row[..first].fill(0.0);
                let start = (first as isize * stride as isize + offset) as usize;
                let entries = &mut row[first..last];
                match stride {
                    1 => entries.copy_from_slice(&pixels[start..][..entries.len()]),
                    // A constant stride lets the compiler load whole vectors and shuffle.
                    2 => every_nth::<2>(&pixels[start..], entries),
                    _ => every_nth_dynamic(stride, &pixels[start..], entries),
                }
                row[last..].fill(0.0);
            }
        }
    }
}

/// Writes `src[N * i]` into `dst[i]` for every `i`.
#[inline(always)]
fn every_nth<const N: usize>(src: &[f32], dst: &mut [f32]) {
    if dst.is_empty() {
        return;
    }
    let src = &src[..N * (dst.len() - 1) + 1];
    for (i, value) in dst.iter_mut().enumerate() {
        *value = src[N * i];
    }
}

/// Writes `src[stride * i]` into `dst[i]` for every `i`.
fn every_nth_dynamic(stride: usize, src: &[f32], dst: &mut [f32]) {
    for (value, &pixel) in dst.iter_mut().zip(src.iter().step_by(stride)) {
        *value = pixel;
    }
}

/// The inputs of one channel block.
struct Block<'a> {
    /// The sample's column-phase rows.
    rows: &'a [f32],
    /// Offset of each tap's run for grid row 0.
    taps: &'a [usize],
    /// Distance between the runs of consecutive grid rows: `stride_h` padded rows.
    row_step: usize,
    /// `[k, CHANNELS]` weights of the block.
    weights: &'a [f32],
    /// Bias of each channel of the block.
    bias: [f32; CHANNELS],
    /// Grid row length, `out_w`.
    width: usize,
    /// Grid row at the start of each destination slice.
    first_row: usize,
}

impl Block<'_> {
    /// Computes vectors `v..v + W` of grid rows `oy..oy + R` for each channel of the block: the
    /// bias, then one fused multiply-add per tap in order. Writes them into the channels'
    /// destination rows.
    #[inline(always)]
    fn write<const R: usize, const W: usize>(
        &self,
        oy: usize,
        v: usize,
        dst: &mut [&mut [f32]; CHANNELS],
    ) {
        let mut acc = [[[V::ZERO; W]; R]; CHANNELS];
        for (acc_channel, &bias) in acc.iter_mut().zip(&self.bias) {
            *acc_channel = [[V::splat(bias); W]; R];
        }
        let (columns, _) = self.weights.as_chunks::<CHANNELS>();
        let first = oy * self.row_step + v * LANES;
        for (&tap, column) in self.taps.iter().zip(columns) {
            let x: [[V; W]; R] = std::array::from_fn(|r| {
                let run = &self.rows[first + r * self.row_step + tap..][..W * LANES];
                let (lanes, _) = run.as_chunks::<LANES>();
                std::array::from_fn(|i| V::new(lanes[i]))
            });
            for (acc_channel, &w) in acc.iter_mut().zip(column) {
                let w = V::splat(w);
                for (acc_row, x_row) in acc_channel.iter_mut().zip(&x) {
                    for (a, &x) in acc_row.iter_mut().zip(x_row) {
                        *a = w.mul_add(x, *a);
                    }
                }
            }
        }
        for (acc_channel, channel) in acc.iter().zip(dst) {
            for (r, acc_row) in acc_channel.iter().enumerate() {
                let row = &mut channel[(oy + r - self.first_row) * self.width..][..self.width];
                for (i, &vector) in acc_row.iter().enumerate() {
                    store(vector, (v + i) * LANES, row);
                }
            }
        }
    }
}

/// Writes the lanes of `vector` that fall inside grid row `dst`, from column `first`.
#[inline(always)]
fn store(vector: V, first: usize, dst: &mut [f32]) {
    match dst.get_mut(first..first + LANES) {
        Some(whole) => {
            let whole: &mut [f32; LANES] = whole.try_into().expect("LANES values");
            *whole = bytemuck::cast(vector);
        }
        None => {
            let count = dst.len() - first;
            dst[first..].copy_from_slice(&vector.to_array()[..count]);
        }
    }
}
