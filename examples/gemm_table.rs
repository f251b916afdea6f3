//! Prints a table of single-threaded GEMM throughput on the DCGAN shapes of `benches/gemm.rs`:
//! our `sgemm`, our `sgemm_tiles` and `matrixmultiply::sgemm`, in GFLOP/s (`2 * m * n * k / time`).
//!
//! Criterion reports a mean, which on a machine shared with other jobs measures the other jobs as
//! much as the kernel. This program instead runs many short trials, interleaving the three
//! kernels so they see the same conditions, and prints the best trial (the closest to an idle
//! core) and the median (the spread). Give the one-core peak from `--example fma_peak` to also
//! print the best as a percentage of it.
//!
//! ```sh
//! cargo run --release --example gemm_table -- [TRIALS] [PEAK_GFLOPS]
//! ```

#[path = "../benches/support/gemm_shapes.rs"]
mod gemm_shapes;

use gemm_shapes::{Operands, SHAPES};
use std::time::Instant;

/// Work per trial, in flops: a few milliseconds, shorter than a scheduler time slice.
const TRIAL_FLOPS: f64 = 2e8;

/// Returns the best and the median of `samples`.
fn best_and_median(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() - 1], samples[samples.len() / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let trials: usize = args.next().map_or(100, |s| s.parse().expect("TRIALS is a count"));
    let peak: Option<f64> = args.next().map(|s| s.parse().expect("PEAK_GFLOPS is a number"));
    assert!(trials > 0, "TRIALS must be at least 1");

    println!("GFLOP/s, best (median) of {trials} trials");
    println!(
        "{:12} {:>17} {:>17} {:>17} {:>7}",
        "shape", "ours", "ours_tiles", "matrixmultiply", "% peak"
    );
    for shape in SHAPES {
        let mut operands = Operands::new(shape);
        let reps = (TRIAL_FLOPS / operands.flops()).ceil().max(1.0) as usize;
        let mut samples = [vec![], vec![], vec![]];
        for _ in 0..trials {
            for (kernel, times) in samples.iter_mut().enumerate() {
                let start = Instant::now();
                for _ in 0..reps {
                    match kernel {
                        0 => operands.ours(),
                        1 => operands.ours_tiles(),
                        _ => operands.matrixmultiply(),
                    }
                }
                let seconds = start.elapsed().as_secs_f64();
                times.push(operands.flops() * reps as f64 / seconds / 1e9);
            }
        }

        let [ours, tiles, reference] = samples.map(|mut times| best_and_median(&mut times));
        let cell = |(best, median): (f64, f64)| format!("{best:6.1} ({median:6.1})");
        let percent =
            peak.map_or(String::from("-"), |peak| format!("{:.0}", 100.0 * ours.0 / peak));
        println!(
            "{:12} {:>17} {:>17} {:>17} {:>7}",
            shape.name,
            cell(ours),
            cell(tiles),
            cell(reference),
            percent
        );
    }
}
