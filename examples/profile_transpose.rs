use dcgan::kernels::elementwise::transpose;
fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (n, m, sld, dld) = (a[0], a[1], a[2], a[3]);
    let src: Vec<f32> = (0..n * sld).map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; m * dld];
    let reps = 2000;
    let t = std::time::Instant::now();
    for _ in 0..reps { transpose((&src, sld), [n, m], (&mut dst, dld)); std::hint::black_box(&mut dst); }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!("{n}x{m} ld {sld}/{dld}: {:.3} ns/element", dt * 1e9 / (n * m) as f64);
}
