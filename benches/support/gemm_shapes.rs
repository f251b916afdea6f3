//! GEMM shapes of the 64x64 DCGAN at batch 64, shared by `benches/gemm.rs` and
//! `examples/gemm_table.rs`.
//!
//! Generator and discriminator have width 64, 4x4 kernels and 100-dimensional noise. A
//! convolution's forward GEMM is `Y[c_out, P] = W[c_out, c_in * 16] * cols[c_in * 16, P]`, with `P`
//! output pixels per sample and several samples folded into `P` when one sample's `P` is small. A
//! transposed convolution's forward GEMM is `cols[c_out * 16, P] = W^T * X` with `W` stored
//! `[c_in, c_out * 16]`, so A is a transposed (column-major) view. Grad-weight is
//! `dW[c_out, K] += dY[c_out, P] * cols^T`, with the batch folded into the reduction and B a
//! transposed view.

use dcgan::kernels::packed_gemm::{self, MatMut, MatRef};

/// Whether an operand is used as stored or through a transposed view.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    RowMajor,
    Transposed,
}

/// One shape: `C[m, n] = A[m, k] * B[k, n]`, with a row-major C.
#[derive(Debug)]
pub struct Shape {
    pub name: &'static str,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: Layout,
    pub b: Layout,
}

use Layout::{RowMajor, Transposed};

pub const SHAPES: &[Shape] = &[
    // D1: conv 3 -> 64, 64x64 -> 32x32, one sample (K = 48, P = 1024).
    Shape { name: "d1_fwd", m: 64, k: 48, n: 1024, a: RowMajor, b: RowMajor },
    // D2: conv 64 -> 128, 32x32 -> 16x16, one sample (P = 256).
    Shape { name: "d2_fwd", m: 128, k: 1024, n: 256, a: RowMajor, b: RowMajor },
    // D2 with 16 samples folded into P.
    Shape { name: "d2_fwd_x16", m: 128, k: 1024, n: 4096, a: RowMajor, b: RowMajor },
    // D4: conv 256 -> 512, 8x8 -> 4x4 (P = 16), 64 samples folded.
    Shape { name: "d4_fwd_x64", m: 512, k: 4096, n: 1024, a: RowMajor, b: RowMajor },
    // G2: conv-transpose 512 -> 256, 4x4 -> 8x8, as W^T * X (P = 16), 64 samples folded.
    Shape { name: "g2_fwd_x64", m: 4096, k: 512, n: 1024, a: Transposed, b: RowMajor },
    // G4: conv-transpose 128 -> 64, 16x16 -> 32x32, as W^T * X (P = 256), 4 samples folded.
    Shape { name: "g4_fwd_x4", m: 1024, k: 128, n: 1024, a: Transposed, b: RowMajor },
    // D2 grad-weight: dY[128, 256 * 64] * cols^T[256 * 64, 1024].
    Shape { name: "d2_grad_w", m: 128, k: 16384, n: 1024, a: RowMajor, b: Transposed },
    // D4 grad-weight: dY[512, 16 * 64] * cols^T[16 * 64, 4096].
    Shape { name: "d4_grad_w", m: 512, k: 1024, n: 4096, a: RowMajor, b: Transposed },
];

/// Returns `(row_stride, col_stride)` of a `rows x cols` operand stored in `layout`.
pub fn strides(layout: Layout, rows: usize, cols: usize) -> (usize, usize) {
    match layout {
        Layout::RowMajor => (cols, 1),
        // Stored as its `cols x rows` transpose, row-major.
        Layout::Transposed => (1, rows),
    }
}

/// Returns deterministic values in [-1, 1) without a random number generator.
pub fn values(len: usize, salt: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ salt) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// The operands of one shape, and the three ways to multiply them.
pub struct Operands<'s> {
    shape: &'s Shape,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl<'s> Operands<'s> {
    pub fn new(shape: &'s Shape) -> Self {
        let (m, k, n) = (shape.m, shape.k, shape.n);
        Operands { shape, a: values(m * k, 1), b: values(k * n, 2), c: vec![0.0; m * n] }
    }

    /// Flops of one product, `2 * m * n * k`.
    pub fn flops(&self) -> f64 {
        2.0 * (self.shape.m * self.shape.n * self.shape.k) as f64
    }

    /// Returns the views of A and B, borrowing only those two fields.
    fn views<'d>(shape: &Shape, a: &'d [f32], b: &'d [f32]) -> (MatRef<'d>, MatRef<'d>) {
        let Shape { m, k, n, a: a_layout, b: b_layout, .. } = *shape;
        let (rsa, csa) = strides(a_layout, m, k);
        let (rsb, csb) = strides(b_layout, k, n);
        let a = MatRef::new(a, m, k, rsa, csa).expect("A fits its slice");
        let b = MatRef::new(b, k, n, rsb, csb).expect("B fits its slice");
        (a, b)
    }

    /// `C = A * B` with `packed_gemm::sgemm`.
    pub fn ours(&mut self) {
        let (m, n) = (self.shape.m, self.shape.n);
        let (a, b) = Self::views(self.shape, &self.a, &self.b);
        let c = MatMut::row_major(&mut self.c, m, n).expect("C fits its slice");
        packed_gemm::sgemm(1.0, a, b, 0.0, c).expect("dimensions match");
    }

    /// `C = A * B` through `packed_gemm::sgemm_tiles`, each tile copied into C as a col2im
    /// scatter would add it.
    pub fn ours_tiles(&mut self) {
        let n = self.shape.n;
        let (a, b) = Self::views(self.shape, &self.a, &self.b);
        let c = &mut self.c;
        packed_gemm::sgemm_tiles(1.0, a, &b, n, |tile| {
            for i in 0..tile.rows {
                let start = (tile.row + i) * n + tile.col;
                c[start..start + tile.cols].copy_from_slice(tile.row_values(i));
            }
        })
        .expect("dimensions match");
    }

    /// `C = A * B` with `matrixmultiply::sgemm`.
    pub fn matrixmultiply(&mut self) {
        let Shape { m, k, n, a, b, .. } = *self.shape;
        let (rsa, csa) = strides(a, m, k);
        let (rsb, csb) = strides(b, k, n);
        // SAFETY: the strides describe `m x k`, `k x n` and `m x n` matrices that lie inside
        // `self.a`, `self.b` and `self.c`, which do not overlap.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                self.a.as_ptr(),
                rsa as isize,
                csa as isize,
                self.b.as_ptr(),
                rsb as isize,
                csb as isize,
                0.0,
                self.c.as_mut_ptr(),
                n as isize,
                1,
            )
        };
    }
}
