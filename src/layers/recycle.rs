//! A process-wide pool of activation buffers.
//!
//! A training step allocates the same activations and gradients, of the same sizes, at every
//! step. Layers pass the arrays they no longer need (a replaced forward cache, a consumed
//! output gradient) to [`give`], and take new ones with [`take`] or [`zeros`]. A steady-state
//! step then reuses the previous step's memory, instead of fresh pages that the operating
//! system has to zero.
//!
//! The pool only changes where memory comes from. [`take`] returns values left over from an
//! earlier array, so it serves only outputs that the caller overwrites completely (the
//! convolution kernels do so for their outputs). Results therefore never depend on what the
//! pool contains. Buffers below [`MIN_ELEMENTS`] are not kept, and the pool keeps at most
//! [`MAX_BUFFERS`] buffers and [`MAX_ELEMENTS`] values, dropping the oldest first.

use std::sync::{Mutex, MutexGuard};

use ndarray::Array4;

/// Smallest buffer kept (64 KiB): the allocator serves smaller ones from memory it already
/// holds, without new pages.
const MIN_ELEMENTS: usize = 1 << 14;

/// Maximum number of buffers kept.
const MAX_BUFFERS: usize = 128;

/// Maximum number of values kept over all buffers (512 MiB).
const MAX_ELEMENTS: usize = 1 << 27;

/// Free buffers, oldest first, and their total length.
struct Pool {
    free: Vec<Vec<f32>>,
    elements: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new(), elements: 0 });

/// Locks the pool. A poisoned lock is used as it is, because each update (a push, or a removal
/// and a subtraction) leaves the pool consistent at every point where a panic can occur.
fn lock() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes and returns a free buffer of exactly `len` values, the most recently given first.
fn reuse(len: usize) -> Option<Vec<f32>> {
    if len < MIN_ELEMENTS {
        return None;
    }
    let mut pool = lock();
    let index = pool.free.iter().rposition(|buffer| buffer.len() == len)?;
    let buffer = pool.free.remove(index);
    pool.elements -= len;
    Some(buffer)
}

/// Returns an array of `shape` with unspecified (finite or not) values, for an output that the
/// caller overwrites completely.
pub(crate) fn take(shape: [usize; 4]) -> Array4<f32> {
    let len = shape.iter().product();
    let buffer = reuse(len).unwrap_or_else(|| vec![0.0; len]);
    Array4::from_shape_vec(shape, buffer).expect("the buffer has the shape's length")
}

/// Returns an array of `shape` filled with zeros.
pub(crate) fn zeros(shape: [usize; 4]) -> Array4<f32> {
    let len = shape.iter().product();
    let buffer = match reuse(len) {
        Some(mut buffer) => {
            buffer.fill(0.0);
            buffer
        }
        None => vec![0.0; len],
    };
    Array4::from_shape_vec(shape, buffer).expect("the buffer has the shape's length")
}

/// Returns a copy of `source` in standard layout.
pub(crate) fn copy_of(source: &Array4<f32>) -> Array4<f32> {
    let shape = source.dim();
    let mut copy = take([shape.0, shape.1, shape.2, shape.3]);
    copy.assign(source);
    copy
}

/// Returns `array`'s memory to the pool, when it is large enough to be worth keeping and owns
/// its whole buffer.
pub(crate) fn give(array: Array4<f32>) {
    let (buffer, offset) = array.into_raw_vec_and_offset();
    if buffer.len() < MIN_ELEMENTS || offset.is_some_and(|o| o != 0) {
        return;
    }
    let mut pool = lock();
    pool.elements += buffer.len();
    pool.free.push(buffer);
    while pool.free.len() > MAX_BUFFERS || pool.elements > MAX_ELEMENTS {
        let oldest = pool.free.remove(0);
        pool.elements -= oldest.len();
    }
}

/// Returns the memory of an optional array (a layer's replaced cache) to the pool.
pub(crate) fn give_opt(array: Option<Array4<f32>>) {
    if let Some(array) = array {
        give(array);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_buffer_of_same_length() {
        // Shapes no other test uses, so buffers given by concurrent tests cannot interfere.
        let shape = [1, 3, 71, 97];
        let mut array = take(shape);
        array.fill(7.0);
        let address = array.as_ptr();
        give(array);
        let other = take([1, 3, 97, 72]);
        assert_ne!(other.as_ptr(), address, "a buffer of another length was reused");
        let again = zeros(shape);
        assert_eq!(again.as_ptr(), address, "the given buffer was not reused");
        assert!(again.iter().all(|&v| v == 0.0), "zeros returned stale values");
    }

    /// Counts the buffers of `len` values in the pool.
    fn kept(len: usize) -> usize {
        lock().free.iter().filter(|buffer| buffer.len() == len).count()
    }

    #[test]
    fn pool_keeps_large_buffers_only() {
        let small = [1, 1, 11, 13];
        give(take(small));
        assert_eq!(kept(11 * 13), 0, "a buffer below the minimum was kept");
        let large = [1, 1, 131, 137];
        give(take(large));
        assert_eq!(kept(131 * 137), 1, "a buffer above the minimum was not kept");
    }

    #[test]
    fn copy_of_equals_source() {
        let source = Array4::from_shape_fn([2, 3, 50, 70], |(a, b, c, d)| (a + b * c + d) as f32);
        assert_eq!(copy_of(&source), source);
    }
}
