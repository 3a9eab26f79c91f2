//! Synthetic checkpoints: a 7B-sized model without the 4 GiB download.
//!
//! Throughput depends on a model's shapes and quantization types, not on its
//! weight values. So for benchmarks abridge can write its own
//! Mistral-7B-Instruct-v0.2 Q4_K_M: the tensor names, shapes and per-tensor
//! quantization types of TheBloke's `mistral-7b-instruct-v0.2.Q4_K_M.gguf`,
//! its metadata and chat template, and the real Mistral vocabulary when
//! SentencePiece's `tokenizer.model.v1` (from the `mistral-common` package) is
//! given — with random weights. The file loads in abridge and in llama.cpp
//! alike; what it generates is meaningless.
//!
//! Two layers:
//!
//! - [`GgufWriter`]: a small streaming GGUF (version 3) writer. The header is
//!   written first, from the metadata and the list of tensors; then the data is
//!   streamed tensor by tensor, in order, so memory stays small however large
//!   the file;
//! - [`write_mistral_7b`]: the Mistral-7B spec ([`MISTRAL_7B_INSTRUCT_V02`],
//!   [`q4_k_m_tensors`]), random values from a seeded generator, quantized with
//!   candle's `QTensor::quantize`, written to a temporary name and renamed only
//!   when complete.
//!
//! ```no_run
//! use abridge::synth::{SynthOptions, write_mistral_7b};
//!
//! let options = SynthOptions { layers: Some(2), ..SynthOptions::default() };
//! let written = write_mistral_7b("mistral-2-layers.gguf", &options, |done, total| {
//!     eprint!("\r{done}/{total} bytes");
//! })?;
//! println!("{} bytes", written.bytes);
//! # Ok::<(), abridge::Error>(())
//! ```

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::{FILE_TYPE_MOSTLY_Q4_K_M, GgufWriter, TensorSpec, Value};
use crate::output::AtomicFile;
use crate::rng::SplitMix64;
use crate::tokenizer::sentencepiece::{PieceType, SentencePieceModel};

// ---------------------------------------------------------------------------
// The Mistral-7B spec
// ---------------------------------------------------------------------------

/// Hyper-parameters of a llama-architecture model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlamaShape {
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream (`embedding_length`).
    pub hidden: usize,
    /// Inner width of the feed-forward network.
    pub ffn: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Trained context length.
    pub context: usize,
    /// Rope frequency base.
    pub rope_base: f32,
    /// RMS norm epsilon.
    pub norm_eps: f32,
}

impl LlamaShape {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// Mistral-7B-Instruct-v0.2 (its `config.json`, and the `llama.*` keys of
/// TheBloke's GGUF conversion).
pub const MISTRAL_7B_INSTRUCT_V02: LlamaShape = LlamaShape {
    layers: 32,
    hidden: 4096,
    ffn: 14336,
    heads: 32,
    kv_heads: 8,
    vocab: 32000,
    context: 32768,
    rope_base: 1_000_000.0,
    norm_eps: 1e-5,
};

/// `tokenizer.chat_template` of TheBloke's Mistral-7B-Instruct-v0.2 GGUF: the
/// template of mistralai/Mistral-7B-Instruct-v0.2's `tokenizer_config.json` when
/// it was converted (December 2023), which llama.cpp's
/// `tests/test-chat-template.cpp` also carries for that model.
pub const MISTRAL_7B_V02_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/// Whether llama.cpp gives layer `layer` of `layers` more bits under Q4_K_M:
/// the first eighth, the last eighth, and every third layer in between.
///
/// This is `use_more_bits` in `llama_tensor_get_type_impl`
/// (ggml-org/llama.cpp, `src/llama-quant.cpp`; `llama.cpp`'s
/// `llama_tensor_get_type` when TheBloke quantized Mistral-7B in December
/// 2023): with `LLAMA_FTYPE_MOSTLY_Q4_K_M`, `attn_v.weight` and
/// `ffn_down.weight` become Q6_K where it holds and keep Q4_K elsewhere;
/// `output.weight` is Q6_K; everything else quantized is Q4_K (the ftype's
/// default); 1-D tensors (the norms) stay F32. Integer division as in C++.
pub fn q4_k_m_uses_more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

/// The tensors of a llama-architecture Q4_K_M file with `layers` blocks, in
/// the order llama.cpp's converter writes them for Mistral-7B.
pub fn q4_k_m_tensors(shape: &LlamaShape, layers: usize) -> Vec<TensorSpec> {
    use GgmlDType::{F32, Q4K, Q6K};
    let (h, f, v) = (shape.hidden, shape.ffn, shape.vocab);
    let kv = shape.kv_heads * shape.head_dim();
    let mut t = vec![TensorSpec::new("token_embd.weight", &[v, h], Q4K)];
    for i in 0..layers {
        let more = if q4_k_m_uses_more_bits(i, layers) {
            Q6K
        } else {
            Q4K
        };
        let name = |n: &str| format!("blk.{i}.{n}.weight");
        t.extend([
            TensorSpec::new(name("attn_q"), &[h, h], Q4K),
            TensorSpec::new(name("attn_k"), &[kv, h], Q4K),
            TensorSpec::new(name("attn_v"), &[kv, h], more),
            TensorSpec::new(name("attn_output"), &[h, h], Q4K),
            TensorSpec::new(name("ffn_gate"), &[f, h], Q4K),
            TensorSpec::new(name("ffn_up"), &[f, h], Q4K),
            TensorSpec::new(name("ffn_down"), &[h, f], more),
            TensorSpec::new(name("attn_norm"), &[h], F32),
            TensorSpec::new(name("ffn_norm"), &[h], F32),
        ]);
    }
    t.push(TensorSpec::new("output_norm.weight", &[h], F32));
    t.push(TensorSpec::new("output.weight", &[v, h], Q6K));
    t
}

/// A vocabulary as GGUF stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    /// Piece texts; the index is the token id.
    pub tokens: Vec<String>,
    /// Scores, one per token.
    pub scores: Vec<f32>,
    /// GGUF token types, one per token.
    pub types: Vec<i32>,
    /// Whether this is a real tokenizer's vocabulary, not a placeholder.
    pub real: bool,
}

impl Vocabulary {
    /// The vocabulary of a SentencePiece model.
    pub fn from_sentencepiece(model: &SentencePieceModel) -> Self {
        Self {
            tokens: model.pieces.iter().map(|p| p.text.clone()).collect(),
            scores: model.pieces.iter().map(|p| p.score).collect(),
            types: model
                .pieces
                .iter()
                .map(|p| p.kind.gguf_token_type())
                .collect(),
            real: true,
        }
    }

    /// A made-up SentencePiece-style vocabulary of `size` tokens laid out like
    /// Mistral's: `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0x00>`…`<0xFF>`,
    /// then single characters and short lowercase words (with and without the
    /// `▁` word marker), so that any text still tokenizes.
    pub fn placeholder(size: usize) -> Self {
        let mut v = Self {
            tokens: Vec::with_capacity(size),
            scores: Vec::with_capacity(size),
            types: Vec::with_capacity(size),
            real: false,
        };
        let push = |v: &mut Self, text: String, score: f32, kind: PieceType| {
            v.tokens.push(text);
            v.scores.push(score);
            v.types.push(kind.gguf_token_type());
        };
        push(&mut v, "<unk>".into(), 0.0, PieceType::Unknown);
        push(&mut v, "<s>".into(), 0.0, PieceType::Control);
        push(&mut v, "</s>".into(), 0.0, PieceType::Control);
        for b in 0..=255u8 {
            push(&mut v, format!("<0x{b:02X}>"), 0.0, PieceType::Byte);
        }
        let mut seen: HashSet<String> = v.tokens.iter().cloned().collect();
        let mut words: Vec<String> = std::iter::once(String::new())
            .chain((b'!'..=b'~').map(|c| char::from(c).to_string()))
            .collect();
        let letters: Vec<char> = ('a'..='z').collect();
        let mut rank = 0f32;
        'fill: loop {
            for w in &words {
                for text in [format!("\u{2581}{w}"), w.clone()] {
                    if v.tokens.len() >= size {
                        break 'fill;
                    }
                    if !text.is_empty() && seen.insert(text.clone()) {
                        rank -= 1.0;
                        push(&mut v, text, rank, PieceType::Normal);
                    }
                }
            }
            // Next: every lowercase word one letter longer.
            let longer: Vec<String> = words
                .iter()
                .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
                .flat_map(|w| letters.iter().map(move |c| format!("{w}{c}")))
                .collect();
            if longer.is_empty() {
                words = letters.iter().map(char::to_string).collect();
            } else {
                words = longer;
            }
        }
        v.tokens.truncate(size);
        v.scores.truncate(size);
        v.types.truncate(size);
        v
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// The metadata of a synthetic Mistral-7B-Instruct-v0.2 Q4_K_M with `layers`
/// blocks: TheBloke's keys and values, a name and description that say it is
/// synthetic, and `vocab`.
pub fn mistral_7b_metadata(layers: usize, vocab: &Vocabulary) -> Vec<(String, Value)> {
    let s = MISTRAL_7B_INSTRUCT_V02;
    let u32v = |n: usize| Value::U32(n as u32);
    let name = if layers == s.layers {
        "Mistral-7B-Instruct-v0.2 synthetic (random weights)".to_string()
    } else {
        format!(
            "Mistral-7B-Instruct-v0.2 synthetic (random weights, {layers} of {} layers)",
            s.layers
        )
    };
    let description = format!(
        "Random weights in the tensor names, shapes and Q4_K_M quantization mix of \
         mistral-7b-instruct-v0.2.Q4_K_M.gguf, with {}; written by abridge for \
         throughput benchmarks. What it generates is meaningless.",
        if vocab.real {
            "the real Mistral vocabulary"
        } else {
            "a placeholder vocabulary"
        }
    );
    let mut m: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String(name)),
        ("general.description", Value::String(description)),
        ("llama.context_length", u32v(s.context)),
        ("llama.embedding_length", u32v(s.hidden)),
        ("llama.block_count", u32v(layers)),
        ("llama.feed_forward_length", u32v(s.ffn)),
        ("llama.rope.dimension_count", u32v(s.head_dim())),
        ("llama.attention.head_count", u32v(s.heads)),
        ("llama.attention.head_count_kv", u32v(s.kv_heads)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(s.norm_eps),
        ),
        ("llama.rope.freq_base", Value::F32(s.rope_base)),
        ("general.file_type", Value::U32(FILE_TYPE_MOSTLY_Q4_K_M)),
        ("tokenizer.ggml.model", Value::String("llama".into())),
    ];
    m.push((
        "tokenizer.ggml.tokens",
        Value::Array(vocab.tokens.iter().cloned().map(Value::String).collect()),
    ));
    m.push((
        "tokenizer.ggml.scores",
        Value::Array(vocab.scores.iter().copied().map(Value::F32).collect()),
    ));
    m.push((
        "tokenizer.ggml.token_type",
        Value::Array(vocab.types.iter().copied().map(Value::I32).collect()),
    ));
    m.extend([
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.padding_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        (
            "tokenizer.chat_template",
            Value::String(MISTRAL_7B_V02_CHAT_TEMPLATE.into()),
        ),
        ("general.quantization_version", Value::U32(2)),
    ]);
    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

// ---------------------------------------------------------------------------
// Writing a synthetic Mistral-7B
// ---------------------------------------------------------------------------

/// The model/quantization pairs [`write_named`] can write.
pub const SUPPORTED: &[(&str, &str)] = &[("mistral-7b-instruct-v0.2", "q4_K_M")];

/// The file name `scripts/fetch-models` gives Mistral's SentencePiece
/// tokenizer (`tokenizer.model.v1` from the `mistral-common` package) in the
/// model directory.
pub const MISTRAL_TOKENIZER_FILE: &str = "mistral-tokenizer.model.v1";

/// Options for [`write_mistral_7b`]; the default writes all layers with seed 0
/// and a placeholder vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynthOptions {
    /// Mistral's SentencePiece `tokenizer.model` (`tokenizer.model.v1`); without
    /// it the file gets a placeholder vocabulary of the same size.
    pub tokenizer: Option<PathBuf>,
    /// Seed of the random weights: the same seed writes the same file.
    pub seed: u64,
    /// Write only this many transformer blocks (for fast tests); default all 32.
    pub layers: Option<usize>,
}

/// What [`write_mistral_7b`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthesized {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Transformer blocks written.
    pub layers: usize,
    /// Number of tensors.
    pub tensors: usize,
    /// Whether the vocabulary is Mistral's (else a placeholder).
    pub real_vocabulary: bool,
}

/// Mistral's tokenizer in abridge's model directory, when `scripts/fetch-models`
/// has put it there.
pub fn default_mistral_tokenizer() -> Option<PathBuf> {
    let path = crate::registry::models_dir().join(MISTRAL_TOKENIZER_FILE);
    path.is_file().then_some(path)
}

/// Writes the synthetic checkpoint named by `model` and `quant` (see
/// [`SUPPORTED`]; names compare ignoring case).
pub fn write_named(
    model: &str,
    quant: &str,
    path: impl AsRef<Path>,
    options: &SynthOptions,
    progress: impl FnMut(u64, u64),
) -> Result<Synthesized> {
    let known = SUPPORTED
        .iter()
        .any(|(m, q)| m.eq_ignore_ascii_case(model) && q.eq_ignore_ascii_case(quant));
    if !known {
        let list: Vec<String> = SUPPORTED.iter().map(|(m, q)| format!("{m} {q}")).collect();
        return Err(Error::InvalidOption(format!(
            "no synthetic checkpoint for model `{model}` with quantization `{quant}`; supported: {}",
            list.join(", ")
        )));
    }
    write_mistral_7b(path, options, progress)
}

/// The synthetic checkpoint named `model:quant` (e.g.
/// `mistral-7b-instruct-v0.2:q4_K_M`) in abridge's model directory, written
/// there on first use (all layers, seed 0, Mistral's vocabulary when
/// [`default_mistral_tokenizer`] finds it) and reused afterwards: `progress`
/// is called only while writing. Returns the file's path.
pub fn cached(spec: &str, progress: impl FnMut(u64, u64)) -> Result<PathBuf> {
    let Some((model, quant)) = spec.split_once(':') else {
        return Err(Error::InvalidOption(format!(
            "a synthetic checkpoint is named MODEL:QUANT (e.g. mistral-7b-instruct-v0.2:q4_K_M), not `{spec}`"
        )));
    };
    let dir = crate::registry::models_dir();
    let path = dir.join(format!("synthetic-{model}-{quant}.gguf").to_lowercase());
    // Written under a temporary name and renamed when complete, so a file
    // that is there is whole; its header is read to be sure it is a model.
    if path.is_file() && crate::gguf::GgufFile::open(&path).is_ok() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    let options = SynthOptions {
        tokenizer: default_mistral_tokenizer(),
        ..SynthOptions::default()
    };
    Ok(write_named(model, quant, &path, &options, progress)?.path)
}

/// Writes a synthetic Mistral-7B-Instruct-v0.2 Q4_K_M to `path` (about 4.1 GiB
/// with all 32 layers), calling `progress(done_bytes, total_bytes)` as it goes.
///
/// The file is written as an [`AtomicFile`] (a temporary name in the same
/// directory, renamed when complete), so an interrupted run leaves nothing
/// that looks like a finished model. Memory use stays around a few
/// tens of MiB per CPU thread whatever the file's size.
pub fn write_mistral_7b(
    path: impl AsRef<Path>,
    options: &SynthOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<Synthesized> {
    let path = path.as_ref();
    let spec = MISTRAL_7B_INSTRUCT_V02;
    let layers = options.layers.unwrap_or(spec.layers);
    if layers == 0 || layers > spec.layers {
        return Err(Error::InvalidOption(format!(
            "layers must be between 1 and {} (got {layers})",
            spec.layers
        )));
    }
    let vocab = match &options.tokenizer {
        Some(tok) => {
            let model = SentencePieceModel::open(tok)?;
            let vocab = Vocabulary::from_sentencepiece(&model);
            let expected = ["<unk>", "<s>", "</s>"];
            if vocab.len() != spec.vocab || vocab.tokens[..3] != expected {
                return Err(Error::Tokenizer(format!(
                    "{} is not Mistral-7B's tokenizer: it has {} pieces starting {:?}, expected {} starting {expected:?} (use tokenizer.model.v1 from the mistral-common package)",
                    tok.display(),
                    vocab.len(),
                    &vocab.tokens[..vocab.len().min(3)],
                    spec.vocab,
                )));
            }
            vocab
        }
        None => Vocabulary::placeholder(spec.vocab),
    };
    let metadata = mistral_7b_metadata(layers, &vocab);
    let tensors = q4_k_m_tensors(&spec, layers);
    let count = tensors.len();

    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = AtomicFile::create(path)?;
    let mut writer = GgufWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        &metadata,
        tensors.clone(),
    )
    .map_err(write_err)?;
    let total = writer.total_size();
    progress(writer.written(), total);
    for (index, t) in tensors.iter().enumerate() {
        write_random_tensor(
            &mut writer,
            t,
            options.seed,
            index as u64,
            path,
            &mut progress,
        )?;
    }
    writer
        .finish()
        .map_err(write_err)?
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .commit()?;
    Ok(Synthesized {
        path: path.to_path_buf(),
        bytes: total,
        layers,
        tensors: count,
        real_vocabulary: vocab.real,
    })
}

/// Standard deviation of the random matrices: small enough that activations
/// stay finite through 32 layers (each block adds terms of order one to the
/// residual stream), large enough that quantization keeps every value distinct
/// from zero.
const WEIGHT_STD: f32 = 0.02;

/// Values per generated chunk (16 MiB of f32).
const CHUNK_VALUES: usize = 1 << 22;

fn write_random_tensor<W: Write>(
    writer: &mut GgufWriter<W>,
    t: &TensorSpec,
    seed: u64,
    index: u64,
    path: &Path,
    progress: &mut impl FnMut(u64, u64),
) -> Result<()> {
    let io = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let total = writer.total_size();
    if t.dtype == GgmlDType::F32 {
        // Norm weights: RMS norm scales of one.
        let bytes: Vec<u8> = (0..t.elements()).flat_map(|_| 1f32.to_le_bytes()).collect();
        writer.write_data(&bytes).map_err(io)?;
        progress(writer.written(), total);
        return Ok(());
    }
    let cols = t.row_len();
    let rows = (t.elements() / cols as u64) as usize;
    let rows_per_chunk = (CHUNK_VALUES / cols).max(1);
    let chunks = rows.div_ceil(rows_per_chunk);
    let batch = rayon::current_num_threads().max(1);
    let mut chunk = 0;
    while chunk < chunks {
        let end = (chunk + batch).min(chunks);
        let quantized: Vec<Result<Vec<u8>>> = (chunk..end)
            .into_par_iter()
            .map(|c| {
                let first = c * rows_per_chunk;
                let n = rows_per_chunk.min(rows - first);
                let mut rng = SplitMix64::new(seed).derive(index).derive(c as u64);
                let mut values = vec![0f32; n * cols];
                fill_normal(&mut rng, &mut values, WEIGHT_STD);
                let tensor = Tensor::from_vec(values, (n, cols), &Device::Cpu)?;
                let q = QTensor::quantize(&tensor, t.dtype)?;
                Ok(q.data()?.into_owned())
            })
            .collect();
        for bytes in quantized {
            writer.write_data(&bytes?).map_err(io)?;
            progress(writer.written(), total);
        }
        chunk = end;
    }
    Ok(())
}

/// Fills `out` from `rng` with approximately normal values of standard deviation
/// `std`: the sum of four 16-bit uniforms (Irwin–Hall), centred and scaled,
/// one generator call per value.
fn fill_normal(rng: &mut SplitMix64, out: &mut [f32], std: f32) {
    // Four uniforms on [0, 65536) have mean 131070 and variance 4 * (65536² - 1) / 12.
    const MEAN: f32 = 2.0 * 65535.0;
    let scale = std / (4.0f32 * (65536.0f32 * 65536.0 - 1.0) / 12.0).sqrt();
    for x in out {
        let r = rng.next_u64();
        let sum = (r & 0xFFFF) + (r >> 16 & 0xFFFF) + (r >> 32 & 0xFFFF) + (r >> 48);
        *x = (sum as f32 - MEAN) * scale;
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::gguf::GgufFile;

    /// GGUF's default alignment of tensor data.
    const ALIGNMENT: u64 = 32;

    #[test]
    fn more_bits_rule_matches_llama_cpp_for_32_layers() {
        let q6: Vec<usize> = (0..32).filter(|&i| q4_k_m_uses_more_bits(i, 32)).collect();
        assert_eq!(
            q6,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn full_spec_has_the_size_of_thebloke_file_data() {
        let tensors = q4_k_m_tensors(&MISTRAL_7B_INSTRUCT_V02, 32);
        assert_eq!(tensors.len(), 291);
        let data: u64 = tensors
            .iter()
            .map(|t| t.byte_size().next_multiple_of(ALIGNMENT))
            .sum();
        // TheBloke's file is 4,368,439,584 bytes; its header (vocabulary,
        // template, tensor table) takes the remaining ~0.7 MB.
        assert_eq!(data, 4_367_704_064);
        assert!(4_368_439_584 - data < 1 << 20);
    }

    #[test]
    fn writer_round_trips_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let tensors = vec![
            TensorSpec::new("a", &[3], GgmlDType::F32),
            TensorSpec::new("b", &[2, 256], GgmlDType::Q4K),
            TensorSpec::new("c", &[5], GgmlDType::F32),
        ];
        let meta = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            (
                "x.list".to_string(),
                Value::Array(vec![Value::I32(-1), Value::I32(7)]),
            ),
            ("x.f".to_string(), Value::F32(0.5)),
            ("x.b".to_string(), Value::Bool(true)),
        ];
        let file = File::create(&path).unwrap();
        let mut w = GgufWriter::new(file, &meta, tensors.clone()).unwrap();
        let total = w.total_size();
        let b = QTensor::quantize(
            &Tensor::from_vec(
                (0..512).map(|i| i as f32 / 512.0).collect::<Vec<_>>(),
                (2, 256),
                &Device::Cpu,
            )
            .unwrap(),
            GgmlDType::Q4K,
        )
        .unwrap();
        let a: Vec<u8> = [1f32, 2., 3.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let c: Vec<u8> = [4f32; 5].iter().flat_map(|x| x.to_le_bytes()).collect();
        // Pieces of any size, spanning tensors.
        let mut all = a.clone();
        all.extend(b.data().unwrap().iter());
        all.extend(&c);
        for piece in all.chunks(7) {
            w.write_data(piece).unwrap();
        }
        assert!(w.write_data(&[0]).is_err());
        w.finish().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), total);

        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(
            g.get("x.list").unwrap(),
            &Value::Array(vec![Value::I32(-1), Value::I32(7)])
        );
        assert_eq!(g.get("x.f").unwrap(), &Value::F32(0.5));
        assert_eq!(g.get("x.b").unwrap().as_bool(), Some(true));
        let info = g.tensor_info("b").unwrap();
        assert_eq!(info.shape, [2, 256]);
        assert_eq!(info.kind.name(), "Q4_K");
        let c = g.tensor("c", Some(&[5]), &Device::Cpu).unwrap();
        assert_eq!(
            c.dequantize(&Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [4.0; 5]
        );
        let b2 = g.tensor("b", Some(&[2, 256]), &Device::Cpu).unwrap();
        assert_eq!(b2.data().unwrap(), b.data().unwrap());
    }

    #[test]
    fn writer_rejects_missing_data_and_bad_shapes() {
        let t = vec![TensorSpec::new("a", &[4], GgmlDType::F32)];
        let mut w = GgufWriter::new(Vec::new(), &[], t).unwrap();
        w.write_data(&[0; 8]).unwrap();
        assert!(
            w.finish()
                .unwrap_err()
                .to_string()
                .contains("missing 8 bytes")
        );
        let bad = vec![TensorSpec::new("q", &[100], GgmlDType::Q4K)];
        assert!(GgufWriter::new(Vec::new(), &[], bad).is_err());
    }

    #[test]
    fn placeholder_vocabulary_is_unique_and_mistral_shaped() {
        let v = Vocabulary::placeholder(32000);
        assert_eq!(v.len(), 32000);
        assert_eq!(&v.tokens[..3], ["<unk>", "<s>", "</s>"]);
        assert_eq!(v.tokens[3], "<0x00>");
        assert_eq!(v.tokens[258], "<0xFF>");
        assert_eq!(v.types[258], 6);
        let unique: HashSet<&String> = v.tokens.iter().collect();
        assert_eq!(unique.len(), 32000);
    }

    #[test]
    fn random_values_have_the_asked_spread() {
        let mut values = vec![0f32; 1 << 16];
        fill_normal(&mut SplitMix64::new(7).derive(1), &mut values, 0.02);
        let n = values.len() as f32;
        let mean = values.iter().sum::<f32>() / n;
        let std = (values.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!(mean.abs() < 1e-3, "{mean}");
        assert!((std - 0.02).abs() < 1e-3, "{std}");
    }

    #[test]
    fn unsupported_model_or_quant_is_a_clear_error() {
        let err = write_named(
            "mistral-7b-instruct-v0.2",
            "q8_0",
            "/nonexistent/x.gguf",
            &SynthOptions::default(),
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("q8_0") && err.contains("q4_K_M"), "{err}");
    }
}
