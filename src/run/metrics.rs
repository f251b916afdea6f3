//! Per-step metrics of a run: one CSV row per training step, and a plot of the losses.
//!
//! The CSV has the header [`CSV_HEADER`] and one row per step. Floats are written in Rust's
//! shortest round-trip form, so [`parse_csv`] reads back exactly the values that were written,
//! and a resumed run that re-reads its CSV plots the same curves as an uninterrupted one.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::image::write_loss_plot_png;
use crate::train::StepStats;

/// The first line of a metrics CSV.
pub const CSV_HEADER: &str = "step,epoch,loss_d,loss_g,d_real,d_fake,d_fake_after";

/// The largest metrics CSV that [`read_csv`] reads (256 MiB, about two million steps).
pub const MAX_CSV_BYTES: u64 = 1 << 28;

/// Width and height of the loss plot, in pixels.
pub const PLOT_SIZE: (usize, usize) = (960, 540);

/// Losses and discriminator outputs of one training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricsRow {
    /// Steps taken, counting this one (the first step is 1).
    pub step: u64,
    /// The epoch the step's batch came from, counting from 1.
    pub epoch: u64,
    /// The discriminator's loss.
    pub loss_d: f64,
    /// The generator's loss.
    pub loss_g: f64,
    /// Mean of `sigmoid(D(x))` over the real batch.
    pub d_real: f64,
    /// Mean of `sigmoid(D(G(z)))` before the discriminator's update.
    pub d_fake: f64,
    /// Mean of `sigmoid(D(G(z)))` after the discriminator's update.
    pub d_fake_after: f64,
}

impl MetricsRow {
    /// Builds the row of step `step` in epoch `epoch` from the trainer's statistics.
    pub fn from_stats(step: u64, epoch: u64, stats: &StepStats) -> MetricsRow {
        MetricsRow {
            step,
            epoch,
            loss_d: stats.d_loss,
            loss_g: stats.g_loss,
            d_real: stats.d_real,
            d_fake: stats.d_fake,
            d_fake_after: stats.d_fake_after,
        }
    }
}

/// Formats `rows` as CSV: [`CSV_HEADER`], then one line per row.
pub fn encode_csv(rows: &[MetricsRow]) -> String {
    let mut text = String::with_capacity(64 * (rows.len() + 1));
    text.push_str(CSV_HEADER);
    text.push('\n');
    for r in rows {
        let line = format!(
            "{},{},{},{},{},{},{}\n",
            r.step, r.epoch, r.loss_d, r.loss_g, r.d_real, r.d_fake, r.d_fake_after
        );
        text.push_str(&line);
    }
    text
}

/// Writes `rows` as CSV to `path` atomically.
///
/// # Errors
/// [`Error::Io`] if writing fails.
pub fn write_csv(path: impl AsRef<Path>, rows: &[MetricsRow]) -> Result<()> {
    write_atomic(path, encode_csv(rows).as_bytes())
}

/// Parses a metrics CSV written by [`encode_csv`]. `source` names the text in error messages.
///
/// # Errors
/// [`Error::Format`] for a wrong header, a line without seven fields, a field that does not
/// parse, or step numbers that do not increase.
pub fn parse_csv(text: &str, source: &str) -> Result<Vec<MetricsRow>> {
    let error = |line: usize, reason: String| Error::Format {
        format: "metrics CSV",
        reason: format!("{source}, line {line}: {reason}"),
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, header)) if header == CSV_HEADER => {}
        Some((number, header)) => {
            return Err(error(number, format!("header `{header}`: expected `{CSV_HEADER}`")))
        }
        None => return Err(error(1, "empty file: expected the header".into())),
    }

    let mut rows: Vec<MetricsRow> = Vec::new();
    for (number, line) in lines.filter(|(_, l)| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 7 {
            return Err(error(number, format!("{} fields: expected 7", fields.len())));
        }
        let int = |i: usize| {
            fields[i].parse::<u64>().map_err(|_| {
                error(number, format!("field {} is `{}`: expected an integer", i + 1, fields[i]))
            })
        };
        let float = |i: usize| {
            fields[i].parse::<f64>().map_err(|_| {
                error(number, format!("field {} is `{}`: expected a number", i + 1, fields[i]))
            })
        };
        let row = MetricsRow {
            step: int(0)?,
            epoch: int(1)?,
            loss_d: float(2)?,
            loss_g: float(3)?,
            d_real: float(4)?,
            d_fake: float(5)?,
            d_fake_after: float(6)?,
        };
        if let Some(previous) = rows.last() {
            if row.step <= previous.step {
                return Err(error(
                    number,
                    format!(
                        "step {} follows step {}: expected increasing steps",
                        row.step, previous.step
                    ),
                ));
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Reads a metrics CSV file of at most [`MAX_CSV_BYTES`] bytes.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Format`] if it is too large, not UTF-8,
/// or malformed (see [`parse_csv`]).
pub fn read_csv(path: impl AsRef<Path>) -> Result<Vec<MetricsRow>> {
    let path = path.as_ref();
    let source = path.display().to_string();
    let io = |err| Error::io(path, err);
    let mut bytes = Vec::new();
    File::open(path).map_err(io)?.take(MAX_CSV_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_CSV_BYTES {
        return Err(Error::Format {
            format: "metrics CSV",
            reason: format!("{source} is larger than {MAX_CSV_BYTES} bytes"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| Error::Format {
        format: "metrics CSV",
        reason: format!("{source} is not UTF-8 text"),
    })?;
    parse_csv(&text, &source)
}

/// Plots `loss_d` and `loss_g` of `rows` over their index as a [`PLOT_SIZE`] PNG at `path`.
///
/// # Errors
/// As [`write_loss_plot_png`].
pub fn write_loss_plot(path: impl AsRef<Path>, rows: &[MetricsRow]) -> Result<()> {
    let loss_d: Vec<f32> = rows.iter().map(|r| r.loss_d as f32).collect();
    let loss_g: Vec<f32> = rows.iter().map(|r| r.loss_g as f32).collect();
    let (width, height) = PLOT_SIZE;
    write_loss_plot_png(path, &[("loss_D", &loss_d), ("loss_G", &loss_g)], width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, loss_d: f64) -> MetricsRow {
        MetricsRow {
            step,
            epoch: 1,
            loss_d,
            loss_g: 0.1 + 0.2, // not exactly representable: tests the round trip
            d_real: 1.0 / 3.0,
            d_fake: f64::MIN_POSITIVE,
            d_fake_after: 1e300,
        }
    }

    #[test]
    fn csv_round_trips_exactly() {
        let rows = vec![row(1, 1.5), row(2, f64::NAN), row(7, -0.0)];
        let parsed = parse_csv(&encode_csv(&rows), "test").unwrap();
        assert_eq!(parsed.len(), 3);
        for (a, b) in rows.iter().zip(&parsed) {
            let bits = |r: &MetricsRow| {
                [r.loss_d, r.loss_g, r.d_real, r.d_fake, r.d_fake_after].map(f64::to_bits)
            };
            assert_eq!((a.step, a.epoch), (b.step, b.epoch));
            assert_eq!(bits(a), bits(b));
        }
    }

    #[test]
    fn csv_errors_name_the_line() {
        let text = format!("{CSV_HEADER}\n1,1,0,0,0,0,0\n2,1,0,x,0,0,0\n");
        let err = parse_csv(&text, "m.csv").unwrap_err().to_string();
        assert!(err.contains("m.csv, line 3"), "{err}");
        assert!(err.contains("`x`"), "{err}");
        let err = parse_csv("step,loss\n", "m.csv").unwrap_err().to_string();
        assert!(err.contains("header"), "{err}");
        let text = format!("{CSV_HEADER}\n2,1,0,0,0,0,0\n2,1,0,0,0,0,0\n");
        let err = parse_csv(&text, "m.csv").unwrap_err().to_string();
        assert!(err.contains("increasing"), "{err}");
        let err = parse_csv(&format!("{CSV_HEADER}\n1,1,0\n"), "m.csv").unwrap_err().to_string();
        assert!(err.contains("3 fields"), "{err}");
    }
}
