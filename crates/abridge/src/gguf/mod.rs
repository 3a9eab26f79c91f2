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

use candle_core::Device;
use candle_core::quantized::QTensor;

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
#[derive(Debug, Clone)]
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
/// is touched only when a tensor is loaded.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    version: u32,
    metadata: HashMap<String, Value>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
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
        Self::parse(path, map)
    }

    fn parse(path: PathBuf, map: memmap2::Mmap) -> Result<Self> {
        let file_size = map.len() as u64;
        let bad = |reason: String| Error::InvalidGguf {
            path: path.clone(),
            reason,
        };
        if map.len() < 4 || &map[..4] != MAGIC {
            return Err(bad(
                "it does not start with the GGUF magic bytes (is it a model file?)".into(),
            ));
        }
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
        // Each entry takes at least 8 bytes: reject absurd counts before allocating.
        if tensor_count > file_size / 8 || kv_count > file_size / 8 {
            return Err(bad(format!(
                "header claims {tensor_count} tensors and {kv_count} metadata entries, more than a {file_size}-byte file can hold"
            )));
        }
        let mut metadata = HashMap::with_capacity(kv_count as usize);
        for i in 0..kv_count {
            let key = r
                .string()
                .map_err(|e| bad(format!("metadata entry {i}: {e}")))?;
            let value = r
                .value(0)
                .map_err(|e| bad(format!("metadata `{key}`: {e}")))?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(bad(format!(
                        "general.alignment {v:?} is not a power of two"
                    )));
                }
            },
        };
        let mut raw = Vec::with_capacity(tensor_count as usize);
        for i in 0..tensor_count {
            let ctx = |e: String| bad(format!("tensor table entry {i}: {e}"));
            let name = r.string().map_err(ctx)?;
            let n_dims = r.u32().map_err(ctx)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(bad(format!(
                    "tensor `{name}` has {n_dims} dimensions (1 to 4 allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64().map_err(ctx)?);
            }
            let kind = TensorType(r.u32().map_err(ctx)?);
            let offset = r.u64().map_err(ctx)?;
            raw.push((name, dims, kind, offset));
        }
        let data_start = r.pos as u64;
        let data_start = data_start.div_ceil(alignment) * alignment;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::with_capacity(raw.len());
        for (name, dims, kind, rel) in raw {
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(format!("tensor `{name}` has an invalid shape {dims:?}")))?;
            if kind.ggml_dtype().is_none() {
                return Err(bad(format!(
                    "tensor `{name}` uses quantization {} which abridge cannot compute with",
                    kind.name()
                )));
            }
            let size = kind.byte_size(elements).ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` with shape {dims:?} is not a whole number of {} blocks",
                    kind.name()
                ))
            })?;
            if rel % alignment != 0 {
                return Err(bad(format!(
                    "tensor `{name}` data offset {rel} is not aligned to {alignment} bytes"
                )));
            }
            let offset = data_start
                .checked_add(rel)
                .ok_or_else(|| bad(format!("tensor `{name}` has an impossible offset {rel}")))?;
            let end = offset
                .checked_add(size)
                .ok_or_else(|| bad(format!("tensor `{name}` has an impossible size")))?;
            if end > file_size {
                return Err(Error::Truncated {
                    path,
                    tensor: name,
                    end,
                    file_size,
                });
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(bad(format!("tensor `{name}` appears twice")));
            }
            let shape = dims.iter().rev().map(|&d| d as usize).collect();
            tensors.push(TensorInfo {
                name,
                shape,
                kind,
                offset,
                size,
            });
        }
        Ok(Self {
            path,
            map,
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

    /// All metadata entries.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
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
        self.metadata.get(key).ok_or_else(|| Error::Metadata {
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
        let tensor = candle_core::quantized::ggml_file::qtensor_from_ggml(
            dtype,
            bytes,
            info.shape.clone(),
            device,
        )?;
        // The tensor now has its own copy: release the file's pages from this
        // process so loading holds the model in memory once, not twice.
        #[cfg(unix)]
        // SAFETY: the map is a read-only view of a file; dropped pages are read
        // back from the file, unchanged, if they are touched again.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                info.offset as usize,
                info.size as usize,
            )
        };
        Ok(tensor)
    }
}

fn wrong_type(key: &str, what: &str) -> Error {
    Error::Metadata {
        key: key.into(),
        problem: format!("is not {what}"),
    }
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
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let remaining = (self.data.len() - self.pos) as u64;
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
        Ok(self
            .take(N as u64)?
            .try_into()
            .expect("take returned N bytes"))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        let bytes = self.take(len)?;
        // Tokenizer vocabularies contain byte pieces that are not valid UTF-8 on
        // their own; keep them readable rather than rejecting the whole file.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        let ty = self.u32()?;
        self.value_of(ty, depth)
    }

    fn value_of(&mut self, ty: u32, depth: usize) -> Result<Value, String> {
        let ty = ValueType::from_code(ty).ok_or_else(|| format!("unknown value type {ty}"))?;
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
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => {
                if depth >= MAX_DEPTH {
                    return Err("arrays nested too deeply".into());
                }
                let elem = self.u32()?;
                let count = self.u64()?;
                let min_size = ValueType::from_code(elem)
                    .ok_or_else(|| format!("unknown array element type {elem}"))?
                    .min_size();
                let remaining = (self.data.len() - self.pos) as u64;
                if count.saturating_mul(min_size) > remaining {
                    return Err(format!(
                        "array of {count} elements cannot fit in the {remaining} bytes left"
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value_of(elem, depth + 1)?);
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

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// A tiny valid GGUF: one F32 tensor of 8 values.
    fn tiny() -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(3u32.to_le_bytes());
        out.extend(1u64.to_le_bytes());
        out.extend(1u64.to_le_bytes());
        string(&mut out, "general.architecture");
        out.extend(8u32.to_le_bytes());
        string(&mut out, "llama");
        string(&mut out, "w");
        out.extend(1u32.to_le_bytes());
        out.extend(8u64.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for i in 0..8 {
            out.extend((i as f32).to_le_bytes());
        }
        out
    }

    fn open_bytes(bytes: &[u8]) -> Result<GgufFile> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        GgufFile::open(f.path())
    }

    #[test]
    fn reads_a_valid_file() {
        let g = open_bytes(&tiny()).unwrap();
        assert_eq!(g.architecture().unwrap(), "llama");
        let t = g.tensor("w", Some(&[8]), &Device::Cpu).unwrap();
        let v = t
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v, (0..8).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = tiny();
        for len in 0..bytes.len() {
            assert!(
                open_bytes(&bytes[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn truncated_tensor_data_names_the_tensor() {
        let bytes = tiny();
        let err = open_bytes(&bytes[..bytes.len() - 4]).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { ref tensor, .. } if tensor == "w"),
            "{err}"
        );
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let mut bytes = tiny();
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = open_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn wrong_magic_says_so() {
        let err = open_bytes(b"PK\x03\x04 not a model").unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
    }

    #[test]
    fn wrong_shape_is_reported() {
        let g = open_bytes(&tiny()).unwrap();
        let err = g.tensor("w", Some(&[4, 2]), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("expected [4, 2]"), "{err}");
    }
}
