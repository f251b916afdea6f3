//! Training runs on a few shipped digits with a tiny model. The losses move and stay finite, and
//! the output files are written and read back. A resumed run equals an uninterrupted one bit for
//! bit, and the thread count changes nothing.

use std::path::PathBuf;

use dcgan::checkpoint::{Checkpoint, Scalar};
use dcgan::data::{Batcher, LastBatch};
use dcgan::data::{Mnist, MnistOptions};
use dcgan::kernels::gemm::GemmBackend;
use dcgan::layers::Mode;
use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::optim::{Adam, AdamConfig};
use dcgan::rng::{Rng, Stream};
use dcgan::run::folder::read_history;
use dcgan::run::metrics::{read_csv, CSV_HEADER};
use dcgan::run::{
    check_step_memory, generate, load_generator, sample_noise, MetricsRow, RunFolder, RunSettings,
    TrainingRun,
};
use dcgan::train::{GanTrainer, Trainer};
use dcgan::tricks::{HistoricalAveraging, InstanceNoise, NoiseSchedule, VirtualBatchNormOptions};
use dcgan::Error;
use ndarray::{concatenate, s, Axis};

/// 96 digits in batches of 16: six steps per epoch.
fn settings() -> RunSettings {
    RunSettings {
        model: DcganConfig { nz: 8, ngf: 4, ndf: 4, channels: 1, image_size: 16 },
        batch_size: 16,
        lr_g: 1e-3,
        lr_d: 1e-3,
        digits: 96,
        sample_count: 9,
        seed: 5,
        ..RunSettings::default()
    }
}

fn digits(settings: &RunSettings) -> Mnist {
    let options = MnistOptions { size: settings.model.image_size, limit: Some(settings.digits) };
    Mnist::shipped(&options).unwrap()
}

fn start(settings: RunSettings) -> TrainingRun {
    TrainingRun::new(settings, digits(&settings)).unwrap()
}

fn take_steps(run: &mut TrainingRun, steps: usize) -> Vec<MetricsRow> {
    (0..steps).map(|_| run.step().unwrap()).collect()
}

fn checkpoint_bytes(run: &TrainingRun) -> Vec<u8> {
    run.to_checkpoint().unwrap().to_bytes().unwrap()
}

fn temp_folder(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("dcgan-train-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

#[test]
fn losses_move_and_stay_finite() {
    let mut run = start(settings());
    let before = run.trainer().generator().params().to_vec();
    let rows = take_steps(&mut run, 12);

    for row in &rows {
        let values = [row.loss_d, row.loss_g, row.d_real, row.d_fake, row.d_fake_after];
        assert!(values.iter().all(|v| v.is_finite()), "step {}: {values:?}", row.step);
    }
    let steps: Vec<u64> = rows.iter().map(|r| r.step).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
    let epochs: Vec<u64> = rows.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    assert_eq!(run.epochs_done(), 2);

    // At initialisation D(x) and D(G(z)) are near 1/2, so D's loss is near 2 ln 2. The
    // discriminator learns first: its loss falls and it scores real digits above generated ones.
    let first = &rows[0];
    assert!((first.loss_d - 2.0 * std::f64::consts::LN_2).abs() < 0.2, "{first:?}");
    let last = &rows[11];
    assert!(last.loss_d < first.loss_d - 0.1, "loss_D {} -> {}", first.loss_d, last.loss_d);
    assert!(last.d_real > last.d_fake, "{last:?}");
    assert_ne!(run.trainer().generator().params(), &before[..], "generator unchanged");
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    // Uninterrupted: 10 steps, crossing the epoch boundary after step 6.
    let mut straight = start(settings());
    let straight_rows = take_steps(&mut straight, 10);

    // Interrupted after step 4 (mid-epoch), saved to a file, restored on freshly loaded digits.
    let folder = temp_folder("resume");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("checkpoint.safetensors");
    let mut first_half = start(settings());
    take_steps(&mut first_half, 4);
    first_half.save(&path).unwrap();
    drop(first_half);
    let mut resumed = TrainingRun::load(&path, digits(&settings())).unwrap();
    assert_eq!(resumed.steps_done(), 4);
    let resumed_rows = take_steps(&mut resumed, 6);

    assert_eq!(resumed_rows, straight_rows[4..], "metrics of steps 5 to 10");
    let trainer = (straight.trainer(), resumed.trainer());
    assert_eq!(trainer.0.generator().params(), trainer.1.generator().params(), "G parameters");
    assert_eq!(
        trainer.0.discriminator().params(),
        trainer.1.discriminator().params(),
        "D parameters"
    );
    assert_eq!(trainer.0.g_optimizer().state(), trainer.1.g_optimizer().state(), "G Adam");
    assert_eq!(trainer.0.d_optimizer().state(), trainer.1.d_optimizer().state(), "D Adam");
    assert_eq!(checkpoint_bytes(&straight), checkpoint_bytes(&resumed), "checkpoint bytes");
    assert_eq!(straight.samples().unwrap(), resumed.samples().unwrap(), "sample images");
    std::fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn sampling_changes_nothing_in_the_run() {
    let mut plain = start(settings());
    let mut sampled = start(settings());
    for _ in 0..3 {
        plain.step().unwrap();
        sampled.step().unwrap();
        sampled.samples().unwrap();
    }
    assert_eq!(checkpoint_bytes(&plain), checkpoint_bytes(&sampled));
}

#[test]
fn thread_counts_give_identical_runs() {
    let run_in_pool = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut run = start(settings());
            let rows = take_steps(&mut run, 4);
            let samples = run.samples().unwrap();
            (checkpoint_bytes(&run), rows, samples)
        })
    };
    let one = run_in_pool(1);
    let two = run_in_pool(2);
    assert_eq!(one.1, two.1, "metrics");
    assert_eq!(one.2, two.2, "sample images");
    assert!(one.0 == two.0, "checkpoints differ between 1 and 2 threads");
}

#[test]
fn output_files_are_written_and_read_back() {
    let path = temp_folder("files");
    let folder = RunFolder::create(&path, false).unwrap();
    let mut run = start(settings());
    let rows = take_steps(&mut run, 3);
    let samples = folder.write_samples(&mut run).unwrap();
    folder.write_progress(&run, &rows).unwrap();
    folder.write_settings(run.settings()).unwrap();

    // The sample grid: 9 images of 16x16 in 3 columns, 2 pixels of padding.
    assert_eq!(samples, path.join("samples/step_000003.png"));
    let decoder = png::Decoder::new(std::fs::File::open(&samples).unwrap());
    let info = decoder.read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (3 * 18 + 2, 3 * 18 + 2));
    assert!(std::fs::metadata(folder.loss_plot_path()).unwrap().len() > 0);

    // The metrics and the checkpoint read back as written.
    let text = std::fs::read_to_string(folder.metrics_path()).unwrap();
    assert_eq!(text.lines().next(), Some(CSV_HEADER));
    assert_eq!(read_csv(folder.metrics_path()).unwrap(), rows);
    let restored = TrainingRun::load(folder.checkpoint_path(), digits(&settings())).unwrap();
    assert_eq!(checkpoint_bytes(&restored), checkpoint_bytes(&run));
    let json = std::fs::read_to_string(path.join("settings.json")).unwrap();
    assert_eq!(serde_json::from_str::<RunSettings>(&json).unwrap(), settings());

    // A resumed run reads the rows up to its checkpoint's step.
    let longer = [rows.clone(), take_steps(&mut run, 2)].concat();
    folder.write_progress(&restored, &longer).unwrap();
    let history = read_history(&folder.checkpoint_path(), 3).unwrap();
    assert_eq!(history, rows);
    assert!(read_history(&path.join("elsewhere/checkpoint.safetensors"), 3).unwrap().is_empty());
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn non_empty_folder_error_counts_entries() {
    let path = temp_folder("count-entries");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("notes.txt"), "kept").unwrap();
    let err = RunFolder::create(&path, false).unwrap_err();
    assert!(err.to_string().contains("it contains 1 entry (notes.txt)"), "{err}");

    std::fs::write(path.join("plan.txt"), "kept").unwrap();
    let err = RunFolder::create(&path, false).unwrap_err();
    let listed = "it contains 2 entries (notes.txt, plan.txt)";
    assert!(err.to_string().contains(listed), "{err}");
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn non_empty_folder_needs_overwrite() {
    let path = temp_folder("overwrite");
    let folder = RunFolder::create(&path, false).unwrap();
    let mut run = start(settings());
    run.step().unwrap();
    folder.write_samples(&mut run).unwrap();
    folder.write_progress(&run, &[]).unwrap();
    std::fs::write(path.join("notes.txt"), "kept").unwrap();
    std::fs::write(path.join("quality.csv"), "step\n").unwrap();
    std::fs::write(path.join("quality.png"), "old plot").unwrap();
    std::fs::write(path.join("metrics.json"), "{}").unwrap();
    std::fs::write(path.join("generated_seed7.png"), "old digits").unwrap();
    std::fs::write(path.join("generated.png"), "named by the user").unwrap();

    let err = RunFolder::create(&path, false).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "output folder", .. }), "{err}");
    assert!(err.to_string().contains("checkpoint.safetensors"), "{err}");

    RunFolder::create(&path, true).unwrap();
    assert!(!path.join("checkpoint.safetensors").exists(), "checkpoint deleted");
    assert!(!path.join("metrics.csv").exists(), "metrics deleted");
    assert!(!path.join("samples/step_000001.png").exists(), "samples deleted");
    assert!(!path.join("quality.csv").exists(), "quality rows deleted");
    assert!(!path.join("quality.png").exists(), "quality plot deleted");
    assert!(!path.join("metrics.json").exists(), "evaluation deleted");
    assert!(!path.join("generated_seed7.png").exists(), "drawn digits deleted");
    assert_eq!(std::fs::read_to_string(path.join("notes.txt")).unwrap(), "kept");
    assert!(path.join("generated.png").exists(), "a file named by the user is kept");
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn unfinished_run_is_removed() {
    // A folder that the run created goes away with the run's files.
    let path = temp_folder("unfinished-new");
    let folder = RunFolder::create(&path, false).unwrap();
    let mut run = start(settings());
    folder.write_settings(run.settings()).unwrap();
    folder.write_samples(&mut run).unwrap();
    assert!(folder.remove_unfinished_run().unwrap());
    assert!(!path.exists(), "the folder the run created is left");

    // A folder that existed stays, emptied of the run's files but not of others.
    std::fs::create_dir_all(&path).unwrap();
    let folder = RunFolder::create(&path, false).unwrap();
    folder.write_settings(run.settings()).unwrap();
    folder.write_samples(&mut run).unwrap();
    assert!(folder.remove_unfinished_run().unwrap());
    let entries: Vec<_> = std::fs::read_dir(&path).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
    RunFolder::create(&path, false).expect("a new run starts without overwrite");

    std::fs::write(path.join("notes.txt"), "kept").unwrap();
    let folder = RunFolder::create(&path, true).unwrap();
    folder.write_settings(run.settings()).unwrap();
    assert!(folder.remove_unfinished_run().unwrap());
    assert!(!path.join("settings.json").exists(), "settings deleted");
    assert_eq!(std::fs::read_to_string(path.join("notes.txt")).unwrap(), "kept");
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn run_with_checkpoint_is_not_removed() {
    let path = temp_folder("unfinished-checkpoint");
    let folder = RunFolder::create(&path, false).unwrap();
    let mut run = start(settings());
    let rows = take_steps(&mut run, 1);
    folder.write_samples(&mut run).unwrap();
    folder.write_progress(&run, &rows).unwrap();
    assert!(!folder.remove_unfinished_run().unwrap());
    assert!(path.join("checkpoint.safetensors").exists(), "checkpoint deleted");
    assert!(path.join("metrics.csv").exists(), "metrics deleted");
    assert!(path.join("samples/step_000001.png").exists(), "samples deleted");
    std::fs::remove_dir_all(&path).unwrap();
}

#[test]
fn sample_noise_reproduces_the_run_grid() {
    let mut run = start(settings());
    take_steps(&mut run, 2);
    let checkpoint = run.to_checkpoint().unwrap();
    let (loaded_settings, mut generator) = load_generator(&checkpoint).unwrap();
    assert_eq!(loaded_settings, settings());
    let z = sample_noise(&loaded_settings.model, loaded_settings.seed, 9).unwrap();
    assert_eq!(&z, run.fixed_noise());
    assert_eq!(generate(&mut generator, z).unwrap(), run.samples().unwrap());
    let other = sample_noise(&loaded_settings.model, loaded_settings.seed + 1, 9).unwrap();
    assert_ne!(&other, run.fixed_noise());
}

#[test]
fn bad_checkpoints_and_data_are_rejected() {
    let run = start(settings());
    let good = run.to_checkpoint().unwrap();

    // Data that does not match the settings.
    let mut other = settings();
    other.digits = 80;
    let err = TrainingRun::from_checkpoint(&good, digits(&other)).unwrap_err();
    assert!(err.to_string().contains("data shape"), "{err}");
    let err = TrainingRun::new(settings(), digits(&other)).unwrap_err();
    assert!(err.to_string().contains("data shape"), "{err}");

    // Another file format, a missing tensor, a corrupt moment.
    let mut foreign = good.clone();
    foreign.metadata.insert("format".into(), "something-else".into());
    let err = TrainingRun::from_checkpoint(&foreign, digits(&settings())).unwrap_err();
    assert!(err.to_string().contains("something-else"), "{err}");

    let mut missing = good.clone();
    missing.tensors.remove("discriminator.main.0.weight");
    let err = TrainingRun::from_checkpoint(&missing, digits(&settings())).unwrap_err();
    assert!(err.to_string().contains("discriminator.main.0.weight"), "{err}");

    let mut corrupt = good.clone();
    corrupt.tensors.get_mut("g_optimizer.exp_avg").unwrap().1[0] = f32::NAN;
    let err = TrainingRun::from_checkpoint(&corrupt, digits(&settings())).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("exp_avg"), "{err}");
    assert!(err.to_string().contains("g_optimizer"), "{err}");

    // A run's step count that disagrees with its optimisers' update counts.
    let mut ahead = good.clone();
    ahead.scalars.insert("step".into(), Scalar::U64(5));
    let err = TrainingRun::from_checkpoint(&ahead, digits(&settings())).unwrap_err();
    assert!(err.to_string().contains("g_optimizer.step"), "{err}");
    let mut last = good.clone();
    last.scalars.insert("g_optimizer.step".into(), Scalar::U64(u64::MAX));
    let err = TrainingRun::from_checkpoint(&last, digits(&settings())).unwrap_err();
    assert!(err.to_string().contains("g_optimizer"), "{err}");

    let mut negative = good.clone();
    negative.tensors.get_mut("d_optimizer.exp_avg_sq").unwrap().1[2] = -1.5;
    let err = TrainingRun::from_checkpoint(&negative, digits(&settings())).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "exp_avg_sq", .. }), "{err}");
    assert!(err.to_string().contains("d_optimizer"), "{err}");

    let mut nan_weight = good.clone();
    nan_weight.tensors.get_mut("generator.main.0.weight").unwrap().1[0] = f32::NAN;
    let err = TrainingRun::from_checkpoint(&nan_weight, digits(&settings())).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("generator.main.0.weight"), "{err}");

    let mut noise = good.clone();
    noise.tensors.get_mut("fixed_noise").unwrap().1[3] = f32::NAN;
    let err = TrainingRun::from_checkpoint(&noise, digits(&settings())).unwrap_err();
    assert!(err.to_string().contains("fixed_noise"), "{err}");

    let checkpoint = Checkpoint::load_bytes(&good.to_bytes().unwrap()).unwrap();
    assert!(TrainingRun::from_checkpoint(&checkpoint, digits(&settings())).is_ok());
}

#[test]
fn batch_beyond_available_memory_is_rejected() {
    let mut settings = settings();
    settings.batch_size = 64;
    let needed = settings.model.step_memory_bytes(64).unwrap() as u64;
    check_step_memory(&settings, Some(needed)).unwrap();
    check_step_memory(&settings, None).unwrap();

    let err = check_step_memory(&settings, Some(needed - 1)).unwrap_err();
    let Error::InvalidArgument { name: "batch_size", value, expected } = &err else {
        panic!("{err}");
    };
    assert_eq!(value, "64");
    // The largest batch it names fits, and one more does not.
    let largest: usize = expected
        .strip_prefix("at most ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{expected}"));
    assert_eq!(largest, 63, "{expected}");
    settings.batch_size = largest;
    check_step_memory(&settings, Some(needed - 1)).unwrap();
}

#[test]
fn sample_grid_beyond_available_memory_is_rejected() {
    let mut settings = settings();
    settings.batch_size = 1;
    settings.sample_count = 1024;
    let step = settings.model.step_memory_bytes(1).unwrap() as u64;
    // Enough for a training step of one digit, but not for 1024 generated images.
    let available = 4 * step;
    let err = check_step_memory(&settings, Some(available)).unwrap_err();
    let Error::InvalidArgument { name: "sample_count", value, expected } = &err else {
        panic!("{err}");
    };
    assert_eq!(value, "1024");

    // The largest grid it names fits, and one more image does not.
    let largest: usize = expected
        .strip_prefix("at most ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{expected}"));
    assert!((1..1024).contains(&largest), "{expected}");
    settings.sample_count = largest;
    check_step_memory(&settings, Some(available)).unwrap();
    settings.sample_count = largest + 1;
    assert!(check_step_memory(&settings, Some(available)).is_err());
    check_step_memory(&settings, None).unwrap();
}

/// A parameter name and an edit that makes it invalid.
type InvalidCase = (&'static str, fn(&mut RunSettings));

#[test]
fn invalid_settings_are_rejected() {
    let cases: [InvalidCase; 9] = [
        ("batch_size", |s| s.batch_size = 0),
        ("batch_size", |s| s.batch_size = 97),
        ("sample_count", |s| s.sample_count = 0),
        ("lr_g", |s| s.lr_g = -1.0),
        ("lr_d", |s| s.lr_d = f64::NAN),
        ("lr_d", |s| s.lr_d = 1e40),
        ("beta1", |s| s.beta1 = 1.0),
        ("digits", |s| s.digits = 0),
        ("image_size", |s| s.model.image_size = 24),
    ];
    for (name, edit) in cases {
        let mut s = settings();
        edit(&mut s);
        let err = s.validate().unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument { name: n, .. } if *n == name), "{err}");
    }
}

/// Instance noise, historical averaging and two discriminator steps per generator step.
fn trick_settings() -> RunSettings {
    let mut settings = settings();
    settings.train.d_steps = 2;
    settings.train.tricks.instance_noise =
        Some(InstanceNoise { std: 0.3, anneal_steps: 8, schedule: NoiseSchedule::Linear });
    settings.train.tricks.historical_averaging = Some(HistoricalAveraging { weight: 0.5 });
    settings
}

#[test]
fn steps_for_epochs_completes_passes() {
    // Each step takes one batch, so an epoch of six batches is six steps.
    let run = start(settings());
    assert_eq!(run.steps_for_epochs(2), 2 * run.steps_per_epoch());

    // Each step takes four batches, so an epoch of six batches is one and a half steps.
    let mut settings = settings();
    settings.train.d_steps = 4;
    let mut run = start(settings);
    assert_eq!(run.steps_per_epoch(), 1);
    assert_eq!(run.steps_for_epochs(1), 2);
    assert_eq!(run.steps_for_epochs(3), 5);
    assert_eq!(run.steps_for_epochs(u64::MAX), u64::MAX.div_ceil(4));
    take_steps(&mut run, 5);
    assert_eq!(run.epochs_done(), 3);
}

#[test]
fn resumed_run_with_tricks_equals_uninterrupted_run() {
    let mut straight = start(trick_settings());
    let straight_rows = take_steps(&mut straight, 6);
    // Three steps of two batches each make an epoch of six batches.
    assert_eq!(straight.steps_per_epoch(), 3);
    assert_eq!(straight.epochs_done(), 2);

    let folder = temp_folder("resume-tricks");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("checkpoint.safetensors");
    let mut first_half = start(trick_settings());
    take_steps(&mut first_half, 2);
    first_half.save(&path).unwrap();
    drop(first_half);
    let mut resumed = TrainingRun::load(&path, digits(&trick_settings())).unwrap();
    assert_eq!(resumed.settings(), &trick_settings(), "settings round trip");
    assert_eq!(resumed.trainer().config(), &trick_settings().train_config(), "train config");
    let resumed_rows = take_steps(&mut resumed, 4);

    assert_eq!(resumed_rows, straight_rows[2..], "metrics of steps 3 to 6");
    let trainer = (straight.trainer(), resumed.trainer());
    assert_eq!(trainer.0.generator().params(), trainer.1.generator().params(), "G parameters");
    assert_eq!(
        trainer.0.discriminator().params(),
        trainer.1.discriminator().params(),
        "D parameters"
    );
    let histories = (trainer.0.histories(), trainer.1.histories());
    assert!(histories.0 .0.is_some() && histories.0 .1.is_some(), "historical averages kept");
    assert_eq!(histories.0, histories.1, "historical averages");
    assert_eq!(trainer.0.instance_noise_rng(), trainer.1.instance_noise_rng(), "noise stream");
    assert_eq!(checkpoint_bytes(&straight), checkpoint_bytes(&resumed), "checkpoint bytes");
    assert_eq!(straight.samples().unwrap(), resumed.samples().unwrap(), "sample images");

    // The tricks take effect: the same run without them has other losses.
    let mut plain = start(settings());
    assert_ne!(take_steps(&mut plain, 2), straight_rows[..2], "tricks changed nothing");
    std::fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn default_run_equals_the_plain_trainer() {
    // The plain DCGAN step, assembled by hand as the run did before it used GanTrainer.
    let settings = settings();
    let data = digits(&settings);
    let (generator, discriminator) = settings.model.build(settings.seed).unwrap();
    let adam = |len, lr| {
        let betas = (settings.beta1, settings.beta2);
        Adam::new(len, AdamConfig { lr, betas, ..Default::default() }).unwrap()
    };
    let g_adam = adam(generator.num_params(), settings.lr_g);
    let d_adam = adam(discriminator.num_params(), settings.lr_d);
    let mut trainer = Trainer::from_parts(
        settings.model,
        generator,
        discriminator,
        g_adam,
        d_adam,
        GanLoss::default(),
        Rng::stream(settings.seed, Stream::Noise),
    )
    .unwrap();
    let mut batcher =
        Batcher::new(data.len(), settings.batch_size, settings.seed, LastBatch::Drop).unwrap();
    let mut run = start(settings);
    for step in 1..=8 {
        let stats = trainer.step(batcher.next_batch(&data).unwrap().images).unwrap();
        let row = run.step().unwrap();
        let expected = [stats.d_loss, stats.g_loss, stats.d_real, stats.d_fake, stats.d_fake_after];
        let actual = [row.loss_d, row.loss_g, row.d_real, row.d_fake, row.d_fake_after];
        assert_eq!(actual, expected, "step {step}");
    }
    assert_eq!(run.trainer().generator().params(), trainer.generator().params(), "G parameters");
    assert_eq!(
        run.trainer().discriminator().params(),
        trainer.discriminator().params(),
        "D parameters"
    );
}

#[test]
fn scoring_changes_nothing_and_logs_round_trip() {
    use dcgan::eval::{EvalOptions, Evaluator};
    use dcgan::run::quality::{read_quality, write_quality, QualityRow, QUALITY_CSV};

    let mut evaluator = Evaluator::shipped(EvalOptions::default()).unwrap();
    let mut scored = start(settings());
    let mut plain = start(settings());
    take_steps(&mut scored, 3);
    let first = scored.evaluate(&mut evaluator, 50, 1).unwrap();
    take_steps(&mut scored, 3);
    let second = scored.evaluate(&mut evaluator, 50, 1).unwrap();
    take_steps(&mut plain, 6);
    assert_eq!(checkpoint_bytes(&scored), checkpoint_bytes(&plain));
    assert_eq!(first.samples, 50);
    assert!(first.frechet_distance.is_finite(), "first distance {}", first.frechet_distance);
    assert!(second.frechet_distance.is_finite(), "second distance {}", second.frechet_distance);

    let folder = temp_folder("quality");
    std::fs::create_dir_all(&folder).unwrap();
    let rows = [QualityRow::new(3, &first), QualityRow::new(6, &second)];
    write_quality(&folder, &rows).unwrap();
    assert_eq!(read_quality(&folder.join(QUALITY_CSV), 6).unwrap(), rows);
    assert_eq!(read_quality(&folder.join(QUALITY_CSV), 5).unwrap(), rows[..1]);
    assert!(read_quality(&folder.join("missing.csv"), 6).unwrap().is_empty());
    std::fs::write(folder.join(QUALITY_CSV), "header\n1,2,3\n").unwrap();
    assert!(matches!(read_quality(&folder.join(QUALITY_CSV), 6), Err(Error::Format { .. })));
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn vbn_run_samples_use_reference_batch() {
    // 12 reference rows, more than the 9 samples of the grid.
    let mut settings = settings();
    settings.train.tricks.virtual_batch_norm = Some(VirtualBatchNormOptions { reference_size: 12 });
    let mut run = start(settings);
    take_steps(&mut run, 1);
    let samples = run.samples().unwrap();
    assert_eq!(samples.shape(), &[9, 1, 16, 16]);

    // Reference: each latent vector alone behind the reference batch, through the bare network.
    let checkpoint = run.to_checkpoint().unwrap();
    let mut trainer = GanTrainer::from_checkpoint(&checkpoint).unwrap();
    let reference = trainer.reference_noise().unwrap().clone();
    for i in 0..9 {
        let z = run.fixed_noise().slice(s![i..i + 1, .., .., ..]);
        let input = concatenate(Axis(0), &[reference.view(), z]).unwrap();
        let output = trainer.generator_mut().forward(input, Mode::Eval).unwrap();
        let expected = output.slice(s![12, .., .., ..]);
        let got = samples.slice(s![i, .., .., ..]);
        let error = got.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(error < 1e-5, "sample {i}: max error {error}");
    }

    // The bare generator would sample without the reference batch.
    let err = load_generator(&checkpoint).unwrap_err();
    match &err {
        Error::InvalidArgument { name, .. } => {
            assert_eq!(*name, "virtual_batch_norm.reference_size", "{err}")
        }
        other => panic!("expected InvalidArgument, got {other}"),
    }
}

#[test]
fn checkpoint_with_zero_data_rng_is_rejected() {
    // An all-zero data-order stream would hang the shuffle at the next epoch.
    let run = start(settings());
    let mut checkpoint = run.to_checkpoint().unwrap();
    let mut batcher: serde_json::Value = checkpoint.get_json("batcher").unwrap();
    batcher["epoch_rng"] = serde_json::json!({ "inner": { "s": [0, 0, 0, 0] } });
    checkpoint.set_json("batcher", &batcher).unwrap();
    let err = TrainingRun::from_checkpoint(&checkpoint, digits(&settings())).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("batcher"), "{err}");
    assert!(err.to_string().contains("[0, 0, 0, 0]"), "{err}");
}

#[test]
fn checkpoint_with_impossible_epoch_is_rejected() {
    let mut run = start(settings());
    take_steps(&mut run, 2);
    let mut checkpoint = run.to_checkpoint().unwrap();
    let mut batcher: serde_json::Value = checkpoint.get_json("batcher").unwrap();
    batcher["epoch"] = serde_json::json!(u64::MAX);
    checkpoint.set_json("batcher", &batcher).unwrap();
    let err = TrainingRun::from_checkpoint(&checkpoint, digits(&settings())).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains(&u64::MAX.to_string()), "{err}");
}

#[test]
fn generator_loader_rejects_disagreeing_models() {
    let run = start(settings());
    let mut checkpoint = run.to_checkpoint().unwrap();
    let claimed = DcganConfig { ngf: 64, ..settings().model };
    checkpoint.set_json("model", &claimed).unwrap();
    let err = load_generator(&checkpoint).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("ngf: 64"), "{err}");
}

#[test]
fn unknown_checkpoint_entries_are_rejected() {
    let mut run = start(settings());
    take_steps(&mut run, 1);
    let saved = run.to_checkpoint().unwrap();
    let cases = [
        ("generator.main.99.weight", true),
        ("discriminator.main.0.extra", false),
        ("g_optimizer.extra", false),
        ("extra", true),
    ];
    // The generator loader checks names outside `generator.*` only by their group.
    for (name, generator_loader_checks) in cases {
        let mut checkpoint = saved.clone();
        checkpoint.insert_tensor(name, &[3], vec![0.5; 3]).unwrap();

        let err = TrainingRun::from_checkpoint(&checkpoint, digits(&settings())).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{name}: {err}");
        assert!(err.to_string().contains(&format!("`{name}`")), "{name}: {err}");
        if generator_loader_checks {
            let Err(err) = load_generator(&checkpoint) else {
                panic!("{name}: the generator loader accepted an unknown entry");
            };
            assert!(err.to_string().contains(&format!("`{name}`")), "{name}: {err}");
        }
    }
    // An unknown scalar is rejected like a tensor.
    let mut checkpoint = saved.clone();
    checkpoint.scalars.insert("extra_steps".into(), Scalar::U64(1));
    let err = TrainingRun::from_checkpoint(&checkpoint, digits(&settings())).unwrap_err();
    assert!(err.to_string().contains("`extra_steps`"), "{err}");

    // The checkpoint as written still loads in both loaders.
    TrainingRun::from_checkpoint(&saved, digits(&settings())).unwrap();
    load_generator(&saved).unwrap();
}

#[test]
fn checkpoint_records_gemm_backend() {
    let recorded = RunSettings { gemm_backend: Some(GemmBackend::MatrixMultiply), ..settings() };
    let run = TrainingRun::new(recorded, digits(&recorded)).unwrap();
    let checkpoint = run.to_checkpoint().unwrap();
    let restored = RunSettings::from_checkpoint(&checkpoint).unwrap();
    assert_eq!(restored.gemm_backend, Some(GemmBackend::MatrixMultiply));
    assert_eq!(restored, recorded);

    // Settings written before the backend was recorded read as `None`.
    let mut json = serde_json::to_value(recorded).unwrap();
    assert_eq!(json["gemm_backend"], "matrixmultiply");
    json.as_object_mut().unwrap().remove("gemm_backend");
    let old: RunSettings = serde_json::from_value(json).unwrap();
    assert_eq!(old.gemm_backend, None);
}

#[test]
fn batch_beyond_tensor_limit_names_batch_size() {
    // At this batch the image tensor alone has more elements than the kernels take, so no
    // memory reading matters: the error names the batch size on every system.
    let mut settings = settings();
    settings.batch_size = 10_000_000;
    for available in [None, Some(u64::MAX)] {
        let err = check_step_memory(&settings, available).unwrap_err();
        let Error::InvalidArgument { name, value, expected } = &err else {
            panic!("{err}");
        };
        assert_eq!(*name, "batch_size");
        assert_eq!(value, "10000000");
        assert!(expected.starts_with("a smaller batch"), "{expected}");
        let largest: usize = expected
            .strip_prefix("a smaller batch, at most ")
            .and_then(|rest| rest.split(':').next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no largest batch in {expected:?}"));
        assert!(largest >= 1, "{expected}");
        settings.batch_size = largest;
        check_step_memory(&settings, available).unwrap();
        settings.batch_size = largest + 1;
        assert!(check_step_memory(&settings, available).is_err(), "{expected}");
        settings.batch_size = 10_000_000;
    }
    settings.batch_size = 16;
    check_step_memory(&settings, None).unwrap();
}
