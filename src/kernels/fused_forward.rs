//! `image_to_grid` (`Y = W * cols + bias`) on the packed GEMM, with im2col fused into packing.
//!
//! The weight `W [c_out, k]` is packed once per call into the sliver layout of
//! [`PackedA`] and shared read-only by every work item, so no product packs it again. The
//! column matrix is never written as a matrix: [`ImageColumns`] implements
//! [`PackB`](super::packed_gemm::PackB) and writes each `kc x nc` block the GEMM requests
//! straight from the image into B slivers. For each channel a block touches, the image rows it
//! needs are split once into phase planes (see `phases.rs`). Every (tap, grid row) run of the
//! block is then a contiguous copy from a plane, or a zero fill where the tap reads the vertical
//! padding. DCGAN's 8x8-image, 4x4-grid layers take a shorter path through 2D phase planes.
//! When the last k-block has room, the bias is one more column of the packed weight against a
//! row of ones in B, instead of a pass over the output.
//!
//! The work items are those of the `MatrixMultiply` path: one sample per GEMM (split by blocks
//! of output channels when the batch is small), or a folded group of samples side by side for
//! small grids. Two layouts skip the packer: when the kernel covers the whole image (1x1 grid)
//! the column matrix of a group is a strided view of the image, and with a pointwise kernel a
//! sample's column matrix is the sample itself. Every partition comes from the geometry, and
//! each output element is one GEMM sum over `k` in the blocks of [`KC`], so results do not
//! depend on the number of threads.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::elementwise::{add_channel_bias, copy};
use super::geometry::{ConvGeometry, MAX_TENSOR_ELEMENTS};
use super::packed_gemm::{
    sgemm_prepacked, with_aligned_buffer, AlignedBuffer, MatMut, MatRef, PackB, PackedA, KC, MR, NC,
};
use super::phases::PhasePlan;

mod columns;

use columns::ImageColumns;

/// The layout of the column matrix of one call, decided from the geometry alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// The kernel covers the whole unpadded image and the grid is 1x1: column `b` of the
    /// column matrix is sample `b`, flattened.
    Whole,
    /// A 1x1 kernel with stride 1, no padding and a grid as large as the image: a sample's
    /// column matrix is the sample itself, `[c_in, h * w]`.
    Pointwise,
    /// Any other geometry: the column matrix is packed from phase planes.
    Patches,
}

/// The work partition of one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Layout of the column matrix.
    pub layout: Layout,
    /// Samples per GEMM; above 1 only for small grids.
    pub group: usize,
    /// Work items the call tries to offer: a batch of fewer samples is also split by blocks of
    /// output channels.
    pub min_items: usize,
}

/// Minimum samples per GEMM in the 1x1-grid layout, two thirds of the `NR = 48` columns of the
/// microtile of an AVX-512 build.
const WHOLE_MIN_COLUMNS: usize = 32;

thread_local! {
    /// The weight with its bias as an extra column, reused across calls on this thread.
    static WEIGHT_WITH_BIAS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The packed weight of the last call made on this thread.
    static PACKED_WEIGHT: Cell<Option<PackedA>> = const { Cell::new(None) };
    /// Folded output block `[c_out, samples * positions]`, reused across calls on this thread.
    static FOLDED: AlignedBuffer = const { Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's buffer `slot`. The buffer is taken out while `f` runs, so a nested
/// call gets an empty one instead of aliasing it.
pub(super) fn with_buffer<T, R>(
    slot: &'static std::thread::LocalKey<Cell<Vec<T>>>,
    f: impl FnOnce(&mut Vec<T>) -> R,
) -> R {
    let mut buffer = slot.take();
    let result = f(&mut buffer);
    slot.set(buffer);
    result
}

/// Returns the first `len` elements of `buffer`, growing it with zeros if needed.
pub(super) fn prefix(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// `grid = W * cols + bias`, overwriting `grid [n, c_out, positions]` from `image [n, c_in, h,
/// w]`, `weight [c_out, k]` and an optional `bias [c_out]`, on the packed GEMM.
pub(crate) fn image_to_grid(
    g: &ConvGeometry,
    plan: Plan,
    image: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    grid: &mut [f32],
) {
    debug_assert_eq!(image.len(), g.image_len());
    debug_assert_eq!(weight.len(), g.weight_len());
    debug_assert_eq!(grid.len(), g.grid_len());
    let phases = PhasePlan::new(g);
    // With patches, the bias rides along as column k of the weight against a row of ones that
    // the packer appends to B, which saves a pass over the output. Only when the last k-block
    // has room for that row: a k-block of its own would cost a pass over the output as well.
    let fuse_bias = plan.layout == Layout::Patches && bias.is_some() && !g.k().is_multiple_of(KC);
    let (bias, fused_bias) = if fuse_bias { (None, bias) } else { (bias, None) };
    with_packed_weight(g, weight, fused_bias, |packed| {
        let context = Context { g, plan, phases: &phases, image, weight: packed, fuse_bias };
        if plan.layout == Layout::Whole {
            // Each sample is one column of B, so a group narrower than the `NR`-column
            // microtile leaves most of its lanes empty: groups get at least
            // `WHOLE_MIN_COLUMNS` samples, even if that leaves fewer than `min_items` of them.
            // NOTE: this layout runs at about 0.8 of one sgemm of the same shape (dcgan64 G1
            // grad-input), because packing B transposes the batch from one strided stream per
            // sample, which costs about a fifth of the call.
            let group = g.n.div_ceil(plan.min_items).max(WHOLE_MIN_COLUMNS).min(g.n);
            context.folded(group.max(1), bias, grid);
        } else if plan.group == 1 {
            context.per_sample(bias, grid);
        } else {
            context.folded(plan.group, bias, grid);
        }
    });
}

/// Packs the weight `[c_out, k]`, with `bias` appended as column `k` when given, into this
/// thread's packed weight and runs `f` on it. Reusing the storage saves the page faults of a
/// fresh allocation of the weight's size (up to 8 MiB for DCGAN's layers) on every call. A
/// nested call on the same thread, from a rayon task stolen while `f` waits, packs into a
/// fresh one.
fn with_packed_weight<R>(
    g: &ConvGeometry,
    weight: &[f32],
    bias: Option<&[f32]>,
    f: impl FnOnce(&PackedA) -> R,
) -> R {
    let (c_out, k) = (g.c_out, g.k());
    let mut packed = PACKED_WEIGHT
        .take()
        .unwrap_or_else(|| PackedA::new(MatRef::from_checked(&[], [0, 0], [0, 1])));
    match bias {
        None => packed.repack_parallel(MatRef::from_checked(weight, [c_out, k], [k, 1])),
        Some(bias) => with_buffer(&WEIGHT_WITH_BIAS, |extended| {
            // [c_out, k + 1]: each row of the weight, then its bias.
            let extended = prefix(extended, c_out * (k + 1));
            for ((row, w), &b) in
                extended.chunks_exact_mut(k + 1).zip(weight.chunks_exact(k)).zip(bias)
            {
                row[..k].copy_from_slice(w);
                row[k] = b;
            }
            packed.repack_parallel(MatRef::from_checked(extended, [c_out, k + 1], [k + 1, 1]));
        }),
    }
    let result = f(&packed);
    PACKED_WEIGHT.set(Some(packed));
    result
}

/// The operands shared by every work item of one call.
struct Context<'a> {
    g: &'a ConvGeometry,
    plan: Plan,
    phases: &'a PhasePlan,
    image: &'a [f32],
    weight: &'a PackedA,
    /// Whether `weight` has the bias as its last column, to meet a row of ones in B.
    fuse_bias: bool,
}

impl Context<'_> {
    /// Elements of one sample of the image.
    fn sample_len(&self) -> usize {
        self.g.c_in * self.g.h * self.g.w
    }

    /// `c = W[rows, :] * cols[:, columns]` for the column matrix of `samples` side by side.
    fn product(
        &self,
        rows: Range<usize>,
        samples: Range<usize>,
        columns: Range<usize>,
        c: MatMut<'_>,
    ) {
        let (g, sample_len) = (self.g, self.sample_len());
        let images = &self.image[samples.start * sample_len..samples.end * sample_len];
        let result = match self.plan.layout {
            Layout::Whole => {
                // cols [k, samples]: column s is sample s.
                debug_assert_eq!(
                    columns,
                    0..samples.len(),
                    "the 1x1-grid layout takes whole groups"
                );
                let cols = MatRef::from_checked(images, [g.k(), samples.len()], [1, sample_len]);
                sgemm_prepacked(1.0, self.weight, rows, &cols, 0.0, c)
            }
            Layout::Pointwise if samples.len() == 1 => {
                let plane = g.h * g.w;
                let cols = MatRef::from_checked(
                    &images[columns.start..],
                    [g.c_in, columns.len()],
                    [plane, 1],
                );
                sgemm_prepacked(1.0, self.weight, rows, &cols, 0.0, c)
            }
            _ => {
                let cols =
                    ImageColumns { g, phases: self.phases, images, ones_row: self.fuse_bias };
                if columns.start == 0 {
                    sgemm_prepacked(1.0, self.weight, rows, &cols, 0.0, c)
                } else {
                    let shifted = |k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]| {
                        cols.pack_b(k0, kc, columns.start + n0, nc, dst)
                    };
                    sgemm_prepacked(1.0, self.weight, rows, &shifted, 0.0, c)
                }
            }
        };
        // The views and row ranges above are built from a checked geometry.
        result.expect("image_to_grid: operands of the packed product");
    }

    /// Runs one GEMM per sample, writing `grid` in place. A batch smaller than `min_items` is
    /// also split into blocks of output channels, each a whole number of `MR`-row slivers.
    fn per_sample(&self, bias: Option<&[f32]>, grid: &mut [f32]) {
        let (g, p) = (self.g, self.g.positions());
        let min_items = self.plan.min_items;
        let blocks =
            if g.n >= min_items { 1 } else { min_items.div_ceil(g.n).min(g.c_out.div_ceil(16)) };
        let block_rows = g.c_out.div_ceil(blocks.max(1)).next_multiple_of(MR);
        // Positions per GEMM call: all of them, unless the virtual column matrix B (`k` rows,
        // plus the ones row of a fused bias) would exceed the element limit of `packed_gemm`.
        // Chunks are whole column blocks, so every B block still starts on a sliver boundary.
        let depth = g.k() + usize::from(self.fuse_bias);
        let chunk = if depth.saturating_mul(p) <= MAX_TENSOR_ELEMENTS {
            p
        } else {
            (MAX_TENSOR_ELEMENTS / depth / NC).max(1) * NC
        };

        grid.par_chunks_mut(g.c_out * p).enumerate().for_each(|(b, y)| {
            y.par_chunks_mut(block_rows * p).enumerate().for_each(|(block, y)| {
                // y [rows, positions], in column chunks that keep B within the GEMM's limit.
                let rows = block * block_rows..block * block_rows + y.len() / p;
                for start in (0..p).step_by(chunk) {
                    let len = chunk.min(p - start);
                    let c = MatMut::from_checked(&mut y[start..], [rows.len(), len], [p, 1]);
                    self.product(rows.clone(), b..b + 1, start..start + len, c);
                }
                if let Some(bias) = bias {
                    add_channel_bias(y, &bias[rows], p);
                }
            });
        });
    }

    /// Runs one GEMM per group of `group` samples. It writes into `grid` directly when each
    /// sample's grid is a single position, and otherwise into a folded block that is then copied
    /// to the samples' rows.
    fn folded(&self, group: usize, bias: Option<&[f32]>, grid: &mut [f32]) {
        let (g, p) = (self.g, self.g.positions());
        grid.par_chunks_mut(g.c_out * group * p).enumerate().for_each(|(i, y)| {
            let samples = i * group..(i * group + group).min(g.n);
            let columns = samples.len() * p;
            if p == 1 {
                // y [samples, c_out] is the block [c_out, samples], transposed.
                let c = MatMut::from_checked(y, [g.c_out, columns], [1, g.c_out]);
                self.product(0..g.c_out, samples, 0..columns, c);
            } else {
                // block [c_out, samples * positions]
                with_aligned_buffer(&FOLDED, g.c_out * columns, |block| {
                    let c = MatMut::from_checked(block, [g.c_out, columns], [columns, 1]);
                    self.product(0..g.c_out, samples.clone(), 0..columns, c);
                    for s in 0..samples.len() {
                        for co in 0..g.c_out {
                            let dst = &mut y[(s * g.c_out + co) * p..][..p];
                            copy(dst, &block[co * columns + s * p..][..p]);
                        }
                    }
                });
            }
            if let Some(bias) = bias {
                add_channel_bias(y, bias, p);
            }
        });
    }
}
