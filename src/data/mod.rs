//! Training data: the IDX reader, the MNIST digits (10,000 of them ship inside the crate), and
//! seeded batching.

pub mod batch;
pub mod idx;
pub mod mnist;

pub use batch::{Batch, Batcher, BatcherState, LastBatch};
pub use idx::{read_idx, read_idx_bytes, read_idx_file, IdxArray};
pub use mnist::{Mnist, MnistOptions};
