//! Memory of loading a file that is not a checkpoint: it is rejected from its header, before
//! the rest of it is read into memory.
//!
//! The allocation tracker covers the whole test binary, so this file has one test.

mod alloc_support;

use dcgan::checkpoint::Checkpoint;
use dcgan::Error;

/// Creates a 64 MiB file (sparse where the file system allows) whose first bytes are `prefix`.
fn large_file(name: &str, prefix: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("dcgan-{name}-{}.bin", std::process::id()));
    std::fs::write(&path, prefix).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(64 << 20).unwrap();
    path
}

#[test]
fn foreign_file_rejected_before_read() {
    let mut valid_header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_vec();
    valid_header.resize(valid_header.len().next_multiple_of(8), b' ');
    let mut described = (valid_header.len() as u64).to_le_bytes().to_vec();
    described.extend_from_slice(&valid_header);
    let cases: [(&str, Vec<u8>); 3] = [
        ("zeros", Vec::new()),
        ("text", b"not a checkpoint, just text".to_vec()),
        ("short-header", described),
    ];
    for (name, prefix) in cases {
        let path = large_file(name, &prefix);
        alloc_support::reset_max_allocation();
        let result = Checkpoint::load(&path);
        let largest = alloc_support::max_allocation();
        std::fs::remove_file(&path).ok();

        let err = result.expect_err(name);
        let rejected = matches!(err, Error::Format { .. } | Error::UnrecognizedFile { .. });
        assert!(rejected, "{name}: {err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{name}: {err}");
        assert!(largest < 1 << 20, "{name}: largest allocation {largest} bytes");
    }
}
