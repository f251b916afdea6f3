//! The tricks' layers against `f64` references written from Salimans et al. 2016. Minibatch
//! discrimination and virtual batch normalisation are checked forward and in every gradient
//! with central finite differences, and against the closed forms for identical samples and for
//! a reference batch equal to the batch. Feature matching's loss, historical averaging, and
//! bad shapes and options are checked too.

mod tricks_common;

use dcgan::layers::{BatchNorm, Layer, Mode};
use dcgan::rng::Rng;
use dcgan::tricks::{
    feature_matching_loss, HistoricalAverage, MinibatchDiscrimination, VirtualBatchNorm,
};
use dcgan::Error;
use ndarray::Array4;
use proptest::prelude::*;
use tricks_common::*;

/// Checks a layer's forward pass and both gradients against `reference` (a function of the
/// parameters and input in `f64`), with the scalar loss `sum(y * weights)`.
fn check_layer(
    layer: &mut dyn Layer,
    params: &[f32],
    x: &Array4<f32>,
    reference: &dyn Fn(&[f64], &T64) -> T64,
    rng: &mut Rng,
) -> Result<(), TestCaseError> {
    let (p64, x64) = (to64(params), T64::from_f32(x));
    let expected = reference(&p64, &x64);
    let y = layer.forward(params, x.clone(), Mode::Train).unwrap();
    let y_flat: Vec<f32> = y.iter().copied().collect();
    assert_close("forward", &y_flat, &expected.data, 1e-5, 1e-6);

    let weights = random_vec(rng, y.len(), 1.0);
    let dy = Array4::from_shape_vec(y.raw_dim(), weights.clone()).unwrap();
    let w64 = to64(&weights);
    let mut grads = vec![0.0f32; params.len()];
    let dx = layer.backward(params, Some(&mut grads), dy, true).unwrap().unwrap();

    let all_x: Vec<usize> = (0..x64.data.len()).collect();
    let fd_x = central_diff(&x64.data, &all_x, |xs| {
        dot(&reference(&p64, &T64 { shape: x64.shape, data: xs.to_vec() }), &w64)
    });
    let dx_flat: Vec<f32> = dx.iter().copied().collect();
    assert_close("input gradient", &dx_flat, &fd_x, 1e-4, 1e-5);

    let all_p: Vec<usize> = (0..p64.len()).collect();
    let fd_p = central_diff(&p64, &all_p, |ps| dot(&reference(ps, &x64), &w64));
    assert_close("parameter gradient", &grads, &fd_p, 1e-4, 1e-5);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn minibatch_matches_reference(
        n in 1usize..5, a in 1usize..6, b in 1usize..4, c in 1usize..4,
        include_self: bool, seed: u64,
    ) {
        let mut rng = Rng::from_seed(seed);
        let mut layer = MinibatchDiscrimination::new(a, b, c, include_self).unwrap();
        // Weights of 0.3 keep the L1 distances of order 1, so exp(-distance) is not negligible.
        let params = random_vec(&mut rng, a * b * c, 0.3);
        let x = random_array(&mut rng, [n, a, 1, 1], 1.0);
        let reference = |p: &[f64], x: &T64| minibatch64(p, x, b, c, include_self);
        check_layer(&mut layer, &params, &x, &reference, &mut rng)?;
    }

    #[test]
    fn vbn_matches_reference(
        m in 1usize..4, n in 1usize..3, c in 1usize..3, h in 1usize..3, w in 1usize..3,
        seed: u64,
    ) {
        let mut rng = Rng::from_seed(seed);
        let mut layer = VirtualBatchNorm::new(c, m).unwrap();
        let mut params = random_vec(&mut rng, 2 * c, 0.5);
        params[..c].iter_mut().for_each(|g| *g += 1.0);
        let x = random_array(&mut rng, [m + n, c, h, w], 1.5);
        let reference = |p: &[f64], x: &T64| vbn64(p, x, m, 1e-5);
        check_layer(&mut layer, &params, &x, &reference, &mut rng)?;
    }
}

#[test]
fn minibatch_on_identical_samples_counts_the_batch() {
    // Every M_i is equal, so every c_b(i, j) = exp(0) = 1 and o_b = n - 1, or n with self.
    let (n, a, b, c) = (5, 3, 4, 2);
    let mut rng = Rng::from_seed(3);
    let params = random_vec(&mut rng, a * b * c, 1.0);
    let row = random_vec(&mut rng, a, 1.0);
    let x = Array4::from_shape_fn([n, a, 1, 1], |(_, k, _, _)| row[k]);
    for (include_self, expected) in [(false, (n - 1) as f32), (true, n as f32)] {
        let mut layer = MinibatchDiscrimination::new(a, b, c, include_self).unwrap();
        let y = layer.forward(&params, x.clone(), Mode::Train).unwrap();
        for i in 0..n {
            for k in 0..a {
                assert_eq!(y[[i, k, 0, 0]], row[k], "features pass through");
            }
            for k in 0..b {
                assert_eq!(y[[i, a + k, 0, 0]], expected, "o_{k} of sample {i}");
            }
        }
    }
    // A single sample has no other sample to compare with.
    let mut layer = MinibatchDiscrimination::new(a, b, c, false).unwrap();
    let single = Array4::from_shape_vec([1, a, 1, 1], row.clone()).unwrap();
    let y = layer.forward(&params, single, Mode::Train).unwrap();
    assert!((0..b).all(|k| y[[0, a + k, 0, 0]] == 0.0));
}

#[test]
fn minibatch_rejects_bad_sizes() {
    for (a, b, c, name) in
        [(0, 2, 2, "in_features (A)"), (2, 0, 2, "kernels (B)"), (2, 2, 0, "kernel_dim (C)")]
    {
        let err = MinibatchDiscrimination::new(a, b, c, false).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: n, .. } if n == name), "{err}");
    }
    let mut layer = MinibatchDiscrimination::new(3, 2, 2, false).unwrap();
    let err = layer.forward(&[0.0; 12], Array4::zeros([2, 4, 1, 1]), Mode::Train).unwrap_err();
    assert!(err.to_string().contains("[n, 3, 1, 1]"), "{err}");
    assert!(layer.forward(&[0.0; 11], Array4::zeros([2, 3, 1, 1]), Mode::Train).is_err());
    assert!(MinibatchDiscrimination::new(usize::MAX, 2, 2, false).is_err());
}

/// Runs BatchNorm in training mode on `x` and back-propagates `dy`: output and input gradient.
fn batch_norm(params: &[f32], x: &Array4<f32>, dy: &Array4<f32>) -> (Array4<f32>, Array4<f32>) {
    let mut bn = BatchNorm::new2d(x.shape()[1]).unwrap();
    let y = bn.forward(params, x.clone(), Mode::Train).unwrap();
    let mut grads = vec![0.0; params.len()];
    let dx = bn.backward(params, Some(&mut grads), dy.clone(), true).unwrap().unwrap();
    (y, dx)
}

#[test]
fn vbn_batch_as_reference_is_batch_norm() {
    let (m, c, h, w) = (4, 3, 2, 3);
    let mut rng = Rng::from_seed(9);
    let batch = random_array(&mut rng, [m, c, h, w], 2.0);
    let mut params = random_vec(&mut rng, 2 * c, 0.5);
    params[..c].iter_mut().for_each(|g| *g += 1.0);
    let input = ndarray::concatenate(ndarray::Axis(0), &[batch.view(), batch.view()]).unwrap();
    let mut vbn = VirtualBatchNorm::new(c, m).unwrap();
    let y = vbn.forward(&params, input, Mode::Train).unwrap();

    // The reference rows: BatchNorm in training mode on the batch.
    let dy_ref = random_array(&mut rng, [m, c, h, w], 1.0);
    let (bn_y, bn_dx) = batch_norm(&params, &batch, &dy_ref);
    let flat = |a: ndarray::ArrayView4<f32>| a.iter().copied().collect::<Vec<f32>>();
    let bn_y64: Vec<f64> = bn_y.iter().map(|&v| v as f64).collect();
    assert_close(
        "reference rows",
        &flat(y.slice(ndarray::s![..m, .., .., ..])),
        &bn_y64,
        1e-5,
        1e-6,
    );

    // Example i: BatchNorm on the m + 1 samples [batch; x_i], its last row.
    for i in 0..m {
        let x_i = batch.slice(ndarray::s![i..i + 1, .., .., ..]);
        let joined = ndarray::concatenate(ndarray::Axis(0), &[batch.view(), x_i]).unwrap();
        let (bn_y, _) = batch_norm(&params, &joined, &Array4::zeros(joined.raw_dim()));
        let expected: Vec<f64> =
            bn_y.slice(ndarray::s![m.., .., .., ..]).iter().map(|&v| v as f64).collect();
        let got = flat(y.slice(ndarray::s![m + i..m + i + 1, .., .., ..]));
        assert_close(&format!("example {i}"), &got, &expected, 1e-5, 1e-6);
    }

    // Gradients: with zero gradient on the examples' outputs, the reference rows get exactly
    // BatchNorm's input gradient.
    let zeros = Array4::<f32>::zeros([m, c, h, w]);
    let dy = ndarray::concatenate(ndarray::Axis(0), &[dy_ref.view(), zeros.view()]).unwrap();
    let dx = vbn.backward(&params, None, dy, true).unwrap().unwrap();
    let bn_dx64: Vec<f64> = bn_dx.iter().map(|&v| v as f64).collect();
    assert_close(
        "reference gradient",
        &flat(dx.slice(ndarray::s![..m, .., .., ..])),
        &bn_dx64,
        1e-4,
        1e-6,
    );
    assert!(dx.slice(ndarray::s![m.., .., .., ..]).iter().all(|&v| v == 0.0));

    // An example's own path: with gradient only on example i's output, its input gradient
    // equals BatchNorm's for the last row of [batch; x_i].
    let i = 2;
    let mut dy = Array4::<f32>::zeros([2 * m, c, h, w]);
    let g = random_array(&mut rng, [1, c, h, w], 1.0);
    dy.slice_mut(ndarray::s![m + i..m + i + 1, .., .., ..]).assign(&g);
    vbn.forward(
        &params,
        ndarray::concatenate(ndarray::Axis(0), &[batch.view(), batch.view()]).unwrap(),
        Mode::Train,
    )
    .unwrap();
    let dx = vbn.backward(&params, None, dy, true).unwrap().unwrap();
    let x_i = batch.slice(ndarray::s![i..i + 1, .., .., ..]);
    let joined = ndarray::concatenate(ndarray::Axis(0), &[batch.view(), x_i]).unwrap();
    let mut bn_dy = Array4::<f32>::zeros(joined.raw_dim());
    bn_dy.slice_mut(ndarray::s![m.., .., .., ..]).assign(&g);
    let (_, bn_dx) = batch_norm(&params, &joined, &bn_dy);
    let expected: Vec<f64> =
        bn_dx.slice(ndarray::s![m.., .., .., ..]).iter().map(|&v| v as f64).collect();
    assert_close(
        "own path",
        &flat(dx.slice(ndarray::s![m + i..m + i + 1, .., .., ..])),
        &expected,
        1e-4,
        1e-6,
    );
}

#[test]
fn vbn_rejects_bad_shapes() {
    assert!(matches!(
        VirtualBatchNorm::new(0, 2),
        Err(Error::InvalidArgument { name: "num_features", .. })
    ));
    assert!(matches!(
        VirtualBatchNorm::new(2, 0),
        Err(Error::InvalidArgument { name: "reference_size", .. })
    ));
    let mut layer = VirtualBatchNorm::new(2, 3).unwrap();
    let err = layer.forward(&[1.0; 4], Array4::zeros([3, 2, 2, 2]), Mode::Train).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "input rows", .. }), "{err}");
    assert!(layer.forward(&[1.0; 4], Array4::zeros([4, 3, 2, 2]), Mode::Train).is_err());
    assert!(layer.backward(&[1.0; 4], None, Array4::zeros([4, 2, 2, 2]), true).is_err());
    let err = layer.forward(&[1.0; 4], Array4::zeros([4, 2, 0, 2]), Mode::Train).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "input shape", .. }), "{err}");
}

#[test]
fn feature_matching_gradient_matches_finite_differences() {
    let mut rng = Rng::from_seed(21);
    let real = random_array(&mut rng, [3, 2, 2, 1], 1.0);
    let fake = random_array(&mut rng, [4, 2, 2, 1], 1.0);
    let out = feature_matching_loss(&real, &fake).unwrap();

    // ||mean real - mean fake||^2 written out in f64.
    let mean = |x: &[f64], n: usize| -> Vec<f64> {
        (0..4).map(|j| (0..n).map(|i| x[i * 4 + j]).sum::<f64>() / n as f64).collect()
    };
    let real64 = to64(real.as_slice().unwrap());
    let loss = |f: &[f64]| -> f64 {
        mean(&real64, 3).iter().zip(mean(f, 4)).map(|(r, f)| (r - f).powi(2)).sum()
    };
    let fake64 = to64(fake.as_slice().unwrap());
    assert!((out.loss - loss(&fake64)).abs() < 1e-12);
    let fd = central_diff(&fake64, &(0..16).collect::<Vec<_>>(), loss);
    assert_close("feature matching gradient", out.grad.as_slice().unwrap(), &fd, 1e-5, 1e-8);

    let err = feature_matching_loss(&real, &Array4::zeros([4, 2, 1, 2])).unwrap_err();
    assert!(err.to_string().contains("generated feature shape"), "{err}");
    assert!(feature_matching_loss(&Array4::zeros([0, 2, 2, 1]), &fake).is_err());
}

#[test]
fn historical_average_is_the_mean_of_past_parameters() {
    let thetas = [vec![1.0f32, -2.0, 0.5], vec![3.0, 0.0, 0.5], vec![-1.0, 4.0, 2.0]];
    let mut history = HistoricalAverage::new(3);
    let weight = 0.25;
    for (t, theta) in thetas.iter().enumerate() {
        let mut grads = vec![1.0f32; 3];
        let penalty = history.apply(theta, &mut grads, weight).unwrap();
        let count = (t + 1) as f64;
        let mean: Vec<f64> = (0..3)
            .map(|j| thetas[..=t].iter().map(|th| th[j] as f64).sum::<f64>() / count)
            .collect();
        let expected: f64 =
            weight * (0..3).map(|j| (theta[j] as f64 - mean[j]).powi(2)).sum::<f64>();
        assert!((penalty - expected).abs() < 1e-6, "step {t}: {penalty} vs {expected}");
        // d/dtheta of weight ||theta - mean||^2 with the mean held constant.
        let fd = central_diff(&to64(theta), &[0, 1, 2], |th| {
            weight * (0..3).map(|j| (th[j] - mean[j]).powi(2)).sum::<f64>()
        });
        let added: Vec<f32> = grads.iter().map(|g| g - 1.0).collect();
        assert_close(&format!("step {t} gradient"), &added, &fd, 1e-6, 1e-6);
        assert_eq!(history.count, t as u64 + 1);
    }
    assert!(history.apply(&[0.0; 2], &mut [0.0; 3], weight).is_err());
}
