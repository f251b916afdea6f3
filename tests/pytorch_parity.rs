//! Parity with PyTorch: three training steps of the tiny 16x16 DCGAN against the tensors that
//! `tests/fixtures/make_parity.py` recorded (PyTorch 2.15, CPU). PyTorch is not needed to run
//! this test.
//!
//! Both sides compute in `f32` but sum in different orders, so values agree to float
//! tolerance, not bit for bit. Outputs, gradients and running statistics must agree to `5e-5`
//! of the tensor's largest magnitude (the largest difference seen was `4.8e-6`, on
//! `D(G(z))`), parameters after Adam steps to `1e-6` absolute (seen: `4e-9`). Each Adam step
//! moves a parameter by about `lr = 2e-4`, so a wrong bias correction or a misplaced `eps`
//! exceeds that by far.

use std::collections::HashMap;

use dcgan::layers::{BufferData, Mode, Network};
use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::train::Trainer;
use ndarray::Array4;
use safetensors::{Dtype, SafeTensors};

/// Tolerance of outputs, gradients and running statistics, relative to the largest magnitude.
const RTOL: f32 = 5e-5;

/// Tolerance of parameters after Adam steps, absolute.
const PARAM_ATOL: f32 = 1e-6;

const FIXTURE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dcgan_parity.safetensors");

/// One tensor of the fixture: its shape and its elements, `f32` or `i64`.
struct Stored {
    shape: Vec<usize>,
    floats: Vec<f32>,
    ints: Vec<i64>,
}

/// Loads every tensor of the fixture, by name.
fn load_fixture() -> HashMap<String, Stored> {
    let bytes = std::fs::read(FIXTURE).expect("fixture file; regenerate with make_parity.py");
    let tensors = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape().to_vec();
            let (floats, ints) = match view.dtype() {
                Dtype::F32 => (
                    view.data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    Vec::new(),
                ),
                Dtype::I64 => (
                    Vec::new(),
                    view.data()
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                ),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, Stored { shape, floats, ints })
        })
        .collect()
}

struct Fixture {
    tensors: HashMap<String, Stored>,
}

impl Fixture {
    fn load() -> Self {
        Fixture { tensors: load_fixture() }
    }

    fn floats(&self, name: &str) -> &[f32] {
        &self.get(name).floats
    }

    fn get(&self, name: &str) -> &Stored {
        self.tensors.get(name).unwrap_or_else(|| panic!("{name} missing from the fixture"))
    }

    fn shape(&self, name: &str) -> &[usize] {
        &self.get(name).shape
    }

    fn ints(&self, name: &str) -> &[i64] {
        &self.get(name).ints
    }

    fn array(&self, name: &str) -> Array4<f32> {
        let shape = self.shape(name);
        Array4::from_shape_vec([shape[0], shape[1], shape[2], shape[3]], self.floats(name).to_vec())
            .unwrap()
    }

    fn scalar(&self, name: &str) -> f64 {
        self.floats(name)[0] as f64
    }

    /// Creates a trainer whose networks contain the fixture's initial parameters.
    fn trainer(&self) -> Trainer {
        let config = DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 };
        let mut trainer = Trainer::new(config, 0, GanLoss::default()).unwrap();
        load_params(self, "G.init.", trainer.generator_mut());
        load_params(self, "D.init.", trainer.discriminator_mut());
        trainer
    }
}

fn load_params(fixture: &Fixture, prefix: &str, net: &mut Network) {
    let names: Vec<(String, Vec<usize>)> = net.named_params().map(|t| (t.name, t.shape)).collect();
    for (name, shape) in names {
        let key = format!("{prefix}{name}");
        assert_eq!(fixture.shape(&key), &shape[..], "{key}: shape");
        net.set_param(&name, fixture.floats(&key)).unwrap();
    }
    let parameter_count = fixture.tensors.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(parameter_count, net.named_params().count(), "{prefix}: tensor count");
}

/// Asserts `|actual - expected| <= rtol * max|expected| + atol` element-wise.
fn assert_close(what: &str, actual: &[f32], expected: &[f32], rtol: f32, atol: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tol = rtol * scale + atol;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "{what}[{i}]: {a} vs PyTorch {e} (tolerance {tol:.2e})");
    }
}

fn mean_sigmoid(logits: &[f32]) -> f64 {
    logits.iter().map(|&x| 1.0 / (1.0 + (-(x as f64)).exp())).sum::<f64>() / logits.len() as f64
}

/// Compares parameters and buffers of `net` with the fixture's `{prefix}<name>` tensors.
fn assert_state(fixture: &Fixture, prefix: &str, net: &Network) {
    for t in net.named_params() {
        let key = format!("{prefix}{}", t.name);
        assert_close(&key, t.data, fixture.floats(&key), 0.0, PARAM_ATOL);
    }
    for b in net.named_buffers() {
        let key = format!("{prefix}{}", b.name);
        match b.data {
            BufferData::F32(values) => assert_close(&key, values, fixture.floats(&key), RTOL, 0.0),
            BufferData::I64(values) => assert_eq!(values, fixture.ints(&key), "{key}"),
        }
    }
}

#[test]
fn forward_passes_match_pytorch() {
    let fixture = Fixture::load();
    let mut trainer = fixture.trainer();
    let fake = trainer.generator_mut().forward(fixture.array("noise.0"), Mode::Train).unwrap();
    assert_close("G(z)", fake.as_slice().unwrap(), fixture.floats("step1.fake"), RTOL, 0.0);

    let d = trainer.discriminator_mut();
    let real_logits = d.forward(fixture.array("real"), Mode::Train).unwrap();
    let expected = fixture.floats("step1.d_real_logits");
    assert_close("D(real)", real_logits.as_slice().unwrap(), expected, RTOL, 0.0);
    let fake_logits = d.forward(fake, Mode::Train).unwrap();
    let expected = fixture.floats("step1.d_fake_logits");
    assert_close("D(G(z))", fake_logits.as_slice().unwrap(), expected, RTOL, 0.0);
}

#[test]
fn training_steps_match_pytorch() {
    let fixture = Fixture::load();
    let mut trainer = fixture.trainer();
    let stats = trainer.step_with_noise(fixture.array("real"), fixture.array("noise.0")).unwrap();

    // Losses and the discriminator's mean probabilities.
    let close = |a: f64, b: f64| (a - b).abs() <= RTOL as f64 * b.abs();
    assert!(close(stats.d_loss, fixture.scalar("step1.loss_d")), "loss_d {}", stats.d_loss);
    assert!(close(stats.g_loss, fixture.scalar("step1.loss_g")), "loss_g {}", stats.g_loss);
    let d_real = mean_sigmoid(fixture.floats("step1.d_real_logits"));
    assert!(close(stats.d_real, d_real), "D(x) {} vs {d_real}", stats.d_real);
    let d_fake = mean_sigmoid(fixture.floats("step1.d_fake_logits"));
    assert!(close(stats.d_fake, d_fake), "D(G(z)) {} vs {d_fake}", stats.d_fake);
    let d_fake_after = mean_sigmoid(fixture.floats("step1.g_logits"));
    assert!(close(stats.d_fake_after, d_fake_after), "after {}", stats.d_fake_after);

    // Every gradient of the first step.
    for (tag, net) in [("D", trainer.discriminator()), ("G", trainer.generator())] {
        for t in net.named_grads() {
            let key = format!("step1.{tag}.grad.{}", t.name);
            assert_close(&key, t.data, fixture.floats(&key), RTOL, 0.0);
        }
    }
    assert_state(&fixture, "step1.G.", trainer.generator());
    assert_state(&fixture, "step1.D.", trainer.discriminator());

    // Two more steps: Adam's moments and the running statistics carry over.
    for step in 1..3 {
        let noise = fixture.array(&format!("noise.{step}"));
        trainer.step_with_noise(fixture.array("real"), noise).unwrap();
    }
    assert_state(&fixture, "step3.G.", trainer.generator());
    assert_state(&fixture, "step3.D.", trainer.discriminator());
}
