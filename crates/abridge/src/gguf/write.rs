//! Writing GGUF files: a small streaming GGUF (version 3) writer.
//!
//! The header is written first, from the metadata and the list of tensors;
//! then the data is streamed tensor by tensor, in order, so memory stays small
//! however large the file.

use std::collections::HashSet;
use std::io::{self, Write};

use candle_core::quantized::GgmlDType;

use super::Value;
// Tensor data is aligned to GGUF's default, so `general.alignment` is not written.
use super::DEFAULT_ALIGNMENT as ALIGNMENT;
use super::MAGIC;
use super::types::{ValueType, gguf_type};

/// One tensor to be written: name, shape and storage type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, outermost first (as [`super::TensorInfo::shape`] and
    /// candle order them; GGUF stores them the other way round).
    pub shape: Vec<usize>,
    /// Storage type.
    pub dtype: GgmlDType,
}

impl TensorSpec {
    /// A tensor description.
    pub fn new(name: impl Into<String>, shape: &[usize], dtype: GgmlDType) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
        }
    }

    /// Number of values.
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Bytes of data.
    pub fn byte_size(&self) -> u64 {
        self.elements() / self.dtype.block_size() as u64 * self.dtype.type_size() as u64
    }

    /// Length of a row (the innermost dimension).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A streaming GGUF version 3 writer.
///
/// [`GgufWriter::new`] writes the header (metadata and tensor table); then
/// [`write_data`](Self::write_data) takes every tensor's bytes, in the order
/// the tensors were listed, in pieces of any size, and pads between tensors;
/// [`finish`](Self::finish) checks that every byte was given.
pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<TensorSpec>,
    /// The tensor being written, and how many of its bytes are written.
    current: usize,
    current_done: u64,
    position: u64,
    total: u64,
}

impl<W: Write> std::fmt::Debug for GgufWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("tensors", &self.tensors.len())
            .field("position", &self.position)
            .field("total", &self.total)
            .finish()
    }
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header: `metadata` in the order given, then the tensor table.
    pub fn new(out: W, metadata: &[(String, Value)], tensors: Vec<TensorSpec>) -> io::Result<Self> {
        let mut names = HashSet::new();
        for t in &tensors {
            if !names.insert(t.name.as_str()) {
                return Err(invalid(format!("tensor `{}` is listed twice", t.name)));
            }
            if gguf_type(t.dtype).is_none() {
                return Err(invalid(format!(
                    "tensor `{}` has type {:?}, which a GGUF file abridge reads cannot hold",
                    t.name, t.dtype
                )));
            }
            if t.shape.is_empty() || t.shape.len() > 4 || t.shape.contains(&0) {
                return Err(invalid(format!(
                    "tensor `{}` has shape {:?}",
                    t.name, t.shape
                )));
            }
            if t.row_len() % t.dtype.block_size() != 0 {
                return Err(invalid(format!(
                    "tensor `{}`: rows of {} values are not whole {:?} blocks",
                    t.name,
                    t.row_len(),
                    t.dtype
                )));
            }
        }
        let mut header = Vec::new();
        header.extend(MAGIC);
        header.extend(3u32.to_le_bytes());
        header.extend((tensors.len() as u64).to_le_bytes());
        header.extend((metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            put_string(&mut header, key);
            header.extend((ValueType::of(value) as u32).to_le_bytes());
            put_value(&mut header, value)?;
        }
        let mut offset = 0u64;
        let mut data_len = 0u64;
        for t in &tensors {
            put_string(&mut header, &t.name);
            header.extend((t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                header.extend((d as u64).to_le_bytes());
            }
            header.extend(gguf_type(t.dtype).unwrap_or_default().to_le_bytes());
            header.extend(offset.to_le_bytes());
            // The last tensor is not padded: the file ends with its last byte.
            data_len = offset + t.byte_size();
            offset = data_len.next_multiple_of(ALIGNMENT);
        }
        let data_start = (header.len() as u64).next_multiple_of(ALIGNMENT);
        header.resize(data_start as usize, 0);
        let mut writer = Self {
            out,
            tensors,
            current: 0,
            current_done: 0,
            position: 0,
            total: data_start + data_len,
        };
        writer.out.write_all(&header)?;
        writer.position = data_start;
        Ok(writer)
    }

    /// Size of the whole file in bytes.
    pub fn total_size(&self) -> u64 {
        self.total
    }

    /// Bytes written so far, header included.
    pub fn written(&self) -> u64 {
        self.position
    }

    /// The tensor whose bytes [`write_data`](Self::write_data) expects next.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        self.tensors.get(self.current)
    }

    /// Appends data to the current tensor, moving on to the next tensor (after
    /// alignment padding) when one is complete. `bytes` may span tensors.
    pub fn write_data(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let Some(t) = self.tensors.get(self.current) else {
                return Err(invalid(format!(
                    "{} bytes of data after the last tensor",
                    bytes.len()
                )));
            };
            let size = t.byte_size();
            let n = ((size - self.current_done) as usize).min(bytes.len());
            self.out.write_all(&bytes[..n])?;
            self.current_done += n as u64;
            self.position += n as u64;
            bytes = &bytes[n..];
            if self.current_done == size {
                self.current += 1;
                self.current_done = 0;
                if self.current < self.tensors.len() {
                    let pad = size.next_multiple_of(ALIGNMENT) - size;
                    self.out
                        .write_all(&[0u8; ALIGNMENT as usize][..pad as usize])?;
                    self.position += pad;
                }
            }
        }
        Ok(())
    }

    /// Checks that all tensor data was written, flushes, and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(t) = self.tensors.get(self.current) {
            return Err(invalid(format!(
                "tensor `{}` is missing {} bytes of data",
                t.name,
                t.byte_size() - self.current_done
            )));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array needs an element type too; any will do.
            let elem = match items.first() {
                Some(first) => ValueType::of(first),
                None => ValueType::U8,
            };
            out.extend((elem as u32).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                if ValueType::of(item) != elem {
                    return Err(invalid("a metadata array mixes element types".into()));
                }
                put_value(out, item)?;
            }
        }
    }
    Ok(())
}
