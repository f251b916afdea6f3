#[path = "../benches/dcgan_layers.rs"]
mod dcgan_layers;
use dcgan_layers::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (filter, pass, reps): (&str, &str, usize) = (&args[1], &args[2], args[3].parse().unwrap());
    let threads: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(1);
    let layer = dcgan_layers().into_iter().find(|l| l.name().contains(filter)).unwrap();
    let pass = Pass::ALL.into_iter().find(|p| p.name() == pass).unwrap();
    let mut w = Workload::new(layer, 64);
    let p = pool(threads);
    let t = std::time::Instant::now();
    for _ in 0..reps { p.install(|| w.run(pass)); }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!("{} {} {:.1} GFLOP/s", layer.name(), pass.name(), layer.flops(pass, 64) as f64 * 1e-9 / dt);
}
