//! GEMM throughput on DCGAN shapes: our packed `sgemm` and `sgemm_tiles` against
//! `matrixmultiply::sgemm`, all single-threaded.
//!
//! Throughput is reported as elements per second with one element per flop, so criterion's
//! `Gelem/s` reads as GFLOP/s, counted as `2 * m * n * k / time`. Compare it with the one-core peak
//! that `cargo run --release --example fma_peak` prints. The shapes and where they come from are
//! listed in `support/gemm_shapes.rs`. On a shared machine, `examples/gemm_table.rs` reports the
//! best of many short trials instead of criterion's mean.

#[path = "support/gemm_shapes.rs"]
mod gemm_shapes;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gemm_shapes::{Operands, SHAPES};
use std::time::Duration;

fn bench_gemm(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("gemm");
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));

    for shape in SHAPES {
        let mut operands = Operands::new(shape);
        group.throughput(Throughput::Elements(operands.flops() as u64));
        group.bench_function(BenchmarkId::new("ours", shape.name), |bencher| {
            bencher.iter(|| operands.ours())
        });
        group.bench_function(BenchmarkId::new("ours_tiles", shape.name), |bencher| {
            bencher.iter(|| operands.ours_tiles())
        });
        group.bench_function(BenchmarkId::new("matrixmultiply", shape.name), |bencher| {
            bencher.iter(|| operands.matrixmultiply())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
