//! The crate's one error type. User input (shapes, options, files) never panics: it returns one of
//! these, naming the offending value and what was expected.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter or option has a value outside its valid range.
    #[error("invalid {name} = {value}: expected {expected}")]
    InvalidArgument {
        /// The parameter's name, as the caller knows it (`stride`, `batch_size`).
        name: &'static str,
        /// The rejected value, formatted and, when [`Error::invalid`] built the error, shortened
        /// by [`shorten_value`].
        value: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// A buffer or tensor does not have the length or shape its geometry requires.
    #[error("{what} has {actual} elements, expected {expected}")]
    LengthMismatch {
        /// The buffer's role (`input`, `weight`, `grad_output`).
        what: &'static str,
        /// Its length.
        actual: usize,
        /// The length its geometry requires.
        expected: usize,
    },
    /// A size computed from user input does not fit in `usize`.
    #[error("size of {what} overflows usize")]
    Overflow {
        /// The quantity whose computation overflowed.
        what: &'static str,
    },
    /// A file or byte stream does not follow its format.
    #[error("malformed {format} data: {reason}")]
    Format {
        /// The format (`IDX`, `safetensors`, `checkpoint`).
        format: &'static str,
        /// What was wrong, with the offending value.
        reason: String,
    },
    /// A value that must be finite is NaN or infinite.
    #[error("non-finite value in {what}")]
    NonFinite {
        /// Where it was found.
        what: String,
    },
    /// Memory for a large buffer (a network's parameters, an optimiser's state) could not be
    /// reserved.
    #[error("cannot allocate {bytes} bytes for {what}: use a smaller model")]
    OutOfMemory {
        /// Name of the buffer that could not be allocated.
        what: &'static str,
        /// Its size in bytes.
        bytes: usize,
    },
    /// A file is not in the format that its reader expects: a PNG image or a text file given as
    /// a checkpoint.
    #[error("{} is not a {expected}: {reason}", path.display())]
    UnrecognizedFile {
        /// The file.
        path: PathBuf,
        /// The kind of file that was expected (`safetensors checkpoint`).
        expected: &'static str,
        /// The reason the file does not fit that format, with the detail that the reader found.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// The number of characters of a user value that error messages echo in full (see
/// [`shorten_value`]).
pub const MAX_ECHOED_CHARS: usize = 40;

/// Returns `value` unchanged when it has at most [`MAX_ECHOED_CHARS`] characters. A longer value
/// is cut to its first [`MAX_ECHOED_CHARS`] characters, followed by an ellipsis and its length:
/// `1000000000000000000000000000000000000000... (301 characters)`.
pub fn shorten_value(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHOED_CHARS) {
        None => value.to_owned(),
        Some((end, _)) => {
            let length = value.chars().count();
            format!("{}... ({length} characters)", &value[..end])
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Names checkpoint tensor `tensor` in an [`Error::NonFinite`], whose message otherwise
    /// names the parameter within its network only. Other errors pass through unchanged.
    pub(crate) fn in_tensor(self, tensor: &str) -> Self {
        match self {
            Error::NonFinite { .. } => {
                Error::NonFinite { what: format!("checkpoint tensor `{tensor}`") }
            }
            error => error,
        }
    }

    /// Builds an [`Error::InvalidArgument`], with `value` shortened by [`shorten_value`] so
    /// that a value of hundreds of digits does not flood the message.
    pub fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        let value = shorten_value(&value.to_string());
        Error::InvalidArgument { name, value, expected: expected.into() }
    }

    /// Builds an [`Error::InvalidArgument`] for a rejected file or folder path, which is kept
    /// whole, because a shortened path would not name the file.
    pub fn invalid_path(name: &'static str, path: &Path, expected: impl Into<String>) -> Self {
        let value = path.display().to_string();
        Error::InvalidArgument { name, value, expected: expected.into() }
    }

    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Returns `Err(LengthMismatch)` unless `actual == expected`.
pub(crate) fn check_len(what: &'static str, actual: usize, expected: usize) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch { what, actual, expected })
    }
}

/// Multiplies sizes with overflow checking.
pub(crate) fn checked_product(what: &'static str, factors: &[usize]) -> Result<usize> {
    factors.iter().try_fold(1usize, |acc, &f| acc.checked_mul(f)).ok_or(Error::Overflow { what })
}

/// Returns `len` zeros, or [`Error::OutOfMemory`] naming `what` when the memory cannot be
/// reserved, where `vec![0.0; len]` would abort the process.
pub(crate) fn try_zeros(what: &'static str, len: usize) -> Result<Vec<f32>> {
    let bytes = len.saturating_mul(std::mem::size_of::<f32>());
    let mut values = Vec::new();
    values.try_reserve_exact(len).map_err(|_| Error::OutOfMemory { what, bytes })?;
    values.resize(len, 0.0);
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_allocation_is_an_error() {
        let err = try_zeros("test buffer", usize::MAX / 2).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { what: "test buffer", .. }), "{err}");
        assert_eq!(try_zeros("test buffer", 3).unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn long_value_is_shortened() {
        let digits = format!("1{}", "0".repeat(300));
        let err = Error::invalid("lr_d", &digits, "at most 1");
        let message = err.to_string();
        let expected = format!("invalid lr_d = 1{}... (301 characters): expected", "0".repeat(39));
        assert!(message.starts_with(&expected), "{message}");
        assert!(message.len() < 100, "{message}");
    }

    #[test]
    fn short_value_is_kept_exact() {
        let exact = "x".repeat(MAX_ECHOED_CHARS);
        assert_eq!(shorten_value(&exact), exact);
        assert_eq!(shorten_value("0.5"), "0.5");
        let err = Error::invalid("beta1", 1.5, "a number in [0, 1)");
        assert_eq!(err.to_string(), "invalid beta1 = 1.5: expected a number in [0, 1)");
    }

    #[test]
    fn shortening_counts_characters() {
        // 41 characters of two bytes each: the cut keeps 40 characters, not 40 bytes.
        let value = "\u{e9}".repeat(41);
        let shortened = shorten_value(&value);
        assert!(shortened.starts_with(&"\u{e9}".repeat(40)), "{shortened}");
        assert!(shortened.ends_with("... (41 characters)"), "{shortened}");
    }

    #[test]
    fn path_is_kept_whole() {
        let path = Path::new("/a/long/folder/name/that/goes/on/and/on/run/checkpoint.safetensors");
        let err = Error::invalid_path("output folder", path, "a folder");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
}
