//! What a model file says about itself, read from its header alone
//! (`abridge models show`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{GgufFile, file_type_name};
use crate::error::Result;

/// How many tensors of one storage type a file has; serialized as
/// `{"type", "tensors", "bytes"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TypeCount {
    /// The type's name (`Q4_K`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Bytes of data.
    pub bytes: u64,
}

/// What a model file says about itself (`abridge models show`).
///
/// Serialized with the field names below, `general.name` as `general_name`,
/// the path as a string, and `quantization` (the file type's name) added.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Details {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, when present.
    #[serde(rename = "general_name")]
    pub name: Option<String>,
    /// Sum of the tensors' element counts.
    pub parameters: u64,
    /// `general.file_type`, when present.
    pub file_type: Option<u64>,
    /// The quantization as llama.cpp names the file type (`Q4_K_M`), or
    /// `file type N` for one it does not name.
    pub quantization: Option<String>,
    /// The tensors' storage types, most bytes first.
    pub tensor_types: Vec<TypeCount>,
    /// `{arch}.context_length`.
    pub context_length: Option<u64>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.model` (`llama`: SentencePiece, `gpt2`: byte-level BPE).
    pub tokenizer: Option<String>,
    /// Number of tokens in the vocabulary.
    pub vocabulary: Option<usize>,
}

impl Details {
    /// The tokenizer family in words.
    pub fn tokenizer_kind(&self) -> Option<String> {
        self.tokenizer.as_deref().map(|t| match t {
            "llama" => "SentencePiece (llama)".into(),
            "gpt2" => "byte-level BPE (gpt2)".into(),
            other => other.to_owned(),
        })
    }
}

/// Reads a model file's header (nothing else is touched).
pub fn inspect(path: &Path) -> Result<Details> {
    let file = GgufFile::open(path)?;
    let architecture = file.architecture()?.to_owned();
    let text = |key: &str| file.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let file_type = file.get("general.file_type").and_then(|v| v.as_u64());
    let mut parameters = 0u64;
    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let elements = t
            .shape
            .iter()
            .fold(1u64, |n, &d| n.saturating_mul(d as u64));
        parameters = parameters.saturating_add(elements);
        let slot = by_type.entry(t.kind.name()).or_default();
        slot.0 += 1;
        slot.1 += t.size;
    }
    let mut tensor_types: Vec<TypeCount> = by_type
        .into_iter()
        .map(|(kind, (tensors, bytes))| TypeCount {
            kind,
            tensors,
            bytes,
        })
        .collect();
    tensor_types.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.kind.cmp(&b.kind)));
    Ok(Details {
        path: path.to_path_buf(),
        file_size: file.file_size(),
        name: text("general.name"),
        parameters,
        file_type,
        quantization: file_type
            .map(|t| file_type_name(t).map_or_else(|| format!("file type {t}"), str::to_owned)),
        tensor_types,
        context_length: file
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.as_u64()),
        chat_template: text("tokenizer.chat_template"),
        tokenizer: text("tokenizer.ggml.model"),
        vocabulary: file
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(<[_]>::len),
        architecture,
    })
}
