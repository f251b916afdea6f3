//! The crate's one error type. User input (shapes, options, files) never panics: it returns one of
//! these, naming the offending value and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter or option has a value outside its valid range.
    #[error("invalid {name} = {value}: expected {expected}")]
    InvalidArgument {
        /// The parameter's name, as the caller knows it (`stride`, `batch_size`).
        name: &'static str,
        /// The rejected value, formatted.
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

    /// Builds an [`Error::InvalidArgument`].
    pub fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument { name, value: value.to_string(), expected: expected.into() }
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
}
