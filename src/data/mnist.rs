//! MNIST digits as network-ready tensors.
//!
//! Pixels are bytes with 0 as background. They become `f32` in [-1, 1] as `p / 127.5 - 1`, so the
//! background is -1, the value a generator's `tanh` output approaches for black. The 28x28 digits
//! are laid out at the requested side length:
//!
//! - 28: as stored.
//! - 32 (the default): padded with 2 background pixels on every side, the usual DCGAN input.
//! - 16, 64, 128: padded to 32 as above, then resized bilinearly, so the digit fills the same
//!   fraction of the frame at every size. The resize samples at pixel centres with the border
//!   pixel repeated outside the image (PyTorch's `interpolate(mode="bilinear",
//!   align_corners=False)` without antialiasing): 32 to 16 is then the mean of each 2x2 block,
//!   and 32 to 64 or 128 interpolates between neighbouring pixels.

use std::path::Path;

use ndarray::Array4;
use rayon::prelude::*;

use super::idx::{self, IdxArray};
use crate::error::{check_len, checked_product, Error, Result};

/// The shipped test-set images: 10,000 x 28 x 28 bytes, gzip-compressed IDX.
static SHIPPED_IMAGES: &[u8] = include_bytes!("../../data/mnist/mnist-10k-images-idx3-ubyte.gz");

/// The shipped labels of [`SHIPPED_IMAGES`], in the same order.
static SHIPPED_LABELS: &[u8] = include_bytes!("../../data/mnist/mnist-10k-labels-idx1-ubyte.gz");

/// Side length of an MNIST digit as stored.
pub const DIGIT_SIZE: usize = 28;

/// The image side lengths [`Mnist`] can produce.
pub const SUPPORTED_SIZES: [usize; 5] = [16, 28, 32, 64, 128];

/// Side length after padding, the starting point of every resize.
const PADDED_SIZE: usize = 32;

/// How to turn the stored digits into tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MnistOptions {
    /// Side length of the output images, one of [`SUPPORTED_SIZES`]. Default 32.
    pub size: usize,
    /// Keep only the first `limit` digits (all of them if there are fewer). `None` keeps all.
    pub limit: Option<usize>,
}

impl Default for MnistOptions {
    fn default() -> Self {
        MnistOptions { size: PADDED_SIZE, limit: None }
    }
}

/// MNIST digits and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Mnist {
    /// Images in `[n, 1, size, size]`, values in [-1, 1], background -1.
    pub images: Array4<f32>,
    /// The digit shown by each image, 0 to 9.
    pub labels: Vec<u8>,
}

impl Mnist {
    /// Loads the 10,000 test-set digits that ship inside the crate (see `data/mnist/README.md`
    /// for their source and licence).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an unsupported `options.size` or a zero `options.limit`.
    pub fn shipped(options: &MnistOptions) -> Result<Mnist> {
        check_options(options)?;
        let images = idx::read_idx(SHIPPED_IMAGES, "shipped MNIST images", idx::MAX_PAYLOAD_BYTES)?;
        let labels = idx::read_idx(SHIPPED_LABELS, "shipped MNIST labels", idx::MAX_PAYLOAD_BYTES)?;
        Mnist::from_idx(&images, &labels, options)
    }

    /// Loads digits from a pair of IDX files, plain or gzip-compressed, such as MNIST's
    /// `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] and [`Error::Format`] from reading either file, [`Error::Format`] if their
    /// shapes are not MNIST's or their counts differ, and [`Error::InvalidArgument`] for bad
    /// `options`.
    pub fn from_files(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        options: &MnistOptions,
    ) -> Result<Mnist> {
        check_options(options)?;
        let images = idx::read_idx_file(images)?;
        let labels = idx::read_idx_file(labels)?;
        Mnist::from_idx(&images, &labels, options)
    }

    /// Builds the tensors from parsed IDX arrays: images `[count, 28, 28]`, labels `[count]`
    /// with values 0 to 9.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if the shapes are not MNIST's, the counts differ or a label exceeds 9;
    /// [`Error::InvalidArgument`] for bad `options`.
    pub fn from_idx(images: &IdxArray, labels: &IdxArray, options: &MnistOptions) -> Result<Mnist> {
        check_options(options)?;

        // Shapes: [count, 28, 28] and [count].
        if images.dims.len() != 3 || images.dims[1..] != [DIGIT_SIZE, DIGIT_SIZE] {
            return Err(mnist_error(format!(
                "images have dimensions {:?}: expected [count, 28, 28] (IDX magic 0x00000803)",
                images.dims
            )));
        }
        if labels.dims.len() != 1 {
            return Err(mnist_error(format!(
                "labels have dimensions {:?}: expected [count] (IDX magic 0x00000801)",
                labels.dims
            )));
        }
        check_len("MNIST images", images.data.len(), checked_product("IDX", &images.dims)?)?;
        check_len("MNIST labels", labels.data.len(), labels.dims[0])?;
        if images.dims[0] != labels.dims[0] {
            return Err(mnist_error(format!(
                "{} images but {} labels: expected one label per image",
                images.dims[0], labels.dims[0]
            )));
        }
        if let Some(index) = labels.data.iter().position(|&label| label > 9) {
            return Err(mnist_error(format!(
                "label {index} is {}: expected a digit 0 to 9",
                labels.data[index]
            )));
        }

        // The first `limit` digits, laid out at the requested size.
        let count = options.limit.map_or(images.dims[0], |limit| limit.min(images.dims[0]));
        let size = options.size;
        let plane = size * size;
        let total = checked_product("MNIST image tensor", &[count, plane])?;
        let mut pixels = vec![0.0f32; total];
        pixels
            .par_chunks_mut(plane)
            .zip(images.data.par_chunks(DIGIT_SIZE * DIGIT_SIZE))
            .for_each(|(out, digit)| layout_digit(digit, size, out));

        let images = Array4::from_shape_vec((count, 1, size, size), pixels)
            .expect("buffer length is count * size * size by construction");
        Ok(Mnist { images, labels: labels.data[..count].to_vec() })
    }

    /// Returns the number of digits.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Returns whether there are no digits (never true for a successfully loaded set).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Returns the side length of the images.
    pub fn size(&self) -> usize {
        self.images.shape()[3]
    }
}

fn check_options(options: &MnistOptions) -> Result<()> {
    if !SUPPORTED_SIZES.contains(&options.size) {
        return Err(Error::invalid(
            "size",
            options.size,
            format!("one of {SUPPORTED_SIZES:?} (side length of the output images)"),
        ));
    }
    if options.limit == Some(0) {
        return Err(Error::invalid("limit", 0, "at least 1 digit, or None for all"));
    }
    Ok(())
}

fn mnist_error(reason: String) -> Error {
    Error::Format { format: "MNIST", reason }
}

/// Writes one 28x28 byte digit into `out` (`size * size` values in [-1, 1]).
fn layout_digit(digit: &[u8], size: usize, out: &mut [f32]) {
    let to_unit = |pixel: u8| f32::from(pixel) / 127.5 - 1.0;
    if size == DIGIT_SIZE {
        for (value, &pixel) in out.iter_mut().zip(digit) {
            *value = to_unit(pixel);
        }
        return;
    }

    // Pad to 32x32 with background, directly into `out` when that is the final size.
    let margin = (PADDED_SIZE - DIGIT_SIZE) / 2;
    let mut padded_buffer = Vec::new();
    let padded: &mut [f32] = if size == PADDED_SIZE {
        out
    } else {
        padded_buffer.resize(PADDED_SIZE * PADDED_SIZE, 0.0);
        &mut padded_buffer
    };
    padded.fill(-1.0);
    for (row, digit_row) in digit.chunks_exact(DIGIT_SIZE).enumerate() {
        let start = (row + margin) * PADDED_SIZE + margin;
        for (value, &pixel) in padded[start..start + DIGIT_SIZE].iter_mut().zip(digit_row) {
            *value = to_unit(pixel);
        }
    }

    if size != PADDED_SIZE {
        resize_bilinear(&padded_buffer, PADDED_SIZE, out, size);
    }
}

/// One output coordinate's bilinear taps: `(1 - weight) * src[low] + weight * src[high]`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Taps {
    low: usize,
    high: usize,
    weight: f32,
}

/// Taps for resizing one axis from `in_size` to `out_size` samples, sampling at pixel centres:
/// output `o` reads input coordinate `(o + 0.5) * in_size / out_size - 0.5`, clamped to the
/// image so the border pixel repeats.
fn axis_taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    (0..out_size)
        .map(|o| {
            let x = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let low = (x.floor() as usize).min(in_size - 1);
            let high = (low + 1).min(in_size - 1);
            Taps { low, high, weight: (x - low as f64) as f32 }
        })
        .collect()
}

/// Resizes a square `in_size` x `in_size` image to `out_size` x `out_size` bilinearly (see the
/// module documentation for the sampling convention).
pub(crate) fn resize_bilinear(src: &[f32], in_size: usize, out: &mut [f32], out_size: usize) {
    debug_assert_eq!(src.len(), in_size * in_size);
    debug_assert_eq!(out.len(), out_size * out_size);
    let taps = axis_taps(in_size, out_size);
    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;

    for (out_row, row_taps) in out.chunks_exact_mut(out_size).zip(&taps) {
        let top = &src[row_taps.low * in_size..][..in_size];
        let bottom = &src[row_taps.high * in_size..][..in_size];
        for (value, col_taps) in out_row.iter_mut().zip(&taps) {
            let upper = lerp(top[col_taps.low], top[col_taps.high], col_taps.weight);
            let lower = lerp(bottom[col_taps.low], bottom[col_taps.high], col_taps.weight);
            *value = lerp(upper, lower, row_taps.weight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_by_two_averages_blocks() {
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect(); // 4x4
        let mut out = vec![0.0; 4];
        resize_bilinear(&src, 4, &mut out, 2);
        // Block means, e.g. (0 + 1 + 4 + 5) / 4.
        assert_eq!(out, [2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn upsample_by_two_matches_hand_interpolation() {
        // 2x2 input [[0, 4], [8, 12]]; output centres map to input coordinates
        // -0.25 (clamped to 0), 0.25, 0.75, 1.25 (high tap clamped to 1).
        let src = [0.0, 4.0, 8.0, 12.0];
        let mut out = vec![0.0; 16];
        resize_bilinear(&src, 2, &mut out, 4);
        let row = |r: f32| [r, r + 1.0, r + 3.0, r + 4.0];
        let expected: Vec<f32> = [0.0, 2.0, 6.0, 8.0].iter().flat_map(|&r| row(r)).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn resize_keeps_constant_image() {
        let src = vec![-1.0; 32 * 32];
        for size in [16, 64, 128] {
            let mut out = vec![0.0; size * size];
            resize_bilinear(&src, 32, &mut out, size);
            assert!(out.iter().all(|&v| v == -1.0), "size {size}");
        }
    }
}
