//! Named BatchNorm cases: PyTorch's running-statistics rules, degenerate batches, precision far
//! from zero, fusion with activations and independence from the thread count.

mod layers_common;

use dcgan::kernels::Conv2dSpec;
use dcgan::layers::{
    BatchNorm, BufferData, Conv2d, Init, InputGrad, Layer, LeakyRelu, Mode, Network, ParamGrads,
    Relu,
};
use dcgan::rng::Rng;
use dcgan::Error;
use layers_common::*;
use ndarray::Array4;

fn running(layer: &BatchNorm) -> (Vec<f32>, Vec<f32>) {
    (layer.running_mean().to_vec(), layer.running_var().to_vec())
}

#[test]
fn running_variance_is_unbiased_at_two_values() {
    // Two values per channel: biased variance (3 - 1)^2 / 4 = 1, unbiased (3 - 1)^2 / 2 = 2.
    let mut bn = BatchNorm::new2d(1).unwrap();
    let x = Array4::from_shape_vec([2, 1, 1, 1], vec![1.0f32, 3.0]).unwrap();
    let y = bn.forward(&[1.0, 0.0], x, Mode::Train).unwrap();

    let (mean, var) = running(&bn);
    assert_eq!(mean, vec![(0.1f64 * 2.0) as f32], "running mean = 0.9 * 0 + 0.1 * 2");
    assert_eq!(var, vec![(0.9f64 + 0.1 * 2.0) as f32], "running var = 0.9 * 1 + 0.1 * 2");
    assert_eq!(bn.num_batches_tracked(), 1);

    // The output uses the biased variance 1: x_hat = -+1 / sqrt(1 + 1e-5).
    let expected = 1.0 / (1.0f64 + 1e-5).sqrt();
    assert!((y[[0, 0, 0, 0]] as f64 + expected).abs() < 1e-7, "y[0] = {}", y[[0, 0, 0, 0]]);
    assert!((y[[1, 0, 0, 0]] as f64 - expected).abs() < 1e-7, "y[1] = {}", y[[1, 0, 0, 0]]);
}

#[test]
fn momentum_none_averages_cumulatively() {
    let mut bn = BatchNorm::new1d(1).unwrap().momentum(None).unwrap();
    for (a, b) in [(0.0f32, 2.0f32), (4.0, 6.0)] {
        let x = Array4::from_shape_vec([2, 1, 1, 1], vec![a, b]).unwrap();
        bn.forward(&[1.0, 0.0], x, Mode::Train).unwrap();
    }
    // Batch means 1 and 5, unbiased variances 2 and 2; the average of the two batches.
    assert_eq!(bn.running_mean(), &[3.0]);
    assert_eq!(bn.running_var(), &[2.0]);
}

#[test]
fn eval_uses_running_statistics() {
    let mut bn = BatchNorm::new2d(2).unwrap();
    bn.set_buffer("running_mean", BufferData::F32(&[0.5, -1.0])).unwrap();
    bn.set_buffer("running_var", BufferData::F32(&[4.0, 0.25])).unwrap();
    let params = [2.0f32, -1.0, 0.1, 0.2]; // gamma, then beta
    let mut rng = Rng::from_seed(4);
    let x = random_array(&mut rng, [3, 2, 2, 2], 2.0);
    let y = bn.forward(&params, x.clone(), Mode::Eval).unwrap();

    let (rm, rv) = ([0.5f64, -1.0], [4.0f64, 0.25]);
    for ((idx, &xv), &yv) in x.indexed_iter().zip(y.iter()) {
        let c = idx.1;
        let expected =
            params[c] as f64 * (xv as f64 - rm[c]) / (rv[c] + 1e-5).sqrt() + params[2 + c] as f64;
        assert!((yv as f64 - expected).abs() < 1e-6, "{idx:?}: {yv} vs {expected}");
    }
    assert_eq!(bn.running_mean(), &[0.5, -1.0], "evaluation leaves the running mean alone");
    assert_eq!(bn.running_var(), &[4.0, 0.25], "evaluation leaves the running variance alone");
    assert_eq!(bn.num_batches_tracked(), 0);

    // One value per channel is fine in evaluation mode.
    let single = Array4::from_shape_vec([1, 2, 1, 1], vec![1.0f32, 2.0]).unwrap();
    assert!(bn.forward(&params, single, Mode::Eval).is_ok());
}

#[test]
fn constant_channel_normalises_to_exactly_beta() {
    let mut bn = BatchNorm::new2d(3).unwrap();
    let params = [1.7f32, -0.3, 2.0, 0.25, -0.5, 3.0];
    let constants = [0.3f32, 1000.5, -7.1e-3];
    let x = Array4::from_shape_fn([4, 3, 3, 2], |(_, c, _, _)| constants[c]);
    let y = bn.forward(&params, x, Mode::Train).unwrap();
    for ((_, c, _, _), &v) in y.indexed_iter() {
        assert_eq!(v, params[3 + c], "channel {c}");
    }
    // Variance 0: the gradient is finite (invstd = 1 / sqrt(eps)), and zero for a uniform dy.
    let dy = Array4::<f32>::ones([4, 3, 3, 2]);
    let mut grads = vec![0.0f32; 6];
    let dx = bn.backward(&params, Some(&mut grads), dy, true).unwrap().unwrap();
    assert!(dx.iter().all(|v| *v == 0.0), "dx of a uniform dy over a constant channel");
    assert_eq!(&grads[..3], &[0.0, 0.0, 0.0], "dgamma = sum(dy * x_hat) = 0");
    assert_eq!(&grads[3..], &[24.0, 24.0, 24.0], "dbeta = sum(dy)");
}

#[test]
fn keeps_precision_near_1000() {
    // One channel of values 1000 + 0.01 u: the spread is 1e-5 of the offset. Normalising as
    // x * (gamma * invstd) + shift in f32 would lose about 3 of the 7 significant digits.
    let mut rng = Rng::from_seed(9);
    let shape = [8, 1, 4, 4];
    let x = random_array(&mut rng, shape, 0.01).mapv(|v| v + 1000.0);
    let x64 = T64::from_f32(&x);
    let mut bn = BatchNorm::new2d(1).unwrap();
    let y = bn.forward(&[1.0, 0.0], x, Mode::Train).unwrap();

    let reference = RefLayer::BatchNorm { features: 1, eps: 1e-5, running: None };
    let y_ref = reference.forward(&[1.0, 0.0], &x64);
    assert_close("x_hat near 1000", y.as_slice().unwrap(), &y_ref.data, 0.0, 2e-6);

    let count = x64.data.len() as f64;
    let mean = x64.data.iter().sum::<f64>() / count;
    let unbiased = x64.data.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0);
    assert_eq!(bn.running_mean()[0], (0.1 * mean) as f32);
    assert_eq!(bn.running_var()[0], (0.9 + 0.1 * unbiased) as f32);

    // The gradients keep the same precision.
    let dy = random_array(&mut rng, shape, 1.0);
    let w64 = to64(dy.as_slice().unwrap());
    let mut grads = vec![0.0f32; 2];
    let dx = bn.backward(&[1.0, 0.0], Some(&mut grads), dy, true).unwrap().unwrap();
    let fd = central_diff(&[1.0, 0.0], &[0, 1], |p| dot(&reference.forward(p, &x64), &w64));
    assert_close("parameter gradient near 1000", &grads, &fd, 1e-5, 0.0);
    let all: Vec<usize> = (0..x64.data.len()).collect();
    // Perturbing x by 1e-6 at 1000 is exact in f64; the derivative is of order invstd ~ 200.
    let fd_x = central_diff(&x64.data, &all, |xv| {
        dot(&reference.forward(&[1.0, 0.0], &T64 { shape, data: xv.to_vec() }), &w64)
    });
    assert_close("input gradient near 1000", dx.as_slice().unwrap(), &fd_x, 1e-4, 0.0);
}

#[test]
fn rejects_one_value_per_channel_in_training() {
    let x = Array4::from_shape_vec([1, 2, 1, 1], vec![1.0f32, 2.0]).unwrap();
    let err = BatchNorm::new2d(2).unwrap().forward(&[1.0; 4], x.clone(), Mode::Train).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("more than 1 value per channel"), "{err}");
    let err = BatchNorm::new1d(2).unwrap().forward(&[1.0; 4], x, Mode::Train).unwrap_err();
    assert!(err.to_string().contains("more than 1 value per channel"), "{err}");

    // An empty batch has no statistics, and must leave the running statistics alone.
    let mut bn = BatchNorm::new2d(2).unwrap();
    let empty = Array4::<f32>::zeros([0, 2, 4, 4]);
    let err = bn.forward(&[1.0, 1.0, 0.0, 0.0], empty, Mode::Train).unwrap_err();
    assert!(err.to_string().contains("more than 1 value per channel"), "{err}");
    assert_eq!(bn.running_mean(), [0.0, 0.0]);
    assert_eq!(bn.running_var(), [1.0, 1.0]);
    assert_eq!(bn.num_batches_tracked(), 0);

    // A plane of zero height or width is rejected in both modes, before any work.
    for mode in [Mode::Train, Mode::Eval] {
        let flat = Array4::<f32>::zeros([2, 2, 0, 4]);
        let err = BatchNorm::new2d(2).unwrap().forward(&[1.0; 4], flat, mode).unwrap_err();
        assert!(err.to_string().contains("height and width of at least 1"), "{mode:?}: {err}");
    }

    // One sample with a 2x1 plane has two values per channel: PyTorch accepts it, and so do we.
    let plane = Array4::from_shape_vec([1, 1, 2, 1], vec![1.0f32, 2.0]).unwrap();
    assert!(BatchNorm::new2d(1).unwrap().forward(&[1.0, 0.0], plane, Mode::Train).is_ok());
}

#[test]
fn rejects_non_finite_input() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = Array4::<f32>::zeros([2, 2, 2, 2]);
        x[[1, 1, 0, 1]] = bad;
        let mut bn = BatchNorm::new2d(2).unwrap();
        let err = bn.forward(&[1.0; 4], x, Mode::Train).unwrap_err();
        assert!(matches!(err, Error::NonFinite { .. }), "{bad}: {err}");
        assert!(err.to_string().contains("channel 1"), "{err}");
        assert_eq!(bn.num_batches_tracked(), 0, "a rejected batch does not count");
    }
}

#[test]
fn rejects_wrong_shapes_and_buffers() {
    let mut bn = BatchNorm::new1d(3).unwrap();
    assert!(bn.output_shape([4, 3, 2, 1]).is_err(), "BatchNorm1d takes [n, f, 1, 1]");
    assert!(bn.output_shape([4, 2, 1, 1]).is_err(), "feature count");
    assert!(bn.forward(&[1.0; 6], Array4::zeros([4, 2, 1, 1]), Mode::Eval).is_err());
    assert!(bn.forward(&[1.0; 5], Array4::zeros([4, 3, 1, 1]), Mode::Eval).is_err());
    assert!(bn.backward(&[1.0; 6], None, Array4::zeros([4, 3, 1, 1]), true).is_err());
    assert!(bn.set_buffer("running_var", BufferData::F32(&[1.0, -1.0, 1.0])).is_err());
    assert!(bn.set_buffer("running_var", BufferData::F32(&[1.0, 1.0])).is_err());
    assert!(bn.set_buffer("running_var", BufferData::I64(&[1, 1, 1])).is_err());
    assert!(bn.set_buffer("running_std", BufferData::F32(&[1.0; 3])).is_err());
    assert!(bn.set_buffer("num_batches_tracked", BufferData::I64(&[7])).is_ok());
    assert_eq!(bn.num_batches_tracked(), 7);
}

/// conv, BN, ReLU, conv, BN, LeakyReLU, conv: both fusable pairs.
fn fusable_network(seed: u64) -> Network {
    let layers: Vec<Box<dyn Layer + Send + Sync>> = vec![
        Box::new(Conv2d::new(Conv2dSpec::new(2, 4, 3).padding(1), true).unwrap()),
        Box::new(BatchNorm::new2d(4).unwrap()),
        Box::new(Relu::new()),
        Box::new(Conv2d::new(Conv2dSpec::new(4, 3, 3).stride(2).padding(1), false).unwrap()),
        Box::new(BatchNorm::new2d(3).unwrap()),
        Box::new(LeakyRelu::new(0.2).unwrap()),
        Box::new(Conv2d::new(Conv2dSpec::new(3, 1, 2), false).unwrap()),
    ];
    let mut net = Network::new("main", layers, &mut Rng::from_seed(seed), Init::PyTorch).unwrap();
    // Non-trivial BN affine parameters, so both signs reach the activations.
    let mut rng = Rng::from_seed(seed + 1);
    for name in ["main.1.bias", "main.4.bias"] {
        let len = net.param(name).unwrap().len();
        net.set_param(name, &random_vec(&mut rng, len, 0.5)).unwrap();
    }
    net
}

#[test]
fn fused_pairs_match_unfused_bit_for_bit() {
    let mut rng = Rng::from_seed(21);
    for mode in [Mode::Train, Mode::Eval] {
        let mut fused = fusable_network(3);
        let mut unfused = fusable_network(3);
        unfused.set_fusion(false);
        let x = random_array(&mut rng, [3, 2, 6, 6], 1.0);

        let y_fused = fused.forward(x.clone(), mode).unwrap();
        let y_unfused = unfused.forward(x, mode).unwrap();
        assert_eq!(y_fused, y_unfused, "{mode:?}: outputs");

        let dy = random_array(&mut rng, [3, 1, 2, 2], 1.0);
        let dx_fused =
            fused.backward(dy.clone(), ParamGrads::Accumulate, InputGrad::Compute).unwrap();
        let dx_unfused = unfused.backward(dy, ParamGrads::Accumulate, InputGrad::Compute).unwrap();
        assert_eq!(dx_fused, dx_unfused, "{mode:?}: input gradients");
        assert_eq!(fused.grads(), unfused.grads(), "{mode:?}: parameter gradients");
        let buffers = |n: &Network| n.named_buffers().map(|b| format!("{b:?}")).collect::<Vec<_>>();
        assert_eq!(buffers(&fused), buffers(&unfused), "{mode:?}: running statistics");

        // The fused network really fused: its ReLU at index 2 cached nothing of its own, so a
        // backward pass starting there must be refused, while the unfused network runs it.
        let dy2 = Array4::<f32>::ones([3, 4, 6, 6]);
        let err = fused.backward_range(2..3, dy2.clone(), ParamGrads::Skip, InputGrad::Compute);
        assert!(err.is_err(), "{mode:?}: a range splitting a fused pair");
        assert!(unfused.backward_range(2..3, dy2, ParamGrads::Skip, InputGrad::Compute).is_ok());
    }
}

/// Forward and backward of a BatchNorm + ReLU network in a pool of `threads` threads.
fn run_in_pool(threads: usize) -> (Array4<f32>, Option<Array4<f32>>, Vec<f32>, Vec<String>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut rng = Rng::from_seed(5);
        let layers: Vec<Box<dyn Layer + Send + Sync>> =
            vec![Box::new(BatchNorm::new2d(6).unwrap()), Box::new(Relu::new())];
        let mut net = Network::new("main", layers, &mut rng, Init::Dcgan).unwrap();
        let x = random_array(&mut rng, [32, 6, 24, 24], 3.0);
        let y = net.forward(x, Mode::Train).unwrap();
        let dy = random_array(&mut rng, [32, 6, 24, 24], 1.0);
        let dx = net.backward(dy, ParamGrads::Accumulate, InputGrad::Compute).unwrap();
        let buffers = net.named_buffers().map(|b| format!("{b:?}")).collect();
        (y, dx, net.grads().to_vec(), buffers)
    })
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let one = run_in_pool(1);
    for threads in [2, 7] {
        let other = run_in_pool(threads);
        assert_eq!(one.0, other.0, "{threads} threads: output");
        assert_eq!(one.1, other.1, "{threads} threads: input gradient");
        assert_eq!(one.2, other.2, "{threads} threads: parameter gradients");
        assert_eq!(one.3, other.3, "{threads} threads: running statistics");
    }
}
