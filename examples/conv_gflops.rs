//! Prints GFLOP/s of every DCGAN convolution pass at batch 64, beside one GEMM call of the same
//! whole-batch shape on the same backend (the roofline of the im2col + GEMM design).
//!
//! ```sh
//! cargo run --release --example conv_gflops                  # every path, every layer
//! cargo run --release --example conv_gflops -- D2 G3         # layers whose name contains a filter
//! cargo run --release --example conv_gflops -- --backend packed   # or winograd, matrixmultiply
//! ```
//!
//! The paths are the packed GEMM with the direct lowering (`packed`), and the packed GEMM with
//! Winograd F(2x2, 2x2) for every product of every layer whose shape fits (`winograd`, where
//! other layers run as `packed`). The third is
//! matrixmultiply's sgemm (`matrixmultiply`).
//!
//! Each time is the minimum over repetitions (at least 3, and at least 0.3 s per variant), which
//! filters out interference from other processes; the convolution and the GEMM, and with
//! several paths, the paths, are timed alternately so that all see the same machine
//! state. FLOPs are `2 * m * k * n` of the direct lowering's GEMM on every path, so the
//! Winograd path, which does fewer, shows an effective rate.
//!
//! The first discriminator layer's forward (and the last generator layer's grad-input) runs on
//! both packed paths as the direct convolution of `kernels::shallow`, because its reduction is
//! only 48 or 16 long.
//!
//! The column `in place 1t` is the crate's packed GEMM on the same whole-batch shape with both
//! operands stored in its packed layouts beforehand (`PackedA`, `PackedB`). It times the
//! microkernel, the merging of its tiles into C and the loops around them, without packing.
//! The last column, `block 1t`, is the same on one column block of that shape (`n` cut to
//! `packed_gemm::NC`), whose C of a skinny shape stays in cache instead of streaming through
//! memory.

#[path = "../benches/dcgan_layers.rs"]
mod dcgan_layers;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dcgan::kernels::gemm::{set_gemm_backend, GemmBackend};
use dcgan::kernels::packed_gemm::NC;
use dcgan::kernels::{set_winograd, Winograd};
use dcgan_layers::{dcgan_layers, pool, GemmWorkload, Pass, PrepackedGemm, Workload};

const BATCH: usize = 64;

/// Minimum wall time of `f` over at least 3 calls and 0.3 s, after one warm-up call.
fn min_time(mut f: impl FnMut()) -> Duration {
    f();
    let (start, mut best, mut reps) = (Instant::now(), Duration::MAX, 0);
    while reps < 3 || start.elapsed() < Duration::from_millis(300) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        reps += 1;
    }
    best
}

/// One way of running the convolutions.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// The packed GEMM with the direct lowering.
    Packed,
    /// The packed GEMM with Winograd products where they apply.
    Winograd,
    /// matrixmultiply's sgemm.
    MatrixMultiply,
}

impl Path {
    /// Selects this path for every later convolution.
    fn select(self) {
        let backend = match self {
            Path::MatrixMultiply => GemmBackend::MatrixMultiply,
            Path::Packed | Path::Winograd => GemmBackend::Packed,
        };
        set_gemm_backend(backend);
        set_winograd(match self {
            Path::Winograd => Winograd::Always,
            Path::Packed | Path::MatrixMultiply => Winograd::Off,
        });
    }

    /// Returns the GEMM backend the path runs on, for the GEMM column.
    fn backend(self) -> GemmBackend {
        match self {
            Path::MatrixMultiply => GemmBackend::MatrixMultiply,
            Path::Packed | Path::Winograd => GemmBackend::Packed,
        }
    }
}

const USAGE: &str = "usage: conv_gflops [--backend packed|winograd|matrixmultiply|all] [FILTER...]
  FILTER  times only the layers whose name contains it (D2, G3); default: every layer";

/// Splits the arguments into the paths named by `--backend` (default: all) and filters;
/// `None` for `--help`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let all = vec![Path::MatrixMultiply, Path::Packed, Path::Winograd];
    let (mut backends, mut filters) = (all.clone(), vec![]);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--backend" => {
                backends = match args.next().as_deref() {
                    Some("packed") => vec![Path::Packed],
                    Some("winograd") => vec![Path::Winograd],
                    Some("matrixmultiply") => vec![Path::MatrixMultiply],
                    Some("all") => all.clone(),
                    Some(other) => {
                        return Err(format!(
                            "invalid --backend {other:?}: expected packed, winograd, \
                             matrixmultiply or all"
                        ))
                    }
                    None => {
                        return Err("missing value of --backend: expected packed, winograd, \
                                    matrixmultiply or all"
                            .into())
                    }
                };
            }
            flag if flag.starts_with('-') => {
                return Err(format!("unknown flag {flag:?}\n{USAGE}"));
            }
            _ => filters.push(arg),
        }
    }
    let names: Vec<String> = dcgan_layers().iter().map(|layer| layer.name()).collect();
    for filter in &filters {
        if filter.is_empty() {
            return Err("empty filter \"\": expected part of a layer name (D2, G3)".into());
        }
        if !names.iter().any(|name| name.contains(filter.as_str())) {
            return Err(format!(
                "filter {filter:?} matches no layer: expected part of a name among {}",
                names.join(", ")
            ));
        }
    }
    Ok(Some(Args { backends, filters }))
}

/// The paths to time and the layer filters.
struct Args {
    backends: Vec<Path>,
    filters: Vec<String>,
}

fn main() -> ExitCode {
    let Args { backends, filters } = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let (one, two) = (pool(1), pool(2));
    println!(
        "batch {BATCH}; GFLOP/s = 2*m*k*n / time of the whole-batch GEMM shape m x k x n.\n\
         ours 1t, ours 2t: the pass on the row's path, on 1 and 2 threads (a layer the Winograd \
         path does not fit runs as packed, and a forward product with a reduction of at most 64 \
         runs as the direct convolution of kernels::shallow on both).\n\
         gemm 1t: one GEMM call of that shape on the row's backend, 1 thread; ratio1, ratio2: \
         gemm 1t time / ours 1t or 2t time.\n\
         in place 1t: the crate's packed GEMM with both operands pre-packed (microkernel and \
         its loops, no packing), the same on every path; block 1t: the same on one column block \
         (n cut to packed_gemm::NC = {NC})."
    );
    println!(
        "{:<34} {:<11} {:<14} {:>20} {:>9} {:>9} {:>9} {:>7} {:>7} {:>11} {:>9}",
        "layer",
        "pass",
        "backend",
        "gemm m x k x n",
        "ours 1t",
        "ours 2t",
        "gemm 1t",
        "ratio1",
        "ratio2",
        "in place 1t",
        "block 1t"
    );
    for layer in dcgan_layers() {
        let name = layer.name();
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let mut work = Workload::new(layer, BATCH);
        for pass in Pass::ALL {
            let shape = layer.gemm_shape(pass, BATCH);
            let gflop = layer.flops(pass, BATCH) as f64 * 1e-9;
            let mut sgemm = GemmWorkload::new(shape);
            let in_place = {
                let mut prepacked = PrepackedGemm::new(shape);
                min_time(|| prepacked.run())
            };
            let [m, k, n] = shape;
            let block_shape = [m, k, n.min(NC)];
            let in_block = {
                let mut prepacked = PrepackedGemm::new(block_shape);
                min_time(|| prepacked.run())
            };
            let block_gflop = 2.0 * (m * k * block_shape[2]) as f64 * 1e-9;
            for &path in &backends {
                path.select();
                let ours1 = min_time(|| one.install(|| work.run(pass)));
                set_gemm_backend(path.backend());
                let reference = min_time(|| sgemm.run());
                let ours2 = min_time(|| two.install(|| work.run(pass)));
                let rate = |t: Duration| gflop / t.as_secs_f64();
                println!(
                    "{:<34} {:<11} {:<14} {:>20} {:>9.1} {:>9.1} {:>9.1} {:>7.2} {:>7.2} {:>11.1} \
                     {:>9.1}",
                    name,
                    pass.name(),
                    format!("{path:?}"),
                    format!("{m}x{k}x{n}"),
                    rate(ours1),
                    rate(ours2),
                    rate(reference),
                    reference.as_secs_f64() / ours1.as_secs_f64(),
                    reference.as_secs_f64() / ours2.as_secs_f64(),
                    rate(in_place),
                    block_gflop / in_block.as_secs_f64(),
                );
            }
        }
    }
    ExitCode::SUCCESS
}
