//! Checkpoints: named `f32` tensors, `u64`/`f64` scalars and string metadata in one safetensors
//! file, written atomically.
//!
//! The file is standard safetensors: an 8-byte little-endian header length, a JSON header (tensor
//! name to dtype, shape and byte range, plus a `__metadata__` map of strings), then the raw
//! little-endian data. Tensors are `F32`; scalars are shape-`[]` tensors of dtype `U64` or `F64`.
//! Structured values (RNG states, settings) go into the metadata as JSON strings through
//! [`Checkpoint::set_json`] and [`Checkpoint::get_json`].
//!
//! Saving is deterministic: the header lists names in sorted order, so equal checkpoints give
//! identical bytes. Loading trusts nothing: the file size is capped before reading, the
//! `safetensors` crate checks that the header's byte ranges tile the data exactly (so no claimed
//! size is ever allocated), and every dtype is checked against the three kinds above.
//!
//! [`Checkpoint::to_bytes`] stores a CRC-32 of the contents (every tensor, scalar and metadata
//! entry, with names and shapes) in metadata [`CHECKSUM_KEY`]. Loading checks it, so a flipped
//! bit in the file is an error rather than a silently changed weight. A file without that entry,
//! from another safetensors writer, loads unchecked. NOTE: so does one of ours whose damage hit
//! the 14 bytes of the entry's name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, Metadata, SafeTensorError, TensorInfo};
use safetensors::SafeTensors;

use crate::atomic::write_atomic;
use crate::error::{checked_product, Error, Result};
use crate::layers::{BufferData, Network};

/// Default cap on the size of a checkpoint file that [`Checkpoint::load`] reads (16 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 34;

/// The largest safetensors header, in bytes, that the `safetensors` crate accepts
/// (`MAX_HEADER_SIZE` in safetensors 0.4.5).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The header key that safetensors reserves for string metadata.
const METADATA_KEY: &str = "__metadata__";

/// The metadata entry that contains the CRC-32 of a checkpoint's contents, as 8 hex digits.
pub const CHECKSUM_KEY: &str = "contents_crc32";

/// A scalar stored beside the tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// An unsigned integer (step counts, epochs, seeds).
    U64(u64),
    /// A double (loss scales, schedule positions).
    F64(f64),
}

/// The contents of a checkpoint file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Tensors by name: shape and row-major data, with `data.len()` the product of the shape.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// Scalars by name. A name may not also be a tensor name.
    pub scalars: BTreeMap<String, Scalar>,
    /// Free-form string metadata, stored in the safetensors `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Creates an empty checkpoint.
    pub fn new() -> Checkpoint {
        Checkpoint::default()
    }

    /// Adds (or replaces) a tensor.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] unless `data.len()` is the product of `shape`, and
    /// [`Error::Overflow`] if that product overflows.
    pub fn insert_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        data: Vec<f32>,
    ) -> Result<()> {
        let expected = checked_product("checkpoint tensor", shape)?;
        crate::error::check_len("checkpoint tensor", data.len(), expected)?;
        self.tensors.insert(name.into(), (shape.to_vec(), data));
        Ok(())
    }

    /// Returns the data of tensor `name` after checking that its shape is `expected_shape`.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if the tensor is missing or has another shape.
    pub fn get(&self, name: &str, expected_shape: &[usize]) -> Result<&[f32]> {
        let (shape, data) = self.tensors.get(name).ok_or_else(|| {
            let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).take(8).collect();
            if names.is_empty() {
                names.push("no tensors");
            } else if self.tensors.len() > names.len() {
                names.push("...");
            }
            checkpoint_error(format!(
                "tensor `{name}` (shape {expected_shape:?}) not found; the checkpoint has {}",
                names.join(", ")
            ))
        })?;
        if shape != expected_shape {
            return Err(checkpoint_error(format!(
                "tensor `{name}` has shape {shape:?}: expected {expected_shape:?}"
            )));
        }
        Ok(data)
    }

    /// Returns the `u64` scalar `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if it is missing or an `f64`.
    pub fn get_u64(&self, name: &str) -> Result<u64> {
        match self.scalars.get(name) {
            Some(Scalar::U64(value)) => Ok(*value),
            other => Err(scalar_error(name, "U64", other)),
        }
    }

    /// Returns the `f64` scalar `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if it is missing or a `u64`.
    pub fn get_f64(&self, name: &str) -> Result<f64> {
        match self.scalars.get(name) {
            Some(Scalar::F64(value)) => Ok(*value),
            other => Err(scalar_error(name, "F64", other)),
        }
    }

    /// Stores `value` as a JSON string under metadata `key`.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if serde_json cannot serialise `value` (a map with non-string keys).
    pub fn set_json<T: serde::Serialize>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<()> {
        let key = key.into();
        let json = serde_json::to_string(value).map_err(|err| {
            checkpoint_error(format!("metadata `{key}` cannot be serialised to JSON: {err}"))
        })?;
        self.metadata.insert(key, json);
        Ok(())
    }

    /// Parses metadata `key` as JSON into a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if the key is missing or its JSON does not describe a `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let json = self
            .metadata
            .get(key)
            .ok_or_else(|| checkpoint_error(format!("metadata `{key}` not found")))?;
        serde_json::from_str(json)
            .map_err(|err| checkpoint_error(format!("metadata `{key}` is not valid here: {err}")))
    }

    /// Serialises to safetensors bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if a name is `__metadata__` or is both a tensor and a scalar,
    /// and [`Error::LengthMismatch`] if a tensor's data does not match its shape.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        // Validate names and lengths.
        for name in self.tensors.keys().chain(self.scalars.keys()) {
            if name == METADATA_KEY {
                return Err(Error::invalid("name", name, "a name other than `__metadata__`"));
            }
        }
        if let Some(name) = self.scalars.keys().find(|name| self.tensors.contains_key(*name)) {
            return Err(Error::invalid("name", name, "a name used by one tensor or one scalar"));
        }
        for (shape, data) in self.tensors.values() {
            let expected = checked_product("checkpoint tensor", shape)?;
            crate::error::check_len("checkpoint tensor", data.len(), expected)?;
        }
        if self.metadata.contains_key(CHECKSUM_KEY) {
            return Err(Error::invalid(
                "metadata key",
                CHECKSUM_KEY,
                "a key other than the one the checksum is stored under",
            ));
        }

        // Lay out the data: 8-byte scalars first, then the tensors, each in name order, so every
        // value sits at a multiple of its own size.
        let mut header = serde_json::Map::new();
        let mut map: serde_json::Map<String, serde_json::Value> =
            self.metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        map.insert(CHECKSUM_KEY.to_owned(), format!("{:08x}", self.contents_crc32()).into());
        header.insert(METADATA_KEY.to_owned(), serde_json::Value::Object(map));
        let mut data = Vec::new();
        for (name, scalar) in &self.scalars {
            match *scalar {
                Scalar::U64(value) => {
                    push_entry(&mut header, &mut data, name, Dtype::U64, &[], value.to_le_bytes())
                }
                Scalar::F64(value) => {
                    push_entry(&mut header, &mut data, name, Dtype::F64, &[], value.to_le_bytes())
                }
            }
        }
        for (name, (shape, values)) in &self.tensors {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes());
            push_entry(&mut header, &mut data, name, Dtype::F32, shape, bytes);
        }

        // The header, padded with spaces to a multiple of 8 bytes as the safetensors crate does.
        let mut header_bytes = serde_json::to_vec(&header).expect("a JSON map serialises");
        header_bytes.resize(header_bytes.len().next_multiple_of(8), b' ');

        let mut bytes = Vec::with_capacity(8 + header_bytes.len() + data.len());
        bytes.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header_bytes);
        bytes.extend_from_slice(&data);
        Ok(bytes)
    }

    /// Returns the CRC-32 of the contents: each metadata entry, scalar and tensor in name
    /// order, with its name, kind, shape and little-endian value bytes.
    fn contents_crc32(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        for (key, value) in &self.metadata {
            for part in [key.as_bytes(), &[0], value.as_bytes(), &[0]] {
                hasher.update(part);
            }
        }
        for (name, scalar) in &self.scalars {
            let (kind, bytes) = match *scalar {
                Scalar::U64(value) => (b'u', value.to_le_bytes()),
                Scalar::F64(value) => (b'f', value.to_le_bytes()),
            };
            for part in [name.as_bytes(), &[0, kind], &bytes] {
                hasher.update(part);
            }
        }
        for (name, (shape, values)) in &self.tensors {
            hasher.update(name.as_bytes());
            hasher.update(&[0, b't']);
            for &dim in shape {
                hasher.update(&(dim as u64).to_le_bytes());
            }
            let mut bytes = [0u8; 4096];
            for chunk in values.chunks(bytes.len() / 4) {
                for (out, value) in bytes.chunks_exact_mut(4).zip(chunk) {
                    out.copy_from_slice(&value.to_le_bytes());
                }
                hasher.update(&bytes[..4 * chunk.len()]);
            }
        }
        hasher.finalize()
    }

    /// Writes the checkpoint to `path` atomically (see [`write_atomic`]).
    ///
    /// # Errors
    ///
    /// As for [`Checkpoint::to_bytes`], and [`Error::Io`] if writing fails.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint file of at most [`MAX_FILE_BYTES`] bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read. [`Error::UnrecognizedFile`] if its first bytes
    /// are not a safetensors header, as in a PNG image or a text file. [`Error::Format`], with
    /// the path in the message, if it is too large or not a valid checkpoint past its header
    /// (see [`Checkpoint::load_bytes`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        Checkpoint::load_with_limit(path, MAX_FILE_BYTES)
    }

    /// Reads a checkpoint file of at most `max_bytes` bytes.
    ///
    /// # Errors
    ///
    /// As for [`Checkpoint::load`].
    pub fn load_with_limit(path: impl AsRef<Path>, max_bytes: u64) -> Result<Checkpoint> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let io = |source| Error::io(path, source);
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        if file_len > max_bytes {
            return Err(format_error(
                &source,
                format!("file has {file_len} bytes: expected at most {max_bytes}"),
            ));
        }

        // The length can change between the check and the read, so the read is capped as well.
        let mut file = file.take(max_bytes.saturating_add(1));
        // The header comes first and is checked against the file's length, so a file that is not
        // a checkpoint is rejected before its remaining bytes are read into memory.
        let mut bytes = Vec::new();
        (&mut file).take(8).read_to_end(&mut bytes).map_err(io)?;
        if let Ok(prefix) = <[u8; 8]>::try_from(bytes.as_slice()) {
            let header_len = u64::from_le_bytes(prefix);
            if header_len > MAX_HEADER_BYTES {
                return Err(file_error(path, &source, SafeTensorError::HeaderTooLarge));
            }
            if header_len > file_len.saturating_sub(8) {
                return Err(file_error(path, &source, SafeTensorError::InvalidHeaderLength));
            }
            (&mut file).take(header_len).read_to_end(&mut bytes).map_err(io)?;
            let data_len =
                header_data_len(&bytes[8..]).map_err(|err| file_error(path, &source, err))?;
            let expected_len = (8 + header_len).saturating_add(data_len);
            if expected_len != file_len {
                return Err(format_error(
                    &source,
                    format!(
                        "{} (the file has {file_len} bytes, its header describes {expected_len})",
                        describe_safetensors_error(SafeTensorError::MetadataIncompleteBuffer)
                    ),
                ));
            }
            bytes.reserve_exact(usize::try_from(data_len).unwrap_or(0));
        }
        file.read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > max_bytes {
            return Err(format_error(
                &source,
                format!("file grew past {max_bytes} bytes while being read"),
            ));
        }
        parse(&bytes, &source, Some(path))
    }

    /// Parses checkpoint bytes, as written by [`Checkpoint::to_bytes`] or by any safetensors
    /// writer that stores only `F32` tensors and shape-`[]` `U64`/`F64` scalars.
    ///
    /// # Errors
    ///
    /// [`Error::Format`] if the bytes are not valid safetensors (bad header length, JSON, offsets
    /// or sizes), or if an entry is neither an `F32` tensor nor a shape-`[]` `U64`/`F64` scalar.
    pub fn load_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        parse(bytes, "checkpoint bytes", None)
    }
}

/// Returns the bytes of tensor data that a safetensors `header` (the JSON after the 8-byte
/// length) describes: the end of its last byte range.
fn header_data_len(header: &[u8]) -> std::result::Result<u64, SafeTensorError> {
    let header = std::str::from_utf8(header).map_err(|_| SafeTensorError::InvalidHeader)?;
    let metadata: Metadata =
        serde_json::from_str(header).map_err(|_| SafeTensorError::InvalidHeaderDeserialization)?;
    let end = metadata.tensors().values().map(|info| info.data_offsets.1).max().unwrap_or(0);
    Ok(end as u64)
}

/// Parses safetensors `bytes`. `source` names them in error messages, and `path` is the file
/// they were read from, if any.
fn parse(bytes: &[u8], source: &str, path: Option<&Path>) -> Result<Checkpoint> {
    let (header_len, metadata): (usize, Metadata) =
        SafeTensors::read_metadata(bytes).map_err(|err| match path {
            Some(path) => file_error(path, source, err),
            None => format_error(source, describe_safetensors_error(err)),
        })?;
    // `read_metadata` checked that the byte ranges tile exactly the bytes after the header.
    let data = &bytes[8 + header_len..];

    let mut checkpoint = Checkpoint::new();
    if let Some(map) = metadata.metadata() {
        checkpoint.metadata = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    let stored_checksum = checkpoint.metadata.remove(CHECKSUM_KEY);
    let infos: BTreeMap<String, &TensorInfo> = metadata.tensors().into_iter().collect();
    for (name, info) in infos {
        let (start, end) = info.data_offsets;
        let raw = &data[start..end];
        match (info.dtype, info.shape.as_slice()) {
            (Dtype::F32, shape) => {
                let values = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                checkpoint.tensors.insert(name, (shape.to_vec(), values));
            }
            (Dtype::U64, []) => {
                let value = u64::from_le_bytes(raw.try_into().expect("validated 8 bytes"));
                checkpoint.scalars.insert(name, Scalar::U64(value));
            }
            (Dtype::F64, []) => {
                let value = f64::from_le_bytes(raw.try_into().expect("validated 8 bytes"));
                checkpoint.scalars.insert(name, Scalar::F64(value));
            }
            (dtype, shape) => {
                return Err(format_error(
                    source,
                    format!(
                        "entry `{name}` has dtype {dtype:?} and shape {shape:?}: expected an F32 \
                         tensor or a U64/F64 scalar of shape []"
                    ),
                ))
            }
        }
    }
    if let Some(stored) = stored_checksum {
        let computed = format!("{:08x}", checkpoint.contents_crc32());
        if stored != computed {
            return Err(Error::Format {
                format: "checkpoint",
                reason: format!(
                    "{source}: CRC-32 checksum mismatch: metadata `{CHECKSUM_KEY}` is {stored:?}, \
                     but the contents give {computed:?}, so the file is corrupt"
                ),
            });
        }
    }
    Ok(checkpoint)
}

/// Builds the error for file `path` that the safetensors crate rejects with `err`. A file whose
/// first bytes are not a safetensors header is most likely another kind of file (a PNG image, a
/// text file), so the error states that it is not a checkpoint. Errors past the header (byte
/// ranges, sizes) mean a damaged checkpoint and stay [`Error::Format`].
fn file_error(path: &Path, source: &str, err: SafeTensorError) -> Error {
    let is_header_error = matches!(
        err,
        SafeTensorError::HeaderTooSmall
            | SafeTensorError::HeaderTooLarge
            | SafeTensorError::InvalidHeaderLength
            | SafeTensorError::InvalidHeader
            | SafeTensorError::InvalidHeaderStart
            | SafeTensorError::InvalidHeaderDeserialization
    );
    let reason = describe_safetensors_error(err);
    if !is_header_error {
        return format_error(source, reason);
    }
    Error::UnrecognizedFile {
        path: path.to_path_buf(),
        expected: "safetensors checkpoint",
        reason: format!(
            "its first bytes are not a safetensors header ({reason}), so it is another kind of \
             file or a damaged checkpoint"
        ),
    }
}

fn describe_safetensors_error(err: SafeTensorError) -> String {
    match err {
        SafeTensorError::HeaderTooSmall => {
            "input has fewer than 8 bytes: expected an 8-byte header length".into()
        }
        SafeTensorError::HeaderTooLarge => {
            "header length exceeds the safetensors limit of 100,000,000 bytes".into()
        }
        SafeTensorError::InvalidHeaderLength => {
            "header length points past the end of the input".into()
        }
        SafeTensorError::InvalidHeader => "header is not valid UTF-8".into(),
        SafeTensorError::InvalidHeaderStart => "header does not start with `{`".into(),
        SafeTensorError::InvalidHeaderDeserialization => {
            "header is not a JSON object of tensor entries (dtype, shape, data_offsets)".into()
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor `{name}` has data offsets that do not start where the previous tensor (in \
             offset order) ends: the header lacks an entry before it or its offsets are wrong"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte range does not match its shape and dtype".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows usize".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "tensor data does not end exactly at the end of the input".into()
        }
        other => format!("invalid safetensors data: {other:?}"),
    }
}

fn scalar_error(name: &str, expected: &str, found: Option<&Scalar>) -> Error {
    let found = match found {
        None => "not found".to_owned(),
        Some(Scalar::U64(_)) => "a U64".to_owned(),
        Some(Scalar::F64(_)) => "an F64".to_owned(),
    };
    checkpoint_error(format!("scalar `{name}` is {found}: expected a {expected} scalar"))
}

fn checkpoint_error(reason: String) -> Error {
    Error::Format { format: "checkpoint", reason }
}

fn format_error(source: &str, reason: String) -> Error {
    Error::Format { format: "safetensors", reason: format!("{source}: {reason}") }
}

/// Appends one entry's bytes to `data` and its dtype, shape and byte range to `header`.
fn push_entry(
    header: &mut serde_json::Map<String, serde_json::Value>,
    data: &mut Vec<u8>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    bytes: impl IntoIterator<Item = u8>,
) {
    let start = data.len();
    data.extend(bytes);
    let info = TensorInfo { dtype, shape: shape.to_vec(), data_offsets: (start, data.len()) };
    let value = serde_json::to_value(info).expect("TensorInfo serialises to a JSON object");
    header.insert(name.to_owned(), value);
}

/// Stores the parameters and buffers of `network` in `checkpoint` under `{prefix}.{name}`
/// (`generator.main.0.weight`, `generator.main.1.running_mean`).
///
/// Parameters and `f32` buffers become `F32` tensors in PyTorch's shapes; `i64` buffers of one
/// element (BatchNorm's `num_batches_tracked`) become `U64` scalars.
///
/// # Errors
/// [`Error::InvalidArgument`] for an `i64` buffer that is negative or has more than one element.
pub fn insert_network(checkpoint: &mut Checkpoint, prefix: &str, network: &Network) -> Result<()> {
    for tensor in network.named_params() {
        let name = format!("{prefix}.{}", tensor.name);
        checkpoint.insert_tensor(name, &tensor.shape, tensor.data.to_vec())?;
    }
    for buffer in network.named_buffers() {
        let name = format!("{prefix}.{}", buffer.name);
        match buffer.data {
            BufferData::F32(values) => {
                checkpoint.insert_tensor(name, &buffer.shape, values.to_vec())?
            }
            BufferData::I64(&[value]) => {
                let value = u64::try_from(value)
                    .map_err(|_| Error::invalid("buffer", &name, "a count of at least 0"))?;
                checkpoint.scalars.insert(name, Scalar::U64(value));
            }
            BufferData::I64(values) => {
                return Err(Error::invalid(
                    "buffer",
                    &name,
                    format!("an i64 buffer of one element, not {}", values.len()),
                ))
            }
        }
    }
    Ok(())
}

/// Overwrites the parameters and buffers of `network` with those that [`insert_network`] stored
/// under `prefix`. Entries outside `{prefix}.*` are left to the caller.
///
/// # Errors
/// [`Error::Format`] when a tensor or scalar is missing or has another shape, or when a tensor
/// or scalar named `{prefix}.*` is not a parameter or buffer of `network`;
/// [`Error::NonFinite`] or [`Error::InvalidArgument`] for values the network rejects (NaN
/// weights, a negative running variance). The network may be partly overwritten then.
pub fn restore_network(checkpoint: &Checkpoint, prefix: &str, network: &mut Network) -> Result<()> {
    let params: Vec<(String, Vec<usize>)> =
        network.named_params().map(|t| (t.name, t.shape)).collect();
    // Every entry under the prefix must be one of the network's own, so that a layer the
    // network lacks (`generator.main.13.weight`) is reported instead of ignored.
    let start = format!("{prefix}.");
    let own: std::collections::BTreeSet<String> = params
        .iter()
        .map(|(name, _)| name.clone())
        .chain(network.named_buffers().map(|b| b.name))
        .map(|name| format!("{start}{name}"))
        .collect();
    reject_unknown_entries(
        checkpoint,
        &format!("the parameters and buffers of the network stored under `{start}*`"),
        |name| !name.starts_with(&start) || own.contains(name),
    )?;
    for (name, shape) in params {
        let tensor = format!("{prefix}.{name}");
        network
            .set_param(&name, checkpoint.get(&tensor, &shape)?)
            .map_err(|error| error.in_tensor(&tensor))?;
    }
    let buffers: Vec<(String, Vec<usize>, bool)> = network
        .named_buffers()
        .map(|b| (b.name, b.shape, matches!(b.data, BufferData::F32(_))))
        .collect();
    for (name, shape, is_f32) in buffers {
        let key = format!("{prefix}.{name}");
        if is_f32 {
            network.set_buffer(&name, BufferData::F32(checkpoint.get(&key, &shape)?))?;
        } else {
            let value = checkpoint.get_u64(&key)?;
            let value = i64::try_from(value).map_err(|_| Error::Format {
                format: "checkpoint",
                reason: format!("scalar `{key}` = {value} exceeds i64::MAX"),
            })?;
            network.set_buffer(&name, BufferData::I64(&[value]))?;
        }
    }
    Ok(())
}

/// Checks that `is_known` accepts the name of every tensor and scalar of `checkpoint`, so that
/// a loader reports entries it would otherwise ignore, such as the tensors of a layer that the
/// model lacks. `expected` describes the entries a loader reads, for the message.
///
/// # Errors
/// [`Error::Format`] naming the first 8 unknown entries and their count.
pub(crate) fn reject_unknown_entries(
    checkpoint: &Checkpoint,
    expected: &str,
    is_known: impl Fn(&str) -> bool,
) -> Result<()> {
    let unknown: Vec<&str> = checkpoint
        .tensors
        .keys()
        .chain(checkpoint.scalars.keys())
        .map(String::as_str)
        .filter(|name| !is_known(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let mut listed: Vec<String> = unknown.iter().take(8).map(|name| format!("`{name}`")).collect();
    if unknown.len() > listed.len() {
        listed.push("...".into());
    }
    Err(Error::Format {
        format: "checkpoint",
        reason: format!(
            "unknown tensors or scalars {} ({} in all): expected only {expected}, so the file \
             was written for another model or by another program",
            listed.join(", "),
            unknown.len()
        ),
    })
}

/// Checks that a network of `count` parameters is not far larger than the floats `checkpoint`
/// stores in tensors named `{prefix}.*`. The bound is twice the stored floats, plus 2^20.
///
/// Loaders call it before they build a network from the model that the checkpoint's metadata
/// names, so that a small file whose metadata claims a huge model fails here instead of making
/// them allocate it. The slack lets a checkpoint that lacks a few tensors reach the loader's own
/// error, which names the missing tensor.
///
/// # Errors
/// [`Error::Format`] when `count` exceeds that bound.
pub fn check_stored_parameters(checkpoint: &Checkpoint, prefix: &str, count: usize) -> Result<()> {
    const SLACK: usize = 1 << 20;
    let start = format!("{prefix}.");
    let stored: usize = checkpoint
        .tensors
        .iter()
        .filter(|(name, _)| name.starts_with(&start))
        .map(|(_, (_, data))| data.len())
        .sum();
    if count > stored.saturating_mul(2).saturating_add(SLACK) {
        return Err(Error::Format {
            format: "checkpoint",
            reason: format!(
                "tensors `{start}*` hold {stored} floats, but the model in its metadata has \
                 {count} parameters there: expected a model that the stored tensors can fill"
            ),
        });
    }
    Ok(())
}
