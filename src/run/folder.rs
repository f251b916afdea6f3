//! The output folder of a training run and the files in it.
//!
//! ```text
//! samples/step_000100.png   sample grid from the run's fixed latent batch after step 100
//! metrics.csv               one row per step (see `metrics`)
//! losses.png                loss curves
//! checkpoint.safetensors    the complete training state (see `TrainingRun::to_checkpoint`)
//! settings.json             the run's settings, for people and scripts
//! quality.csv, quality.png  sample quality every N steps, when enabled (see `quality`)
//! metrics.json              sample quality of the final generator, from the `evaluate` example
//! generated_seed7.png       digits drawn by the `sample` example (its default output)
//! ```
//!
//! Every file is written atomically, so a run killed at any moment leaves each file either
//! complete or as it was.

use std::fs;
use std::path::{Path, PathBuf};

use super::metrics::{self, MetricsRow};
use super::quality::{QUALITY_CSV, QUALITY_PLOT};
use super::{write_sample_grid, TrainingRun};
use crate::atomic::{remove_stale_temp_files, write_atomic};
use crate::error::{Error, Result};

/// File name of the checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of the metrics CSV.
pub const METRICS_FILE: &str = "metrics.csv";
/// File name of the loss plot.
pub const LOSS_PLOT_FILE: &str = "losses.png";
/// File name of the settings.
pub const SETTINGS_FILE: &str = "settings.json";
/// Folder of the sample grids.
pub const SAMPLES_FOLDER: &str = "samples";
/// File name of the sample-quality report that the README's `evaluate` command writes into the
/// run folder.
pub const EVALUATION_FILE: &str = "metrics.json";

/// The output folder of a run.
#[derive(Clone, Debug)]
pub struct RunFolder {
    path: PathBuf,
    /// Whether [`RunFolder::create`] made the folder, so that
    /// [`RunFolder::remove_unfinished_run`] removes it again.
    created: bool,
}

impl RunFolder {
    /// Creates the folder for a new run (with its parents and `samples/`).
    ///
    /// A folder that already contains entries is rejected unless `overwrite` is set. Then the
    /// files a previous run wrote there (the names above, `generated_seed*.png` and
    /// `samples/step_*.png`) are deleted, and anything else is left alone.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (named `output folder`) for a non-empty folder without
    /// `overwrite`, or a path that is not a folder; [`Error::Io`] if creating or cleaning fails.
    pub fn create(path: impl AsRef<Path>, overwrite: bool) -> Result<RunFolder> {
        let path = path.as_ref();
        let existed = path.exists();
        if path.exists() && !path.is_dir() {
            return Err(Error::invalid_path("output folder", path, "a folder, not a file"));
        }
        if path.is_dir() {
            let entries = list_entries(path)?;
            if !entries.is_empty() && !overwrite {
                let first_names: Vec<&str> = entries.iter().map(String::as_str).take(4).collect();
                let more = if entries.len() > first_names.len() { ", ..." } else { "" };
                let noun = if entries.len() == 1 { "entry" } else { "entries" };
                return Err(Error::invalid_path(
                    "output folder",
                    path,
                    format!(
                        "an empty or new folder, but it contains {} {noun} ({}{more})",
                        entries.len(),
                        first_names.join(", ")
                    ),
                ));
            }
            if overwrite {
                remove_run_files(path)?;
            }
        }
        let folder = RunFolder::open(path)?;
        Ok(RunFolder { created: !existed, ..folder })
    }

    /// Opens the folder of an existing run to continue writing into it, creating it (and
    /// `samples/`) if needed. Temporary files that a killed run left in either folder are
    /// deleted ([`remove_stale_temp_files`]).
    ///
    /// # Errors
    /// [`Error::Io`] if a folder cannot be created or a temporary file cannot be deleted.
    pub fn open(path: impl AsRef<Path>) -> Result<RunFolder> {
        let path = path.as_ref().to_path_buf();
        let samples = path.join(SAMPLES_FOLDER);
        fs::create_dir_all(&samples).map_err(|err| Error::io(&samples, err))?;
        remove_stale_temp_files(&path)?;
        remove_stale_temp_files(&samples)?;
        Ok(RunFolder { path, created: false })
    }

    /// Deletes what a new run wrote into the folder when it failed before writing its first
    /// checkpoint, so that the next run can start there without `overwrite`. The run's files
    /// (the ones that [`RunFolder::create`] with `overwrite` deletes) go, then `samples/` when
    /// it is empty, then the folder itself when [`RunFolder::create`] made it and it is empty.
    /// Returns whether the folder was cleaned, which it is not when it contains a checkpoint,
    /// because that run can be resumed.
    ///
    /// Call it only on the folder of a run that started in it: a folder from
    /// [`RunFolder::open`] contains a run that can be resumed.
    ///
    /// # Errors
    /// [`Error::Io`] if listing or deleting fails.
    pub fn remove_unfinished_run(&self) -> Result<bool> {
        if self.checkpoint_path().exists() {
            return Ok(false);
        }
        remove_run_files(&self.path)?;
        remove_empty_folder(&self.path.join(SAMPLES_FOLDER))?;
        if self.created {
            remove_empty_folder(&self.path)?;
        }
        Ok(true)
    }

    /// Returns the folder's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the path of the checkpoint.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join(CHECKPOINT_FILE)
    }

    /// Returns the path of the metrics CSV.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join(METRICS_FILE)
    }

    /// Returns the path of the loss plot.
    pub fn loss_plot_path(&self) -> PathBuf {
        self.path.join(LOSS_PLOT_FILE)
    }

    /// Returns the path of the sample grid after `step` steps, `samples/step_XXXXXX.png`.
    pub fn sample_path(&self, step: u64) -> PathBuf {
        self.path.join(SAMPLES_FOLDER).join(format!("step_{step:06}.png"))
    }

    /// Writes the sample grid of the run's current step and returns its path.
    ///
    /// # Errors
    /// As [`TrainingRun::samples`] and [`write_sample_grid`].
    pub fn write_samples(&self, run: &mut TrainingRun) -> Result<PathBuf> {
        let path = self.sample_path(run.steps_done());
        write_sample_grid(&path, &run.samples()?)?;
        Ok(path)
    }

    /// Writes the metrics CSV and the loss plot of `history`, then the checkpoint of `run`.
    ///
    /// The metrics go first. A run killed between the writes then leaves a CSV that reaches past
    /// the checkpoint's step, which [`read_history`] trims, rather than one that falls short.
    ///
    /// # Errors
    /// As [`metrics::write_csv`], [`metrics::write_loss_plot`] and [`TrainingRun::save`].
    pub fn write_progress(&self, run: &TrainingRun, history: &[MetricsRow]) -> Result<()> {
        metrics::write_csv(self.metrics_path(), history)?;
        metrics::write_loss_plot(self.loss_plot_path(), history)?;
        run.save(self.checkpoint_path())
    }

    /// Writes `settings` as pretty-printed JSON to `settings.json`.
    ///
    /// # Errors
    /// [`Error::Format`] if `settings` cannot be serialised; [`Error::Io`] if writing fails.
    pub fn write_settings(&self, settings: &impl serde::Serialize) -> Result<()> {
        let mut json = serde_json::to_string_pretty(settings)
            .map_err(|err| Error::Format { format: "settings JSON", reason: err.to_string() })?;
        json.push('\n');
        write_atomic(self.path.join(SETTINGS_FILE), json.as_bytes())
    }
}

/// Reads the metrics that a run wrote next to its checkpoint, up to and including step
/// `steps_done` (rows of later steps were written after that checkpoint and will be taken
/// again). A missing CSV gives no rows.
///
/// # Errors
/// As [`metrics::read_csv`].
pub fn read_history(checkpoint_path: &Path, steps_done: u64) -> Result<Vec<MetricsRow>> {
    let csv = checkpoint_path.with_file_name(METRICS_FILE);
    if !csv.exists() {
        return Ok(Vec::new());
    }
    let mut rows = metrics::read_csv(&csv)?;
    rows.retain(|row| row.step <= steps_done);
    Ok(rows)
}

/// Returns the names of the entries of folder `path`, sorted.
fn list_entries(path: &Path) -> Result<Vec<String>> {
    let io = |err| Error::io(path, err);
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(io)? {
        names.push(entry.map_err(io)?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Deletes folder `path` if it exists and is empty.
fn remove_empty_folder(path: &Path) -> Result<()> {
    if path.is_dir() && list_entries(path)?.is_empty() {
        fs::remove_dir(path).map_err(|err| Error::io(path, err))?;
    }
    Ok(())
}

/// Deletes the files a run writes into `path`, leaving everything else.
fn remove_run_files(path: &Path) -> Result<()> {
    let remove = |file: PathBuf| match fs::remove_file(&file) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(Error::io(file, err)),
        _ => Ok(()),
    };
    let names = [
        CHECKPOINT_FILE,
        METRICS_FILE,
        LOSS_PLOT_FILE,
        SETTINGS_FILE,
        QUALITY_CSV,
        QUALITY_PLOT,
        EVALUATION_FILE,
    ];
    for name in names {
        remove(path.join(name))?;
    }
    // The `sample` example's default output, next to the checkpoint.
    for name in list_entries(path)? {
        if name.starts_with("generated_seed") && name.ends_with(".png") {
            remove(path.join(name))?;
        }
    }
    let samples = path.join(SAMPLES_FOLDER);
    if samples.is_dir() {
        for name in list_entries(&samples)? {
            if name.starts_with("step_") && name.ends_with(".png") {
                remove(samples.join(name))?;
            }
        }
    }
    Ok(())
}
