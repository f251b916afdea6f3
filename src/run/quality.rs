//! Sample-quality log of a training run: the [`crate::eval`] metrics of the generator, taken
//! every N steps, in `quality.csv` and plotted in `quality.png`.
//!
//! Evaluation runs the generator in evaluation mode on noise from its own seed. It changes
//! neither the weights, the BatchNorm statistics nor any random stream of the run, so a run with
//! the log on trains to the same bits as one without it.

use std::fmt::Write as _;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::eval::SampleMetrics;
use crate::image::write_loss_plot_png;

/// File name of the quality log in the output folder.
pub const QUALITY_CSV: &str = "quality.csv";
/// File name of the quality plot in the output folder.
pub const QUALITY_PLOT: &str = "quality.png";

const HEADER: &str = "step,frechet_distance,classifier_score,classes_covered,class_kl";

/// One evaluation of the generator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualityRow {
    /// Training steps taken when the generator was evaluated.
    pub step: u64,
    /// Frechet distance to the real digits' classifier features.
    pub frechet_distance: f64,
    /// The classifier score, 1 to 10.
    pub classifier_score: f64,
    /// Number of digit classes covered.
    pub classes_covered: usize,
    /// KL divergence of the predicted class distribution from the real one, in nats.
    pub class_kl: f64,
}

impl QualityRow {
    /// Builds the row of `metrics` taken at `step`.
    pub fn new(step: u64, metrics: &SampleMetrics) -> QualityRow {
        QualityRow {
            step,
            frechet_distance: metrics.frechet_distance,
            classifier_score: metrics.classifier_score,
            classes_covered: metrics.classes_covered,
            class_kl: metrics.class_kl,
        }
    }
}

/// Reads the rows of a quality log with `step <= up_to_step`; a missing file has none.
///
/// # Errors
/// [`Error::Io`] when the file exists but cannot be read; [`Error::Format`] for a malformed row.
pub fn read_quality(path: &Path, up_to_step: u64) -> Result<Vec<QualityRow>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(path, err)),
    };
    let malformed = |line: usize, reason: &str| Error::Format {
        format: "quality CSV",
        reason: format!("{} line {line}: {reason}", path.display()),
    };
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let [step, fd, score, covered, kl] = fields[..] else {
            return Err(malformed(index + 1, "expected 5 fields"));
        };
        let row = QualityRow {
            step: step.parse().map_err(|_| malformed(index + 1, "invalid step"))?,
            frechet_distance: fd.parse().map_err(|_| malformed(index + 1, "invalid distance"))?,
            classifier_score: score.parse().map_err(|_| malformed(index + 1, "invalid score"))?,
            classes_covered: covered.parse().map_err(|_| malformed(index + 1, "invalid count"))?,
            class_kl: kl.parse().map_err(|_| malformed(index + 1, "invalid KL"))?,
        };
        if row.step <= up_to_step {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Writes `rows` to `quality.csv` and plots the Frechet distance and the classifier score (x100,
/// to share the axis) in `quality.png`, both in `folder` and atomically.
///
/// # Errors
/// [`Error::Io`] when a file cannot be written.
pub fn write_quality(folder: &Path, rows: &[QualityRow]) -> Result<()> {
    let mut csv = String::from(HEADER);
    csv.push('\n');
    for row in rows {
        // `{}` prints the shortest representation that parses back to the same f64.
        let _ = writeln!(
            csv,
            "{},{},{},{},{}",
            row.step, row.frechet_distance, row.classifier_score, row.classes_covered, row.class_kl
        );
    }
    write_atomic(folder.join(QUALITY_CSV), csv.as_bytes())?;

    let distance: Vec<f32> = rows.iter().map(|r| r.frechet_distance as f32).collect();
    let score: Vec<f32> = rows.iter().map(|r| 100.0 * r.classifier_score as f32).collect();
    write_loss_plot_png(
        folder.join(QUALITY_PLOT),
        &[("Frechet distance", &distance), ("classifier score x100", &score)],
        800,
        400,
    )
}
