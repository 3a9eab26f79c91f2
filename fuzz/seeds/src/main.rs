//! Seeds for the fuzz targets, from real model files: for each GGUF given,
//! its metadata with the vocabulary cut to its first tokens (small enough to
//! build a tokenizer in a millisecond, whole enough to build one at all),
//! written as a file of its own and again with a few of its smallest tensors;
//! and its first 64 KiB as they are.
//!
//! usage: abridge-fuzz-seeds CORPUS_DIR MODEL.gguf...
//! writes CORPUS_DIR/gguf_open/* and CORPUS_DIR/tokenizer_from_gguf/*

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use abridge::gguf::{GgufFile, GgufWriter, TensorSpec, Value};
use abridge::{Device, Tokenizer};

/// Tokens kept of each vocabulary.
const TOKENS: usize = 1024;
/// Smallest tensors kept for the opener's seeds.
const TENSORS: usize = 4;
/// Bytes of the file kept as it is.
const PREFIX: u64 = 64 << 10;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((corpus, models)) = args.split_first().filter(|(_, m)| !m.is_empty()) else {
        return Err("usage: abridge-fuzz-seeds CORPUS_DIR MODEL.gguf...".into());
    };
    let opener = corpus.join("gguf_open");
    let tokenizer = corpus.join("tokenizer_from_gguf");
    std::fs::create_dir_all(&opener)?;
    std::fs::create_dir_all(&tokenizer)?;
    for model in models {
        let stem = model
            .file_stem()
            .ok_or("a model path without a file name")?
            .to_string_lossy();
        let file = GgufFile::open(model)?;
        let metadata = shrunk_metadata(&file);
        let vocab = tokenizer.join(format!("{stem}.vocab.gguf"));
        write(&vocab, &metadata, &file, &[])?;
        // A seed the target refuses at once would teach the fuzzer little.
        let built = Tokenizer::from_gguf(&GgufFile::open(&vocab)?)?;
        let mut small: Vec<_> = file.tensors().iter().collect();
        small.sort_by_key(|t| (t.size, t.name.clone()));
        let small: Vec<&str> = small
            .iter()
            .take(TENSORS)
            .map(|t| t.name.as_str())
            .collect();
        write(
            &opener.join(format!("{stem}.small.gguf")),
            &metadata,
            &file,
            &small,
        )?;
        let mut prefix = Vec::new();
        std::fs::File::open(model)?
            .take(PREFIX)
            .read_to_end(&mut prefix)?;
        std::fs::write(opener.join(format!("{stem}.prefix")), prefix)?;
        eprintln!(
            "seeds from {}: a tokenizer of {} tokens",
            model.display(),
            built.vocab_size()
        );
    }
    Ok(())
}

/// Every metadata entry, sorted by key, with the vocabulary arrays cut to
/// [`TOKENS`], the merges between kept tokens only, and token ids that
/// would fall outside the cut left out.
fn shrunk_metadata(file: &GgufFile) -> Vec<(String, Value)> {
    let mut keys: Vec<&str> = file.keys().collect();
    keys.sort_unstable();
    let kept: HashSet<&str> = file
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(|tokens| {
            tokens
                .iter()
                .take(TOKENS)
                .filter_map(Value::as_str)
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for key in keys {
        let Some(value) = file.get(key) else { continue };
        let value = match (key, value) {
            ("tokenizer.ggml.merges", Value::Array(merges)) => Value::Array(
                merges
                    .iter()
                    .filter(|m| {
                        m.as_str()
                            .and_then(|m| m.split_once(' '))
                            .is_some_and(|(a, b)| {
                                kept.contains(a)
                                    && kept.contains(b)
                                    && kept.contains(format!("{a}{b}").as_str())
                            })
                    })
                    .cloned()
                    .collect(),
            ),
            (_, Value::Array(items)) if key.starts_with("tokenizer.ggml.") => {
                Value::Array(items.iter().take(TOKENS).cloned().collect())
            }
            (_, id) if key.ends_with("_token_id") => match id.as_u64() {
                Some(id) if id < TOKENS as u64 => value.clone(),
                _ => continue,
            },
            _ => value.clone(),
        };
        out.push((key.to_owned(), value));
    }
    out
}

/// Writes `metadata` and the tensors `names` of `file` as a GGUF at `path`.
fn write(
    path: &Path,
    metadata: &[(String, Value)],
    file: &GgufFile,
    names: &[&str],
) -> Result<(), Error> {
    let mut specs = Vec::new();
    let mut data = Vec::new();
    for name in names {
        let info = file.tensor_info(name).ok_or("a listed tensor is missing")?;
        let dtype = info.kind.ggml_dtype().ok_or("an opened file's type")?;
        specs.push(TensorSpec::new(*name, &info.shape, dtype));
        data.push(file.tensor(name, None, &Device::Cpu)?.data()?.into_owned());
    }
    let mut out = GgufWriter::new(std::fs::File::create(path)?, metadata, specs)?;
    for bytes in &data {
        out.write_data(bytes)?;
    }
    out.finish()?;
    Ok(())
}
