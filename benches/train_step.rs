//! One full DCGAN training step (generator forward, discriminator step, generator step, both Adam
//! updates) at batch 64, in rayon pools of 1 and 2 threads, on three paths: `winograd` (the
//! default: the packed GEMM with Winograd products where measured faster), `packed` (the
//! packed GEMM with the direct lowering only) and `matrixmultiply`.
//!
//! `dcgan64` is the PyTorch example's 3x64x64 model (nz 100, ngf = ndf = 64); `dcgan32` the
//! 1x32x32 MNIST model of the same widths. `pytorch_dcgan_bench.py` times the same step in
//! PyTorch for comparison. A step takes around a second, so criterion runs few samples.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::kernels::{set_winograd, Winograd};
use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::rng::Rng;
use dcgan::train::Trainer;
use ndarray::Array4;

const BATCH: usize = 64;

fn train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for (name, config) in [("dcgan64", DcganConfig::dcgan64()), ("dcgan32", DcganConfig::dcgan32())]
    {
        // A fixed batch of values in [-1, 1), like images scaled for a Tanh generator.
        let mut rng = Rng::from_seed(1);
        let real =
            Array4::from_shape_simple_fn(config.image_shape(BATCH), || 2.0 * rng.uniform() - 1.0);
        // The default (the packed GEMM with Winograd products where measured faster), the packed
        // GEMM with the direct lowering only, and matrixmultiply's sgemm.
        let paths = [
            (GemmBackend::Packed, Winograd::Measured, "winograd"),
            (GemmBackend::Packed, Winograd::Off, "packed"),
            (GemmBackend::MatrixMultiply, Winograd::Off, "matrixmultiply"),
        ];
        for (backend, winograd, backend_name) in paths {
            set_gemm_backend(backend);
            set_winograd(winograd);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut trainer = Trainer::new(config, 0, GanLoss::default()).unwrap();
                let id = format!("{name}_b{BATCH}/{backend_name}/threads{threads}");
                group.bench_function(id, |b| {
                    b.iter(|| pool.install(|| trainer.step(real.clone()).unwrap()))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
