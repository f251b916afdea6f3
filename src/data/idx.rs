//! Reader for the IDX format of the MNIST files, plain or gzip-compressed.
//!
//! An IDX file is a big-endian header followed by the payload:
//!
//! ```text
//! 0x00 0x00 <data type> <dimension count d>   magic, e.g. 0x00000803 for MNIST images
//! d x u32                                     dimension sizes, outermost first
//! product(sizes) x element                    payload, row-major
//! ```
//!
//! Only the unsigned-byte data type (0x08) is read; it is the only one the MNIST files use.
//! Input starting with the gzip magic `1f 8b` is decompressed on the fly.
//!
//! The reader trusts nothing in the header. Each size must be non-zero, and their product is
//! computed with overflow checks and compared with a cap ([`MAX_PAYLOAD_BYTES`] by default) before
//! the payload is read. The payload buffer grows only as bytes actually arrive, so a hostile
//! header that claims 2^60 bytes costs nothing. The payload must end exactly where the header says: short
//! input, extra bytes after it, and extra bytes after the gzip stream are all errors.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Default cap on the payload size a header may claim, in bytes (4 GiB).
///
/// MNIST's 60,000-image training file has a 47,040,000-byte payload, so the cap leaves room for
/// much larger IDX data sets while rejecting absurd headers before any allocation.
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 32;

/// The IDX data-type code for unsigned bytes, the only one this reader accepts.
pub const UNSIGNED_BYTE: u8 = 0x08;

/// The gzip magic number, the first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The initial payload buffer; larger payloads grow it as their bytes arrive.
const INITIAL_CAPACITY: usize = 1 << 20;

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimension sizes from the header, outermost first (`[count, rows, columns]` for MNIST
    /// images, `[count]` for labels). All non-zero.
    pub dims: Vec<usize>,
    /// The payload in row-major order; its length is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX array from bytes in memory, plain or gzip-compressed, with the default cap of
/// [`MAX_PAYLOAD_BYTES`].
///
/// # Errors
///
/// [`Error::Format`] for anything that is not a complete, well-formed unsigned-byte IDX array;
/// the message names the offending value and the expected one.
pub fn read_idx_bytes(bytes: &[u8]) -> Result<IdxArray> {
    read_idx(bytes, "IDX bytes", MAX_PAYLOAD_BYTES)
}

/// Reads an IDX file, plain or gzip-compressed, with the default cap of [`MAX_PAYLOAD_BYTES`].
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be opened or read, and [`Error::Format`] (with the path in
/// the message) for malformed content, as for [`read_idx_bytes`].
pub fn read_idx_file(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| Error::io(path, source))?;
    read_idx(file, &path.display().to_string(), MAX_PAYLOAD_BYTES)
}

/// Reads an IDX array from `reader`, plain or gzip-compressed, rejecting headers that claim more
/// than `max_payload_bytes` bytes.
///
/// `source` names the input in error messages (a path, or a description); [`Error::Io`] errors
/// carry it as their path.
///
/// # Errors
///
/// As for [`read_idx_bytes`] and [`read_idx_file`].
pub fn read_idx(reader: impl Read, source: &str, max_payload_bytes: u64) -> Result<IdxArray> {
    let mut reader = BufReader::new(reader);
    let mut prefix = [0u8; 2];
    let prefix_len = read_up_to(&mut reader, &mut prefix, source)?;
    let mut stream = BufReader::new(io::Cursor::new(prefix[..prefix_len].to_vec()).chain(reader));

    if prefix[..prefix_len] != GZIP_MAGIC {
        return read_array(&mut stream, source, max_payload_bytes);
    }

    // The bufread decoder consumes only the bytes of the gzip member, so anything left in
    // `stream` afterwards is trailing data.
    let mut decoder = flate2::bufread::GzDecoder::new(stream);
    let array = read_array(&mut decoder, source, max_payload_bytes)?;
    let mut stream = decoder.into_inner();
    let rest = stream.fill_buf().map_err(|err| read_error(err, source, "after the gzip stream"))?;
    if !rest.is_empty() {
        return Err(format_error(
            source,
            "unexpected data after the end of the gzip stream: expected end of input".into(),
        ));
    }
    Ok(array)
}

/// Parses header and payload from the decompressed stream and checks that it ends there.
fn read_array(reader: &mut impl Read, source: &str, max_payload_bytes: u64) -> Result<IdxArray> {
    // Magic: two zero bytes, the data type, the dimension count.
    let mut magic = [0u8; 4];
    read_header_field(reader, &mut magic, source, "the magic number")?;
    let magic_value = u32::from_be_bytes(magic);
    if magic[0] != 0 || magic[1] != 0 {
        return Err(format_error(
            source,
            format!(
                "magic number 0x{magic_value:08x} does not start with two zero bytes: expected \
                 an IDX file (0x00000803 for MNIST images, 0x00000801 for labels)"
            ),
        ));
    }
    if magic[2] != UNSIGNED_BYTE {
        return Err(format_error(
            source,
            format!(
                "data type 0x{:02x} in magic number 0x{magic_value:08x} is not supported: \
                 expected 0x{UNSIGNED_BYTE:02x} (unsigned byte)",
                magic[2]
            ),
        ));
    }
    let dim_count = usize::from(magic[3]);
    if dim_count == 0 {
        return Err(format_error(
            source,
            format!("magic number 0x{magic_value:08x} declares 0 dimensions: expected at least 1"),
        ));
    }

    // Dimension sizes: non-zero, with a checked product under the cap.
    let mut size_bytes = vec![0u8; 4 * dim_count];
    read_header_field(reader, &mut size_bytes, source, "the dimension sizes")?;
    let sizes: Vec<u32> = size_bytes
        .chunks_exact(4)
        .map(|chunk| u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    if let Some(axis) = sizes.iter().position(|&size| size == 0) {
        return Err(format_error(
            source,
            format!(
                "dimension {axis} of {} is 0: expected every size to be at least 1",
                describe_sizes(&sizes)
            ),
        ));
    }
    let claimed = sizes.iter().try_fold(1u64, |acc, &size| acc.checked_mul(u64::from(size)));
    let claimed = match claimed {
        Some(bytes) if bytes <= max_payload_bytes => bytes,
        _ => {
            return Err(format_error(
                source,
                format!(
                    "dimensions {} claim a payload of more than {max_payload_bytes} bytes, the \
                     limit",
                    describe_sizes(&sizes)
                ),
            ))
        }
    };
    let claimed_len =
        usize::try_from(claimed).map_err(|_| Error::Overflow { what: "IDX payload" })?;

    // Payload: read at most one byte past the claim, growing the buffer as data arrives.
    let mut data = Vec::with_capacity(claimed_len.min(INITIAL_CAPACITY));
    reader
        .take(claimed.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|err| read_error(err, source, "the payload"))?;
    if data.len() < claimed_len {
        return Err(format_error(
            source,
            format!(
                "payload has {} bytes: expected {claimed_len} for dimensions {}",
                data.len(),
                describe_sizes(&sizes)
            ),
        ));
    }
    if data.len() > claimed_len {
        return Err(format_error(
            source,
            format!(
                "unexpected data after the {claimed_len}-byte payload of dimensions {}: \
                 expected end of input",
                describe_sizes(&sizes)
            ),
        ));
    }

    let dims = sizes.iter().map(|&size| size as usize).collect();
    Ok(IdxArray { dims, data })
}

/// Formats dimension sizes for an error message: all of them, or the first 8 and the count.
fn describe_sizes(sizes: &[u32]) -> String {
    const SHOWN: usize = 8;
    if sizes.len() <= SHOWN {
        format!("{sizes:?}")
    } else {
        format!("{:?} and {} more ({} in all)", &sizes[..SHOWN], sizes.len() - SHOWN, sizes.len())
    }
}

/// Fills `buf` from `reader`, stopping early only at end of input; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8], source: &str) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(read_error(err, source, "the header")),
        }
    }
    Ok(filled)
}

/// Fills `buf` exactly, reporting a short read as a truncated header.
fn read_header_field(
    reader: &mut impl Read,
    buf: &mut [u8],
    source: &str,
    field: &str,
) -> Result<()> {
    let filled = read_up_to(reader, buf, source)?;
    if filled < buf.len() {
        return Err(format_error(
            source,
            format!(
                "input ends inside the header: expected {} bytes of {field}, found {filled}",
                buf.len()
            ),
        ));
    }
    Ok(())
}

/// Maps a read failure: corrupt or truncated compressed data is a format error, anything else
/// an I/O error on `source`.
fn read_error(err: io::Error, source: &str, part: &str) -> Error {
    match err.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            format_error(source, format!("invalid gzip data in {part}: {err}"))
        }
        io::ErrorKind::UnexpectedEof => {
            format_error(source, format!("gzip stream ends early, in {part}: {err}"))
        }
        _ => Error::io(source, err),
    }
}

fn format_error(source: &str, reason: String) -> Error {
    Error::Format { format: "IDX", reason: format!("{source}: {reason}") }
}
