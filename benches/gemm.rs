//! GEMM throughput on DCGAN shapes: our packed `sgemm` against `matrixmultiply::sgemm`.
//!
//! Throughput is reported as elements per second with one element per flop, so criterion's
//! `Gelem/s` reads as GFLOP/s, counted as `2 * m * n * k / time`. All runs are single-threaded.
//! Compare them with the one-core peak that `cargo run --release --example fma_peak` prints.
//!
//! The shapes come from the 64x64 DCGAN at batch 64 (generator and discriminator width 64,
//! 4x4 kernels, 100-dimensional noise). A convolution's forward GEMM is
//! `Y[c_out, P] = W[c_out, c_in * 16] * cols[c_in * 16, P]`, with `P` output pixels per sample and
//! several samples folded into `P` when one sample's `P` is small. A transposed convolution's
//! forward GEMM is `cols[c_out * 16, P] = W^T * X` with `W` stored `[c_in, c_out * 16]`, so A is a
//! transposed (column-major) view. Grad-weight is `dW[c_out, K] += dY[c_out, P] * cols^T`, with
//! the batch folded into the reduction and B a transposed view.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dcgan::kernels::packed_gemm::{self, MatMut, MatRef};
use std::hint::black_box;
use std::time::Duration;

/// Whether an operand is used as stored or through a transposed view.
#[derive(Clone, Copy)]
enum Layout {
    RowMajor,
    Transposed,
}

/// One benchmark shape: `C[m, n] = A[m, k] * B[k, n]`, row-major C.
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a: Layout,
    b: Layout,
}

const SHAPES: &[Shape] = &[
    // D1: conv 3 -> 64, 64x64 -> 32x32, one sample (K = 48, P = 1024).
    Shape { name: "d1_fwd", m: 64, k: 48, n: 1024, a: Layout::RowMajor, b: Layout::RowMajor },
    // D2: conv 64 -> 128, 32x32 -> 16x16, one sample (P = 256).
    Shape { name: "d2_fwd", m: 128, k: 1024, n: 256, a: Layout::RowMajor, b: Layout::RowMajor },
    // D2 with 16 samples folded into P.
    Shape {
        name: "d2_fwd_x16",
        m: 128,
        k: 1024,
        n: 4096,
        a: Layout::RowMajor,
        b: Layout::RowMajor,
    },
    // D4: conv 256 -> 512, 8x8 -> 4x4 (P = 16), 64 samples folded.
    Shape {
        name: "d4_fwd_x64",
        m: 512,
        k: 4096,
        n: 1024,
        a: Layout::RowMajor,
        b: Layout::RowMajor,
    },
    // G2: conv-transpose 512 -> 256, 4x4 -> 8x8, as W^T * X (P = 16), 64 samples folded.
    Shape {
        name: "g2_fwd_x64",
        m: 4096,
        k: 512,
        n: 1024,
        a: Layout::Transposed,
        b: Layout::RowMajor,
    },
    // G4: conv-transpose 128 -> 64, 16x16 -> 32x32, as W^T * X (P = 256), 4 samples folded.
    Shape {
        name: "g4_fwd_x4",
        m: 1024,
        k: 128,
        n: 1024,
        a: Layout::Transposed,
        b: Layout::RowMajor,
    },
    // D2 grad-weight: dY[128, 256 * 64] * cols^T[256 * 64, 1024].
    Shape {
        name: "d2_grad_w",
        m: 128,
        k: 16384,
        n: 1024,
        a: Layout::RowMajor,
        b: Layout::Transposed,
    },
    // D4 grad-weight: dY[512, 16 * 64] * cols^T[16 * 64, 4096].
    Shape {
        name: "d4_grad_w",
        m: 512,
        k: 1024,
        n: 4096,
        a: Layout::RowMajor,
        b: Layout::Transposed,
    },
];

/// Returns `(row_stride, col_stride)` of a `rows x cols` operand stored in `layout`.
fn strides(layout: Layout, rows: usize, cols: usize) -> (usize, usize) {
    match layout {
        Layout::RowMajor => (cols, 1),
        // Stored as its `cols x rows` transpose, row-major.
        Layout::Transposed => (1, rows),
    }
}

/// Deterministic values in [-1, 1) without a random number generator.
fn values(len: usize, salt: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ salt) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn bench_gemm(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("gemm");
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));

    for shape in SHAPES {
        let (m, k, n) = (shape.m, shape.k, shape.n);
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut c = vec![0.0f32; m * n];
        let (rsa, csa) = strides(shape.a, m, k);
        let (rsb, csb) = strides(shape.b, k, n);
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));

        group.bench_function(BenchmarkId::new("ours", shape.name), |bencher| {
            bencher.iter(|| {
                let a = MatRef::new(&a, m, k, rsa, csa).unwrap();
                let b = MatRef::new(&b, k, n, rsb, csb).unwrap();
                let c = MatMut::row_major(&mut c, m, n).unwrap();
                packed_gemm::sgemm(1.0, a, b, 0.0, c).unwrap();
                black_box(());
            })
        });

        // The tile path, with each tile copied into C as a col2im scatter would add it.
        group.bench_function(BenchmarkId::new("ours_tiles", shape.name), |bencher| {
            bencher.iter(|| {
                let a = MatRef::new(&a, m, k, rsa, csa).unwrap();
                let b = MatRef::new(&b, k, n, rsb, csb).unwrap();
                packed_gemm::sgemm_tiles(1.0, a, &b, n, |tile| {
                    for i in 0..tile.rows {
                        let start = (tile.row + i) * n + tile.col;
                        c[start..start + tile.cols].copy_from_slice(tile.row_values(i));
                    }
                })
                .unwrap();
                black_box(());
            })
        });

        group.bench_function(BenchmarkId::new("matrixmultiply", shape.name), |bencher| {
            bencher.iter(|| {
                // SAFETY: the strides describe `m x k`, `k x n` and `m x n` matrices that lie
                // inside `a`, `b` and `c`, which do not overlap.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa as isize,
                        csa as isize,
                        b.as_ptr(),
                        rsb as isize,
                        csb as isize,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                black_box(());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
