//! Losses against the `f64` textbook formula and finite differences; optimisers against scalar
//! `f64` transcriptions of PyTorch's update rules.

mod layers_common;

use dcgan::loss::{bce_with_logits, mean_probability, GanLoss};
use dcgan::optim::{
    Adam, AdamConfig, AdamState, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
use dcgan::rng::Rng;
use dcgan::Error;
use layers_common::*;
use ndarray::Array4;

fn logits(values: &[f32]) -> Array4<f32> {
    Array4::from_shape_vec([values.len(), 1, 1, 1], values.to_vec()).unwrap()
}

#[test]
fn bce_matches_reference_and_finite_differences() {
    let mut rng = Rng::from_seed(1);
    let xs = random_vec(&mut rng, 7, 6.0);
    for target in [0.0f32, 0.9, 1.0] {
        let out = bce_with_logits(&logits(&xs), target).unwrap();
        let x64 = to64(&xs);
        let t = target as f64;
        let expected = bce64(&x64, t);
        assert!((out.loss - expected).abs() < 1e-12, "target {target}: {} vs {expected}", out.loss);
        let all: Vec<usize> = (0..xs.len()).collect();
        let fd = central_diff(&x64, &all, |v| bce64(v, t));
        assert_close("BCE gradient", out.grad.as_slice().unwrap(), &fd, 1e-6, 1e-9);
    }
}

#[test]
fn bce_is_finite_at_extreme_logits() {
    // Confidently wrong at +-100: loss 100 each, gradient +-1 scaled by 1/n for the mean.
    let out = bce_with_logits(&logits(&[100.0, 100.0]), 0.0).unwrap();
    assert!((out.loss - 100.0).abs() < 1e-12, "loss {}", out.loss);
    assert_eq!(out.grad.as_slice().unwrap(), &[0.5, 0.5]);
    let out = bce_with_logits(&logits(&[-100.0, -100.0, -100.0, -100.0]), 1.0).unwrap();
    assert!((out.loss - 100.0).abs() < 1e-12, "loss {}", out.loss);
    assert_eq!(out.grad.as_slice().unwrap(), &[-0.25; 4]);

    // Confidently right: loss log1p(exp(-100)) ~ 3.7e-44, gradient about zero, no NaN.
    for (x, t) in [(100.0f32, 1.0f32), (-100.0, 0.0)] {
        let out = bce_with_logits(&logits(&[x]), t).unwrap();
        let expected = (-100.0f64).exp().ln_1p();
        assert!((out.loss - expected).abs() < 1e-50, "{x}: loss {} vs {expected}", out.loss);
        let g = out.grad[[0, 0, 0, 0]];
        assert!(g.is_finite(), "{x}: gradient {g}");
        assert!(g.abs() < 1e-40, "{x}: gradient {g}");
    }

    // Far beyond: 1e30 and the largest f32.
    for x in [1e30f32, f32::MAX, -f32::MAX] {
        let out = bce_with_logits(&logits(&[x]), 0.5).unwrap();
        assert!(out.loss.is_finite(), "{x}: loss {}", out.loss);
        assert_eq!(out.grad[[0, 0, 0, 0]], if x > 0.0 { 0.5 } else { -0.5 }, "{x}");
    }
}

#[test]
fn bce_rejects_bad_input() {
    assert!(matches!(
        bce_with_logits(&logits(&[f32::INFINITY]), 1.0),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(bce_with_logits(&logits(&[0.0]), -0.1), Err(Error::InvalidArgument { .. })));
    assert!(bce_with_logits(&Array4::zeros([0, 1, 1, 1]), 1.0).is_err());
    assert!(GanLoss::Bce { real_label: 1.5 }.validate().is_err());
}

#[test]
fn gan_loss_terms_use_their_targets() {
    let xs = [0.3f32, -1.2, 2.5];
    let loss = GanLoss::Bce { real_label: 0.9 };
    let x64 = to64(&xs);
    let real = loss.discriminator_real(&logits(&xs)).unwrap().loss;
    let fake = loss.discriminator_fake(&logits(&xs)).unwrap().loss;
    let gen = loss.generator(&logits(&xs)).unwrap().loss;
    assert!((real - bce64(&x64, 0.9f32 as f64)).abs() < 1e-12, "real term, smoothed label");
    assert!((fake - bce64(&x64, 0.0)).abs() < 1e-12, "fake term");
    assert!((gen - bce64(&x64, 1.0)).abs() < 1e-12, "generator term, unsmoothed");

    let p: f64 = x64.iter().map(|x| 1.0 / (1.0 + (-x).exp())).sum::<f64>() / 3.0;
    assert!((mean_probability(&logits(&xs)) - p).abs() < 1e-12);
}

/// PyTorch's Adam for one element, in f64.
struct AdamRef {
    m: f64,
    v: f64,
    t: i32,
}

impl AdamRef {
    fn step(&mut self, p: f64, g: f64, c: &AdamConfig) -> f64 {
        let g = g + c.weight_decay * p;
        self.t += 1;
        self.m = c.betas.0 * self.m + (1.0 - c.betas.0) * g;
        self.v = c.betas.1 * self.v + (1.0 - c.betas.1) * g * g;
        let bc1 = 1.0 - c.betas.0.powi(self.t);
        let bc2 = 1.0 - c.betas.1.powi(self.t);
        p - c.lr / bc1 * self.m / (self.v.sqrt() / bc2.sqrt() + c.eps)
    }
}

#[test]
fn adam_adds_eps_after_bias_corrected_sqrt() {
    // At step 1 the bias corrections give m_hat = g and sqrt(v_hat) = |g|, so the update is
    // lr * g / (|g| + eps): lr / 11 for g = 1e-9, eps = 1e-8. Adding eps before the correction
    // (sqrt(v) + eps, then scaling by sqrt(1 - beta2) / (1 - beta1)) would give about lr / 320.
    let config = AdamConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 };
    let mut adam = Adam::new(1, config).unwrap();
    let mut p = [0.0f32];
    adam.step(&mut p, &[1e-9]).unwrap();
    let expected = -1e-3 * 1e-9 / (1e-9 + 1e-8);
    assert!(((p[0] as f64) - expected).abs() < 1e-6 * expected.abs(), "{} vs {expected}", p[0]);
}

#[test]
fn adam_matches_reference_over_steps() {
    let mut rng = Rng::from_seed(2);
    let len = 37; // several vectors and a tail
    let config = AdamConfig { lr: 1e-2, betas: (0.5, 0.999), eps: 1e-8, weight_decay: 0.1 };
    let mut adam = Adam::new(len, config).unwrap();
    let mut params = random_vec(&mut rng, len, 1.0);
    let mut expected = to64(&params);
    let mut refs: Vec<AdamRef> = (0..len).map(|_| AdamRef { m: 0.0, v: 0.0, t: 0 }).collect();
    for _ in 0..5 {
        let grads = random_vec(&mut rng, len, 2.0);
        adam.step(&mut params, &grads).unwrap();
        for ((e, r), g) in expected.iter_mut().zip(&mut refs).zip(&grads) {
            *e = r.step(*e, *g as f64, &config);
        }
    }
    assert_close("Adam parameters", &params, &expected, 0.0, 2e-6);
    assert_eq!(adam.state().step, 5);
}

#[test]
fn adam_state_round_trips_and_is_checked() {
    let mut rng = Rng::from_seed(3);
    let config = AdamConfig::dcgan();
    let mut a = Adam::new(10, config).unwrap();
    let mut pa = random_vec(&mut rng, 10, 1.0);
    a.step(&mut pa, &random_vec(&mut rng, 10, 1.0)).unwrap();

    let saved = serde_json::to_string(a.state()).unwrap();
    let mut b = Adam::new(10, config).unwrap();
    b.set_state(serde_json::from_str(&saved).unwrap()).unwrap();
    let mut pb = pa.clone();
    let grads = random_vec(&mut rng, 10, 1.0);
    a.step(&mut pa, &grads).unwrap();
    b.step(&mut pb, &grads).unwrap();
    assert_eq!(pa, pb, "a restored state continues identically");

    let short = AdamState { step: 1, exp_avg: vec![0.0; 9], exp_avg_sq: vec![0.0; 10] };
    assert!(matches!(b.set_state(short), Err(Error::LengthMismatch { .. })));
    let nan = AdamState { step: 1, exp_avg: vec![f32::NAN; 10], exp_avg_sq: vec![0.0; 10] };
    assert!(matches!(b.set_state(nan), Err(Error::NonFinite { .. })));
    let negative = AdamState { step: 1, exp_avg: vec![0.0; 10], exp_avg_sq: vec![-1.0; 10] };
    let err = b.set_state(negative).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "exp_avg_sq", .. }), "{err}");
    let last = AdamState { step: u64::MAX, exp_avg: vec![0.0; 10], exp_avg_sq: vec![0.0; 10] };
    let err = b.set_state(last).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "step", .. }), "{err}");
    b.step(&mut pb, &grads).unwrap();
}

#[test]
fn restored_optimiser_states_are_checked() {
    let mut rms = RmsProp::new(3, RmsPropConfig::default()).unwrap();
    let mut state = rms.state().clone();
    state.square_avg[1] = -0.5;
    let err = rms.set_state(state).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "square_avg", .. }), "{err}");
    let mut state = rms.state().clone();
    state.step = u64::MAX;
    assert!(matches!(rms.set_state(state), Err(Error::InvalidArgument { name: "step", .. })));

    let mut sgd = Sgd::new(3, SgdConfig::new(0.1)).unwrap();
    let mut state = sgd.state().clone();
    state.step = u64::MAX;
    assert!(matches!(sgd.set_state(state), Err(Error::InvalidArgument { name: "step", .. })));
    let mut state = sgd.state().clone();
    state.step = u64::MAX - 1;
    sgd.set_state(state).unwrap();
    let mut params = [1.0f32; 3];
    sgd.step(&mut params, &[0.5; 3]).unwrap();
    let after_last_step = params;
    let err = sgd.step(&mut params, &[0.5; 3]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "step", .. }), "{err}");
    assert_eq!(params, after_last_step, "a rejected step changes nothing");
}

#[test]
fn hyper_parameter_errors_name_the_range() {
    let err = Adam::new(1, AdamConfig { lr: -1.0, ..AdamConfig::default() }).unwrap_err();
    assert!(err.to_string().contains("a finite number of at least 0"), "{err}");
    let bad = AdamConfig { betas: (1.0, 0.999), ..AdamConfig::default() };
    let err = Adam::new(1, bad).unwrap_err();
    assert!(err.to_string().contains("[0, 1)"), "{err}");
}

#[test]
fn hyper_parameters_above_f32_max_rejected() {
    // Finite in f64 but infinite once converted to the f32 of the update.
    let huge = 1e39;
    let results = [
        ("Adam lr", Adam::new(1, AdamConfig { lr: huge, ..AdamConfig::default() }).err()),
        ("Adam eps", Adam::new(1, AdamConfig { eps: huge, ..AdamConfig::default() }).err()),
        ("SGD lr", Sgd::new(1, SgdConfig::new(huge)).err()),
        ("SGD momentum", Sgd::new(1, SgdConfig { momentum: huge, ..SgdConfig::new(0.1) }).err()),
        ("RMSProp lr", RmsProp::new(1, RmsPropConfig { lr: huge, ..Default::default() }).err()),
    ];
    for (what, err) in results {
        let err = err.unwrap_or_else(|| panic!("{what} {huge} must be rejected"));
        assert!(matches!(err, Error::InvalidArgument { .. }), "{what}: {err}");
        assert!(err.to_string().contains("f32::MAX"), "{what}: {err}");
    }
    let largest = f64::from(f32::MAX);
    assert!(Adam::new(1, AdamConfig { lr: largest, ..AdamConfig::default() }).is_ok());
}

#[test]
fn optimisers_reject_bad_steps_without_changing_anything() {
    let mut adam = Adam::new(4, AdamConfig::default()).unwrap();
    let mut p = [1.0f32; 4];
    let err = adam.step(&mut p, &[0.0, f32::NAN, 0.0, 0.0]).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
    assert_eq!(p, [1.0; 4]);
    assert_eq!(adam.state().step, 0);
    assert!(matches!(adam.step(&mut p, &[0.0; 3]), Err(Error::LengthMismatch { .. })));

    let bad = AdamConfig { betas: (1.0, 0.999), ..AdamConfig::default() };
    assert!(Adam::new(1, bad).is_err(), "beta1 = 1");
    assert!(Sgd::new(1, SgdConfig::new(-0.1)).is_err(), "negative lr");
    let bad = RmsPropConfig { alpha: f64::NAN, ..RmsPropConfig::default() };
    assert!(RmsProp::new(1, bad).is_err(), "NaN alpha");
}

#[test]
fn sgd_with_momentum_matches_reference() {
    let mut rng = Rng::from_seed(4);
    let len = 19;
    for (momentum, dampening, weight_decay) in [(0.0, 0.0, 0.0), (0.9, 0.0, 0.0), (0.8, 0.3, 0.05)]
    {
        let config = SgdConfig { lr: 0.05, momentum, dampening, weight_decay };
        let mut sgd = Sgd::new(len, config).unwrap();
        let mut params = random_vec(&mut rng, len, 1.0);
        let mut expected = to64(&params);
        let mut buffers = vec![0.0f64; len];
        for step in 0..4 {
            let grads = random_vec(&mut rng, len, 1.0);
            sgd.step(&mut params, &grads).unwrap();
            for ((p, b), &g) in expected.iter_mut().zip(&mut buffers).zip(&grads) {
                let mut d = g as f64 + weight_decay * *p;
                if momentum != 0.0 {
                    *b = if step == 0 { d } else { momentum * *b + (1.0 - dampening) * d };
                    d = *b;
                }
                *p -= config.lr * d;
            }
        }
        assert_close(&format!("SGD momentum {momentum}"), &params, &expected, 0.0, 1e-6);
    }
}

#[test]
fn rmsprop_matches_reference() {
    let mut rng = Rng::from_seed(5);
    let len = 21;
    for (momentum, weight_decay) in [(0.0, 0.0), (0.9, 0.01)] {
        let config = RmsPropConfig { lr: 1e-2, momentum, weight_decay, ..RmsPropConfig::default() };
        let mut opt = RmsProp::new(len, config).unwrap();
        let mut params = random_vec(&mut rng, len, 1.0);
        let mut expected = to64(&params);
        let mut square = vec![0.0f64; len];
        let mut buffers = vec![0.0f64; len];
        for _ in 0..4 {
            let grads = random_vec(&mut rng, len, 1.0);
            opt.step(&mut params, &grads).unwrap();
            for i in 0..len {
                let g = grads[i] as f64 + weight_decay * expected[i];
                square[i] = 0.99 * square[i] + 0.01 * g * g;
                let avg = square[i].sqrt() + 1e-8;
                if momentum > 0.0 {
                    buffers[i] = momentum * buffers[i] + g / avg;
                    expected[i] -= config.lr * buffers[i];
                } else {
                    expected[i] -= config.lr * g / avg;
                }
            }
        }
        assert_close(&format!("RMSProp momentum {momentum}"), &params, &expected, 0.0, 2e-6);
    }
}
