//! MaxPool2d, the softmax cross-entropy and the whole classifier against `f64` references and
//! central finite differences.
//!
//! Max pooling is piecewise linear, so finite differences are exact only away from ties. The
//! inputs are therefore distinct multiples of 0.01 in random order: a step of `1e-6` never
//! changes which element of a window is largest.

mod layers_common;

use dcgan::eval::{Classifier, ClassifierConfig, IMAGE_SIZE, NUM_CLASSES};
use dcgan::kernels::Conv2dSpec;
use dcgan::layers::{InputGrad, Layer, MaxPool2d, Mode, ParamGrads};
use dcgan::loss::softmax_cross_entropy;
use dcgan::rng::Rng;
use dcgan::Error;
use layers_common::*;
use ndarray::Array4;
use proptest::prelude::*;

/// Max pooling in `f64`, written from the definition: every window position, padding skipped.
fn max_pool_ref(x: &T64, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> T64 {
    let [n, c, h, w] = x.shape;
    let out_h = (h + 2 * padding[0] - kernel[0]) / stride[0] + 1;
    let out_w = (w + 2 * padding[1] - kernel[1]) / stride[1] + 1;
    let mut data = Vec::with_capacity(n * c * out_h * out_w);
    for plane in 0..n * c {
        for oy in 0..out_h {
            for ox in 0..out_w {
                let mut best = f64::NEG_INFINITY;
                for ky in 0..kernel[0] {
                    for kx in 0..kernel[1] {
                        let iy = (oy * stride[0] + ky) as isize - padding[0] as isize;
                        let ix = (ox * stride[1] + kx) as isize - padding[1] as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            best = best.max(x.data[plane * h * w + iy as usize * w + ix as usize]);
                        }
                    }
                }
                data.push(best);
            }
        }
    }
    T64 { shape: [n, c, out_h, out_w], data }
}

/// Returns an array of distinct multiples of 0.01 centred on zero, in random order.
fn distinct_array(rng: &mut Rng, shape: [usize; 4]) -> Array4<f32> {
    let len: usize = shape.iter().product();
    let mut values: Vec<f32> = (0..len).map(|i| (i as f32 - len as f32 / 2.0) * 0.01).collect();
    rng.shuffle(&mut values);
    Array4::from_shape_vec(shape, values).unwrap()
}

/// Checks MaxPool2d's output and input gradient against the reference on one input.
fn check_pool(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], shape: [usize; 4]) {
    let mut rng = Rng::from_seed(shape.iter().product::<usize>() as u64);
    let mut pool = MaxPool2d::new(kernel, stride, padding).unwrap();
    let x = distinct_array(&mut rng, shape);
    let x64 = T64::from_f32(&x);
    let what = format!("{} on {shape:?}", pool.describe());

    let y = pool.forward(&[], x, Mode::Train).unwrap();
    let y_ref = max_pool_ref(&x64, kernel, stride, padding);
    assert_eq!(y.shape(), &y_ref.shape[..], "{what}: output shape");
    assert_eq!(pool.output_shape(shape).unwrap(), y_ref.shape, "{what}: output_shape()");
    // A maximum is one of the inputs, so the output is exact.
    assert_close(&format!("{what} output"), y.as_slice().unwrap(), &y_ref.data, 0.0, 0.0);

    let cotangent = random_array(&mut rng, y_ref.shape, 1.0);
    let w64 = to64(cotangent.as_slice().unwrap());
    let dx = pool.backward(&[], None, cotangent.clone(), true).unwrap().unwrap();
    let all: Vec<usize> = (0..x64.data.len()).collect();
    let fd = central_diff(&x64.data, &all, |xv| {
        let xt = T64 { shape, data: xv.to_vec() };
        dot(&max_pool_ref(&xt, kernel, stride, padding), &w64)
    });
    assert_close(&format!("{what} input gradient"), dx.as_slice().unwrap(), &fd, 1e-6, 1e-6);
    assert!(pool.backward(&[], None, cotangent, false).unwrap().is_none(), "{what}: no dx");
}

#[test]
fn pool_common_shapes() {
    check_pool([2, 2], [2, 2], [0, 0], [2, 3, 8, 8]);
    check_pool([2, 2], [2, 2], [0, 0], [1, 1, 7, 5]); // odd sizes drop the last row/column
    check_pool([3, 3], [1, 1], [1, 1], [2, 2, 5, 6]); // overlapping windows accumulate
    check_pool([3, 2], [2, 1], [1, 0], [1, 2, 7, 4]);
    check_pool([1, 1], [1, 1], [0, 0], [1, 2, 3, 3]);
    check_pool([4, 4], [4, 4], [2, 2], [1, 1, 6, 6]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pool_matches_reference(
        k_h in 1usize..4, k_w in 1usize..4, s_h in 1usize..4, s_w in 1usize..4,
        pad in 0usize..2, n in 1usize..3, c in 1usize..3, extra_h in 0usize..5, extra_w in 0usize..5,
    ) {
        let padding = [pad.min(k_h / 2), pad.min(k_w / 2)];
        check_pool([k_h, k_w], [s_h, s_w], padding, [n, c, k_h + extra_h, k_w + extra_w]);
    }
}

#[test]
fn pool_ties_and_nan_pick_as_pytorch() {
    // On ties the first element of the window in row-major order gets the gradient.
    let mut pool = MaxPool2d::square(2).unwrap();
    let x = Array4::from_elem([1, 1, 2, 4], 1.0f32);
    pool.forward(&[], x, Mode::Eval).unwrap();
    let dx = pool.backward(&[], None, Array4::from_elem([1, 1, 1, 2], 1.0), true).unwrap().unwrap();
    assert_eq!(dx.as_slice().unwrap(), &[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);

    // A NaN anywhere in a window becomes its output.
    let x = Array4::from_shape_vec([1, 1, 2, 2], vec![1.0, f32::NAN, 5.0, 2.0]).unwrap();
    let y = pool.forward(&[], x, Mode::Eval).unwrap();
    assert!(y[[0, 0, 0, 0]].is_nan());
}

#[test]
fn pool_rejects_bad_hyper_parameters_and_inputs() {
    assert!(matches!(MaxPool2d::new([0, 2], [1, 1], [0, 0]), Err(Error::InvalidArgument { .. })));
    assert!(matches!(MaxPool2d::new([2, 2], [1, 0], [0, 0]), Err(Error::InvalidArgument { .. })));
    assert!(matches!(MaxPool2d::new([2, 2], [2, 2], [2, 0]), Err(Error::InvalidArgument { .. })));
    let mut pool = MaxPool2d::new([3, 3], [1, 1], [0, 0]).unwrap();
    assert!(matches!(pool.output_shape([1, 1, 2, 5]), Err(Error::InvalidArgument { .. })));
    let small = Array4::<f32>::zeros([1, 1, 2, 2]);
    assert!(matches!(pool.forward(&[], small, Mode::Train), Err(Error::InvalidArgument { .. })));
    assert!(matches!(pool.output_shape([usize::MAX, 4, 3, 3]), Err(Error::Overflow { .. })));
    assert!(matches!(pool.output_shape([1 << 30, 4, 3, 3]), Err(Error::InvalidArgument { .. })));
    // Backward before forward, and a gradient of the wrong shape.
    let mut fresh = MaxPool2d::square(2).unwrap();
    let dy = Array4::<f32>::zeros([1, 1, 1, 1]);
    assert!(matches!(
        fresh.backward(&[], None, dy.clone(), true),
        Err(Error::InvalidArgument { .. })
    ));
    fresh.forward(&[], Array4::zeros([1, 1, 4, 4]), Mode::Train).unwrap();
    assert!(matches!(fresh.backward(&[], None, dy, true), Err(Error::InvalidArgument { .. })));
}

/// Mean softmax cross-entropy in `f64` from the definition `-ln(exp(x_y) / sum exp(x))`.
fn cross_entropy64(logits: &[f64], labels: &[usize], classes: usize) -> f64 {
    let n = labels.len();
    let mut total = 0.0;
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        total -= ((row[label] - max).exp() / sum).ln();
    }
    total / n as f64
}

#[test]
fn cross_entropy_matches_definition_and_finite_differences() {
    let mut rng = Rng::from_seed(7);
    for (n, classes) in [(1, 1), (1, 10), (5, 3), (16, 10)] {
        let logits = random_array(&mut rng, [n, classes, 1, 1], 4.0);
        let labels: Vec<usize> = (0..n).map(|_| rng.below(classes)).collect();
        let out = softmax_cross_entropy(&logits, &labels).unwrap();
        let l64 = to64(logits.as_slice().unwrap());
        let expected = cross_entropy64(&l64, &labels, classes);
        assert!((out.loss - expected).abs() <= 1e-12, "n {n} classes {classes}: loss");
        let all: Vec<usize> = (0..l64.len()).collect();
        let fd = central_diff(&l64, &all, |v| cross_entropy64(v, &labels, classes));
        assert_close("cross-entropy gradient", out.grad.as_slice().unwrap(), &fd, 1e-6, 1e-8);
    }
}

#[test]
fn cross_entropy_stays_finite_for_large_logits() {
    let logits = Array4::from_shape_vec([2, 3, 1, 1], vec![1e4, -1e4, 0.0, 0.0, 3e4, 3e4]).unwrap();
    let out = softmax_cross_entropy(&logits, &[1, 2]).unwrap();
    // Sample 0: 2e4 nats; sample 1: ln 2.
    let expected = (2e4 + std::f64::consts::LN_2) / 2.0;
    assert!((out.loss - expected).abs() <= 1e-9 * expected, "{}", out.loss);
    assert!(out.grad.iter().all(|g| g.is_finite()));
    assert_eq!(out.grad[[0, 1, 0, 0]], -0.5);
}

#[test]
fn cross_entropy_rejects_bad_input() {
    let logits = Array4::<f32>::zeros([2, 3, 1, 1]);
    assert!(matches!(softmax_cross_entropy(&logits, &[0]), Err(Error::LengthMismatch { .. })));
    assert!(matches!(softmax_cross_entropy(&logits, &[0, 3]), Err(Error::InvalidArgument { .. })));
    let images = Array4::<f32>::zeros([2, 3, 2, 1]);
    assert!(matches!(softmax_cross_entropy(&images, &[0, 0]), Err(Error::InvalidArgument { .. })));
    let empty = Array4::<f32>::zeros([0, 3, 1, 1]);
    assert!(matches!(softmax_cross_entropy(&empty, &[]), Err(Error::InvalidArgument { .. })));
    let mut nan = logits.clone();
    nan[[1, 2, 0, 0]] = f32::NAN;
    assert!(matches!(softmax_cross_entropy(&nan, &[0, 0]), Err(Error::NonFinite { .. })));
}

/// One step of the classifier's `f64` reference.
enum RefStep {
    Layer(RefLayer),
    MaxPool2,
}

/// Returns the classifier's layout in `f64`, without its dropout (zero in this test).
fn classifier_ref(width: usize, hidden: usize) -> Vec<RefStep> {
    let conv = |c_in, c_out| RefLayer::Conv2d {
        spec: Conv2dSpec::new(c_in, c_out, 3).padding(1),
        bias: true,
    };
    let flat = 2 * width * (IMAGE_SIZE / 8) * (IMAGE_SIZE / 8);
    let linear = |i, o| RefLayer::Linear { in_features: i, out_features: o, bias: true };
    vec![
        RefStep::Layer(conv(1, width)),
        RefStep::Layer(RefLayer::Relu),
        RefStep::MaxPool2,
        RefStep::Layer(conv(width, 2 * width)),
        RefStep::Layer(RefLayer::Relu),
        RefStep::MaxPool2,
        RefStep::Layer(conv(2 * width, 2 * width)),
        RefStep::Layer(RefLayer::Relu),
        RefStep::MaxPool2,
        RefStep::Layer(RefLayer::Flatten),
        RefStep::Layer(linear(flat, hidden)),
        RefStep::Layer(RefLayer::Relu),
        RefStep::Layer(linear(hidden, NUM_CLASSES)),
    ]
}

fn classifier_loss64(steps: &[RefStep], p: &[f64], x: &T64, labels: &[usize]) -> f64 {
    let mut x = x.clone();
    let mut offset = 0;
    for step in steps {
        x = match step {
            RefStep::Layer(layer) => {
                let len = layer.num_params();
                let y = layer.forward(&p[offset..offset + len], &x);
                offset += len;
                y
            }
            RefStep::MaxPool2 => max_pool_ref(&x, [2, 2], [2, 2], [0, 0]),
        };
    }
    assert_eq!(offset, p.len(), "parameter count");
    cross_entropy64(&x.data, labels, NUM_CLASSES)
}

#[test]
fn classifier_gradients_match_finite_differences() {
    let (width, hidden, n) = (2, 6, 3);
    let config = ClassifierConfig { width, hidden, dropout: 0.0 };
    let mut classifier = Classifier::new(config, 11).unwrap();
    let mut rng = Rng::from_seed(12);
    let x = random_array(&mut rng, [n, 1, IMAGE_SIZE, IMAGE_SIZE], 1.0);
    let labels = vec![3, 0, 9];

    // Analytic gradients w.r.t. every parameter and the input.
    let network = classifier.network_mut();
    let logits = network.forward(x.clone(), Mode::Train).unwrap();
    let loss = softmax_cross_entropy(&logits, &labels).unwrap();
    network.zero_grad();
    let dx = network.backward(loss.grad, ParamGrads::Accumulate, InputGrad::Compute).unwrap();
    let dx = dx.unwrap();

    let steps = classifier_ref(width, hidden);
    let p64 = to64(classifier.network().params());
    let x64 = T64::from_f32(&x);
    let loss64 = classifier_loss64(&steps, &p64, &x64, &labels);
    assert!((loss.loss - loss64).abs() <= 1e-5 * loss64, "loss {} vs {loss64}", loss.loss);

    let all_p: Vec<usize> = (0..p64.len()).collect();
    let fd_p = central_diff(&p64, &all_p, |p| classifier_loss64(&steps, p, &x64, &labels));
    assert_close("classifier parameter gradient", classifier.network().grads(), &fd_p, 1e-4, 1e-7);

    // The input gradient at a sample of pixels (all 3072 would take long in f64 loops).
    let pixels: Vec<usize> = (0..x64.data.len()).step_by(37).collect();
    let fd_x = central_diff(&x64.data, &pixels, |xv| {
        let xt = T64 { shape: x64.shape, data: xv.to_vec() };
        classifier_loss64(&steps, &p64, &xt, &labels)
    });
    let dx_sampled: Vec<f32> = pixels.iter().map(|&i| dx.as_slice().unwrap()[i]).collect();
    assert_close("classifier input gradient", &dx_sampled, &fd_x, 1e-4, 1e-7);
}
