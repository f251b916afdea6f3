//! Seeded shuffling and batching.
//!
//! Every epoch visits the items in a fresh random permutation and cuts it into consecutive
//! batches. The permutation is a Fisher-Yates shuffle of `0..len` drawn from the data stream
//! (`Rng::stream(seed, Stream::Data)`), which continues from one epoch to the next. The items left
//! over at the end of an epoch (fewer than a batch) are skipped by default ([`LastBatch::Drop`]),
//! so every batch has the same size; [`LastBatch::Keep`] returns them as a shorter final batch.
//!
//! [`BatcherState`] contains everything needed to continue: the epoch, the position in it, and
//! the generator as it was at the start of the epoch. On restore the permutation is drawn again
//! from that generator. A run resumed from a saved state draws the same batches as one that never stopped.

use ndarray::{Array4, Axis};
use serde::{Deserialize, Serialize};

use super::mnist::Mnist;
use crate::error::{Error, Result};
use crate::rng::{Rng, Stream};

/// Treatment of the items left at the end of an epoch when fewer than a batch remain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LastBatch {
    /// Skip them: every batch has exactly `batch_size` items.
    #[default]
    Drop,
    /// Return them as a shorter final batch.
    Keep,
}

/// The serialisable position of a [`Batcher`]: store it in a checkpoint and pass it to
/// [`Batcher::from_state`] to continue with the same batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// Number of items in the data set.
    pub len: usize,
    /// Items per batch.
    pub batch_size: usize,
    /// Treatment of the items left at the end of an epoch.
    pub last_batch: LastBatch,
    /// The epoch the next batch comes from, counting from 0: the number of completed epochs.
    pub epoch: u64,
    /// Index into the epoch's permutation at which the next batch starts.
    pub position: usize,
    /// The data stream as it was before this epoch's permutation was drawn.
    pub epoch_rng: Rng,
}

/// A batch of images with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Images in `[batch, channels, height, width]`.
    pub images: Array4<f32>,
    /// The label of each image.
    pub labels: Vec<u8>,
}

/// Draws shuffled batches of item indices, epoch after epoch.
#[derive(Clone, Debug)]
pub struct Batcher {
    state: BatcherState,
    /// This epoch's order of the items.
    permutation: Vec<usize>,
    /// The data stream after drawing `permutation`: the next epoch's `epoch_rng`.
    next_epoch_rng: Rng,
}

impl Batcher {
    /// Starts at epoch 0 for a data set of `len` items, shuffled by the data stream of `seed`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `len` or `batch_size` is 0, if `batch_size > len` with
    /// [`LastBatch::Drop`] (no batch could ever be drawn), or if the permutation of `len`
    /// indices cannot be allocated.
    pub fn new(len: usize, batch_size: usize, seed: u64, last_batch: LastBatch) -> Result<Batcher> {
        let state = BatcherState {
            len,
            batch_size,
            last_batch,
            epoch: 0,
            position: 0,
            epoch_rng: Rng::stream(seed, Stream::Data),
        };
        Batcher::from_state(state, len)
    }

    /// Continues from a state returned by [`Batcher::state`], for a data set of `len` items.
    ///
    /// `len` comes from the data, not from the saved state, so a state that belongs to another
    /// data set (or a corrupt one claiming billions of items) is rejected before the permutation
    /// is allocated.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for the cases of [`Batcher::new`], if `state.len != len`, and if
    /// `state.position` is not the start of a batch that the epoch still holds.
    pub fn from_state(state: BatcherState, len: usize) -> Result<Batcher> {
        if state.len != len {
            return Err(Error::invalid(
                "state.len",
                state.len,
                format!("{len}, the number of items in the data set"),
            ));
        }
        check_sizes(state.len, state.batch_size, state.last_batch)?;
        if !state.position.is_multiple_of(state.batch_size) || state.position >= batches_end(&state)
        {
            return Err(Error::invalid(
                "position",
                state.position,
                format!(
                    "a multiple of batch_size {} below {} (the start of a remaining batch)",
                    state.batch_size,
                    batches_end(&state)
                ),
            ));
        }
        let mut permutation = Vec::new();
        permutation.try_reserve_exact(state.len).map_err(|_| {
            let bytes = state.len.saturating_mul(std::mem::size_of::<usize>());
            Error::invalid(
                "len",
                state.len,
                format!(
                    "a data set length whose permutation fits in memory, but its {bytes} bytes \
                     could not be allocated"
                ),
            )
        })?;
        let next_epoch_rng = draw_permutation(&mut permutation, state.len, &state.epoch_rng);
        Ok(Batcher { state, permutation, next_epoch_rng })
    }

    /// Returns the state to save. Restoring it continues with the batch that would come next.
    pub fn state(&self) -> &BatcherState {
        &self.state
    }

    /// Returns the epoch the next batch comes from, which is the number of completed epochs.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// Returns the number of batches in each epoch.
    pub fn batches_per_epoch(&self) -> usize {
        match self.state.last_batch {
            LastBatch::Drop => self.state.len / self.state.batch_size,
            LastBatch::Keep => self.state.len.div_ceil(self.state.batch_size),
        }
    }

    /// Draws the item indices of the next batch, starting a new epoch once this one is used up.
    pub fn next_indices(&mut self) -> Vec<usize> {
        let start = self.state.position;
        let end = (start + self.state.batch_size).min(self.state.len);
        let indices = self.permutation[start..end].to_vec();

        self.state.position = end;
        if self.state.position >= batches_end(&self.state) {
            self.start_next_epoch();
        }
        indices
    }

    /// Draws the next batch of `data`: its images and labels at [`Batcher::next_indices`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `data` does not have the `len` items this batcher was made
    /// for (nothing is drawn then).
    pub fn next_batch(&mut self, data: &Mnist) -> Result<Batch> {
        if data.len() != self.state.len {
            return Err(Error::invalid(
                "data.len()",
                data.len(),
                format!("{} items, the length this batcher was created for", self.state.len),
            ));
        }
        let indices = self.next_indices();
        let images = data.images.select(Axis(0), &indices);
        let labels = indices.iter().map(|&i| data.labels[i]).collect();
        Ok(Batch { images, labels })
    }

    fn start_next_epoch(&mut self) {
        self.state.epoch += 1;
        self.state.position = 0;
        self.state.epoch_rng = self.next_epoch_rng.clone();
        self.next_epoch_rng =
            draw_permutation(&mut self.permutation, self.state.len, &self.state.epoch_rng);
    }
}

fn check_sizes(len: usize, batch_size: usize, last_batch: LastBatch) -> Result<()> {
    if len == 0 {
        return Err(Error::invalid("len", len, "at least 1 item"));
    }
    if batch_size == 0 {
        return Err(Error::invalid("batch_size", batch_size, "at least 1"));
    }
    if last_batch == LastBatch::Drop && batch_size > len {
        return Err(Error::invalid(
            "batch_size",
            batch_size,
            format!(
                "at most the data set's {len} items, because LastBatch::Drop skips incomplete \
                 batches and no batch could be drawn"
            ),
        ));
    }
    Ok(())
}

/// Returns the position where the last batch of an epoch ends. Past it, the next batch belongs
/// to the next epoch.
fn batches_end(state: &BatcherState) -> usize {
    match state.last_batch {
        LastBatch::Drop => state.len / state.batch_size * state.batch_size,
        LastBatch::Keep => state.len,
    }
}

/// Refills `permutation` with `0..len` shuffled by a copy of `rng`, reusing its memory, and
/// returns the advanced copy.
fn draw_permutation(permutation: &mut Vec<usize>, len: usize, rng: &Rng) -> Rng {
    let mut rng = rng.clone();
    permutation.clear();
    permutation.extend(0..len);
    rng.shuffle(permutation);
    rng
}
