//! Shared write access to disjoint ranges of one slice from several rayon tasks.
//!
//! `par_chunks_mut` covers outputs that split into equal contiguous chunks. Some work items of
//! the convolution drivers own several separate ranges instead (one channel block in each sample
//! of a group, one column block in each row of the weight gradient); [`DisjointSlice`] hands
//! those out, and its one obligation on the caller is that ranges in use at the same time never
//! overlap.

use std::marker::PhantomData;
use std::ops::Range;

/// A mutable slice that parallel tasks carve into non-overlapping ranges.
pub(crate) struct DisjointSlice<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: the type is a `&mut [f32]` that may be shared; `range_mut`'s contract makes every
// access through a shared reference exclusive to one range, and f32 is Send.
unsafe impl Send for DisjointSlice<'_> {}
// SAFETY: as above; concurrent `range_mut` calls are sound because their ranges are disjoint.
unsafe impl Sync for DisjointSlice<'_> {}

impl<'a> DisjointSlice<'a> {
    /// Takes the mutable borrow of `data` for the lifetime of the returned value.
    pub fn new(data: &'a mut [f32]) -> Self {
        DisjointSlice { ptr: data.as_mut_ptr(), len: data.len(), _borrow: PhantomData }
    }

    /// The elements `range` of the slice.
    ///
    /// # Panics
    /// If `range` is not inside the slice.
    ///
    /// # Safety
    /// While the returned slice is alive, no other call may return a range that overlaps it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range_mut(&self, range: Range<usize>) -> &mut [f32] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range {range:?} outside a slice of {}",
            self.len
        );
        // SAFETY: the range lies inside the borrowed slice (checked above), and the caller
        // guarantees that no other live slice from this value overlaps it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn interleaved_ranges_from_parallel_tasks() {
        // Task t owns elements [10 * i + 2 * t, 10 * i + 2 * t + 2) for every i: five tasks
        // interleave through the whole slice.
        let mut data = vec![0.0f32; 1000];
        let shared = DisjointSlice::new(&mut data);
        (0..5usize).into_par_iter().for_each(|t| {
            for i in 0..100 {
                let start = 10 * i + 2 * t;
                // SAFETY: tasks use distinct residues of `start` modulo 10, two elements each.
                let part = unsafe { shared.range_mut(start..start + 2) };
                part.fill(t as f32 + 1.0);
            }
        });
        for (i, v) in data.iter().enumerate() {
            assert_eq!(*v, ((i % 10) / 2) as f32 + 1.0, "element {i}");
        }
    }

    #[test]
    #[should_panic(expected = "outside a slice")]
    fn range_past_the_end_panics() {
        let mut data = [0.0f32; 4];
        let shared = DisjointSlice::new(&mut data);
        // SAFETY: the only range requested; it panics before any slice exists.
        let _ = unsafe { shared.range_mut(2..5) };
    }
}
