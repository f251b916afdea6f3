//! Memory of loading a file that is not a checkpoint: it is rejected from its header, before
//! the rest of it is read into memory.
//!
//! The allocation tracker covers the whole test binary, so this file has one test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dcgan::checkpoint::Checkpoint;
use dcgan::Error;

/// Records the largest single allocation of this test binary.
struct MaxAllocationTracker;

static MAX_ALLOCATION_SIZE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the counter only observes sizes.
unsafe impl GlobalAlloc for MaxAllocationTracker {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        MAX_ALLOCATION_SIZE.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        MAX_ALLOCATION_SIZE.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: MaxAllocationTracker = MaxAllocationTracker;

/// A 64 MiB file (sparse where the file system allows) whose first bytes are `prefix`.
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
        MAX_ALLOCATION_SIZE.store(0, Ordering::Relaxed);
        let result = Checkpoint::load(&path);
        let largest = MAX_ALLOCATION_SIZE.load(Ordering::Relaxed);
        std::fs::remove_file(&path).ok();

        let err = result.expect_err(name);
        assert!(matches!(err, Error::Format { .. }), "{name}: {err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{name}: {err}");
        assert!(largest < 1 << 20, "{name}: largest allocation {largest} bytes");
    }
}
