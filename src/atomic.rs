//! Atomic file writes: a reader sees either the old file or the complete new one, never a
//! half-written file.
//!
//! [`write_atomic`] writes to a uniquely named temporary file in the target's folder, flushes it
//! to disk with `fsync`, and renames it over the target. A rename within one file system replaces
//! the directory entry in one step on POSIX systems and on Windows (`MoveFileEx` with
//! `MOVEFILE_REPLACE_EXISTING`, which `std::fs::rename` uses). On Unix the folder is synced too,
//! so the rename itself survives a power loss.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Distinguishes temporary files of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: temporary file in the same folder, write, `fsync`,
/// rename over `path`.
///
/// An existing file at `path` is replaced whole. On failure the temporary file is removed and
/// `path` is left as it was.
///
/// # Errors
///
/// [`Error::Io`] naming `path` (also when the temporary file beside it failed, so the message
/// names the file the caller asked for) or its folder, and [`Error::InvalidArgument`] if `path`
/// has no file name.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let temp = temp_path(path)?;

    let written = write_and_sync(&temp, bytes)
        .map_err(|source| Error::io(path, source))
        .and_then(|()| fs::rename(&temp, path).map_err(|source| Error::io(path, source)));
    if written.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&temp);
    }
    written?;

    sync_folder(path)
}

/// Checks that [`write_atomic`] can write `path` later, by creating and removing the temporary
/// file it would use. A command can call it before long work whose result goes to `path`, so
/// that an unwritable folder fails at once. `path` itself is not created or changed.
///
/// # Errors
///
/// [`Error::Io`] naming `path` when the temporary file cannot be created beside it, and
/// [`Error::InvalidArgument`] if `path` has no file name.
pub fn check_writable(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let temp = temp_path(path)?;
    fs::File::create(&temp).map_err(|source| Error::io(path, source))?;
    fs::remove_file(&temp).map_err(|source| Error::io(path, source))
}

/// The temporary file for `path`: `.<name>.<pid>.<counter>.tmp` in the same folder, so the
/// rename never crosses file systems.
fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid_path("path", path, "a path that ends in a file name"))?;
    let counter = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.{counter}.tmp", std::process::id()));
    Ok(path.with_file_name(temp_name))
}

/// Creates `temp`, writes `bytes` and syncs them. The caller names its target in the error.
fn write_and_sync(temp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // `create_new` fails rather than truncating a file that another writer owns.
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Syncs the folder that contains `path`, making the rename durable (Unix only: Windows cannot
/// open a folder as a file).
#[cfg(unix)]
fn sync_folder(path: &Path) -> Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| Error::io(folder, source))
}

#[cfg(not(unix))]
fn sync_folder(_path: &Path) -> Result<()> {
    Ok(())
}

/// Deletes the temporary files that [`write_atomic`] left in `folder` when a process was killed
/// between creating one and renaming it, and returns how many it deleted.
///
/// A temporary file of this process is kept, and so is one of a process that is still running
/// where the system can tell (Linux, through `/proc`). Other entries are left alone.
///
/// # Errors
/// [`Error::Io`] naming the folder or file when listing or deleting fails.
pub fn remove_stale_temp_files(folder: impl AsRef<Path>) -> Result<usize> {
    let folder = folder.as_ref();
    let io = |err| Error::io(folder, err);
    let mut removed = 0;
    for entry in fs::read_dir(folder).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(pid) = entry.file_name().to_str().and_then(temp_file_pid) else {
            continue;
        };
        if pid == std::process::id() || process_is_running(pid) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io(path, err)),
        }
    }
    Ok(removed)
}

/// Returns the process id in the name of a temporary file of [`temp_path`]
/// (`.<name>.<pid>.<counter>.tmp`), or `None` for any other name.
fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = rest.rsplitn(3, '.');
    let (counter, pid, target) = (parts.next()?, parts.next()?, parts.next()?);
    counter.parse::<u64>().ok()?;
    (!target.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// Returns whether process `pid` is running, as far as the system shows it: `false` only where
/// `/proc` exists and has no entry for it.
fn process_is_running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_path_stays_in_folder() {
        let temp = temp_path(Path::new("runs/a/ckpt.safetensors")).unwrap();
        assert_eq!(temp.parent(), Some(Path::new("runs/a")));
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".ckpt.safetensors."), "{name}");
        assert!(name.ends_with(".tmp"), "{name}");
    }

    #[test]
    fn temp_paths_differ() {
        let a = temp_path(Path::new("x.png")).unwrap();
        let b = temp_path(Path::new("x.png")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn missing_folder_error_names_the_target() {
        let target = std::env::temp_dir()
            .join(format!("dcgan-atomic-missing-{}", std::process::id()))
            .join("x.png");
        let err = write_atomic(&target, b"x").unwrap_err();
        match &err {
            Error::Io { path, source } => {
                assert_eq!(path, &target, "{err}");
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{err}");
            }
            other => panic!("expected Error::Io, got {other}"),
        }
        assert!(!err.to_string().contains(".tmp"), "{err}");
    }

    #[test]
    fn writable_check_leaves_no_file() {
        let folder =
            std::env::temp_dir().join(format!("dcgan-atomic-check-{}", std::process::id()));
        let _ = fs::remove_dir_all(&folder);
        fs::create_dir_all(&folder).unwrap();
        check_writable(folder.join("metrics.json")).unwrap();
        assert_eq!(fs::read_dir(&folder).unwrap().count(), 0);
        fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn writable_check_names_the_target() {
        let target = std::env::temp_dir()
            .join(format!("dcgan-atomic-unwritable-{}", std::process::id()))
            .join("metrics.json");
        let err = check_writable(&target).unwrap_err();
        assert!(matches!(&err, Error::Io { path, .. } if path == &target), "{err}");
    }

    #[test]
    fn temp_file_names_are_recognised() {
        assert_eq!(temp_file_pid(".checkpoint.safetensors.4242.7.tmp"), Some(4242));
        let own = temp_path(Path::new("x.png")).unwrap();
        let own = own.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_file_pid(own), Some(std::process::id()));
        for other in ["x.png", ".x.tmp", ".x.12.tmp", "..12.3.tmp", ".x.a.3.tmp", ".x.12.b.tmp"] {
            assert_eq!(temp_file_pid(other), None, "{other}");
        }
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let folder =
            std::env::temp_dir().join(format!("dcgan-atomic-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&folder);
        fs::create_dir_all(&folder).unwrap();
        // No process has an id above the Linux maximum of 2^22.
        let stale = folder.join(".checkpoint.safetensors.99999999.3.tmp");
        let own = temp_path(&folder.join("losses.png")).unwrap();
        let unrelated = folder.join(".notes.tmp");
        for file in [&stale, &own, &unrelated] {
            fs::write(file, b"x").unwrap();
        }

        let expected = usize::from(Path::new("/proc/self").exists());
        assert_eq!(remove_stale_temp_files(&folder).unwrap(), expected);
        assert_eq!(stale.exists(), expected == 0);
        assert!(own.exists());
        assert!(unrelated.exists());
        fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let err = write_atomic("/", b"x").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "path", .. }), "{err}");
    }
}
