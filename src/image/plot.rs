//! Line plots of training curves, rasterised without a plotting library.
//!
//! The plot area shows every series over its step index (0, 1, 2, ...). Around the curves are a
//! light grid at the axis ticks, black axes with numbered ticks, and a legend of colour swatches
//! and series names in the built-in bitmap font. The y range covers the finite values of all series, padded by 5% so
//! no curve runs along the frame; NaN and infinite values are skipped and break the line. A flat
//! range (one distinct value) is widened around that value, and with no finite value at all the
//! range is [0, 1]. Ticks fall on "nice" numbers (1, 2 or 5 times a power of ten).

use super::font::{self, ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH};
use crate::error::{Error, Result};

/// Accepted image sizes in pixels.
pub(crate) const MIN_WIDTH: usize = 160;
pub(crate) const MIN_HEIGHT: usize = 120;
pub(crate) const MAX_SIDE: usize = 8192;

/// Series colours, cycled when there are more series: matplotlib's "tab10" palette.
const PALETTE: [[u8; 3]; 10] = [
    [0x1f, 0x77, 0xb4],
    [0xff, 0x7f, 0x0e],
    [0x2c, 0xa0, 0x2c],
    [0xd6, 0x27, 0x28],
    [0x94, 0x67, 0xbd],
    [0x8c, 0x56, 0x4b],
    [0xe3, 0x77, 0xc2],
    [0x7f, 0x7f, 0x7f],
    [0xbc, 0xbd, 0x22],
    [0x17, 0xbe, 0xcf],
];

const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [225, 225, 225];
const LEGEND_BORDER: [u8; 3] = [160, 160, 160];

/// An RGB raster, row-major, 3 bytes per pixel. Drawing outside it is clipped.
pub(crate) struct Canvas {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize, background: [u8; 3]) -> Canvas {
        let pixels = background.iter().copied().cycle().take(width * height * 3).collect();
        Canvas { width, height, pixels }
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let at = (y as usize * self.width + x as usize) * 3;
        self.pixels[at..at + 3].copy_from_slice(&color);
    }

    fn fill_rect(&mut self, x: i64, y: i64, width: usize, height: usize, color: [u8; 3]) {
        // Clip first, so a rectangle far off the canvas (a very long legend) costs nothing.
        let (x_end, y_end) = (x.saturating_add(width as i64), y.saturating_add(height as i64));
        let (x0, x1) = (x.max(0), x_end.min(self.width as i64));
        let (y0, y1) = (y.max(0), y_end.min(self.height as i64));
        for py in y0..y1 {
            for px in x0..x1 {
                self.set(px, py, color);
            }
        }
    }

    fn outline_rect(&mut self, x: i64, y: i64, width: usize, height: usize, color: [u8; 3]) {
        let (right, bottom) = (x + width as i64 - 1, y + height as i64 - 1);
        self.line(x, y, right, y, color);
        self.line(x, bottom, right, bottom, color);
        self.line(x, y, x, bottom, color);
        self.line(right, y, right, bottom, color);
    }

    /// Draws a one-pixel line from `(x0, y0)` to `(x1, y1)`, both ends included (Bresenham).
    fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (step_x, step_y) = ((x1 - x0).signum(), (y1 - y0).signum());
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, color);
            if x == x1 && y == y1 {
                break;
            }
            let doubled = 2 * err;
            if doubled >= dy {
                err += dy;
                x += step_x;
            }
            if doubled <= dx {
                err += dx;
                y += step_y;
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel a `scale` square.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, color: [u8; 3]) {
        for (index, c) in text.chars().enumerate() {
            let left = x + (index * ADVANCE * scale) as i64;
            for (row, bits) in font::glyph(c).iter().enumerate() {
                for column in 0..GLYPH_WIDTH {
                    if bits & (1 << (GLYPH_WIDTH - 1 - column)) != 0 {
                        let (px, py) = (left + (column * scale) as i64, y + (row * scale) as i64);
                        self.fill_rect(px, py, scale, scale, color);
                    }
                }
            }
        }
    }
}

/// Axis ticks: positions in data units and their labels.
struct Ticks {
    values: Vec<f64>,
    labels: Vec<String>,
}

/// Renders the plot described in the module documentation into an RGB canvas.
pub(crate) fn render_loss_plot(
    series: &[(&str, &[f32])],
    width: usize,
    height: usize,
) -> Result<Canvas> {
    check_size("width", width, MIN_WIDTH)?;
    check_size("height", height, MIN_HEIGHT)?;
    if series.is_empty() {
        return Err(Error::invalid("series", "[]", "at least one (name, values) series"));
    }
    let scale = (width.min(height) / 500).max(1);
    let text_height = GLYPH_HEIGHT * scale;
    let tick_len = 4 * scale;

    // Data ranges and ticks.
    let (y_min, y_max) = y_range(series);
    let steps = series.iter().map(|(_, values)| values.len()).max().unwrap_or(0);
    let x_max = steps.saturating_sub(1).max(1) as f64;
    let y_ticks = ticks(y_min, y_max, (height / (40 * scale)).clamp(2, 10), false);
    let widest_x_label = font::text_width(&format!("{}", x_max as u64), scale);
    let x_ticks = ticks(0.0, x_max, (width / (widest_x_label + 30 * scale)).clamp(2, 10), true);

    // Layout: the y labels decide the left margin, one text line the bottom margin.
    let y_label_width = y_ticks.labels.iter().map(|l| font::text_width(l, scale)).max();
    let left = (y_label_width.unwrap_or(0) + tick_len + 6 * scale) as i64;
    let top = (8 * scale) as i64;
    let right = (width - 12 * scale) as i64;
    let bottom = (height - text_height - tick_len - 8 * scale) as i64;
    let to_x = |x: f64| left + ((x / x_max) * (right - left) as f64).round() as i64;
    let to_y =
        |y: f64| bottom - (((y - y_min) / (y_max - y_min)) * (bottom - top) as f64).round() as i64;

    let mut canvas = Canvas::new(width, height, WHITE);

    // Grid lines, tick marks and tick labels.
    for (&value, label) in y_ticks.values.iter().zip(&y_ticks.labels) {
        let y = to_y(value);
        canvas.line(left + 1, y, right, y, GRID);
        canvas.line(left - tick_len as i64, y, left, y, BLACK);
        let label_x = left - (tick_len + 3 * scale + font::text_width(label, scale)) as i64;
        canvas.text(label_x, y - (text_height / 2) as i64, label, scale, BLACK);
    }
    for (&value, label) in x_ticks.values.iter().zip(&x_ticks.labels) {
        let x = to_x(value);
        canvas.line(x, top, x, bottom - 1, GRID);
        canvas.line(x, bottom, x, bottom + tick_len as i64, BLACK);
        let label_x = x - (font::text_width(label, scale) / 2) as i64;
        canvas.text(label_x, bottom + (tick_len + 3 * scale) as i64, label, scale, BLACK);
    }

    // Axes, then the curves on top of the grid.
    canvas.line(left, top, left, bottom, BLACK);
    canvas.line(left, bottom, right, bottom, BLACK);
    for (index, (_, values)) in series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let point = |step: usize| {
            let value = f64::from(values[step]);
            value.is_finite().then(|| (to_x(step as f64), to_y(value)))
        };
        for step in 0..values.len() {
            match (step.checked_sub(1).and_then(point), point(step)) {
                (Some((x0, y0)), Some((x1, y1))) => canvas.line(x0, y0, x1, y1, color),
                // A point without a finite neighbour on either side would be invisible as a line.
                (None, Some((x, y))) if step + 1 >= values.len() || point(step + 1).is_none() => {
                    canvas.fill_rect(
                        x - scale as i64,
                        y - scale as i64,
                        2 * scale + 1,
                        2 * scale + 1,
                        color,
                    )
                }
                _ => {}
            }
        }
    }

    draw_legend(&mut canvas, series, right, top, scale);
    Ok(canvas)
}

/// Draws the legend box in the top-right corner of the plot area.
fn draw_legend(canvas: &mut Canvas, series: &[(&str, &[f32])], right: i64, top: i64, scale: usize) {
    let text_height = GLYPH_HEIGHT * scale;
    let pad = 4 * scale;
    let swatch_width = 12 * scale;
    let row_height = text_height + 3 * scale;
    let widest_name = series.iter().map(|(name, _)| font::text_width(name, scale)).max();
    let box_width = pad + swatch_width + pad + widest_name.unwrap_or(0) + pad;
    let box_height = pad + series.len() * row_height - 3 * scale + pad;
    let box_x = right - (box_width + pad) as i64;
    let box_y = top + pad as i64;

    canvas.fill_rect(box_x, box_y, box_width, box_height, WHITE);
    canvas.outline_rect(box_x, box_y, box_width, box_height, LEGEND_BORDER);
    for (index, (name, _)) in series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let row_y = box_y + (pad + index * row_height) as i64;
        canvas.fill_rect(box_x + pad as i64, row_y, swatch_width, text_height, color);
        let name_x = box_x + (pad + swatch_width + pad) as i64;
        canvas.text(name_x, row_y, name, scale, BLACK);
    }
}

fn check_size(name: &'static str, value: usize, min: usize) -> Result<()> {
    if value < min || value > MAX_SIDE {
        return Err(Error::invalid(name, value, format!("{min} to {MAX_SIDE} pixels")));
    }
    Ok(())
}

/// Computes the y range: finite data padded by 5%, a flat value widened, [0, 1] without data.
fn y_range(series: &[(&str, &[f32])]) -> (f64, f64) {
    let finite = series.iter().flat_map(|(_, values)| values.iter()).filter(|v| v.is_finite());
    let (min, max) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(f64::from(v)), hi.max(f64::from(v)))
    });
    if min > max {
        return (0.0, 1.0);
    }
    if min == max {
        let half = if min == 0.0 { 1.0 } else { min.abs() * 0.1 };
        return (min - half, max + half);
    }
    let pad = (max - min) * 0.05;
    (min - pad, max + pad)
}

/// Places about `target` ticks at multiples of a nice step inside `[min, max]`.
fn ticks(min: f64, max: f64, target: usize, integers: bool) -> Ticks {
    let raw_step = (max - min) / target as f64;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    // Round the step's leading digit to 1, 2, 5 or 10, whichever is nearest on a log scale.
    let leading = raw_step / magnitude;
    let nice = match leading {
        l if l < 1.5 => 1.0,
        l if l < 3.0 => 2.0,
        l if l < 7.0 => 5.0,
        _ => 10.0,
    };
    let mut step = nice * magnitude;
    if integers {
        step = step.max(1.0).round();
    }

    let first = (min / step).ceil() as i64;
    let last = (max / step).floor() as i64;
    let values: Vec<f64> = (first..=last).map(|k| k as f64 * step).collect();
    let labels = values.iter().map(|&v| format_tick(v, step)).collect();
    Ticks { values, labels }
}

/// Formats a tick value with as many decimals as the step needs; scientific notation for very
/// small steps or very large values.
fn format_tick(value: f64, step: f64) -> String {
    let value = if value.abs() < step * 1e-6 { 0.0 } else { value }; // no "-0.00"
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    if step >= 1e-4 && value.abs() < 1e7 {
        format!("{value:.decimals$}")
    } else {
        let digits = (value.abs().max(step).log10().floor() - step.log10().floor()).max(0.0);
        format!("{value:.*e}", digits as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_on_nice_numbers() {
        let t = ticks(0.0, 1.0, 5, false);
        assert_eq!(t.labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t = ticks(-3.0, 7.0, 4, false);
        assert_eq!(t.labels, ["-2", "0", "2", "4", "6"]);
    }

    #[test]
    fn integer_ticks_never_fractional() {
        let t = ticks(0.0, 3.0, 10, true);
        assert_eq!(t.labels, ["0", "1", "2", "3"]);
    }

    #[test]
    fn tiny_steps_use_scientific_notation() {
        assert_eq!(format_tick(2e-6, 1e-6), "2e-6");
        assert_eq!(format_tick(1.5e-5, 5e-7), "1.50e-5");
        assert_eq!(format_tick(1.55e-5, 5e-7), "1.55e-5");
        assert_eq!(format_tick(-0.0, 0.5), "0.0");
        assert_eq!(format_tick(2e7, 1e6), "2.0e7");
    }

    #[test]
    fn y_range_ignores_non_finite_and_widens_flat() {
        let values = [1.0, f32::NAN, 3.0, f32::INFINITY, f32::NEG_INFINITY];
        assert_eq!(y_range(&[("a", &values)]), (0.9, 3.1));
        assert_eq!(y_range(&[("a", &[2.0, 2.0])]), (1.8, 2.2));
        assert_eq!(y_range(&[("a", &[0.0])]), (-1.0, 1.0));
        assert_eq!(y_range(&[("a", &[f32::NAN])]), (0.0, 1.0));
    }

    #[test]
    fn line_includes_both_ends() {
        let mut canvas = Canvas::new(4, 3, WHITE);
        canvas.line(0, 0, 3, 2, BLACK);
        let dark = |x: usize, y: usize| canvas.pixels[(y * 4 + x) * 3] == 0;
        assert!(dark(0, 0));
        assert!(dark(3, 2));
        assert_eq!((0..12).filter(|&i| canvas.pixels[i * 3] == 0).count(), 4);
    }

    #[test]
    fn text_scales_glyph_pixels() {
        // "1" at scale 2 from (1, 1): every font pixel becomes a 2x2 block.
        let mut canvas = Canvas::new(14, 17, WHITE);
        canvas.text(1, 1, "1", 2, BLACK);
        let glyph = font::glyph('1');
        for y in 0..17 {
            for x in 0..14 {
                let inside = (1..11).contains(&x) && (1..15).contains(&y);
                let bit = inside && glyph[(y - 1) / 2] & (1 << (4 - (x - 1) / 2)) != 0;
                let dark = canvas.pixels[(y * 14 + x) * 3] == 0;
                assert_eq!(dark, bit, "pixel ({x}, {y})");
            }
        }
    }
}
