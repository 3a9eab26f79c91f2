//! Reading GGUF files: memory-mapped, and validated before anything trusts them.
//!
//! A GGUF file is a header of typed metadata, a table of tensor descriptions
//! (name, shape, quantization type, offset) and the tensor data. Every count,
//! length and offset in it is checked against the bytes actually present
//! before it is used, so a truncated download or a file that is not GGUF at all
//! becomes an [`Error`] that says what is wrong, never a panic, an abort or a
//! huge allocation.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor};

use crate::error::{Error, Result};

mod inspect;
mod types;
mod write;

pub use inspect::{Details, TypeCount, inspect};
use types::ValueType;
pub(crate) use types::token_type;
pub use types::{FILE_TYPE_MOSTLY_Q4_K_M, TensorType, file_type_name};
pub use write::{GgufWriter, TensorSpec};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A typed metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array, when it is one.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file and what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, outermost first (the reverse of GGUF's on-disk order), as
    /// candle expects them.
    pub shape: Vec<usize>,
    /// Storage type.
    pub kind: TensorType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Number of bytes of data.
    pub size: u64,
}

/// An open, validated GGUF file.
///
/// The file is memory-mapped: opening it reads only the header, and tensor data
/// is touched only when a tensor is loaded. Opening checks every metadata value
/// but decodes none: a value is decoded the first time it is asked for, so
/// opening allocates in proportion to the number of keys and tensors, not to
/// the size of the vocabulary arrays a header may claim.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Whether `map` is a view of a file (whose pages the kernel can drop and
    /// read back) rather than anonymous memory holding a copy.
    file_backed: bool,
    version: u32,
    metadata: HashMap<String, Entry>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

/// One metadata value: where it starts in the file, and the value once decoded.
struct Entry {
    at: usize,
    /// `None` inside only if decoding failed after the value was checked at
    /// open, which takes the file changing under the map.
    value: OnceLock<Option<Value>>,
}

impl Entry {
    /// The value, decoded from `data` (the file) on the first call.
    fn get(&self, data: &[u8]) -> Option<&Value> {
        self.value
            .get_or_init(|| Reader { data, pos: self.at }.value(0).ok())
            .as_ref()
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// The GGUF specification's limits: keys are at most 65,535 bytes, tensor
/// names at most 64, and ggml tensors have at most 4 dimensions.
const MAX_KEY_LEN: usize = 65_535;
const MAX_TENSOR_NAME_LEN: usize = 64;
const MAX_DIMS: u32 = 4;

/// The most elements a metadata array may hold. The longest arrays in real
/// files are vocabularies (262,144 tokens for Gemma 3); a decoded element
/// takes 32 bytes whatever its size on disk, so this also bounds what
/// decoding one array of bytes can allocate (128 MiB).
const MAX_ARRAY_LEN: u64 = 1 << 22;

/// The fewest bytes one metadata entry takes (key length, value type, a
/// one-byte value) and one tensor table entry (name length, dimension count,
/// one dimension, type, offset): what bounds the counts a header can claim.
const MIN_METADATA_ENTRY: u64 = 8 + 4 + 1;
const MIN_TENSOR_ENTRY: u64 = 8 + 4 + 8 + 4 + 8;

/// candle reads tensor data in place as blocks whose fields need up to 4-byte
/// alignment (`f32` scales); the map itself starts on a page boundary.
const DATA_ALIGNMENT: u64 = 4;

/// Stands for the file in messages about a GGUF opened from memory.
const IN_MEMORY: &str = "(in-memory GGUF)";

impl GgufFile {
    /// Opens and validates a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(Error::InvalidGguf {
                path,
                reason: "it is a directory".into(),
            });
        }
        // SAFETY: the map is read-only. Another process truncating the file while
        // it is mapped would fault; that is the same contract every mmap-based
        // loader (llama.cpp included) accepts, and all offsets are checked against
        // the size seen here.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, map, true)
    }

    /// Validates a GGUF file held in memory, such as a fuzzer's input or a
    /// file not yet written to disk. The bytes are copied; errors name the
    /// file `(in-memory GGUF)`.
    ///
    /// ```
    /// let err = abridge::gguf::GgufFile::from_bytes(b"GGUF\x03\0\0\0").unwrap_err();
    /// assert!(err.to_string().contains("header"), "{err}");
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let path = PathBuf::from(IN_MEMORY);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        // Anonymous memory starts on a page boundary, which the in-place
        // reads of tensor blocks need and a `Vec<u8>` does not promise.
        let mut map = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
        map.copy_from_slice(bytes);
        let map = map.make_read_only().map_err(io)?;
        Self::parse(path, map, false)
    }

    fn parse(path: PathBuf, map: memmap2::Mmap, file_backed: bool) -> Result<Self> {
        let bad = |reason: String| Error::InvalidGguf {
            path: path.clone(),
            reason,
        };
        if map.len() < 4 || &map[..4] != MAGIC {
            return Err(bad(
                "it does not start with the GGUF magic bytes (is it a model file?)".into(),
            ));
        }
        let file_size = map.len() as u64;
        let mut r = Reader { data: &map, pos: 4 };
        let header = |e: String| bad(format!("header: {e}"));
        let version = r.u32().map_err(header)?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!(
                "GGUF version {version} is not supported (versions 2 and 3 are)"
            )));
        }
        let tensor_count = r.u64().map_err(header)?;
        let kv_count = r.u64().map_err(header)?;
        let claimed = kv_count
            .checked_mul(MIN_METADATA_ENTRY)
            .zip(tensor_count.checked_mul(MIN_TENSOR_ENTRY))
            .and_then(|(a, b)| a.checked_add(b));
        if claimed.is_none_or(|bytes| bytes > r.remaining()) {
            return Err(bad(format!(
                "header claims {tensor_count} tensors and {kv_count} metadata entries, more than a {file_size}-byte file can hold"
            )));
        }
        // Maps and vectors grow as entries are read, never by a claimed count.
        let mut metadata = HashMap::new();
        for i in 0..kv_count {
            let key = r
                .string_bytes()
                .and_then(|k| {
                    if k.len() > MAX_KEY_LEN {
                        Err(format!("a key of {} bytes is over the limit", k.len()))
                    } else {
                        Ok(String::from_utf8_lossy(k).into_owned())
                    }
                })
                .map_err(|e| bad(format!("metadata entry {i}: {e}")))?;
            let at = r.pos;
            r.skip_value()
                .map_err(|e| bad(format!("metadata `{key}`: {e}")))?;
            let entry = Entry {
                at,
                value: OnceLock::new(),
            };
            if metadata.insert(key.clone(), entry).is_some() {
                return Err(bad(format!("metadata key `{key}` appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(e) => match e.get(&map).and_then(Value::as_u64) {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(bad(format!(
                        "general.alignment {:?} is not a power of two",
                        e.get(&map)
                    )));
                }
            },
        };
        if tensor_count > r.remaining() / MIN_TENSOR_ENTRY {
            return Err(bad(format!(
                "header claims {tensor_count} tensors but only {} bytes are left for the tensor table",
                r.remaining()
            )));
        }
        let mut raw = Vec::new();
        for i in 0..tensor_count {
            raw.push(
                r.tensor_entry()
                    .map_err(|e| bad(format!("tensor table entry {i}: {e}")))?,
            );
        }
        let data_start = (r.pos as u64)
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| bad(format!("general.alignment {alignment} is out of range")))?;

        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for (name, dims, kind, rel) in raw {
            let info = tensor_info(name, &dims, kind, rel, data_start, alignment).map_err(&bad)?;
            if info.offset + info.size > file_size {
                return Err(Error::Truncated {
                    path,
                    end: info.offset + info.size,
                    tensor: info.name,
                    file_size,
                });
            }
            if by_name.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(bad(format!("tensor `{}` appears twice", info.name)));
            }
            tensors.push(info);
        }
        let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        if let Some(w) = by_offset
            .windows(2)
            .find(|w| w[0].offset + w[0].size > w[1].offset)
        {
            return Err(bad(format!(
                "the data of tensors `{}` and `{}` overlap",
                w[0].name, w[1].name
            )));
        }
        Ok(Self {
            path,
            map,
            file_backed,
            version,
            metadata,
            tensors,
            by_name,
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The file's size in bytes.
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Every metadata key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.keys().map(String::as_str)
    }

    /// One metadata value, decoded on first use.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)?.get(&self.map)
    }

    /// A string value, or an error naming the key.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.required(key)?
            .as_str()
            .ok_or_else(|| wrong_type(key, "a string"))
    }

    /// An unsigned integer value, or an error naming the key.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.required(key)?
            .as_u64()
            .ok_or_else(|| wrong_type(key, "a non-negative integer"))
    }

    /// A numeric value as a float, or an error naming the key.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.required(key)?
            .as_f64()
            .ok_or_else(|| wrong_type(key, "a number"))
    }

    fn required(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::Metadata {
            key: key.into(),
            problem: "is missing".into(),
        })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// The tensor table.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor's description.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Loads a tensor onto `device`, checking its shape when `expected` is given.
    pub fn tensor(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
    ) -> Result<QTensor> {
        self.with_bytes(name, expected, |info, dtype, bytes| {
            Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
                dtype,
                bytes,
                info.shape.clone(),
                device,
            )?)
        })
    }

    /// Hands a tensor's bytes, as stored, to `build`, checking its shape when
    /// `expected` is given; what `build` returns must hold its own copy, for
    /// the file's pages are released from the process after it.
    pub(crate) fn with_bytes<T>(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        build: impl FnOnce(&TensorInfo, GgmlDType, &[u8]) -> Result<T>,
    ) -> Result<T> {
        let info = self.tensor_info(name).ok_or_else(|| Error::Tensor {
            name: name.into(),
            problem: "is missing from the file".into(),
        })?;
        if let Some(expected) = expected
            && info.shape != expected
        {
            return Err(Error::Tensor {
                name: name.into(),
                problem: format!("has shape {:?}, expected {expected:?}", info.shape),
            });
        }
        let bytes = &self.map[info.offset as usize..(info.offset + info.size) as usize];
        let dtype = info
            .kind
            .ggml_dtype()
            .expect("checked when the file was opened");
        let built = build(info, dtype, bytes)?;
        // The copy is built: release the file's pages from this process so
        // loading holds the model in memory once, not twice. Anonymous memory
        // would come back as zeros, so only a file's pages go.
        #[cfg(unix)]
        if self.file_backed {
            // SAFETY: the map is a read-only view of a file; dropped pages are
            // read back from the file, unchanged, if they are touched again.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    info.offset as usize,
                    info.size as usize,
                )
            };
        }
        Ok(built)
    }
}

fn wrong_type(key: &str, what: &str) -> Error {
    Error::Metadata {
        key: key.into(),
        problem: format!("is not {what}"),
    }
}

/// Checks one tensor table entry against the format and the data layout,
/// and places it in the file.
fn tensor_info(
    name: String,
    dims: &[u64],
    kind: TensorType,
    rel: u64,
    data_start: u64,
    alignment: u64,
) -> Result<TensorInfo, String> {
    let Some(dtype) = kind.ggml_dtype() else {
        return Err(format!(
            "tensor `{name}` uses quantization {} which abridge cannot compute with",
            kind.name()
        ));
    };
    let invalid = || format!("tensor `{name}` has an invalid shape {dims:?}");
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n > 0)
        .ok_or_else(invalid)?;
    let shape = dims
        .iter()
        .rev()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid())?;
    // Quantized blocks never straddle rows: the innermost dimension is whole
    // blocks, as ggml requires.
    let block = dtype.block_size() as u64;
    if !dims[0].is_multiple_of(block) {
        return Err(format!(
            "tensor `{name}` has rows of {} values, not a whole number of {} blocks of {block}",
            dims[0],
            kind.name()
        ));
    }
    let size = kind
        .byte_size(elements)
        .ok_or_else(|| format!("tensor `{name}` with shape {dims:?} is too large"))?;
    if !rel.is_multiple_of(alignment) {
        return Err(format!(
            "tensor `{name}` data offset {rel} is not aligned to {alignment} bytes"
        ));
    }
    let offset = data_start
        .checked_add(rel)
        .filter(|o| o.checked_add(size).is_some())
        .ok_or_else(|| format!("tensor `{name}` has an impossible offset {rel}"))?;
    if !offset.is_multiple_of(DATA_ALIGNMENT) {
        return Err(format!(
            "tensor `{name}` data starts at byte {offset}, not a multiple of {DATA_ALIGNMENT}"
        ));
    }
    Ok(TensorInfo {
        name,
        shape,
        kind,
        offset,
        size,
    })
}

/// A bounds-checked little-endian cursor over the mapped bytes.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Arrays nest (an array of arrays); real files use one level. Limit recursion
/// so a hostile file cannot overflow the stack.
const MAX_DEPTH: usize = 4;

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.data.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(format!(
                "needs {n} bytes at offset {} but the file ends {remaining} bytes later",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A string's bytes, which need not be UTF-8.
    fn string_bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u64()?;
        self.take(len)
    }

    /// One entry of the tensor table: name, dimensions (innermost first),
    /// type and offset within the data section.
    fn tensor_entry(&mut self) -> Result<(String, Vec<u64>, TensorType, u64), String> {
        let name = self.string_bytes()?;
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Err(format!(
                "a tensor name of {} bytes is over the limit of {MAX_TENSOR_NAME_LEN}",
                name.len()
            ));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            ));
        }
        let dims = (0..n_dims)
            .map(|_| self.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let kind = TensorType(self.u32()?);
        let offset = self.u64()?;
        Ok((name, dims, kind, offset))
    }

    /// A typed value: its type tag, then the value.
    fn value(&mut self, depth: usize) -> Result<Value, String> {
        let ty = self.value_type()?;
        self.decode(ty, depth)
    }

    /// Checks a typed value and moves past it without allocating: what
    /// opening a file does with every value.
    fn skip_value(&mut self) -> Result<(), String> {
        let ty = self.value_type()?;
        self.skip(ty, 0)
    }

    fn value_type(&mut self) -> Result<ValueType, String> {
        let code = self.u32()?;
        ValueType::from_code(code).ok_or_else(|| format!("unknown value type {code}"))
    }

    /// An array's element type and length, checked against the bytes left.
    fn array_header(&mut self, depth: usize) -> Result<(ValueType, u64), String> {
        if depth >= MAX_DEPTH {
            return Err("arrays nested too deeply".into());
        }
        let code = self.u32()?;
        let elem = ValueType::from_code(code)
            .ok_or_else(|| format!("unknown array element type {code}"))?;
        let count = self.u64()?;
        if count > MAX_ARRAY_LEN {
            return Err(format!(
                "an array of {count} elements is over the limit of {MAX_ARRAY_LEN}"
            ));
        }
        let remaining = self.remaining();
        if count * elem.min_size() > remaining {
            return Err(format!(
                "array of {count} elements cannot fit in the {remaining} bytes left"
            ));
        }
        Ok((elem, count))
    }

    fn skip(&mut self, ty: ValueType, depth: usize) -> Result<(), String> {
        match ty {
            ValueType::String => self.string_bytes().map(drop),
            ValueType::Array => {
                let (elem, count) = self.array_header(depth)?;
                match elem {
                    ValueType::String | ValueType::Array | ValueType::Bool => {
                        (0..count).try_for_each(|_| self.skip(elem, depth + 1))
                    }
                    // Every bit pattern is a valid number: step over them at once.
                    _ => self.take(count * elem.min_size()).map(drop),
                }
            }
            // Scalars decode without allocating.
            _ => self.decode(ty, depth).map(drop),
        }
    }

    fn decode(&mut self, ty: ValueType, depth: usize) -> Result<Value, String> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>()?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("boolean byte {b} is neither 0 nor 1")),
            },
            // Tokenizer vocabularies contain byte pieces that are not valid
            // UTF-8 on their own; keep them readable rather than rejecting
            // the whole file.
            ValueType::String => {
                Value::String(String::from_utf8_lossy(self.string_bytes()?).into_owned())
            }
            ValueType::Array => {
                let (elem, count) = self.array_header(depth)?;
                // The header check bounds `count` by the bytes present.
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.decode(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A GGUF built byte by byte, so tests can write what no writer would.
    struct Raw {
        kvs: Vec<(String, Vec<u8>)>,
        tensors: Vec<(String, Vec<u64>, u32, u64)>,
        data: Vec<u8>,
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn typed_string(s: &str) -> Vec<u8> {
        let mut out = 8u32.to_le_bytes().to_vec();
        string(&mut out, s);
        out
    }

    impl Raw {
        /// A tiny valid file: `general.architecture` and one F32 tensor `w`
        /// of the values 0 to 7.
        fn tiny() -> Self {
            Self {
                kvs: vec![("general.architecture".into(), typed_string("llama"))],
                tensors: vec![("w".into(), vec![8], 0, 0)],
                data: (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect(),
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend(MAGIC);
            out.extend(3u32.to_le_bytes());
            out.extend((self.tensors.len() as u64).to_le_bytes());
            out.extend((self.kvs.len() as u64).to_le_bytes());
            for (key, value) in &self.kvs {
                string(&mut out, key);
                out.extend(value);
            }
            for (name, dims, kind, offset) in &self.tensors {
                string(&mut out, name);
                out.extend((dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend(d.to_le_bytes());
                }
                out.extend(kind.to_le_bytes());
                out.extend(offset.to_le_bytes());
            }
            out.resize(out.len().next_multiple_of(DEFAULT_ALIGNMENT as usize), 0);
            out.extend(&self.data);
            out
        }

        fn open(&self) -> Result<GgufFile> {
            GgufFile::from_bytes(&self.bytes())
        }
    }

    /// Reads everything an opened file offers: every value, every tensor.
    fn read_all(g: &GgufFile) -> Result<()> {
        for key in g.keys() {
            assert!(
                g.get(key).is_some(),
                "`{key}` passed the check at open but does not decode"
            );
        }
        for t in g.tensors() {
            g.tensor(&t.name, None, &Device::Cpu)?
                .dequantize(&Device::Cpu)?;
        }
        Ok(())
    }

    fn reason(result: Result<GgufFile>) -> String {
        result.expect_err("the file was accepted").to_string()
    }

    #[test]
    fn types_candle_cannot_load_are_refused_at_open() {
        // Q8_1 (9) and Q8_K (15): 32 and 256 values a block.
        for (kind, values) in [(9u32, 32u64), (15, 256)] {
            let mut raw = Raw::tiny();
            raw.tensors = vec![("w".into(), vec![values], kind, 0)];
            raw.data = vec![0; 512];
            assert!(reason(raw.open()).contains("cannot compute with"));
        }
    }

    #[test]
    fn reads_a_valid_file_from_disk_and_from_memory() {
        let bytes = Raw::tiny().bytes();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        for g in [
            GgufFile::open(f.path()).unwrap(),
            GgufFile::from_bytes(&bytes).unwrap(),
        ] {
            assert_eq!(g.architecture().unwrap(), "llama");
            assert_eq!(g.keys().collect::<Vec<_>>(), ["general.architecture"]);
            // Twice: dropping the pages after the first read must not lose them.
            for _ in 0..2 {
                let v = g
                    .tensor("w", Some(&[8]), &Device::Cpu)
                    .unwrap()
                    .dequantize(&Device::Cpu)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert_eq!(v, (0..8).map(|i| i as f32).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = Raw::tiny().bytes();
        for len in 0..bytes.len() {
            assert!(
                GgufFile::from_bytes(&bytes[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn every_changed_byte_is_refused_or_reads_whole() {
        let raw = Raw {
            kvs: vec![
                ("general.architecture".into(), typed_string("llama")),
                (
                    "flag".into(),
                    [7u32.to_le_bytes().as_slice(), &[1]].concat(),
                ),
                (
                    "list".into(),
                    [9u32, 8, 2, 0]
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .chain(b"\x01\0\0\0\0\0\0\0a\x02\0\0\0\0\0\0\0bc".iter().copied())
                        .collect(),
                ),
            ],
            tensors: vec![("w".into(), vec![8], 0, 0), ("h".into(), vec![32], 1, 32)],
            data: vec![0; 96],
        };
        let bytes = raw.bytes();
        let header = bytes.len() - raw.data.len();
        let mut refused = 0;
        for pos in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[pos] ^= flip;
                match GgufFile::from_bytes(&damaged) {
                    Ok(g) => read_all(&g).unwrap(),
                    Err(_) => refused += 1,
                }
                if pos < 4 || (8..24).contains(&pos) {
                    // Magic and counts: nothing survives a change.
                    assert!(
                        GgufFile::from_bytes(&damaged).is_err(),
                        "byte {pos} ^ {flip}"
                    );
                }
                if pos >= header {
                    assert!(GgufFile::from_bytes(&damaged).is_ok(), "data byte {pos}");
                }
            }
        }
        assert!(refused > 3 * 20, "only {refused} changes refused");
    }

    #[test]
    fn truncated_tensor_data_names_the_tensor() {
        let bytes = Raw::tiny().bytes();
        let err = GgufFile::from_bytes(&bytes[..bytes.len() - 4]).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { ref tensor, .. } if tensor == "w"),
            "{err}"
        );
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let mut bytes = Raw::tiny().bytes();
        for at in [8, 16] {
            for count in [u64::MAX, 1 << 40, 1 << 32] {
                bytes[at..at + 8].copy_from_slice(&count.to_le_bytes());
                let err = reason(GgufFile::from_bytes(&bytes));
                assert!(err.contains("more than"), "{err}");
            }
            bytes[at..at + 8].copy_from_slice(&1u64.to_le_bytes());
        }
    }

    #[test]
    fn huge_strings_and_arrays_are_rejected_before_allocating() {
        let mut raw = Raw::tiny();
        raw.kvs.push(("name".into(), {
            let mut v = 8u32.to_le_bytes().to_vec();
            v.extend((1u64 << 60).to_le_bytes());
            v
        }));
        let err = reason(raw.open());
        assert!(
            err.contains("`name`") && err.contains("needs 1152921504606846976 bytes"),
            "{err}"
        );

        for (count, says) in [(1u64 << 32, "over the limit"), (1000, "cannot fit")] {
            let mut raw = Raw::tiny();
            let mut v = 9u32.to_le_bytes().to_vec();
            v.extend(8u32.to_le_bytes());
            v.extend(count.to_le_bytes());
            raw.kvs.push(("tokenizer.ggml.tokens".into(), v));
            let err = reason(raw.open());
            assert!(err.contains(says), "{count}: {err}");
        }

        let mut raw = Raw::tiny();
        raw.kvs[0].0 = "k".repeat(MAX_KEY_LEN + 1);
        assert!(reason(raw.open()).contains("key of 65536 bytes"));
        raw.kvs[0].0 = "k".repeat(MAX_KEY_LEN);
        assert!(raw.open().is_ok());
    }

    #[test]
    fn nesting_duplicates_and_unknown_tags_are_refused() {
        // An array of one array of one array … : the type tag once, then an
        // element type and a count per level.
        let mut nested = 9u32.to_le_bytes().to_vec();
        for _ in 0..=MAX_DEPTH {
            nested.extend(9u32.to_le_bytes());
            nested.extend(1u64.to_le_bytes());
        }
        let mut raw = Raw::tiny();
        raw.kvs.push(("deep".into(), nested));
        assert!(reason(raw.open()).contains("nested too deeply"));

        let mut raw = Raw::tiny();
        raw.kvs.push(raw.kvs[0].clone());
        assert!(reason(raw.open()).contains("appears twice"));

        let mut raw = Raw::tiny();
        raw.kvs[0].1[0] = 13;
        assert!(reason(raw.open()).contains("unknown value type 13"));

        let mut raw = Raw::tiny();
        raw.kvs.push(("b".into(), vec![7, 0, 0, 0, 2]));
        assert!(reason(raw.open()).contains("neither 0 nor 1"));
    }

    #[test]
    fn tensor_tables_that_do_not_match_the_data_are_refused() {
        let refused = |change: &dyn Fn(&mut Raw), says: &str| {
            let mut raw = Raw::tiny();
            change(&mut raw);
            let err = reason(raw.open());
            assert!(err.contains(says), "expected `{says}`: {err}");
        };
        refused(
            &|r| r.tensors[0].0 = "n".repeat(65),
            "tensor name of 65 bytes",
        );
        refused(&|r| r.tensors[0].1 = vec![1; 5], "5 dimensions");
        refused(&|r| r.tensors[0].1 = vec![], "0 dimensions");
        refused(&|r| r.tensors[0].1 = vec![8, 0], "invalid shape");
        refused(
            &|r| r.tensors[0].1 = vec![1 << 32, 1 << 32],
            "invalid shape",
        );
        refused(&|r| r.tensors[0].1 = vec![u64::MAX / 2], "too large");
        refused(&|r| r.tensors[0].2 = 4, "cannot compute with");
        refused(&|r| r.tensors[0].3 = 4, "not aligned");
        refused(&|r| r.tensors[0].3 = u64::MAX - 31, "impossible offset");
        refused(&|r| r.tensors[0].3 = 1 << 40, "truncated");
        refused(&|r| r.tensors.push(r.tensors[0].clone()), "appears twice");
        refused(
            &|r| {
                r.tensors.push(("v".into(), vec![4], 0, 0));
            },
            "overlap",
        );
        // Q4_0 blocks hold 32 values: 64 values as 2 rows of 32 are whole
        // blocks, as 4 rows of 16 they are not.
        refused(
            &|r| {
                r.tensors[0] = ("q".into(), vec![16, 4], 2, 0);
                r.data = vec![0; 64];
            },
            "rows of 16 values",
        );
        let mut raw = Raw::tiny();
        raw.tensors[0] = ("q".into(), vec![32, 2], 2, 0);
        raw.data = vec![0; 2 * 18];
        read_all(&raw.open().unwrap()).unwrap();
    }

    #[test]
    fn alignment_must_be_a_usable_power_of_two() {
        let align = |value: u64| {
            let mut raw = Raw::tiny();
            let mut v = 10u32.to_le_bytes().to_vec();
            v.extend(value.to_le_bytes());
            raw.kvs.push(("general.alignment".into(), v));
            raw
        };
        assert!(reason(align(24).open()).contains("not a power of two"));
        assert!(reason(align(0).open()).contains("not a power of two"));
        // The data would start past the end of any file.
        assert!(reason(align(1 << 63).open()).contains("truncated"));
        // Offsets aligned to 2 bytes are legal GGUF, but candle reads blocks
        // in place and needs 4.
        let mut raw = align(2);
        raw.tensors.push(("v".into(), vec![1], 0, 34));
        raw.data.resize(64, 0);
        assert!(reason(raw.open()).contains("not a multiple of 4"));
    }

    #[test]
    fn wrong_magic_says_so() {
        let err = reason(GgufFile::from_bytes(b"PK\x03\x04 not a model"));
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn wrong_shape_is_reported() {
        let g = Raw::tiny().open().unwrap();
        let err = g.tensor("w", Some(&[4, 2]), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("expected [4, 2]"), "{err}");
    }
}
