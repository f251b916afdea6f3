//! IDX reader: round trips of hand-built files, the shipped MNIST files, and malformed input.

mod alloc_support;

use std::io::Write;
use std::path::PathBuf;

use dcgan::data::idx::{read_idx, read_idx_bytes, read_idx_file, IdxArray, MAX_PAYLOAD_BYTES};
use dcgan::Error;
use flate2::write::GzEncoder;
use flate2::Compression;
use proptest::prelude::*;

/// Builds an IDX file by hand: two zero bytes, type, dimension count, big-endian sizes, payload.
fn idx(data_type: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, data_type, dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(level));
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn format_reason(err: Error) -> String {
    match err {
        Error::Format { format: "IDX", reason } => reason,
        other => panic!("expected an IDX format error, got {other:?}"),
    }
}

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist").join(name)
}

#[test]
fn plain_and_gzip_round_trip() {
    let payload: Vec<u8> = (0..2 * 3 * 4).map(|v| (v * 7) as u8).collect();
    let plain = idx(0x08, &[2, 3, 4], &payload);
    let expected = IdxArray { dims: vec![2, 3, 4], data: payload };
    assert_eq!(read_idx_bytes(&plain).unwrap(), expected);
    assert_eq!(read_idx_bytes(&gzip(&plain, 6)).unwrap(), expected);
}

#[test]
fn one_and_four_dimensions() {
    let labels = idx(0x08, &[5], &[3, 1, 4, 1, 5]);
    assert_eq!(read_idx_bytes(&labels).unwrap().dims, [5]);
    let four = idx(0x08, &[1, 2, 1, 2], &[9, 8, 7, 6]);
    let array = read_idx_bytes(&four).unwrap();
    assert_eq!(array.dims, [1, 2, 1, 2]);
    assert_eq!(array.data, [9, 8, 7, 6]);
}

#[test]
fn files_round_trip() {
    let folder = std::env::temp_dir().join(format!("dcgan-idx-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let plain = idx(0x08, &[3, 2], &[1, 2, 3, 4, 5, 6]);
    std::fs::write(folder.join("a.idx"), &plain).unwrap();
    std::fs::write(folder.join("a.idx.gz"), gzip(&plain, 9)).unwrap();
    for name in ["a.idx", "a.idx.gz"] {
        let array = read_idx_file(folder.join(name)).unwrap();
        assert_eq!(array.dims, [3, 2], "{name}");
        assert_eq!(array.data, [1, 2, 3, 4, 5, 6], "{name}");
    }
    std::fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn missing_file_is_io_error_with_path() {
    let err = read_idx_file("no/such/file.idx").unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("file.idx")), "{err}");
}

#[test]
fn shipped_files_match_readme() {
    let images = read_idx_file(repo_file("mnist-10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(images.dims, [10_000, 28, 28]);
    assert_eq!(images.data.len(), 10_000 * 28 * 28);

    let labels = read_idx_file(repo_file("mnist-10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(labels.dims, [10_000]);
    let mut counts = [0usize; 10];
    for &label in &labels.data {
        counts[usize::from(label)] += 1; // panics on a label above 9
    }
    // Class counts stated in data/mnist/README.md.
    assert_eq!(counts, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
}

#[test]
fn full_training_set_size_reads() {
    // The shape of MNIST's 60,000-digit training file, filled with a pattern.
    let payload: Vec<u8> = (0..60_000 * 28 * 28).map(|i| (i % 251) as u8).collect();
    let file = gzip(&idx(0x08, &[60_000, 28, 28], &payload), 1);
    let array = read_idx_bytes(&file).unwrap();
    assert_eq!(array.dims, [60_000, 28, 28]);
    assert!(array.data == payload);
}

#[test]
fn empty_and_short_headers() {
    for bytes in [&[][..], &[0, 0, 8], &[0, 0, 8, 1, 0, 0]] {
        let reason = format_reason(read_idx_bytes(bytes).unwrap_err());
        assert!(reason.contains("ends inside the header"), "{bytes:?}: {reason}");
    }
}

#[test]
fn wrong_magic() {
    let mut png_like = idx(0x08, &[1], &[0]);
    png_like[0] = 0x89;
    let reason = format_reason(read_idx_bytes(&png_like).unwrap_err());
    assert!(reason.contains("0x89000801"), "{reason}");
    assert!(reason.contains("0x00000803"), "{reason}");
}

#[test]
fn unsupported_data_type() {
    let floats = idx(0x0d, &[1], &[0, 0, 0, 0]);
    let reason = format_reason(read_idx_bytes(&floats).unwrap_err());
    assert!(reason.contains("data type 0x0d"), "{reason}");
    assert!(reason.contains("0x08"), "{reason}");
}

#[test]
fn zero_dimension_count() {
    let reason = format_reason(read_idx_bytes(&idx(0x08, &[], &[])).unwrap_err());
    assert!(reason.contains("0 dimensions"), "{reason}");
}

#[test]
fn zero_sized_dimension() {
    let reason = format_reason(read_idx_bytes(&idx(0x08, &[4, 0, 28], &[])).unwrap_err());
    assert!(reason.contains("dimension 1"), "{reason}");
}

#[test]
fn truncated_payload() {
    let bytes = idx(0x08, &[2, 3], &[1, 2, 3, 4, 5]);
    let reason = format_reason(read_idx_bytes(&bytes).unwrap_err());
    assert!(reason.contains("payload has 5 bytes: expected 6"), "{reason}");
    let reason = format_reason(read_idx_bytes(&gzip(&bytes, 6)).unwrap_err());
    assert!(reason.contains("payload has 5 bytes: expected 6"), "{reason}");
}

#[test]
fn trailing_garbage() {
    let bytes = idx(0x08, &[2], &[1, 2, 3]);
    let reason = format_reason(read_idx_bytes(&bytes).unwrap_err());
    assert!(reason.contains("after the 2-byte payload"), "{reason}");
    let reason = format_reason(read_idx_bytes(&gzip(&bytes, 6)).unwrap_err());
    assert!(reason.contains("after the 2-byte payload"), "{reason}");
}

#[test]
fn trailing_bytes_after_gzip_stream() {
    let mut bytes = gzip(&idx(0x08, &[2], &[1, 2]), 6);
    bytes.extend_from_slice(b"junk");
    let reason = format_reason(read_idx_bytes(&bytes).unwrap_err());
    assert!(reason.contains("after the end of the gzip stream"), "{reason}");
}

#[test]
fn truncated_gzip_stream() {
    let payload: Vec<u8> = (0..4000).map(|i| (i * 31 % 256) as u8).collect();
    let full = gzip(&idx(0x08, &[4000], &payload), 6);
    // Cut inside the deflate data and inside the 8-byte CRC/size trailer.
    for cut in [12, full.len() / 2, full.len() - 5, full.len() - 1] {
        let result = read_idx_bytes(&full[..cut]);
        assert!(matches!(result, Err(Error::Format { .. })), "cut at {cut}: {result:?}");
    }
}

#[test]
fn corrupt_gzip_checksum() {
    let mut bytes = gzip(&idx(0x08, &[3], &[7, 8, 9]), 6);
    let crc_at = bytes.len() - 8;
    bytes[crc_at] ^= 0xff;
    let reason = format_reason(read_idx_bytes(&bytes).unwrap_err());
    assert!(reason.contains("invalid gzip data"), "{reason}");
}

#[test]
fn hostile_headers_are_not_allocated() {
    // 2^30 * 2^30 = 2^60 bytes: over the cap, rejected from the header alone.
    let huge = idx(0x08, &[1 << 30, 1 << 30], &[1, 2, 3]);
    let reason = format_reason(read_idx_bytes(&huge).unwrap_err());
    assert!(reason.contains(&format!("more than {MAX_PAYLOAD_BYTES} bytes")), "{reason}");

    // 255 dimensions of 2^32 - 1 overflow u64.
    let overflow = idx(0x08, &[u32::MAX; 255], &[]);
    assert!(read_idx_bytes(&overflow).is_err());

    // 3 GiB is under the cap, so the reader starts on the payload. It must not reserve 3 GiB
    // for the 4 bytes that follow, neither plain nor behind gzip.
    let claim = idx(0x08, &[3, 1 << 30], &[1, 2, 3, 4]);
    let reason = format_reason(read_idx_bytes(&claim).unwrap_err());
    assert!(reason.contains("payload has 4 bytes"), "{reason}");
    assert!(read_idx_bytes(&gzip(&claim, 6)).is_err());

    // Other tests in this binary allocate at most a few times the 47 MB training-set payload.
    let max_size = alloc_support::max_allocation();
    assert!(max_size < 1 << 30, "largest allocation {max_size} bytes");
}

#[test]
fn custom_cap_applies() {
    let bytes = idx(0x08, &[10], &[0; 10]);
    assert!(read_idx(&bytes[..], "ten bytes", 10).is_ok());
    let reason = format_reason(read_idx(&bytes[..], "ten bytes", 9).unwrap_err());
    assert!(reason.starts_with("ten bytes: "), "{reason}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any damage to a valid file gives Ok with consistent sizes or an error, never a panic.
    #[test]
    fn damaged_input_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        compress in any::<bool>(),
    ) {
        let plain = idx(0x08, &[3, 4], &(0..12).collect::<Vec<u8>>());
        let mut bytes = if compress { gzip(&plain, 6) } else { plain };
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(array) = read_idx_bytes(&bytes) {
            prop_assert_eq!(array.data.len(), array.dims.iter().product::<usize>());
        }
    }
}
