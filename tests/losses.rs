//! GAN losses: values against each paper's formula in `f64`, gradients against central finite
//! differences, finiteness at large logits, label smoothing and option checks.

mod tricks_common;

use dcgan::loss::{Divergence, FGanGenerator, GanLoss};
use dcgan::Error;
use ndarray::Array4;
use proptest::prelude::*;
use tricks_common::{all_losses, loss64, Term};

fn logits(values: &[f32]) -> Array4<f32> {
    Array4::from_shape_vec([values.len(), 1, 1, 1], values.to_vec()).unwrap()
}

fn term(loss: GanLoss, which: Term, v: &[f32]) -> dcgan::Result<dcgan::loss::LossGrad> {
    let x = logits(v);
    match which {
        Term::Real => loss.discriminator_real(&x),
        Term::Fake => loss.discriminator_fake(&x),
        Term::Generator => loss.generator(&x),
    }
}

const TERMS: [Term; 3] = [Term::Real, Term::Fake, Term::Generator];

#[test]
fn values_match_the_papers_formulas() {
    // Moderate logits, where every formula can be evaluated as written; 0.3 is away from the
    // hinge's kinks at -1 and 1.
    let xs = [-2.5f32, -0.75, 0.3, 1.5, 2.0];
    let x64: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
    for loss in all_losses() {
        for which in TERMS {
            let got = term(loss, which, &xs).unwrap().loss;
            let expected = loss64(loss, which, &x64);
            assert!(
                (got - expected).abs() <= 1e-12 * expected.abs().max(1.0),
                "{loss:?} {which:?}: {got} vs {expected}"
            );
        }
    }
}

#[test]
fn chosen_values_by_hand() {
    // A few values worked out on paper, as a check on the reference formulas themselves.
    let ln2 = std::f64::consts::LN_2;
    let zero = [0.0f32];
    let at = |loss, which| term(loss, which, &zero).unwrap().loss;
    assert!((at(GanLoss::NonSaturating, Term::Generator) - ln2).abs() < 1e-15);
    assert!((at(GanLoss::Minimax, Term::Generator) + ln2).abs() < 1e-15);
    assert!((at(GanLoss::least_squares(), Term::Real) - 0.5).abs() < 1e-15);
    assert!((at(GanLoss::Hinge, Term::Fake) - 1.0).abs() < 1e-15);
    // Jensen-Shannon f-GAN at v = 0: g_f = 0 and f*(0) = -log(1) = 0.
    let js = GanLoss::f_gan(Divergence::JensenShannon);
    assert!(at(js, Term::Real).abs() < 1e-15);
    assert!(at(js, Term::Fake).abs() < 1e-15);
    // KL f-GAN at v = 1: f*(g_f(1)) = exp(0) = 1.
    let kl = GanLoss::f_gan(Divergence::KullbackLeibler);
    assert!((term(kl, Term::Fake, &[1.0]).unwrap().loss - 1.0).abs() < 1e-15);
    // Reverse KL at v = 0: g_f = -1, f*(-1) = -1 - log(1) = -1.
    let rkl = GanLoss::f_gan(Divergence::ReverseKullbackLeibler);
    assert!((at(rkl, Term::Real) - 1.0).abs() < 1e-15);
    assert!((at(rkl, Term::Fake) + 1.0).abs() < 1e-15);
}

/// Checks the analytic gradient of every term of `loss` at `xs` against central differences
/// of the loss itself. The logits are multiples of 2^-8 and the step is 2^-12, so `x +- h` is
/// exact in `f32` and the difference quotient has no input rounding.
fn check_gradients(loss: GanLoss, xs: &[f32]) -> Result<(), TestCaseError> {
    let h = 1.0f32 / 4096.0;
    for which in TERMS {
        let analytic = term(loss, which, xs).unwrap().grad;
        for i in 0..xs.len() {
            let mut v = xs.to_vec();
            v[i] = xs[i] + h;
            let plus = term(loss, which, &v).unwrap().loss;
            v[i] = xs[i] - h;
            let minus = term(loss, which, &v).unwrap().loss;
            let fd = (plus - minus) / (2.0 * h as f64);
            let got = analytic[[i, 0, 0, 0]] as f64;
            // Central differences err by h^2 f''' / 6; with the mean's 1/n and |f'''| < 8 at
            // these logits that is below 1e-7. Kinks (hinge at +-1) are avoided by the draws.
            prop_assert!(
                (got - fd).abs() <= 1e-5 * fd.abs().max(1.0),
                "{:?} {:?} logit {}: analytic {} vs {}",
                loss,
                which,
                i,
                got,
                fd
            );
        }
    }
    Ok(())
}

/// Logits in [-3, 3] that are multiples of 2^-8 and keep 2^-10 away from the hinge's kinks.
fn grid_logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-768i32..=768, 1..6).prop_map(|ks| {
        ks.into_iter()
            .map(|k| {
                let x = k as f32 / 256.0;
                if (x.abs() - 1.0).abs() < 1.0 / 512.0 {
                    x + 1.0 / 64.0
                } else {
                    x
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn gradients_match_finite_differences(xs in grid_logits()) {
        for loss in all_losses() {
            check_gradients(loss, &xs)?;
        }
    }
}

#[test]
fn large_logits_stay_finite_where_the_loss_is() {
    let xs = [-1e4f32, -200.0, 200.0, 1e4];
    let bounded = [
        GanLoss::Minimax,
        GanLoss::NonSaturating,
        GanLoss::Bce { real_label: 0.9 },
        GanLoss::least_squares(),
        GanLoss::Wasserstein,
        GanLoss::Hinge,
        GanLoss::f_gan(Divergence::JensenShannon),
        GanLoss::f_gan(Divergence::PearsonChiSquared),
    ];
    for loss in bounded {
        for which in TERMS {
            let out = term(loss, which, &xs).unwrap();
            assert!(out.loss.is_finite(), "{loss:?} {which:?} loss");
            assert!(out.grad.iter().all(|g| g.is_finite()), "{loss:?} {which:?} gradient");
        }
    }

    // softplus(-v) for the non-saturating generator: about |v| for v = -1e4, about 0 for 1e4;
    // the gradient saturates at -1/n and 0.
    let out = GanLoss::NonSaturating.generator(&logits(&[-1e4, 1e4])).unwrap();
    assert!((out.loss - 5e3).abs() < 1e-9, "{}", out.loss);
    assert_eq!(out.grad.as_slice().unwrap(), &[-0.5, 0.0]);
    // Minimax generator log(1 - sigmoid(v)) = -softplus(v): -1e4 at v = 1e4, gradient -1/n.
    let out = GanLoss::Minimax.generator(&logits(&[1e4])).unwrap();
    assert!((out.loss + 1e4).abs() < 1e-9, "{}", out.loss);
    assert_eq!(out.grad[[0, 0, 0, 0]], -1.0);
    // The Jensen-Shannon fake term softplus(v) - log 2 at v = 1e4.
    let js = GanLoss::f_gan(Divergence::JensenShannon);
    let out = js.discriminator_fake(&logits(&[1e4])).unwrap();
    assert!((out.loss - (1e4 - std::f64::consts::LN_2)).abs() < 1e-9);

    // Exponential terms overflow: an error, never an infinite loss or gradient.
    let kl = GanLoss::f_gan(Divergence::KullbackLeibler);
    assert!(matches!(kl.discriminator_fake(&logits(&[1e4])), Err(Error::NonFinite { .. })));
    let hellinger = GanLoss::f_gan(Divergence::SquaredHellinger);
    assert!(matches!(
        hellinger.discriminator_fake(&logits(&[200.0])),
        Err(Error::NonFinite { .. })
    ));
    // exp(80) = 5.5e34 still fits in f32, exp(100) does not.
    assert!(kl.discriminator_fake(&logits(&[80.0])).is_ok());
    assert!(matches!(kl.discriminator_fake(&logits(&[100.0])), Err(Error::NonFinite { .. })));
    let rkl = GanLoss::f_gan(Divergence::ReverseKullbackLeibler);
    assert!(matches!(rkl.discriminator_real(&logits(&[-1e4])), Err(Error::NonFinite { .. })));
}

#[test]
fn saturating_and_alternative_generators_differ() {
    // At v = 0 for KL: alternative -g_f(0) = 0, saturating -f*(g_f(0)) = -exp(-1).
    let xs = [0.0f32];
    let alternative = GanLoss::FGan {
        divergence: Divergence::KullbackLeibler,
        generator: FGanGenerator::Alternative,
    };
    let saturating = GanLoss::FGan {
        divergence: Divergence::KullbackLeibler,
        generator: FGanGenerator::Saturating,
    };
    assert_eq!(alternative.generator(&logits(&xs)).unwrap().loss, 0.0);
    let s = saturating.generator(&logits(&xs)).unwrap().loss;
    assert!((s + (-1.0f64).exp()).abs() < 1e-15, "{s}");
}

#[test]
fn label_smoothing_lowers_only_the_real_target() {
    let xs = [0.4f32, -1.1, 2.2];
    let x64: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
    for loss in [GanLoss::Minimax, GanLoss::NonSaturating] {
        let smoothed = loss.discriminator_real_smoothed(&logits(&xs), 0.9).unwrap().loss;
        let expected = loss64(GanLoss::Bce { real_label: 0.9 }, Term::Real, &x64);
        assert!((smoothed - expected).abs() < 1e-12, "{loss:?}: {smoothed} vs {expected}");
    }
    for loss in [GanLoss::least_squares(), GanLoss::Wasserstein, GanLoss::Hinge] {
        let err = loss.discriminator_real_smoothed(&logits(&xs), 0.9).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { name: "label_smoothing", .. }),
            "{loss:?}: {err}"
        );
    }
}

#[test]
fn invalid_options_are_rejected() {
    let bad_targets =
        GanLoss::LeastSquares { fake_target: 1.0, real_target: 1.0, generator_target: 1.0 };
    let err = bad_targets.validate().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "real_target", .. }), "{err}");
    let nan_target =
        GanLoss::LeastSquares { fake_target: 0.0, real_target: 1.0, generator_target: f32::NAN };
    let err = nan_target.validate().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "generator_target", .. }), "{err}");
    assert!(GanLoss::Bce { real_label: -0.5 }.validate().is_err());
    for loss in all_losses() {
        assert!(loss.validate().is_ok(), "{loss:?}");
        assert!(matches!(term(loss, Term::Real, &[f32::NAN]), Err(Error::NonFinite { .. })));
        assert!(term(loss, Term::Fake, &[]).is_err(), "{loss:?}: no logits");
    }
}

#[test]
fn losses_round_trip_through_json() {
    for loss in all_losses() {
        let json = serde_json::to_string(&loss).unwrap();
        let back: GanLoss = serde_json::from_str(&json).unwrap();
        assert_eq!(back, loss, "{json}");
    }
}
