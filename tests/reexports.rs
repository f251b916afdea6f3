//! The training API through the crate's own re-export of `ndarray`, as a caller without an
//! `ndarray` dependency of its own uses it.

use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::ndarray::Array4;
use dcgan::train::Trainer;

#[test]
fn trainer_steps_on_reexported_array() {
    let config = DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 };
    let mut trainer = Trainer::new(config, 0, GanLoss::default()).unwrap();
    let real: Array4<f32> = Array4::zeros((2, 1, 16, 16));
    let stats = trainer.step(real).unwrap();
    assert!(stats.d_loss.is_finite(), "{stats:?}");
    assert!(stats.g_loss.is_finite(), "{stats:?}");
}
