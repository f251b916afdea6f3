//! MNIST tensors: the shipped digits, padding and resizing, limits, and mismatched files.

use std::path::PathBuf;

use dcgan::data::idx::{read_idx_file, IdxArray};
use dcgan::data::{Mnist, MnistOptions};
use dcgan::Error;
use ndarray::{s, Array2};

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist").join(name)
}

fn options(size: usize, limit: Option<usize>) -> MnistOptions {
    MnistOptions { size, limit }
}

/// Digit `index` of the shipped file, as raw bytes.
fn raw_digit(images: &IdxArray, index: usize) -> Array2<f32> {
    let bytes = &images.data[index * 784..(index + 1) * 784];
    Array2::from_shape_fn((28, 28), |(y, x)| f32::from(bytes[y * 28 + x]))
}

/// Bilinear sample of `src` at output pixel (oy, ox) of an `out`-sized square, evaluated
/// directly: pixel-centre coordinates, clamped to the image (align_corners=False).
fn bilinear_reference(src: &Array2<f32>, out: usize, oy: usize, ox: usize) -> f64 {
    let n = src.nrows();
    let coord =
        |o: usize| ((o as f64 + 0.5) * n as f64 / out as f64 - 0.5).clamp(0.0, (n - 1) as f64);
    let (y, x) = (coord(oy), coord(ox));
    let (y0, x0) = (y.floor() as usize, x.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(n - 1), (x0 + 1).min(n - 1));
    let (ty, tx) = (y - y0 as f64, x - x0 as f64);
    let at = |r: usize, c: usize| f64::from(src[[r, c]]);
    (1.0 - ty) * ((1.0 - tx) * at(y0, x0) + tx * at(y0, x1))
        + ty * ((1.0 - tx) * at(y1, x0) + tx * at(y1, x1))
}

#[test]
fn shipped_default_is_padded_32() {
    let mnist = Mnist::shipped(&MnistOptions::default()).unwrap();
    assert_eq!(mnist.len(), 10_000);
    assert_eq!(mnist.images.shape(), [10_000, 1, 32, 32]);
    assert_eq!(mnist.size(), 32);

    let mut counts = [0usize; 10];
    for &label in &mnist.labels {
        counts[usize::from(label)] += 1;
    }
    // Class counts stated in data/mnist/README.md.
    assert_eq!(counts, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);

    let min = mnist.images.iter().copied().fold(f32::INFINITY, f32::min);
    let max = mnist.images.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((min, max), (-1.0, 1.0));

    // The 2-pixel frame is background in every image.
    let frame_is_background = |v: &f32| *v == -1.0;
    assert!(mnist.images.slice(s![.., .., ..2, ..]).iter().all(frame_is_background));
    assert!(mnist.images.slice(s![.., .., 30.., ..]).iter().all(frame_is_background));
    assert!(mnist.images.slice(s![.., .., .., ..2]).iter().all(frame_is_background));
    assert!(mnist.images.slice(s![.., .., .., 30..]).iter().all(frame_is_background));
}

#[test]
fn pixels_map_to_unit_range() {
    let raw = read_idx_file(repo_file("mnist-10k-images-idx3-ubyte.gz")).unwrap();
    let native = Mnist::shipped(&options(28, Some(3))).unwrap();
    let padded = Mnist::shipped(&options(32, Some(3))).unwrap();
    for index in 0..3 {
        // 0 -> -1, 255 -> 1, linear in between.
        let expected = raw_digit(&raw, index).mapv(|p| p / 255.0 * 2.0 - 1.0);
        let native = native.images.slice(s![index, 0, .., ..]);
        let centre = padded.images.slice(s![index, 0, 2..30, 2..30]);
        for ((&e, &n), &c) in expected.iter().zip(native.iter()).zip(centre.iter()) {
            assert!((e - n).abs() <= 1e-6, "digit {index}: {n} vs {e}");
            assert_eq!(n, c, "digit {index}: padding moved a pixel");
        }
    }
}

#[test]
fn size_16_is_block_mean_of_32() {
    let padded = Mnist::shipped(&options(32, Some(20))).unwrap();
    let small = Mnist::shipped(&options(16, Some(20))).unwrap();
    assert_eq!(small.images.shape(), [20, 1, 16, 16]);
    for index in 0..20 {
        for y in 0..16 {
            for x in 0..16 {
                let block = padded.images.slice(s![index, 0, 2 * y..2 * y + 2, 2 * x..2 * x + 2]);
                let mean = block.sum() / 4.0;
                let got = small.images[[index, 0, y, x]];
                assert!((got - mean).abs() <= 1e-6, "digit {index} ({y}, {x}): {got} vs {mean}");
            }
        }
    }
}

#[test]
fn larger_sizes_match_bilinear_reference() {
    let padded = Mnist::shipped(&options(32, Some(4))).unwrap();
    for size in [64, 128] {
        let large = Mnist::shipped(&options(size, Some(4))).unwrap();
        assert_eq!(large.images.shape(), [4, 1, size, size]);
        for index in 0..4 {
            let src = padded.images.slice(s![index, 0, .., ..]).to_owned();
            for y in 0..size {
                for x in 0..size {
                    let expected = bilinear_reference(&src, size, y, x);
                    let got = f64::from(large.images[[index, 0, y, x]]);
                    assert!((got - expected).abs() <= 1e-6, "size {size} ({y}, {x})");
                }
            }
        }
    }
}

#[test]
fn limit_takes_first_digits() {
    let all = Mnist::shipped(&MnistOptions::default()).unwrap();
    let first = Mnist::shipped(&options(32, Some(100))).unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(first.labels, all.labels[..100]);
    assert_eq!(first.images, all.images.slice(s![..100, .., .., ..]));

    let more_than_all = Mnist::shipped(&options(32, Some(50_000))).unwrap();
    assert_eq!(more_than_all.len(), 10_000);
}

#[test]
fn unsupported_size_and_zero_limit() {
    let err = Mnist::shipped(&options(48, None)).unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { name: "size", value, .. } if value == "48"));
    assert!(err.to_string().contains("[16, 28, 32, 64, 128]"), "{err}");

    let err = Mnist::shipped(&options(32, Some(0))).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "limit", .. }), "{err}");
}

#[test]
fn from_files_matches_shipped() {
    let from_files = Mnist::from_files(
        repo_file("mnist-10k-images-idx3-ubyte.gz"),
        repo_file("mnist-10k-labels-idx1-ubyte.gz"),
        &options(32, Some(500)),
    )
    .unwrap();
    assert_eq!(from_files, Mnist::shipped(&options(32, Some(500))).unwrap());
}

fn images(count: usize, side: usize) -> IdxArray {
    IdxArray { dims: vec![count, side, side], data: vec![0; count * side * side] }
}

fn labels(values: &[u8]) -> IdxArray {
    IdxArray { dims: vec![values.len()], data: values.to_vec() }
}

fn mnist_reason(err: Error) -> String {
    match err {
        Error::Format { format: "MNIST", reason } => reason,
        other => panic!("expected an MNIST format error, got {other:?}"),
    }
}

#[test]
fn counts_must_match() {
    let err = Mnist::from_idx(&images(3, 28), &labels(&[1, 2]), &MnistOptions::default());
    let reason = mnist_reason(err.unwrap_err());
    assert!(reason.contains("3 images but 2 labels"), "{reason}");
}

#[test]
fn shapes_must_be_mnist() {
    let err = Mnist::from_idx(&images(2, 27), &labels(&[1, 2]), &MnistOptions::default());
    assert!(mnist_reason(err.unwrap_err()).contains("[2, 27, 27]"));

    let flat = IdxArray { dims: vec![2, 784], data: vec![0; 2 * 784] };
    let err = Mnist::from_idx(&flat, &labels(&[1, 2]), &MnistOptions::default());
    assert!(mnist_reason(err.unwrap_err()).contains("[2, 784]"));

    let two_dim_labels = IdxArray { dims: vec![2, 1], data: vec![1, 2] };
    let err = Mnist::from_idx(&images(2, 28), &two_dim_labels, &MnistOptions::default());
    assert!(mnist_reason(err.unwrap_err()).contains("labels have dimensions [2, 1]"));
}

#[test]
fn labels_must_be_digits() {
    let err = Mnist::from_idx(&images(3, 28), &labels(&[1, 10, 2]), &MnistOptions::default());
    let reason = mnist_reason(err.unwrap_err());
    assert!(reason.contains("label 1 is 10"), "{reason}");
}

#[test]
fn inconsistent_idx_array_is_rejected() {
    let mut short = images(2, 28);
    short.data.pop();
    let err = Mnist::from_idx(&short, &labels(&[1, 2]), &MnistOptions::default()).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
}
