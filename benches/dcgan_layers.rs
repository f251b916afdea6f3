//! The convolution layers of the two DCGAN configurations, shared by `benches/kernels.rs` and
//! `examples/conv_gflops.rs`: shapes, the GEMM each pass amounts to, and runners for our
//! kernels and for the crate's `gemm` (on its selected backend) on that GEMM's shape.
//!
//! FLOP count of a pass: `2 * m * k * n` of its whole-batch GEMM. With the lowering's
//! `k = c_in * k_h * k_w` (image side) and `cols = batch * out_h * out_w` (grid side), conv
//! forward is `[c_out, k] x [k, cols]`, conv grad-input `[k, c_out] x [c_out, cols]` and
//! grad-weight `[c_out, cols] x [cols, k]`. A transposed convolution runs the same three
//! products with the roles exchanged: its forward is the grad-input product and its grad-input
//! the forward product (see [`Layer::gemm_shape`]).
#![allow(dead_code)]

use dcgan::kernels::gemm::{gemm, MatMut, MatRef};
use dcgan::kernels::packed_gemm;
use dcgan::kernels::{
    conv, conv_transpose, Conv2dGeometry, Conv2dSpec, ConvGeometry, ConvTranspose2dGeometry,
    ConvTranspose2dSpec,
};
use dcgan::rng::Rng;

/// Convolution or transposed convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Conv,
    ConvTranspose,
}

/// One of the three passes a layer runs in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Forward,
    GradInput,
    GradWeight,
}

impl Pass {
    pub const ALL: [Pass; 3] = [Pass::Forward, Pass::GradInput, Pass::GradWeight];

    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "fwd",
            Pass::GradInput => "grad_input",
            Pass::GradWeight => "grad_weight",
        }
    }
}

/// A layer: a 4x4 kernel with the given stride and padding from `size_in` to `size_out` pixels.
#[derive(Clone, Copy, Debug)]
pub struct Layer {
    pub config: &'static str,
    /// `G1`..`G5` for the generator, `D1`..`D5` for the discriminator, in forward order.
    pub index: &'static str,
    pub kind: Kind,
    pub c_in: usize,
    pub c_out: usize,
    pub size_in: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Every convolution layer of DCGAN on 64x64 RGB images (ngf = ndf = 64, 100-d noise) and on
/// 32x32 grey images, in forward order within each network.
pub fn dcgan_layers() -> Vec<Layer> {
    use Kind::{Conv, ConvTranspose as T};
    let layer = |config, index, kind, c_in, c_out, size_in, stride, padding| Layer {
        config,
        index,
        kind,
        c_in,
        c_out,
        size_in,
        stride,
        padding,
    };
    vec![
        layer("dcgan64", "G1", T, 100, 512, 1, 1, 0),
        layer("dcgan64", "G2", T, 512, 256, 4, 2, 1),
        layer("dcgan64", "G3", T, 256, 128, 8, 2, 1),
        layer("dcgan64", "G4", T, 128, 64, 16, 2, 1),
        layer("dcgan64", "G5", T, 64, 3, 32, 2, 1),
        layer("dcgan64", "D1", Conv, 3, 64, 64, 2, 1),
        layer("dcgan64", "D2", Conv, 64, 128, 32, 2, 1),
        layer("dcgan64", "D3", Conv, 128, 256, 16, 2, 1),
        layer("dcgan64", "D4", Conv, 256, 512, 8, 2, 1),
        layer("dcgan64", "D5", Conv, 512, 1, 4, 1, 0),
        layer("dcgan32", "G1", T, 100, 256, 1, 1, 0),
        layer("dcgan32", "G2", T, 256, 128, 4, 2, 1),
        layer("dcgan32", "G3", T, 128, 64, 8, 2, 1),
        layer("dcgan32", "G4", T, 64, 1, 16, 2, 1),
        layer("dcgan32", "D1", Conv, 1, 64, 32, 2, 1),
        layer("dcgan32", "D2", Conv, 64, 128, 16, 2, 1),
        layer("dcgan32", "D3", Conv, 128, 256, 8, 2, 1),
        layer("dcgan32", "D4", Conv, 256, 1, 4, 1, 0),
    ]
}

/// The checked geometry of a layer at some batch size.
#[derive(Clone, Copy, Debug)]
pub enum Geometry {
    Conv(Conv2dGeometry),
    ConvTranspose(ConvTranspose2dGeometry),
}

impl Geometry {
    fn lowering(&self) -> &ConvGeometry {
        match self {
            Geometry::Conv(g) => &g.lowering,
            Geometry::ConvTranspose(g) => &g.lowering,
        }
    }
}

impl Layer {
    pub fn geometry(&self, batch: usize) -> Geometry {
        let (s, p) = (self.stride, self.padding);
        match self.kind {
            Kind::Conv => {
                let spec = Conv2dSpec::new(self.c_in, self.c_out, 4).stride(s).padding(p);
                Geometry::Conv(spec.geometry(batch, self.size_in, self.size_in).unwrap())
            }
            Kind::ConvTranspose => {
                let spec = ConvTranspose2dSpec::new(self.c_in, self.c_out, 4).stride(s).padding(p);
                Geometry::ConvTranspose(spec.geometry(batch, self.size_in, self.size_in).unwrap())
            }
        }
    }

    /// `dcgan64/G2_convT_512x256_4to8`.
    pub fn name(&self) -> String {
        let size_out = match self.geometry(1) {
            Geometry::Conv(g) => g.out_h(),
            Geometry::ConvTranspose(g) => g.out_h(),
        };
        let kind = if self.kind == Kind::Conv { "conv" } else { "convT" };
        format!(
            "{}/{}_{kind}_{}x{}_{}to{size_out}",
            self.config, self.index, self.c_in, self.c_out, self.size_in
        )
    }

    /// `[m, k, n]` of the whole-batch GEMM that `pass` computes.
    pub fn gemm_shape(&self, pass: Pass, batch: usize) -> [usize; 3] {
        let geometry = self.geometry(batch);
        let l = geometry.lowering();
        let (k, cols) = (l.k(), l.n * l.positions());
        // The lowering's three products: image_to_grid, grid_to_image, weight_product.
        let image_to_grid = [l.c_out, k, cols];
        let grid_to_image = [k, l.c_out, cols];
        let weight_product = [l.c_out, cols, k];
        match (self.kind, pass) {
            (Kind::Conv, Pass::Forward) | (Kind::ConvTranspose, Pass::GradInput) => image_to_grid,
            (Kind::Conv, Pass::GradInput) | (Kind::ConvTranspose, Pass::Forward) => grid_to_image,
            (_, Pass::GradWeight) => weight_product,
        }
    }

    /// `2 m k n` of the pass's GEMM.
    pub fn flops(&self, pass: Pass, batch: usize) -> u64 {
        let [m, k, n] = self.gemm_shape(pass, batch);
        2 * (m * k * n) as u64
    }
}

fn random(seed: u64, len: usize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    Rng::from_seed(seed).fill_normal(&mut out, 0.0, 1.0);
    out
}

/// Buffers for running every pass of one layer at one batch size.
pub struct Workload {
    pub layer: Layer,
    geometry: Geometry,
    input: Vec<f32>,
    output: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    grad_output: Vec<f32>,
    grad_input: Vec<f32>,
    grad_weight: Vec<f32>,
}

impl Workload {
    pub fn new(layer: Layer, batch: usize) -> Self {
        let geometry = layer.geometry(batch);
        let l = *geometry.lowering();
        let (input_len, output_len, bias_len) = match geometry {
            Geometry::Conv(_) => (l.image_len(), l.grid_len(), l.c_out),
            Geometry::ConvTranspose(_) => (l.grid_len(), l.image_len(), l.c_in),
        };
        Workload {
            layer,
            geometry,
            input: random(1, input_len),
            output: vec![0.0; output_len],
            weight: random(2, l.weight_len()),
            bias: random(3, bias_len),
            grad_output: random(4, output_len),
            grad_input: vec![0.0; input_len],
            grad_weight: vec![0.0; l.weight_len()],
        }
    }

    /// Runs `pass` with our kernels on the current rayon pool.
    pub fn run(&mut self, pass: Pass) {
        let w = self;
        match (w.geometry, pass) {
            (Geometry::Conv(g), Pass::Forward) => {
                conv::conv2d_forward(&g, &w.input, &w.weight, Some(&w.bias), &mut w.output)
            }
            (Geometry::Conv(g), Pass::GradInput) => {
                conv::conv2d_grad_input(&g, &w.weight, &w.grad_output, &mut w.grad_input)
            }
            (Geometry::Conv(g), Pass::GradWeight) => {
                conv::conv2d_grad_weight(&g, &w.input, &w.grad_output, &mut w.grad_weight)
            }
            (Geometry::ConvTranspose(g), Pass::Forward) => {
                conv_transpose::conv_transpose2d_forward(
                    &g,
                    &w.input,
                    &w.weight,
                    Some(&w.bias),
                    &mut w.output,
                )
            }
            (Geometry::ConvTranspose(g), Pass::GradInput) => {
                conv_transpose::conv_transpose2d_grad_input(
                    &g,
                    &w.weight,
                    &w.grad_output,
                    &mut w.grad_input,
                )
            }
            (Geometry::ConvTranspose(g), Pass::GradWeight) => {
                conv_transpose::conv_transpose2d_grad_weight(
                    &g,
                    &w.input,
                    &w.grad_output,
                    &mut w.grad_weight,
                )
            }
        }
        .expect("benchmark shapes are valid");
    }
}

/// Row-major operands of one GEMM shape, for timing sgemm alone.
pub struct GemmWorkload {
    pub shape: [usize; 3],
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl GemmWorkload {
    pub fn new(shape: [usize; 3]) -> Self {
        let [m, k, n] = shape;
        GemmWorkload { shape, a: random(5, m * k), b: random(6, k * n), c: vec![0.0; m * n] }
    }

    /// `C = A * B` with `gemm`, on its selected backend, on the calling thread.
    pub fn run(&mut self) {
        let [m, k, n] = self.shape;
        gemm(
            1.0,
            MatRef::row_major(&self.a, m, k),
            MatRef::row_major(&self.b, k, n),
            0.0,
            MatMut::row_major(&mut self.c, m, n),
        );
    }
}

/// The same GEMM on the crate's packed GEMM with both operands stored in its packed layouts
/// beforehand, so that a call runs only the microkernel, the merging of its tiles into C and the
/// loops around them. B and C start on 64-byte boundaries, as in the crate's own scratch
/// buffers.
pub struct PrepackedGemm {
    shape: [usize; 3],
    a: packed_gemm::PackedA,
    b: AlignedFloats,
    c: AlignedFloats,
}

impl PrepackedGemm {
    pub fn new(shape: [usize; 3]) -> Self {
        let [m, k, n] = shape;
        let (a, b_values) = (random(5, m * k), random(6, k * n));
        let a_view = packed_gemm::MatRef::row_major(&a, m, k).expect("benchmark shapes are valid");
        let mut b = AlignedFloats::zeros(packed_gemm::PackedB::packed_len(k, n).unwrap());
        for row in 0..k {
            for col in 0..n {
                b.as_mut_slice()[packed_gemm::PackedB::offset(k, n, row, col)] =
                    b_values[row * n + col];
            }
        }
        let a = packed_gemm::PackedA::new(a_view);
        PrepackedGemm { shape, a, b, c: AlignedFloats::zeros(m * n) }
    }

    /// Computes `C = A * B` on the calling thread.
    pub fn run(&mut self) {
        let [m, k, n] = self.shape;
        let b =
            packed_gemm::PackedB::new(self.b.as_slice(), k, n).expect("benchmark shapes are valid");
        let c = packed_gemm::MatMut::row_major(self.c.as_mut_slice(), m, n)
            .expect("benchmark shapes are valid");
        packed_gemm::sgemm_prepacked(1.0, &self.a, 0..m, &b, 0.0, c).expect("valid operands");
    }
}

/// `len` floats starting on a 64-byte boundary (the alignment of `wide::f32x16`).
struct AlignedFloats {
    lines: Vec<wide::f32x16>,
    len: usize,
}

impl AlignedFloats {
    fn zeros(len: usize) -> Self {
        AlignedFloats { lines: vec![wide::f32x16::ZERO; len.div_ceil(16)], len }
    }

    fn as_slice(&self) -> &[f32] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// A rayon pool of exactly `threads` threads.
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool")
}
