//! Checkpoints: round trips, compatibility with the safetensors crate, malformed files, and
//! atomic replacement.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dcgan::checkpoint::{insert_network, restore_network, Checkpoint, Scalar, CHECKSUM_KEY};
use dcgan::loss::GanLoss;
use dcgan::models::DcganConfig;
use dcgan::rng::{Rng, Stream};
use dcgan::train::Trainer;
use dcgan::Error;
use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// A fresh folder under the system temp folder, removed when dropped.
struct TempFolder(PathBuf);

impl TempFolder {
    fn new(name: &str) -> TempFolder {
        let path = std::env::temp_dir().join(format!("dcgan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempFolder(path)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample() -> Checkpoint {
    let mut checkpoint = Checkpoint::new();
    let weight: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 3.0).collect();
    checkpoint.insert_tensor("generator.conv1.weight", &[2, 3, 2, 2], weight).unwrap();
    checkpoint.insert_tensor("generator.conv1.bias", &[3], vec![f32::MIN, 0.0, f32::MAX]).unwrap();
    checkpoint.insert_tensor("scale", &[], vec![1.5]).unwrap();
    checkpoint.scalars.insert("step".into(), Scalar::U64(u64::MAX));
    checkpoint.scalars.insert("lr".into(), Scalar::F64(2e-4));
    checkpoint.metadata.insert("note".into(), "dcgan \"test\" run".into());
    checkpoint
}

fn format_reason(err: Error) -> String {
    match err {
        Error::Format { reason, .. } => reason,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn file_round_trip() {
    let folder = TempFolder::new("ckpt-round-trip");
    let path = folder.0.join("model.safetensors");
    let mut checkpoint = sample();
    let mut rng = Rng::stream(3, Stream::Noise);
    rng.next_u64();
    checkpoint.set_json("rng.noise", &rng).unwrap();
    checkpoint.save(&path).unwrap();

    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded, checkpoint);
    let mut restored: Rng = loaded.get_json("rng.noise").unwrap();
    assert_eq!(restored.next_u64(), rng.next_u64());
    assert_eq!(loaded.get_u64("step").unwrap(), u64::MAX);
    assert_eq!(loaded.get_f64("lr").unwrap(), 2e-4);
    assert_eq!(loaded.get("scale", &[]).unwrap(), [1.5]);
}

#[test]
fn special_floats_keep_their_bits() {
    let values = vec![f32::NAN, -0.0, f32::INFINITY, f32::MIN_POSITIVE / 2.0];
    let mut checkpoint = Checkpoint::new();
    checkpoint.insert_tensor("odd", &[4], values.clone()).unwrap();
    checkpoint.scalars.insert("nan".into(), Scalar::F64(f64::NAN));
    let loaded = Checkpoint::load_bytes(&checkpoint.to_bytes().unwrap()).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(loaded.get("odd", &[4]).unwrap()), bits(&values));
    assert!(loaded.get_f64("nan").unwrap().is_nan());
}

#[test]
fn bytes_are_deterministic() {
    assert_eq!(sample().to_bytes().unwrap(), sample().to_bytes().unwrap());
}

#[test]
fn safetensors_crate_reads_our_files() {
    let bytes = sample().to_bytes().unwrap();
    let parsed = SafeTensors::deserialize(&bytes).unwrap();
    let bias = parsed.tensor("generator.conv1.bias").unwrap();
    assert_eq!(bias.dtype(), Dtype::F32);
    assert_eq!(bias.shape(), [3]);
    let expected: Vec<u8> =
        [f32::MIN, 0.0, f32::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(bias.data(), expected);
    let step = parsed.tensor("step").unwrap();
    assert_eq!((step.dtype(), step.shape()), (Dtype::U64, &[][..]));
    assert_eq!(step.data(), u64::MAX.to_le_bytes());

    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let notes = metadata.metadata().as_ref().unwrap();
    assert_eq!(notes["note"], "dcgan \"test\" run");
}

#[test]
fn every_flipped_bit_is_an_error() {
    let bytes = sample().to_bytes().unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // A damaged name of the checksum entry leaves a file without a checksum, which loads
    // unchecked like another writer's, so those bytes are left out.
    let key = bytes.windows(CHECKSUM_KEY.len()).position(|w| w == CHECKSUM_KEY.as_bytes()).unwrap();
    for at in (0..bytes.len()).filter(|at| !(key..key + CHECKSUM_KEY.len()).contains(at)) {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            let err = Checkpoint::load_bytes(&damaged).unwrap_err();
            if at >= header_end {
                // The data bytes parse whatever their value: only the checksum catches them.
                let reason = format_reason(err);
                assert!(
                    reason.contains("CRC-32 checksum mismatch"),
                    "byte {at} bit {bit}: {reason}"
                );
            }
        }
    }
}

#[test]
fn checksum_key_is_reserved() {
    let mut checkpoint = sample();
    checkpoint.metadata.insert(CHECKSUM_KEY.into(), "00000000".into());
    let err = checkpoint.to_bytes().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "metadata key", .. }), "{err}");
    let loaded = Checkpoint::load_bytes(&sample().to_bytes().unwrap()).unwrap();
    assert!(!loaded.metadata.contains_key(CHECKSUM_KEY));
    assert_eq!(loaded, sample());
}

#[test]
fn we_read_safetensors_crate_files() {
    let weight: Vec<u8> = [1.0f32, -2.0, 3.5, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let count = 7u64.to_le_bytes();
    let tensors = [
        ("w", TensorView::new(Dtype::F32, vec![2, 2], &weight).unwrap()),
        ("count", TensorView::new(Dtype::U64, vec![], &count).unwrap()),
    ];
    let info = Some(HashMap::from([("run".to_owned(), "a".to_owned())]));
    let bytes = safetensors::serialize(tensors, &info).unwrap();

    let loaded = Checkpoint::load_bytes(&bytes).unwrap();
    assert_eq!(loaded.get("w", &[2, 2]).unwrap(), [1.0, -2.0, 3.5, 0.0]);
    assert_eq!(loaded.get_u64("count").unwrap(), 7);
    assert_eq!(loaded.metadata["run"], "a");
}

#[test]
fn wrong_shape_and_missing_names() {
    let checkpoint = sample();
    let reason = format_reason(checkpoint.get("generator.conv1.bias", &[4]).unwrap_err());
    assert!(reason.contains("shape [3]: expected [4]"), "{reason}");
    let reason = format_reason(checkpoint.get("discriminator.fc.weight", &[1, 2]).unwrap_err());
    assert!(reason.contains("`discriminator.fc.weight`"), "{reason}");
    assert!(reason.contains("generator.conv1.bias"), "{reason}");
    let reason = format_reason(checkpoint.get_u64("lr").unwrap_err());
    assert!(reason.contains("expected a U64"), "{reason}");
    assert!(checkpoint.get_f64("missing").is_err());
    assert!(checkpoint.get_json::<Rng>("note").is_err());
}

#[test]
fn insert_checks_length() {
    let mut checkpoint = Checkpoint::new();
    let err = checkpoint.insert_tensor("w", &[2, 3], vec![0.0; 5]).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { actual: 5, expected: 6, .. }), "{err}");
    let err = checkpoint.insert_tensor("w", &[usize::MAX, 2], vec![]).unwrap_err();
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
}

#[test]
fn invalid_names_are_rejected_on_save() {
    let mut reserved = Checkpoint::new();
    reserved.insert_tensor("__metadata__", &[1], vec![0.0]).unwrap();
    assert!(matches!(reserved.to_bytes(), Err(Error::InvalidArgument { name: "name", .. })));

    let mut clash = Checkpoint::new();
    clash.insert_tensor("step", &[1], vec![0.0]).unwrap();
    clash.scalars.insert("step".into(), Scalar::U64(1));
    assert!(matches!(clash.to_bytes(), Err(Error::InvalidArgument { name: "name", .. })));

    let mut bad_length = Checkpoint::new();
    bad_length.tensors.insert("w".into(), (vec![2], vec![0.0; 3]));
    assert!(matches!(bad_length.to_bytes(), Err(Error::LengthMismatch { .. })));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().to_bytes().unwrap();
    for len in 0..bytes.len() {
        let result = Checkpoint::load_bytes(&bytes[..len]);
        assert!(matches!(result, Err(Error::Format { .. })), "truncated to {len}: {result:?}");
    }
}

/// Builds a file from a header string and raw data, as a hostile writer could.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn malformed_headers_are_errors() {
    let cases: [(&str, Vec<u8>, &str); 7] = [
        ("huge header length", [u64::MAX.to_le_bytes(), [0; 8]].concat(), "header length"),
        ("header past end", [16u64.to_le_bytes(), [b'{'; 8]].concat(), "past the end"),
        ("not JSON", raw_file("{nope", &[]), "JSON"),
        (
            "absurd shape",
            raw_file(
                r#"{"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            "overflows",
        ),
        (
            "size mismatch",
            raw_file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &[0; 4]),
            "shape and dtype",
        ),
        (
            "trailing data",
            raw_file(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 8]),
            "end of the input",
        ),
        (
            "wrong dtype",
            raw_file(r#"{"w":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]),
            "dtype I32",
        ),
    ];
    for (what, bytes, expected) in cases {
        let reason = format_reason(Checkpoint::load_bytes(&bytes).unwrap_err());
        assert!(reason.starts_with("checkpoint bytes: "), "{what}: {reason}");
        assert!(reason.contains(expected), "{what}: {reason}");
    }
}

#[test]
fn vector_scalar_dtype_is_rejected() {
    let bytes = raw_file(r#"{"s":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}"#, &[0; 8]);
    let reason = format_reason(Checkpoint::load_bytes(&bytes).unwrap_err());
    assert!(reason.contains("shape [1]"), "{reason}");
}

#[test]
fn load_errors_name_the_file() {
    let folder = TempFolder::new("ckpt-errors");
    let path = folder.0.join("broken.safetensors");
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let message = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(message.contains("broken.safetensors"), "{message}");

    let err = Checkpoint::load(folder.0.join("absent.safetensors")).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("absent.safetensors")));
}

#[test]
fn foreign_files_are_not_checkpoints() {
    let folder = TempFolder::new("ckpt-foreign");
    let png = folder.0.join("samples.png");
    dcgan::image::write_grid_png(&png, &[0.0; 4], [1, 1, 2, 2], 1, 0).unwrap();
    let text = folder.0.join("notes.txt");
    std::fs::write(&text, "a text file that is long enough to have a header length\n").unwrap();
    let short = folder.0.join("short.safetensors");
    std::fs::write(&short, b"abc").unwrap();
    let not_json = folder.0.join("not-json.safetensors");
    std::fs::write(&not_json, raw_file("[1, 2, 3]", &[])).unwrap();

    for path in [&png, &text, &short, &not_json] {
        let err = Checkpoint::load(path).unwrap_err();
        let message = err.to_string();
        let expected = format!("{} is not a safetensors checkpoint: ", path.display());
        assert!(message.starts_with(&expected), "{message}");
        assert!(!message.contains("malformed"), "{message}");
        match err {
            Error::UnrecognizedFile { path: reported, .. } => assert_eq!(&reported, path),
            other => panic!("expected Error::UnrecognizedFile, got {other}"),
        }
    }
}

#[test]
fn damaged_data_stays_format_error() {
    let folder = TempFolder::new("ckpt-damaged-data");
    let path = folder.0.join("model.safetensors");
    let mut bytes = sample().to_bytes().unwrap();
    bytes.truncate(bytes.len() - 4);
    std::fs::write(&path, &bytes).unwrap();
    let err = Checkpoint::load(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn size_limit_is_checked_before_reading() {
    let folder = TempFolder::new("ckpt-limit");
    let path = folder.0.join("model.safetensors");
    sample().save(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(Checkpoint::load_with_limit(&path, len).is_ok());
    let reason = format_reason(Checkpoint::load_with_limit(&path, len - 1).unwrap_err());
    assert!(reason.contains(&format!("{len} bytes: expected at most {}", len - 1)), "{reason}");
}

#[test]
fn save_replaces_whole_file_and_leaves_no_temp() {
    let folder = TempFolder::new("ckpt-atomic");
    let path = folder.0.join("model.safetensors");
    let mut large = Checkpoint::new();
    large.insert_tensor("big", &[1000], vec![1.0; 1000]).unwrap();
    large.save(&path).unwrap();

    let small = sample();
    small.save(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), small.to_bytes().unwrap());
    assert_eq!(Checkpoint::load(&path).unwrap(), small);
    assert_eq!(folder.entries(), ["model.safetensors"]);
}

#[test]
fn failed_save_leaves_folder_untouched() {
    let folder = TempFolder::new("ckpt-failed");
    let missing = folder.0.join("no-such-folder").join("model.safetensors");
    let err = sample().save(&missing).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path.starts_with(Path::new(&folder.0))));
    assert!(folder.entries().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Damaged checkpoints load as some checkpoint or fail; they never panic.
    #[test]
    fn damaged_bytes_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = sample().to_bytes().unwrap();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(checkpoint) = Checkpoint::load_bytes(&bytes) {
            // Whatever loads must save again.
            prop_assert!(checkpoint.to_bytes().is_ok());
        }
    }
}

#[test]
fn network_round_trips_through_checkpoint() {
    let model = DcganConfig { nz: 4, ngf: 2, ndf: 2, channels: 1, image_size: 16 };
    let source = Trainer::new(model, 1, GanLoss::default()).unwrap();
    let mut checkpoint = Checkpoint::new();
    insert_network(&mut checkpoint, "g", source.generator()).unwrap();
    let mut other = Trainer::new(model, 99, GanLoss::default()).unwrap();
    assert_ne!(other.generator().params(), source.generator().params());
    restore_network(&checkpoint, "g", other.generator_mut()).unwrap();
    assert_eq!(other.generator().params(), source.generator().params());
    assert!(checkpoint.scalars.contains_key("g.main.1.num_batches_tracked"));
}

#[test]
fn unknown_network_entries_are_rejected() {
    let model = DcganConfig { nz: 4, ngf: 2, ndf: 2, channels: 1, image_size: 16 };
    let mut trainer = Trainer::new(model, 1, GanLoss::default()).unwrap();
    let mut saved = Checkpoint::new();
    insert_network(&mut saved, "g", trainer.generator()).unwrap();
    // Entries outside the prefix belong to the caller and are left alone.
    saved.insert_tensor("d.main.0.weight", &[1], vec![0.0]).unwrap();
    restore_network(&saved, "g", trainer.generator_mut()).unwrap();

    let mut extra_tensor = saved.clone();
    extra_tensor.insert_tensor("g.main.99.weight", &[2], vec![0.0; 2]).unwrap();
    let mut extra_scalar = saved.clone();
    extra_scalar.scalars.insert("g.main.1.extra_count".into(), Scalar::U64(1));
    for (checkpoint, name) in
        [(extra_tensor, "g.main.99.weight"), (extra_scalar, "g.main.1.extra_count")]
    {
        let err = restore_network(&checkpoint, "g", trainer.generator_mut()).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
    }
}

#[test]
fn oversized_batch_count_is_a_format_error() {
    let model = DcganConfig { nz: 4, ngf: 2, ndf: 2, channels: 1, image_size: 16 };
    let mut trainer = Trainer::new(model, 1, GanLoss::default()).unwrap();
    let mut checkpoint = Checkpoint::new();
    insert_network(&mut checkpoint, "g", trainer.generator()).unwrap();
    let key = "g.main.1.num_batches_tracked";
    checkpoint.scalars.insert(key.to_string(), Scalar::U64(u64::MAX));
    let reason =
        format_reason(restore_network(&checkpoint, "g", trainer.generator_mut()).unwrap_err());
    assert!(reason.contains(key), "{reason}");
    assert!(reason.contains(&u64::MAX.to_string()), "{reason}");
}
