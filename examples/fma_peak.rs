//! Measures the peak f32 FMA throughput of one core, the roofline for the GEMM benchmarks.
//!
//! The loop keeps `ACCUMULATORS` independent accumulators in registers and updates each with one
//! fused multiply-add per iteration, so nothing but the FMA pipes limits it. With a latency of
//! `L` cycles and `P` pipes, `L * P` independent chains keep every pipe busy. It runs once with
//! `wide`'s `f32x16` (one AVX-512 register per accumulator when the build enables AVX-512) and
//! once with `f32x8` (AVX2), because some cores execute a 512-bit FMA as two 256-bit halves and
//! then reach the same peak with either width.
//!
//! It then times the crate's packed GEMM on a shape whose operands stay in cache
//! (`CACHED_SHAPE`): every 8-row sliver of A (480 KiB in all, in L2) meets the same 48-column
//! sliver of B (48 KiB). That rate shows how close the microkernel, with its loads and the
//! merging of its tiles into C, comes to the peak when memory does not hold it back.
//!
//! Flops are counted as 2 per lane per FMA. The program pins nothing and takes the best of several
//! trials, so another process on the same core lowers the numbers; rerun on an idle machine.
//!
//! ```sh
//! cargo run --release --example fma_peak
//! ```

#[path = "../benches/dcgan_layers.rs"]
mod dcgan_layers;

use std::hint::black_box;
use std::time::Instant;
use wide::{f32x16, f32x8};

/// Independent FMA chains per loop iteration, twice the 8 that a 4-cycle latency on 2 pipes needs.
const ACCUMULATORS: usize = 16;
/// Loop iterations per trial.
const ITERATIONS: u64 = 50_000_000;
/// Trials per vector width; the best is reported.
const TRIALS: usize = 5;

/// `m x k x n` of the cached GEMM: `k` is one k-block and `m` one row block of the packed GEMM.
const CACHED_SHAPE: [usize; 3] = [480, 256, 48];
/// Calls of the cached GEMM per trial.
const GEMM_CALLS: usize = 2000;

/// Returns the GFLOP/s of the packed GEMM on [`CACHED_SHAPE`], best of [`TRIALS`].
fn cached_gemm_gflops() -> f64 {
    let mut gemm = dcgan_layers::PrepackedGemm::new(CACHED_SHAPE);
    gemm.run();
    let [m, k, n] = CACHED_SHAPE;
    let flops = (2 * m * k * n * GEMM_CALLS) as f64;
    (0..TRIALS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..GEMM_CALLS {
                gemm.run();
            }
            flops / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// Defines a function that runs the FMA loop on one vector type and returns its GFLOP/s.
macro_rules! fma_loop {
    ($name:ident, $vector:ty, $lanes:expr) => {
        fn $name() -> f64 {
            // A factor just below 1 and a small addend keep every lane finite and normal.
            let factor = <$vector>::splat(black_box(0.999_999_9));
            let addend = <$vector>::splat(black_box(1e-7));
            let mut acc = [<$vector>::splat(1.0); ACCUMULATORS];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = <$vector>::splat(black_box(1.0 + i as f32));
            }

            let start = Instant::now();
            for _ in 0..ITERATIONS {
                for a in acc.iter_mut() {
                    *a = a.mul_add(factor, addend);
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            black_box(acc);

            let flops = (ITERATIONS as f64) * (ACCUMULATORS * $lanes * 2) as f64;
            flops / seconds / 1e9
        }
    };
}

fma_loop!(gflops_f32x16, f32x16, 16);
fma_loop!(gflops_f32x8, f32x8, 8);

fn main() {
    println!(
        "target features: avx512f={} fma={}",
        cfg!(target_feature = "avx512f"),
        cfg!(target_feature = "fma")
    );
    let mut peak: f64 = 0.0;
    for (label, run) in [("f32x16", gflops_f32x16 as fn() -> f64), ("f32x8", gflops_f32x8)] {
        let trials: Vec<f64> = (0..TRIALS).map(|_| run()).collect();
        let best = trials.iter().cloned().fold(0.0, f64::max);
        let worst = trials.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "{label:>7}: best {best:7.1} GFLOP/s, worst {worst:7.1} GFLOP/s over {TRIALS} trials"
        );
        peak = peak.max(best);
    }
    println!("peak: {peak:.1} GFLOP/s on one core");
    let gemm = cached_gemm_gflops();
    let [m, k, n] = CACHED_SHAPE;
    println!(
        "packed GEMM {m}x{k}x{n}, operands in cache: {gemm:.1} GFLOP/s, {:.0}% of the peak",
        100.0 * gemm / peak
    );
}
