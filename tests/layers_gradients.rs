//! Every layer against its `f64` reference: the forward output, and the input and parameter
//! gradients against central finite differences of the reference, over random shapes in
//! training and evaluation mode.
//!
//! Tolerances are relative to the largest expected magnitude of the tensor: `1e-5` for outputs
//! and `1e-4` for gradients. Sums of up to a few hundred `f32` products carry relative errors
//! near `1e-6`, and the finite differences themselves are good to about `1e-10` (see
//! `layers_common`).

mod layers_common;

use dcgan::kernels::{Conv2dSpec, ConvTranspose2dSpec};
use dcgan::layers::{
    BatchNorm, BufferData, Conv2d, ConvTranspose2d, Dropout, Flatten, Layer, LeakyRelu, Linear,
    Mode, Relu, Reshape, Sigmoid, Tanh,
};
use dcgan::rng::Rng;
use layers_common::*;
use ndarray::Array4;
use proptest::prelude::*;

/// Checks `layer` against `reference` on `x`: forward output, input gradient, parameter
/// gradients, and the bookkeeping of `backward` (no input gradient when not asked, no
/// parameter gradients with `None`, accumulation into existing gradients).
fn check_layer(
    layer: &mut dyn Layer,
    reference: &RefLayer,
    x: Array4<f32>,
    params: &[f32],
    mode: Mode,
    rng: &mut Rng,
) {
    let name = layer.describe();
    let p64 = to64(params);
    let x64 = T64::from_f32(&x);
    let shape = x64.shape;

    // Forward against the reference.
    let y = layer.forward(params, x.clone(), mode).unwrap();
    let y_ref = reference.forward(&p64, &x64);
    assert_eq!(y.shape(), &y_ref.shape[..], "{name}: output shape");
    assert_eq!(layer.output_shape(shape).unwrap(), y_ref.shape, "{name}: output_shape()");
    assert_close(&format!("{name} output"), y.as_slice().unwrap(), &y_ref.data, 1e-5, 1e-6);

    // Backward with a random cotangent w: gradients of sum(y * w).
    let w = random_array(rng, y_ref.shape, 1.0);
    let w64 = to64(w.as_slice().unwrap());
    let mut grads = vec![0.0f32; params.len()];
    let dx = layer.backward(params, Some(&mut grads), w.clone(), true).unwrap().unwrap();

    let all_x: Vec<usize> = (0..x64.data.len()).collect();
    let fd_x = central_diff(&x64.data, &all_x, |xv| {
        dot(&reference.forward(&p64, &T64 { shape, data: xv.to_vec() }), &w64)
    });
    assert_close(&format!("{name} input gradient"), dx.as_slice().unwrap(), &fd_x, 1e-4, 1e-6);

    let all_p: Vec<usize> = (0..p64.len()).collect();
    let fd_p = central_diff(&p64, &all_p, |pv| dot(&reference.forward(pv, &x64), &w64));
    assert_close(&format!("{name} parameter gradient"), &grads, &fd_p, 1e-4, 1e-6);

    // Without a gradient buffer: the same input gradient, bit for bit.
    let dx_only = layer.backward(params, None, w.clone(), true).unwrap().unwrap();
    assert_eq!(dx_only, dx, "{name}: input gradient without parameter gradients");

    // Without an input gradient: None, and the parameter gradients accumulate exactly.
    let once = grads.clone();
    assert!(layer.backward(params, Some(&mut grads), w, false).unwrap().is_none());
    let doubled: Vec<f32> = once.iter().map(|g| g + g).collect();
    assert_eq!(grads, doubled, "{name}: gradients accumulate");
}

fn mode_of(train: bool) -> Mode {
    if train {
        Mode::Train
    } else {
        Mode::Eval
    }
}

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(32)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn conv2d_matches_reference(
        n in 1usize..3, c_in in 1usize..4, c_out in 1usize..4, k in 1usize..4,
        stride in 1usize..3, pad in 0usize..2, dilation in 1usize..3,
        h in 1usize..7, w in 1usize..7, bias: bool, seed: u64,
    ) {
        let spec = Conv2dSpec::new(c_in, c_out, k).stride(stride).padding(pad).dilation(dilation);
        prop_assume!(spec.geometry(n, h, w).is_ok());
        let mut rng = Rng::from_seed(seed);
        let mut layer = Conv2d::new(spec, bias).unwrap();
        let reference = RefLayer::Conv2d { spec, bias };
        let params = random_vec(&mut rng, reference.num_params(), 1.0);
        let x = random_array(&mut rng, [n, c_in, h, w], 1.0);
        check_layer(&mut layer, &reference, x, &params, Mode::Train, &mut rng);
    }

    #[test]
    fn conv_transpose2d_matches_reference(
        n in 1usize..3, c_in in 1usize..4, c_out in 1usize..4, k in 1usize..5,
        stride in 1usize..3, pad in 0usize..2, output_padding in 0usize..2, dilation in 1usize..3,
        h in 1usize..5, w in 1usize..5, bias: bool, seed: u64,
    ) {
        let spec = ConvTranspose2dSpec::new(c_in, c_out, k)
            .stride(stride)
            .padding(pad)
            .output_padding(output_padding)
            .dilation(dilation);
        prop_assume!(spec.geometry(n, h, w).is_ok());
        let mut rng = Rng::from_seed(seed);
        let mut layer = ConvTranspose2d::new(spec, bias).unwrap();
        let reference = RefLayer::ConvTranspose2d { spec, bias };
        let params = random_vec(&mut rng, reference.num_params(), 1.0);
        let x = random_array(&mut rng, [n, c_in, h, w], 1.0);
        check_layer(&mut layer, &reference, x, &params, Mode::Eval, &mut rng);
    }

    #[test]
    fn linear_matches_reference(
        n in 1usize..4, in_features in 1usize..7, out_features in 1usize..7, bias: bool, seed: u64,
    ) {
        let mut rng = Rng::from_seed(seed);
        let mut layer = Linear::new(in_features, out_features, bias).unwrap();
        let reference = RefLayer::Linear { in_features, out_features, bias };
        let params = random_vec(&mut rng, reference.num_params(), 1.0);
        let x = random_array(&mut rng, [n, in_features, 1, 1], 1.0);
        check_layer(&mut layer, &reference, x, &params, Mode::Train, &mut rng);
    }

    #[test]
    fn batchnorm2d_matches_reference(
        n in 1usize..4, c in 1usize..4, h in 1usize..4, w in 1usize..4, train: bool, seed: u64,
    ) {
        prop_assume!(!train || n * h * w > 1);
        let mut rng = Rng::from_seed(seed);
        check_batchnorm(BatchNorm::new2d(c).unwrap(), [n, c, h, w], mode_of(train), &mut rng);
    }

    #[test]
    fn batchnorm1d_matches_reference(n in 2usize..6, f in 1usize..5, train: bool, seed: u64) {
        let mut rng = Rng::from_seed(seed);
        check_batchnorm(BatchNorm::new1d(f).unwrap(), [n, f, 1, 1], mode_of(train), &mut rng);
    }

    #[test]
    fn activations_match_reference(
        n in 1usize..3, c in 1usize..3, h in 1usize..5, w in 1usize..6,
        slope in -0.5f32..0.5, train: bool, seed: u64,
    ) {
        let mut rng = Rng::from_seed(seed);
        let shape = [n, c, h, w];
        let mode = mode_of(train);
        let cases: Vec<(Box<dyn Layer>, RefLayer)> = vec![
            (Box::new(Relu::new()), RefLayer::Relu),
            (Box::new(LeakyRelu::new(slope).unwrap()), RefLayer::LeakyRelu(slope as f64)),
            (Box::new(Tanh::new()), RefLayer::Tanh),
            (Box::new(Sigmoid::new()), RefLayer::Sigmoid),
        ];
        for (mut layer, reference) in cases {
            let x = random_array(&mut rng, shape, 3.0);
            check_layer(layer.as_mut(), &reference, x, &[], mode, &mut rng);
        }
    }

    #[test]
    fn reshapes_match_reference(
        n in 1usize..3, c in 1usize..4, h in 1usize..4, w in 1usize..4, seed: u64,
    ) {
        let mut rng = Rng::from_seed(seed);
        let x = random_array(&mut rng, [n, c, h, w], 1.0);
        check_layer(&mut Flatten::new(), &RefLayer::Flatten, x, &[], Mode::Train, &mut rng);
        let flat = random_array(&mut rng, [n, c * h * w, 1, 1], 1.0);
        let mut reshape = Reshape::new([c, h, w]).unwrap();
        check_layer(&mut reshape, &RefLayer::Reshape([c, h, w]), flat, &[], Mode::Train, &mut rng);
    }

    #[test]
    fn dropout_matches_masked_reference(
        n in 1usize..3, c in 1usize..4, h in 1usize..5, w in 1usize..5,
        p_index in 0usize..4, train: bool, seed: u64,
    ) {
        let p = [0.0f32, 0.3, 0.5, 1.0][p_index];
        let mut rng = Rng::from_seed(seed);
        let mode = mode_of(train);
        let mut layer = Dropout::new(p, Rng::from_seed(seed ^ 1)).unwrap();

        // Read the mask the next forward pass will draw from an input without zeros.
        let shape = [n, c, h, w];
        let mut probe = Dropout::new(p, layer.rng().clone()).unwrap();
        let ones = Array4::<f32>::ones(shape);
        let probed = probe.forward(&[], ones, mode).unwrap();
        let mask: Vec<f64> = probed.iter().map(|&v| v as f64).collect();
        let scale = if mode == Mode::Train && p < 1.0 { 1.0 / (1.0 - p as f64) } else { 1.0 };
        for &m in &mask {
            prop_assert!(m == 0.0 || (m - scale).abs() < 1e-6, "mask value {m}, scale {scale}");
            prop_assert!(mode == Mode::Train || m == 1.0, "evaluation drops nothing");
        }

        let x = random_array(&mut rng, shape, 1.0).mapv(|v| v + 2.0);
        check_layer(&mut layer, &RefLayer::Mask(mask), x, &[], mode, &mut rng);
    }
}

/// Checks a BatchNorm layer in `mode`, with random running statistics for evaluation.
fn check_batchnorm(mut layer: BatchNorm, shape: [usize; 4], mode: Mode, rng: &mut Rng) {
    let c = shape[1];
    let running_mean = random_vec(rng, c, 1.0);
    let running_var: Vec<f32> = random_vec(rng, c, 0.5).iter().map(|v| v + 1.0).collect();
    layer.set_buffer("running_mean", BufferData::F32(&running_mean)).unwrap();
    layer.set_buffer("running_var", BufferData::F32(&running_var)).unwrap();
    let running = match mode {
        Mode::Train => None,
        Mode::Eval => Some((to64(&running_mean), to64(&running_var))),
    };
    let reference = RefLayer::BatchNorm { features: c, eps: 1e-5, running };
    let params = random_vec(rng, 2 * c, 1.0);
    let x = random_array(rng, shape, 2.0);
    check_layer(&mut layer, &reference, x, &params, mode, rng);
}
