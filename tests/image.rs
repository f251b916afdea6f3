//! PNG output: grid pixels checked through the png crate's decoder, and loss plots.

use std::path::PathBuf;

use dcgan::image::{
    encode_grid_png, encode_loss_plot_png, write_grid_png, write_loss_plot_png, GRID_PADDING_LEVEL,
};
use dcgan::Error;

/// Decodes a PNG into (width, height, color type, pixel bytes).
fn decode(bytes: &[u8]) -> (u32, u32, png::ColorType, Vec<u8>) {
    let decoder = png::Decoder::new(bytes);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, pixels)
}

fn temp_folder(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("dcgan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

const G: u8 = GRID_PADDING_LEVEL;

#[test]
fn grayscale_grid_pixels() {
    // Two 2x2 images side by side with 1 pixel of padding: a 7x4 grid.
    // -1 -> 0, 1 -> 255, 0 -> round(127.5) = 128, 0.5 -> round(191.25) = 191,
    // out of range clamps, NaN -> 0.
    let images = [-1.0, 1.0, 0.0, 0.5, 2.0, -7.0, f32::NAN, -0.5];
    let (width, height, color, pixels) =
        decode(&encode_grid_png(&images, [2, 1, 2, 2], 2, 1).unwrap());
    assert_eq!((width, height, color), (7, 4, png::ColorType::Grayscale));
    #[rustfmt::skip]
    let expected = [
        G, G,   G,   G, G,   G,  G,
        G, 0,   255, G, 255, 0,  G,
        G, 128, 191, G, 0,   64, G,
        G, G,   G,   G, G,   G,  G,
    ];
    assert_eq!(pixels, expected);
}

#[test]
fn rgb_grid_interleaves_channels() {
    // One 1x2 image with planes R = [1, -1], G = [-1, 1], B = [0, 0], no padding.
    let images = [1.0, -1.0, -1.0, 1.0, 0.0, 0.0];
    let (width, height, color, pixels) =
        decode(&encode_grid_png(&images, [1, 3, 1, 2], 4, 0).unwrap());
    assert_eq!((width, height, color), (2, 1, png::ColorType::Rgb));
    assert_eq!(pixels, [255, 0, 128, 0, 255, 128]);
}

#[test]
fn grid_wraps_rows_and_leaves_empty_cells_grey() {
    // Three 1x1 images in two columns: the fourth cell stays padding grey.
    let images = [-1.0, 1.0, -1.0];
    let (width, height, _, pixels) = decode(&encode_grid_png(&images, [3, 1, 1, 1], 2, 0).unwrap());
    assert_eq!((width, height), (2, 2));
    assert_eq!(pixels, [0, 255, 0, G]);
}

#[test]
fn more_columns_than_images() {
    let (width, height, _, _) = decode(&encode_grid_png(&[0.0; 2], [2, 1, 1, 1], 8, 1).unwrap());
    assert_eq!((width, height), (5, 3));
}

#[test]
fn grid_input_errors() {
    let name = |result: dcgan::Result<Vec<u8>>| match result {
        Err(Error::InvalidArgument { name, .. }) => name,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert_eq!(name(encode_grid_png(&[0.0; 8], [2, 2, 1, 2], 2, 0)), "channels");
    assert_eq!(name(encode_grid_png(&[], [0, 1, 1, 1], 2, 0)), "n");
    assert_eq!(name(encode_grid_png(&[0.0], [1, 1, 1, 1], 0, 0)), "columns");
    assert_eq!(name(encode_grid_png(&[0.0], [1, 1, 1, 1], 1, 1 << 20)), "grid width");
    assert_eq!(name(encode_grid_png(&[0.0], [1, 1, 1, 1], 1, 5000)), "grid size");
    let err = encode_grid_png(&[0.0; 3], [1, 1, 2, 2], 1, 0).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { actual: 3, expected: 4, .. }), "{err}");
    let err = encode_grid_png(&[], [usize::MAX, 1, 2, 2], 1, 0).unwrap_err();
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
}

#[test]
fn grid_file_matches_encoding() {
    let folder = temp_folder("grid");
    let path = folder.join("samples.png");
    let images: Vec<f32> = (0..4 * 3 * 5 * 5).map(|i| (i as f32 * 0.37).sin()).collect();
    write_grid_png(&path, &images, [4, 3, 5, 5], 2, 2).unwrap();
    let expected = encode_grid_png(&images, [4, 3, 5, 5], 2, 2).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    let entries: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert_eq!(entries.len(), 1, "a temporary file was left behind");
    std::fs::remove_dir_all(&folder).unwrap();
}

const BLUE: [u8; 3] = [0x1f, 0x77, 0xb4];
const ORANGE: [u8; 3] = [0xff, 0x7f, 0x0e];

/// (x, y) of every pixel of `color` in an RGB image `width` pixels wide.
fn pixels_of(pixels: &[u8], width: u32, color: [u8; 3]) -> Vec<(u32, u32)> {
    (0..pixels.len() / 3)
        .filter(|&i| pixels[i * 3..i * 3 + 3] == color)
        .map(|i| (i as u32 % width, i as u32 / width))
        .collect()
}

#[test]
fn plot_has_requested_size_and_is_deterministic() {
    let loss_d: Vec<f32> = (0..300).map(|i| 1.4 - i as f32 * 0.002).collect();
    let loss_g: Vec<f32> = (0..300).map(|i| 0.7 + (i as f32 * 0.1).sin() * 0.3).collect();
    let series = [("loss_D", &loss_d[..]), ("loss_G", &loss_g[..])];
    let bytes = encode_loss_plot_png(&series, 640, 360).unwrap();
    assert_eq!(bytes, encode_loss_plot_png(&series, 640, 360).unwrap());

    let (width, height, color, pixels) = decode(&bytes);
    assert_eq!((width, height, color), (640, 360, png::ColorType::Rgb));
    assert!(pixels_of(&pixels, width, BLUE).len() > 300, "first series not drawn");
    assert!(pixels_of(&pixels, width, ORANGE).len() > 300, "second series not drawn");
}

#[test]
fn falling_series_goes_down_the_image() {
    let falling: Vec<f32> = (0..100).map(|i| 100.0 - i as f32).collect();
    let bytes = encode_loss_plot_png(&[("x", &falling)], 400, 300).unwrap();
    let (width, _, _, pixels) = decode(&bytes);
    // Drop the legend swatch (top right) and keep the curve's pixels.
    let mut curve: Vec<(u32, u32)> =
        pixels_of(&pixels, width, BLUE).into_iter().filter(|&(_, y)| y > 40).collect();
    curve.sort();
    let (first, last) = (curve[0], curve[curve.len() - 1]);
    assert!(first.0 + 250 < last.0, "curve spans {first:?} to {last:?}");
    assert!(first.1 + 150 < last.1, "curve does not fall: {first:?} to {last:?}");
}

#[test]
fn plot_survives_odd_data() {
    let nan_and_inf = [f32::NAN, 1.0, f32::INFINITY, 2.0, f32::NEG_INFINITY, 3.0];
    let flat = [5.0f32; 10];
    let all_nan = [f32::NAN; 4];
    let cases: [&[(&str, &[f32])]; 5] = [
        &[("with gaps", &nan_and_inf)],
        &[("flat", &flat)],
        &[("nan", &all_nan)],
        &[("empty", &[])],
        &[("one", &[0.5]), ("huge", &[f32::MAX, f32::MIN])],
    ];
    for series in cases {
        let bytes = encode_loss_plot_png(series, 200, 150).unwrap();
        assert_eq!(decode(&bytes).0, 200);
    }
}

#[test]
fn isolated_point_is_visible() {
    let lonely = [f32::NAN, 1.0, f32::NAN];
    let (width, _, _, pixels) = decode(&encode_loss_plot_png(&[("p", &lonely)], 300, 200).unwrap());
    let curve = pixels_of(&pixels, width, BLUE).into_iter().filter(|&(_, y)| y > 40).count();
    assert!(curve >= 9, "{curve} pixels");
}

#[test]
fn many_series_cycle_colours() {
    let values: Vec<Vec<f32>> = (0..12).map(|k| vec![k as f32, k as f32 + 1.0]).collect();
    let names: Vec<String> = (0..12).map(|k| format!("s{k}")).collect();
    let series: Vec<(&str, &[f32])> =
        names.iter().zip(&values).map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let bytes = encode_loss_plot_png(&series, 480, 320).unwrap();
    assert_eq!(decode(&bytes).0, 480);
}

#[test]
fn plot_input_errors() {
    let name = |result: dcgan::Result<Vec<u8>>| match result {
        Err(Error::InvalidArgument { name, .. }) => name,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let series: &[(&str, &[f32])] = &[("a", &[1.0, 2.0])];
    assert_eq!(name(encode_loss_plot_png(&[], 640, 480)), "series");
    assert_eq!(name(encode_loss_plot_png(series, 10, 480)), "width");
    assert_eq!(name(encode_loss_plot_png(series, 640, 100_000)), "height");
}

#[test]
fn plot_file_matches_encoding() {
    let folder = temp_folder("plot");
    let path = folder.join("loss.png");
    let series: &[(&str, &[f32])] = &[("a", &[3.0, 1.0, 2.0])];
    write_loss_plot_png(&path, series, 320, 240).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), encode_loss_plot_png(series, 320, 240).unwrap());
    std::fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn non_png_path_is_rejected() {
    let folder = temp_folder("non-png");
    let images = [0.0f32; 4];
    for name in ["grid.jpg", "grid", "grid.png.tmp"] {
        let path = folder.join(name);
        let err = write_grid_png(&path, &images, [1, 1, 2, 2], 1, 0).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "path", .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{name}: {err}");
        let err = write_loss_plot_png(&path, &[("loss", &[1.0, 2.0])], 320, 240).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "path", .. }), "{name}: {err}");
        assert!(!path.exists(), "{name} was written");
    }
    write_grid_png(folder.join("grid.PNG"), &images, [1, 1, 2, 2], 1, 0).unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
}
