#[path = "../benches/dcgan_layers.rs"]
mod dcgan_layers;
use dcgan_layers::*;
fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let mut w = GemmWorkload::new([a[0], a[1], a[2]]);
    let t = std::time::Instant::now();
    for _ in 0..a[3] { w.run(); }
    let dt = t.elapsed().as_secs_f64() / a[3] as f64;
    println!("sgemm {:?} {:.1} GFLOP/s", &a[..3], 2.0 * (a[0] * a[1] * a[2]) as f64 * 1e-9 / dt);
}
