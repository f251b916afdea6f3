//! Every convolution and transposed-convolution layer of the two DCGAN configurations at batch
//! 64: forward, grad-input and grad-weight separately, on rayon pools of 1 and 2 threads, on
//! three paths: `winograd` (the packed GEMM with Winograd products wherever the layer's shape
//! fits), `packed` (the packed GEMM with the direct lowering) and `matrixmultiply`. Beside each pass runs matrixmultiply's sgemm on that pass's whole-batch
//! GEMM shape, the roofline of the im2col + GEMM design.
//!
//! Throughput is reported as elements per second where one element is one floating-point
//! operation of the pass's GEMM, `2 * m * k * n` per call, so criterion's `Gelem/s` reads as
//! GFLOP/s (an effective rate on the Winograd path, which does fewer). Benchmarks are named `dcgan64/G2_convT_512x256_4to8/fwd/packed/threads=1`; filter
//! them as usual, e.g. `cargo bench --bench kernels -- dcgan64/D2` or `-- packed/threads=1`.
//!
//! `examples/conv_gflops.rs` prints the same comparison as one table.

#[path = "dcgan_layers.rs"]
mod dcgan_layers;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::kernels::{set_winograd, Winograd};
use dcgan_layers::{dcgan_layers, pool, GemmWorkload, Pass, Workload};

const BATCH: usize = 64;

/// The paths each pass runs on, with the name its benchmark ids use: the packed GEMM with
/// Winograd products wherever the layer's shape fits, the packed GEMM with the direct lowering,
/// and matrixmultiply's sgemm.
const BACKENDS: [(GemmBackend, Winograd, &str); 3] = [
    (GemmBackend::Packed, Winograd::Always, "winograd"),
    (GemmBackend::Packed, Winograd::Off, "packed"),
    (GemmBackend::MatrixMultiply, Winograd::Off, "matrixmultiply"),
];

fn kernels(c: &mut Criterion) {
    let pools = [(1, pool(1)), (2, pool(2))];
    for layer in dcgan_layers() {
        let mut group = c.benchmark_group(layer.name());
        // Flat sampling with few samples keeps the whole file under ten minutes: the largest
        // passes take tens of milliseconds each.
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        let mut work = Workload::new(layer, BATCH);
        for pass in Pass::ALL {
            group.throughput(Throughput::Elements(layer.flops(pass, BATCH)));
            for (backend, winograd, backend_name) in BACKENDS {
                set_gemm_backend(backend);
                set_winograd(winograd);
                for (threads, pool) in &pools {
                    let id = format!("{}/{backend_name}/threads={threads}", pass.name());
                    group.bench_function(id, |b| b.iter(|| pool.install(|| work.run(pass))));
                }
            }
            // The roofline is matrixmultiply's sgemm on the pass's whole-batch GEMM shape.
            set_gemm_backend(GemmBackend::MatrixMultiply);
            let mut sgemm = GemmWorkload::new(layer.gemm_shape(pass, BATCH));
            group.bench_function(format!("{}/sgemm", pass.name()), |b| b.iter(|| sgemm.run()));
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
