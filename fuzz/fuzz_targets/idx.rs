//! Fuzzes the IDX reader and the MNIST conversion with arbitrary bytes, plain or behind gzip.
//!
//! Invariants: no panic; a successful read has a payload of exactly the product of its
//! dimensions; a successful MNIST conversion has one label per image.

#![no_main]

use dcgan::data::idx::{read_idx_bytes, IdxArray};
use dcgan::data::{Mnist, MnistOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(array) = read_idx_bytes(bytes) else {
        return;
    };
    assert_eq!(array.data.len(), array.dims.iter().product::<usize>());

    // Made-up labels, one per item of the outer dimension, so the conversion's shape and label
    // checks run too.
    let count = array.dims[0];
    let labels = IdxArray { dims: vec![count], data: (0..count).map(|i| (i % 10) as u8).collect() };
    let options = MnistOptions { size: 16, limit: Some(4) };
    if let Ok(mnist) = Mnist::from_idx(&array, &labels, &options) {
        assert_eq!(mnist.images.shape()[0], mnist.labels.len());
    }
});
