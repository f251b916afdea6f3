//! PNG output: grids of sample images and line plots of training curves.
//!
//! Both are encoded with the `png` crate at fixed settings and written with [`write_atomic`], so
//! equal inputs give byte-identical files and a crash never leaves a partial image.

mod font;
mod plot;

use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{check_len, checked_product, Error, Result};

/// The grey level of the gaps between grid cells: mid-grey, visible against both dark and light
/// image backgrounds.
pub const GRID_PADDING_LEVEL: u8 = 128;

/// The maximum width or height of a grid image, in pixels (the PNG format allows 2^31 - 1).
pub const MAX_GRID_SIDE: usize = 1 << 16;

/// The maximum pixel count of a grid image: 8192 x 8192, or 192 MiB of RGB pixels, which bounds
/// the memory a grid takes whatever the shape and padding.
pub const MAX_GRID_PIXELS: usize = 1 << 26;

/// Checks that `path` ends in `.png`, in any case (`grid.PNG`), because the writers of this
/// module write PNG bytes whatever the extension is, and a viewer would misread a `.jpg` of them.
///
/// # Errors
///
/// [`Error::InvalidArgument`] named `name`, with the whole path, for another extension or none.
pub fn check_png_path(name: &'static str, path: &Path) -> Result<()> {
    let extension = path.extension().and_then(|extension| extension.to_str());
    if extension.is_some_and(|extension| extension.eq_ignore_ascii_case("png")) {
        return Ok(());
    }
    Err(Error::invalid_path(
        name,
        path,
        "a file name ending in .png, because the image is written in the PNG format",
    ))
}

/// Writes `images` as one PNG grid; see [`encode_grid_png`] for the layout and value mapping.
///
/// # Errors
///
/// As for [`check_png_path`] (named `path`) and [`encode_grid_png`], and [`Error::Io`] if
/// writing fails.
pub fn write_grid_png(
    path: impl AsRef<Path>,
    images: &[f32],
    shape: [usize; 4],
    columns: usize,
    padding: usize,
) -> Result<()> {
    let path = path.as_ref();
    check_png_path("path", path)?;
    write_atomic(path, &encode_grid_png(images, shape, columns, padding)?)
}

/// Encodes `images` (`[n, c, h, w]`, row-major) as a PNG grid of `columns` cells per row.
///
/// Values in [-1, 1] map linearly to 0..=255 (`round((v + 1) * 127.5)`); values outside are
/// clamped and NaN becomes 0. One channel gives a grayscale PNG, three an RGB one. The grid has
/// `min(columns, n)` columns and as many rows as needed. Gaps of `padding` pixels in
/// [`GRID_PADDING_LEVEL`] grey separate the cells and frame the grid. Cells past the last image
/// stay grey.
///
/// # Errors
///
/// [`Error::InvalidArgument`] if `n`, `h`, `w` or `columns` is 0, if `c` is not 1 or 3, or if
/// the grid exceeds [`MAX_GRID_SIDE`] pixels on a side or [`MAX_GRID_PIXELS`] in all.
/// [`Error::LengthMismatch`] if `images` does not contain `n * c * h * w` values.
pub fn encode_grid_png(
    images: &[f32],
    shape: [usize; 4],
    columns: usize,
    padding: usize,
) -> Result<Vec<u8>> {
    // Check the shape and the grid size.
    let [n, channels, height, width] = shape;
    for (name, value) in [("n", n), ("height", height), ("width", width), ("columns", columns)] {
        if value == 0 {
            return Err(Error::invalid(name, value, "at least 1"));
        }
    }
    if channels != 1 && channels != 3 {
        return Err(Error::invalid("channels", channels, "1 (grayscale) or 3 (RGB)"));
    }
    check_len("images", images.len(), checked_product("images", &shape)?)?;
    let columns = columns.min(n);
    let rows = n.div_ceil(columns);
    let grid_width = grid_side("grid width", columns, width, padding)?;
    let grid_height = grid_side("grid height", rows, height, padding)?;
    let grid_pixels = grid_width * grid_height; // both at most 2^16
    if grid_pixels > MAX_GRID_PIXELS {
        return Err(Error::invalid(
            "grid size",
            format!("{grid_width}x{grid_height}"),
            format!("at most {MAX_GRID_PIXELS} pixels"),
        ));
    }

    // Fill the gaps, then copy each image into its cell, interleaving channels.
    let mut pixels = vec![GRID_PADDING_LEVEL; grid_pixels * channels];
    let plane = height * width;
    for (index, image) in images.chunks_exact(channels * plane).enumerate() {
        let cell_x = padding + (index % columns) * (width + padding);
        let cell_y = padding + (index / columns) * (height + padding);
        for y in 0..height {
            let row_start = ((cell_y + y) * grid_width + cell_x) * channels;
            let row = &mut pixels[row_start..row_start + width * channels];
            for (x, pixel) in row.chunks_exact_mut(channels).enumerate() {
                for (channel, out) in pixel.iter_mut().enumerate() {
                    *out = to_byte(image[channel * plane + y * width + x]);
                }
            }
        }
    }

    let color = if channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb };
    encode_png(&pixels, grid_width, grid_height, color)
}

/// Writes a line plot of `series` (name, value per step) as a `width` x `height` RGB PNG; see
/// [`encode_loss_plot_png`].
///
/// # Errors
///
/// As for [`check_png_path`] (named `path`) and [`encode_loss_plot_png`], and [`Error::Io`] if
/// writing fails.
pub fn write_loss_plot_png(
    path: impl AsRef<Path>,
    series: &[(&str, &[f32])],
    width: usize,
    height: usize,
) -> Result<()> {
    let path = path.as_ref();
    check_png_path("path", path)?;
    write_atomic(path, &encode_loss_plot_png(series, width, height)?)
}

/// Encodes a line plot of `series` (name, value per step) as a `width` x `height` RGB PNG.
///
/// Each series is drawn over its step index in its own colour (matplotlib's ten "tab10"
/// colours, cycled). The plot has axes, a light grid, numbered ticks and a legend of swatches
/// and names. Text uses a built-in 5x7 pixel font, in which characters other than ASCII
/// letters, digits and common symbols show as `?`. The y range covers the finite values, padded by 5%: NaN and infinities are
/// skipped and break the line, a flat series gets a range around its value. Text and lines scale
/// up by an integer factor on images at least 1000 pixels on both sides.
///
/// # Errors
///
/// [`Error::InvalidArgument`] if `series` is empty, or `width` is outside 160..=8192 or
/// `height` outside 120..=8192.
pub fn encode_loss_plot_png(
    series: &[(&str, &[f32])],
    width: usize,
    height: usize,
) -> Result<Vec<u8>> {
    let canvas = plot::render_loss_plot(series, width, height)?;
    encode_png(&canvas.pixels, canvas.width, canvas.height, png::ColorType::Rgb)
}

/// Maps [-1, 1] to 0..=255, clamping values outside. NaN maps to 0.
fn to_byte(value: f32) -> u8 {
    // `as` saturates and sends NaN to 0.
    ((value + 1.0) * 127.5).round() as u8
}

/// `cells` cells of `side` pixels with `padding` before, between and after them.
fn grid_side(what: &'static str, cells: usize, side: usize, padding: usize) -> Result<usize> {
    // u128 cannot overflow: each factor is below 2^64.
    let total = cells as u128 * (side as u128 + padding as u128) + padding as u128;
    if total > MAX_GRID_SIDE as u128 {
        return Err(Error::invalid(
            what,
            total,
            format!(
                "at most {MAX_GRID_SIDE} pixels ({cells} cells of {side} pixels with padding \
                 {padding})"
            ),
        ));
    }
    Ok(total as usize)
}

/// Encodes 8-bit `pixels` as a PNG with fixed settings and no ancillary chunks.
fn encode_png(
    pixels: &[u8],
    width: usize,
    height: usize,
    color: png::ColorType,
) -> Result<Vec<u8>> {
    let png_error = |err: png::EncodingError| Error::Format {
        format: "PNG",
        reason: format!("encoding a {width}x{height} image failed: {err}"),
    };
    // Callers bound both sides far below u32::MAX.
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Default);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(pixels).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_byte_maps_and_clamps() {
        assert_eq!(to_byte(-1.0), 0);
        assert_eq!(to_byte(1.0), 255);
        assert_eq!(to_byte(0.0), 128); // 127.5 rounds away from zero
        assert_eq!(to_byte(-3.0), 0);
        assert_eq!(to_byte(7.0), 255);
        assert_eq!(to_byte(f32::NAN), 0);
    }
}
