//! The sample-quality metrics with the shipped classifier: real digits against real digits,
//! generators that collapse to one or two digits, and the metrics' closed forms.

use std::sync::OnceLock;

use dcgan::checkpoint::Checkpoint;
use dcgan::data::{Mnist, MnistOptions};
use dcgan::eval::{
    classes_covered, classifier_score, fractions, generate, histogram, kl_divergence,
    to_classifier_input, Classifier, ClassifierConfig, EvalOptions, Evaluator, ReferenceStats,
    SampleMetrics, IMAGE_SIZE,
};
use dcgan::layers::{Init, Layer, Linear, Mode, Network, Reshape};
use dcgan::models::DcganConfig;
use dcgan::rng::{Rng, Stream};
use dcgan::train::{GanTrainer, TrainConfig, Tricks};
use dcgan::tricks::VirtualBatchNormOptions;
use dcgan::Error;
use ndarray::{s, Array2, Array4, Axis};

/// Number of real digits in each half of the real-against-real comparison.
const HALF: usize = 1000;

fn digits() -> Mnist {
    Mnist::shipped(&MnistOptions { size: IMAGE_SIZE, limit: None }).unwrap()
}

/// Returns an evaluator whose reference is the first `HALF` shipped digits. The reference
/// statistics are computed once and shared by every test.
fn evaluator(data: &Mnist) -> Evaluator {
    static REFERENCE: OnceLock<ReferenceStats> = OnceLock::new();
    let reference = REFERENCE.get_or_init(|| {
        let real = data.images.slice(s![..HALF, .., .., ..]).to_owned();
        let mut classifier = Classifier::shipped().unwrap();
        ReferenceStats::compute(&mut classifier, &real, 500).unwrap()
    });
    let classifier = Classifier::shipped().unwrap();
    Evaluator::with_reference(classifier, reference.clone(), EvalOptions::default()).unwrap()
}

/// Builds a generator that ignores its noise and outputs `image` (`[1, 32, 32]`): a linear layer with
/// zero weights and the image as its bias, reshaped to an image.
fn constant_generator(nz: usize, image: &[f32]) -> Network {
    let layers: Vec<Box<dyn Layer + Send + Sync>> = vec![
        Box::new(Linear::new(nz, image.len(), true).unwrap()),
        Box::new(Reshape::new([1, IMAGE_SIZE, IMAGE_SIZE]).unwrap()),
    ];
    let mut network = Network::new("main", layers, &mut Rng::from_seed(0), Init::PyTorch).unwrap();
    network.set_param("main.0.weight", &vec![0.0; nz * image.len()]).unwrap();
    network.set_param("main.0.bias", image).unwrap();
    network
}

#[test]
fn shipped_classifier_reaches_recorded_accuracy() {
    let data = digits();
    let held_out = data.images.slice(s![8000.., .., .., ..]).to_owned();
    let mut classifier = Classifier::shipped().unwrap();
    let accuracy = classifier.accuracy(&held_out, &data.labels[8000..], 500).unwrap();
    assert!(accuracy >= 0.98, "held-out accuracy {accuracy}");

    // The file records what training measured; another kernel build may round a borderline
    // digit differently, hence the allowance of two digits in 2,000.
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/models/mnist_classifier.safetensors"));
    let recorded: f64 = Checkpoint::load_bytes(&bytes.unwrap()).unwrap().metadata
        ["held_out_accuracy"]
        .parse()
        .unwrap();
    assert!((accuracy - recorded).abs() <= 0.001, "accuracy {accuracy}, recorded {recorded}");
}

#[test]
fn real_against_real_is_close_and_covers_all() {
    let data = digits();
    let mut evaluator = evaluator(&data);
    let other_half = data.images.slice(s![HALF..2 * HALF, .., .., ..]).to_owned();
    let real = evaluator.evaluate_images(&other_half).unwrap();

    // One real digit repeated: the most collapsed generator there is.
    let one = data.images.slice(s![HALF..HALF + 1, .., .., ..]);
    let repeated = one.broadcast((200, 1, IMAGE_SIZE, IMAGE_SIZE)).unwrap().to_owned();
    let collapsed = evaluator.evaluate_images(&repeated).unwrap();

    println!("real against real:\n{real}\none digit repeated:\n{collapsed}");
    assert_eq!(real.classes_covered, 10);
    assert!(real.class_kl < 0.02, "class KL {}", real.class_kl);
    assert!(real.classifier_score > 8.0, "classifier score {}", real.classifier_score);
    assert!(
        real.frechet_distance < 0.05 * collapsed.frechet_distance,
        "real {} against collapsed {}",
        real.frechet_distance,
        collapsed.frechet_distance
    );
    assert_eq!(collapsed.classes_covered, 1);
    assert!((collapsed.classifier_score - 1.0).abs() < 1e-9, "{}", collapsed.classifier_score);
}

#[test]
fn one_digit_generator_covers_one_class() {
    let data = digits();
    let mut evaluator = evaluator(&data);
    let index = 2 * HALF; // a digit outside the reference
    let label = data.labels[index] as usize;
    let image = data.images.slice(s![index, 0, .., ..]).iter().copied().collect::<Vec<f32>>();
    let nz = 8;
    let mut generator = constant_generator(nz, &image);

    let metrics = evaluator.evaluate_generator(&mut generator, nz, 200, 5, Mode::Eval).unwrap();
    assert_eq!(metrics.samples, 200);
    assert_eq!(metrics.classes_covered, 1);
    let mut counts = vec![0; 10];
    counts[label] = 200;
    assert_eq!(metrics.class_counts, counts);
    // KL(one-hot || q) = -ln q[label].
    let expected_kl = -metrics.reference_fractions[label].ln();
    assert!(
        (metrics.class_kl - expected_kl).abs() < 1e-12,
        "{} vs {expected_kl}",
        metrics.class_kl
    );
    assert!((metrics.classifier_score - 1.0).abs() < 1e-9);
}

#[test]
fn two_digit_collapse_matches_closed_form_kl() {
    let data = digits();
    let mut evaluator = evaluator(&data);
    // The first digits after the reference that are a 1 and a 7.
    let find = |digit: u8| (HALF..data.len()).find(|&i| data.labels[i] == digit).unwrap();
    let (one, seven) = (find(1), find(7));
    let images = data.images.select(Axis(0), &[vec![one; 60], vec![seven; 140]].concat());
    let metrics = evaluator.evaluate_images(&images).unwrap();

    assert_eq!(metrics.classes_covered, 2);
    assert_eq!(metrics.class_counts[1], 60);
    assert_eq!(metrics.class_counts[7], 140);
    let q = &metrics.reference_fractions;
    let expected = 0.3 * (0.3 / q[1]).ln() + 0.7 * (0.7 / q[7]).ln();
    assert!((metrics.class_kl - expected).abs() < 1e-12, "{} vs {expected}", metrics.class_kl);

    // Raising the threshold above 30% leaves one class covered.
    assert_eq!(classes_covered(&metrics.class_fractions, 0.31), 1);
}

#[test]
fn metrics_serialise_to_json_and_text() {
    let data = digits();
    let mut evaluator = evaluator(&data);
    let images = data.images.slice(s![HALF..HALF + 50, .., .., ..]).to_owned();
    let metrics: SampleMetrics = evaluator.evaluate_images(&images).unwrap();
    let json: serde_json::Value = serde_json::from_str(&metrics.to_json()).unwrap();
    assert_eq!(json["samples"], 50);
    assert_eq!(json["reference_samples"], HALF);
    assert_eq!(json["frechet_distance"].as_f64().unwrap(), metrics.frechet_distance);
    assert_eq!(json["class_counts"].as_array().unwrap().len(), 10);
    let text = metrics.to_string();
    assert!(text.contains("Frechet distance"), "{text}");
    assert!(text.contains("classes covered"), "{text}");
}

#[test]
fn evaluator_rejects_bad_images() {
    let data = digits();
    let mut evaluator = evaluator(&data);
    let one = data.images.slice(s![..1, .., .., ..]).to_owned();
    assert!(matches!(evaluator.evaluate_images(&one), Err(Error::InvalidArgument { .. })));
    let colour = Array4::<f32>::zeros([4, 3, 32, 32]);
    assert!(matches!(evaluator.evaluate_images(&colour), Err(Error::InvalidArgument { .. })));
    let odd = Array4::<f32>::zeros([4, 1, 30, 30]);
    assert!(matches!(evaluator.evaluate_images(&odd), Err(Error::InvalidArgument { .. })));
    let mut nan = data.images.slice(s![..4, .., .., ..]).to_owned();
    nan[[2, 0, 5, 5]] = f32::NAN;
    assert!(matches!(evaluator.evaluate_images(&nan), Err(Error::NonFinite { .. })));
    let bad_options = EvalOptions { batch_size: 0, ..EvalOptions::default() };
    let classifier = Classifier::shipped().unwrap();
    assert!(Evaluator::new(classifier, &data.images, bad_options).is_err());

    // Reference statistics of another classifier's feature size.
    let narrow = ClassifierConfig { width: 2, hidden: 6, dropout: 0.0 };
    let narrow = Classifier::new(narrow, 0).unwrap();
    let reference = evaluator.reference().clone();
    let mismatch = Evaluator::with_reference(narrow, reference, EvalOptions::default());
    assert!(matches!(mismatch, Err(Error::InvalidArgument { .. })));
}

#[test]
fn generate_is_seeded() {
    let nz = 4;
    let layers: Vec<Box<dyn Layer + Send + Sync>> = vec![
        Box::new(Linear::new(nz, IMAGE_SIZE * IMAGE_SIZE, true).unwrap()),
        Box::new(Reshape::new([1, IMAGE_SIZE, IMAGE_SIZE]).unwrap()),
    ];
    let mut g = Network::new("main", layers, &mut Rng::from_seed(1), Init::PyTorch).unwrap();
    let a = generate(&mut g, nz, 10, 3, 42, Mode::Eval).unwrap();
    let b = generate(&mut g, nz, 10, 3, 42, Mode::Eval).unwrap();
    let c = generate(&mut g, nz, 10, 3, 43, Mode::Eval).unwrap();
    assert_eq!(a.shape(), &[10, 1, IMAGE_SIZE, IMAGE_SIZE]);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(matches!(
        generate(&mut g, nz, 0, 3, 0, Mode::Eval),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        generate(&mut g, nz, 5, 0, 0, Mode::Eval),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(generate(&mut g, nz + 1, 5, 5, 0, Mode::Eval).is_err());
}

#[test]
fn classifier_input_pads_and_resizes() {
    let at32 = Mnist::shipped(&MnistOptions { size: 32, limit: Some(20) }).unwrap().images;
    assert_eq!(to_classifier_input(&at32).unwrap(), at32);

    // 28x28 digits padded by 2 background pixels are the 32x32 digits, exactly.
    let at28 = Mnist::shipped(&MnistOptions { size: 28, limit: Some(20) }).unwrap().images;
    assert_eq!(to_classifier_input(&at28).unwrap(), at32);

    // 64x64 digits (32 upsampled) come back close to the 32x32 ones; 16x16 ones lose detail.
    for (size, tolerance) in [(64, 0.05), (128, 0.05), (16, 0.3)] {
        let images = Mnist::shipped(&MnistOptions { size, limit: Some(20) }).unwrap().images;
        let input = to_classifier_input(&images).unwrap();
        assert_eq!(input.shape(), at32.shape());
        let mean_diff = (&input - &at32).mapv(f32::abs).mean().unwrap();
        assert!(mean_diff < tolerance, "size {size}: mean |difference| {mean_diff}");
    }
}

#[test]
fn score_and_divergence_closed_forms() {
    // Confident, evenly spread predictions over k classes score k; identical rows score 1.
    for k in [1, 2, 5, 10] {
        let mut probs = Array2::<f64>::zeros((3 * k, 10));
        for i in 0..3 * k {
            probs[[i, i % k]] = 1.0;
        }
        let score = classifier_score(&probs);
        assert!((score - k as f64).abs() < 1e-12, "k {k}: score {score}");
    }
    let same = Array2::from_shape_fn((7, 10), |(_, j)| (j + 1) as f64 / 55.0);
    assert!((classifier_score(&same) - 1.0).abs() < 1e-12);
    assert!(classifier_score(&Array2::zeros((0, 10))).is_nan());

    // KL: zero for equal distributions, the textbook value, infinite off the support.
    let p = [0.5, 0.5, 0.0];
    let q = [0.25, 0.25, 0.5];
    assert_eq!(kl_divergence(&p, &p).unwrap(), 0.0);
    assert!((kl_divergence(&p, &q).unwrap() - std::f64::consts::LN_2).abs() < 1e-15);
    assert_eq!(kl_divergence(&q, &p).unwrap(), f64::INFINITY);
    assert!(matches!(kl_divergence(&p, &q[..2]), Err(Error::LengthMismatch { .. })));

    assert_eq!(histogram(&[0, 3, 3, 9]).unwrap(), vec![1, 0, 0, 2, 0, 0, 0, 0, 0, 1]);
    assert!(matches!(histogram(&[10]), Err(Error::InvalidArgument { .. })));
    assert_eq!(fractions(&[1, 3]), vec![0.25, 0.75]);
    assert_eq!(classes_covered(&[0.02, 0.0199, 0.5], 0.02), 2);
}

#[test]
fn classifier_checkpoint_round_trip() {
    let config = ClassifierConfig { width: 2, hidden: 6, dropout: 0.1 };
    let classifier = Classifier::new(config, 3).unwrap();
    let checkpoint = classifier.to_checkpoint().unwrap();
    let path =
        std::env::temp_dir().join(format!("eval_classifier_{}.safetensors", std::process::id()));
    checkpoint.save(&path).unwrap();
    let loaded = Classifier::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.config(), &config);
    assert_eq!(loaded.network().params(), classifier.network().params());
}

#[test]
fn classifier_checkpoint_rejects_damage() {
    let classifier = Classifier::new(ClassifierConfig { width: 2, hidden: 6, dropout: 0.0 }, 3);
    let good = classifier.unwrap().to_checkpoint().unwrap();

    // A configuration far larger than the stored tensors, rejected before allocating.
    for width in [1 << 20, usize::MAX / 4] {
        let mut huge = good.clone();
        let config = ClassifierConfig { width, hidden: 6, dropout: 0.0 };
        huge.set_json("classifier_config", &config).unwrap();
        assert!(Classifier::from_checkpoint(&huge).is_err(), "width {width}");
    }

    let mut missing = good.clone();
    missing.tensors.remove("classifier.13.bias");
    assert!(matches!(Classifier::from_checkpoint(&missing), Err(Error::Format { .. })));

    let mut reshaped = good.clone();
    let (shape, _) = reshaped.tensors.get_mut("classifier.0.weight").unwrap();
    shape.swap(0, 1);
    assert!(matches!(Classifier::from_checkpoint(&reshaped), Err(Error::Format { .. })));

    let mut nan = good.clone();
    nan.tensors.get_mut("classifier.10.weight").unwrap().1[0] = f32::NAN;
    assert!(matches!(Classifier::from_checkpoint(&nan), Err(Error::NonFinite { .. })));

    let mut no_config = good;
    no_config.metadata.clear();
    assert!(matches!(Classifier::from_checkpoint(&no_config), Err(Error::Format { .. })));
}

#[test]
fn trainer_evaluation_uses_reference_batch() {
    let data = digits();
    let model = DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 };
    let (count, seed) = (40, 3);

    // Without virtual batch normalisation it equals the generator's own evaluation.
    let mut plain = GanTrainer::new(model, TrainConfig::default(), 1).unwrap();
    let by_trainer =
        evaluator(&data).evaluate_trainer(&mut plain, count, seed, Mode::Eval).unwrap();
    let by_generator = evaluator(&data)
        .evaluate_generator(plain.generator_mut(), model.nz, count, seed, Mode::Eval)
        .unwrap();
    assert_eq!(by_trainer.frechet_distance, by_generator.frechet_distance);
    assert_eq!(by_trainer.class_counts, by_generator.class_counts);

    // With it, the images are those of GanTrainer::generate on the same latent vectors.
    let tricks = Tricks {
        virtual_batch_norm: Some(VirtualBatchNormOptions { reference_size: 50 }),
        ..Tricks::default()
    };
    let config = TrainConfig { tricks, ..TrainConfig::default() };
    let mut vbn = GanTrainer::new(model, config, 1).unwrap();
    let metrics = evaluator(&data).evaluate_trainer(&mut vbn, count, seed, Mode::Eval).unwrap();
    let mut z = Array4::<f32>::zeros(model.noise_shape(count));
    Rng::stream(seed, Stream::Noise).fill_normal(z.as_slice_mut().unwrap(), 0.0, 1.0);
    let images = vbn.generate(z, Mode::Eval).unwrap();
    let expected = evaluator(&data).evaluate_images(&images).unwrap();
    assert_eq!(metrics.samples, count);
    let difference = (metrics.frechet_distance - expected.frechet_distance).abs();
    assert!(difference < 1e-6 * expected.frechet_distance.max(1.0), "{difference}");
}

#[test]
fn streamed_evaluation_matches_images() {
    // A generator's evaluation classifies each generated batch as it comes and keeps no
    // images. It must give the metrics of the whole set of images, bit for bit, also when the
    // count is not a multiple of the batch size.
    let data = digits();
    let model = DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 };
    let mut trainer = GanTrainer::new(model, TrainConfig::default(), 1).unwrap();
    let options = EvalOptions { batch_size: 7, ..EvalOptions::default() };
    let (count, seed) = (45, 9);
    let reference = evaluator(&data).reference().clone();
    let mut streamed =
        Evaluator::with_reference(Classifier::shipped().unwrap(), reference, options).unwrap();
    let by_stream = streamed
        .evaluate_generator(trainer.generator_mut(), model.nz, count, seed, Mode::Eval)
        .unwrap();

    let images = generate(trainer.generator_mut(), model.nz, count, 7, seed, Mode::Eval).unwrap();
    let by_images = streamed.evaluate_images(&images).unwrap();
    assert_eq!(by_stream.samples, count);
    assert_eq!(by_stream.frechet_distance.to_bits(), by_images.frechet_distance.to_bits());
    assert_eq!(by_stream.classifier_score.to_bits(), by_images.classifier_score.to_bits());
    assert_eq!(by_stream.class_counts, by_images.class_counts);
}

#[test]
fn streamed_evaluation_rejects_huge_count() {
    let data = digits();
    let model = DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 };
    let mut trainer = GanTrainer::new(model, TrainConfig::default(), 1).unwrap();
    let err = evaluator(&data).evaluate_trainer(&mut trainer, 1 << 30, 0, Mode::Eval).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "count", .. }), "{err}");
}

#[test]
fn overflowing_count_is_rejected() {
    // A count whose tensor size overflows usize gets the same error as one over the limit.
    let data = digits();
    let model = DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 };
    let mut trainer = GanTrainer::new(model, TrainConfig::default(), 1).unwrap();
    let mut evaluator = evaluator(&data);
    let is_count_error = |err: &Error| matches!(err, Error::InvalidArgument { name: "count", .. });

    let err = evaluator.evaluate_trainer(&mut trainer, usize::MAX, 0, Mode::Eval).unwrap_err();
    assert!(is_count_error(&err), "{err}");
    let generator = trainer.generator_mut();
    let err =
        evaluator.evaluate_generator(generator, model.nz, usize::MAX, 0, Mode::Eval).unwrap_err();
    assert!(is_count_error(&err), "{err}");
    let err = generate(generator, model.nz, usize::MAX, 100, 0, Mode::Eval).unwrap_err();
    assert!(is_count_error(&err), "{err}");
    assert!(err.to_string().contains("images of 1x16x16"), "{err}");
}

#[test]
fn classifier_rejects_unknown_tensors() {
    let saved = Classifier::shipped().unwrap().to_checkpoint().unwrap();
    Classifier::from_checkpoint(&saved).unwrap();
    let mut checkpoint = saved.clone();
    checkpoint.insert_tensor("classifier.99.weight", &[2], vec![0.0; 2]).unwrap();
    let err = Classifier::from_checkpoint(&checkpoint).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("`classifier.99.weight`"), "{err}");
}
