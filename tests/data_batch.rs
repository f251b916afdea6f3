//! Batching: reproducible shuffles, epoch coverage, and resuming from a saved state.

use dcgan::data::{Batcher, BatcherState, LastBatch, Mnist};
use dcgan::rng::{Rng, Stream};
use dcgan::Error;
use ndarray::{s, Array4};

fn draw(batcher: &mut Batcher, batches: usize) -> Vec<Vec<usize>> {
    (0..batches).map(|_| batcher.next_indices()).collect()
}

#[test]
fn same_seed_same_batches() {
    let mut a = Batcher::new(103, 10, 42, LastBatch::Drop).unwrap();
    let mut b = Batcher::new(103, 10, 42, LastBatch::Drop).unwrap();
    assert_eq!(draw(&mut a, 35), draw(&mut b, 35));
}

#[test]
fn different_seed_different_order() {
    let mut a = Batcher::new(100, 10, 1, LastBatch::Drop).unwrap();
    let mut b = Batcher::new(100, 10, 2, LastBatch::Drop).unwrap();
    assert_ne!(draw(&mut a, 10), draw(&mut b, 10));
}

#[test]
fn first_epoch_is_data_stream_shuffle() {
    // Reference: a Fisher-Yates shuffle of 0..len drawn from the data stream of the seed.
    let mut expected: Vec<usize> = (0..50).collect();
    Rng::stream(9, Stream::Data).shuffle(&mut expected);
    let mut batcher = Batcher::new(50, 5, 9, LastBatch::Drop).unwrap();
    assert_eq!(draw(&mut batcher, 10).concat(), expected);
}

#[test]
fn every_index_once_per_epoch() {
    for (len, batch_size) in [(100, 10), (103, 10), (7, 7), (7, 1)] {
        let mut batcher = Batcher::new(len, batch_size, 5, LastBatch::Drop).unwrap();
        let per_epoch = len / batch_size;
        assert_eq!(batcher.batches_per_epoch(), per_epoch);
        let mut previous = None;
        for epoch in 0..3 {
            assert_eq!(batcher.epoch(), epoch);
            let batches = draw(&mut batcher, per_epoch);
            assert!(batches.iter().all(|b| b.len() == batch_size), "len {len}: short batch");
            let mut seen = batches.concat();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), per_epoch * batch_size, "len {len}: repeated index");
            assert!(seen.iter().all(|&i| i < len));
            if len > 1 {
                assert_ne!(previous.as_ref(), Some(&batches), "len {len}: epoch repeated");
            }
            previous = Some(batches);
        }
    }
}

#[test]
fn keep_last_returns_short_batch() {
    let mut batcher = Batcher::new(23, 10, 3, LastBatch::Keep).unwrap();
    assert_eq!(batcher.batches_per_epoch(), 3);
    for epoch in 0..2 {
        let batches = draw(&mut batcher, 3);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3], "epoch {epoch}");
        let mut seen = batches.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..23).collect::<Vec<_>>(), "epoch {epoch}");
    }
    assert_eq!(batcher.epoch(), 2);
}

#[test]
fn keep_last_allows_batch_larger_than_data() {
    let mut batcher = Batcher::new(4, 10, 3, LastBatch::Keep).unwrap();
    let mut batch = batcher.next_indices();
    batch.sort_unstable();
    assert_eq!(batch, [0, 1, 2, 3]);
    assert_eq!(batcher.epoch(), 1);
}

#[test]
fn resume_mid_epoch_continues_identically() {
    for last_batch in [LastBatch::Drop, LastBatch::Keep] {
        let mut original = Batcher::new(47, 8, 11, last_batch).unwrap();
        draw(&mut original, 9);
        let expected_position = if last_batch == LastBatch::Drop { 32 } else { 24 };
        assert_eq!((original.epoch(), original.state().position), (1, expected_position));
        let saved = serde_json::to_string(original.state()).unwrap();

        let state: BatcherState = serde_json::from_str(&saved).unwrap();
        let mut resumed = Batcher::from_state(state, 47).unwrap();
        assert_eq!(resumed.epoch(), original.epoch());
        assert_eq!(draw(&mut resumed, 20), draw(&mut original, 20), "{last_batch:?}");
    }
}

#[test]
fn resume_at_epoch_start() {
    let mut original = Batcher::new(30, 10, 4, LastBatch::Drop).unwrap();
    draw(&mut original, 3);
    assert_eq!((original.epoch(), original.state().position), (1, 0));
    let mut resumed = Batcher::from_state(original.state().clone(), 30).unwrap();
    assert_eq!(draw(&mut resumed, 7), draw(&mut original, 7));
}

#[test]
fn invalid_sizes_are_rejected() {
    let name_of = |result: dcgan::Result<Batcher>| match result {
        Err(Error::InvalidArgument { name, .. }) => name,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert_eq!(name_of(Batcher::new(0, 1, 0, LastBatch::Drop)), "len");
    assert_eq!(name_of(Batcher::new(10, 0, 0, LastBatch::Keep)), "batch_size");
    assert_eq!(name_of(Batcher::new(10, 11, 0, LastBatch::Drop)), "batch_size");
}

#[test]
fn unallocatable_length_is_rejected() {
    // The permutation of usize::MAX indices exceeds the address space: an error, not a panic.
    let err = Batcher::new(usize::MAX, 16, 0, LastBatch::Drop).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "len", .. }), "{err}");
    assert!(err.to_string().contains(&usize::MAX.to_string()), "{err}");
}

#[test]
fn foreign_or_corrupt_state_is_rejected() {
    let state = Batcher::new(100, 10, 0, LastBatch::Drop).unwrap().state().clone();
    let err = Batcher::from_state(state.clone(), 99).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "state.len", .. }), "{err}");

    // A corrupt length is caught before the permutation is allocated.
    let huge = BatcherState { len: usize::MAX, ..state.clone() };
    assert!(Batcher::from_state(huge, 100).is_err());

    for position in [5, 100, 110] {
        let moved = BatcherState { position, ..state.clone() };
        let err = Batcher::from_state(moved, 100).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "position", .. }), "{err}");
    }
}

fn tiny_dataset(len: usize) -> Mnist {
    // Image i is filled with the value i, so a batch shows which items it holds.
    let images = Array4::from_shape_fn((len, 1, 2, 2), |(i, _, _, _)| i as f32);
    let labels = (0..len).map(|i| (i % 10) as u8).collect();
    Mnist { images, labels }
}

#[test]
fn next_batch_gathers_images_and_labels() {
    let data = tiny_dataset(12);
    let mut batcher = Batcher::new(12, 5, 8, LastBatch::Drop).unwrap();
    let mut reference = batcher.clone();
    for _ in 0..5 {
        let indices = reference.next_indices();
        let batch = batcher.next_batch(&data).unwrap();
        assert_eq!(batch.images.shape(), [5, 1, 2, 2]);
        for (row, &index) in indices.iter().enumerate() {
            let image = batch.images.slice(s![row, .., .., ..]);
            assert!(image.iter().all(|&v| v == index as f32), "row {row} is not item {index}");
            assert_eq!(batch.labels[row], (index % 10) as u8);
        }
    }
}

#[test]
fn next_batch_checks_data_length() {
    let mut batcher = Batcher::new(12, 5, 8, LastBatch::Drop).unwrap();
    let err = batcher.next_batch(&tiny_dataset(13)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "data.len()", .. }), "{err}");
    assert_eq!(batcher.state().position, 0, "a rejected call must not draw");
}
