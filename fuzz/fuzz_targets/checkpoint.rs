//! Fuzzes the checkpoint loader with arbitrary bytes.
//!
//! Invariants: no panic; whatever loads saves again and loads back equal (compared bit for bit,
//! so NaN values count as equal to themselves).

#![no_main]

use dcgan::checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(checkpoint) = Checkpoint::load_bytes(bytes) else {
        return;
    };
    let saved = checkpoint.to_bytes().expect("a loaded checkpoint has valid names and lengths");
    let reloaded = Checkpoint::load_bytes(&saved).expect("saved bytes load");
    assert_eq!(reloaded.to_bytes().expect("reloaded checkpoint saves"), saved);
});
