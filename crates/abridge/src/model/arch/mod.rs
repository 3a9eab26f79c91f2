//! The architecture families abridge runs, over one decoder skeleton.
//!
//! Every family is a stack of pre-norm blocks (RMS norm, grouped-query
//! attention with rope, a gated feed-forward block) with a token embedding
//! in front and a projection to the vocabulary at the end. What the
//! families share lives here, written once:
//!
//! - [`Architecture`]: the one list of supported `general.architecture`
//!   values;
//! - [`HParams`]: the hyper-parameters every family has, read and checked
//!   from the GGUF metadata in one place;
//! - [`Weight`] and [`Linear`]: a quantized projection, multiplied by the
//!   fastest kernel for its block type;
//! - [`Rope`] and the chunked forward pass driver.
//!
//! Each family's file (`llama.rs` for llama, mistral and qwen2; `gemma3.rs`)
//! holds only what differs: its own extra hyper-parameters and its block.
//! This is the split llama.cpp makes between `llama-graph` and
//! `models/<arch>.cpp`, rather than candle-transformers' one copied file per
//! model.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use super::CausalLm;
use super::kv_cache::{CacheShape, KvCache};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::kernels::kquant::{KQuantMatrix, KQuantType};
use crate::kernels::quant::{LegacyMatrix, LegacyType};
use crate::kernels::{Gated, GatedMatrix};

pub(crate) mod gemma3;
pub(crate) mod llama;

/// The architecture families abridge runs.
///
/// ```
/// use abridge::Architecture;
/// assert_eq!(Architecture::from_gguf_name("mistral").unwrap(), Architecture::Llama);
/// let err = Architecture::from_gguf_name("mamba").unwrap_err().to_string();
/// assert!(err.contains("llama") && err.contains("gemma3"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `llama` and `mistral` (Llama, Mistral, SmolLM2 and other llama-layout files).
    Llama,
    /// `qwen2` (Qwen2 and Qwen2.5).
    Qwen2,
    /// `gemma3` (Gemma 3, sliding-window attention and extra norms).
    Gemma3,
}

/// Every `general.architecture` value abridge runs, and its family.
const GGUF_NAMES: &[(&str, Architecture)] = &[
    ("llama", Architecture::Llama),
    ("mistral", Architecture::Llama),
    ("qwen2", Architecture::Qwen2),
    ("gemma3", Architecture::Gemma3),
];

impl Architecture {
    /// The family of a GGUF `general.architecture` value.
    pub fn from_gguf_name(name: &str) -> Result<Self> {
        GGUF_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, a)| a)
            .ok_or_else(|| Error::UnsupportedArchitecture {
                found: name.into(),
                supported: Self::gguf_names(),
            })
    }

    /// Every `general.architecture` value abridge runs.
    pub fn gguf_names() -> Vec<&'static str> {
        GGUF_NAMES.iter().map(|&(n, _)| n).collect()
    }

    /// The rope base when the file does not record one.
    fn default_rope_base(self) -> f64 {
        match self {
            Self::Llama | Self::Qwen2 => 10_000.0,
            Self::Gemma3 => 1_000_000.0,
        }
    }
}

/// Hyper-parameters every family has, read from a GGUF file's metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HParams {
    /// The family.
    pub architecture: Architecture,
    /// The metadata key prefix (`general.architecture`).
    pub prefix: String,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` with grouped-query attention).
    pub kv_heads: usize,
    /// Dimension of each query and key head.
    pub head_dim: usize,
    /// Dimension of each value head.
    pub value_dim: usize,
    /// Inner width of the feed-forward block.
    pub ffn: usize,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab: usize,
    /// RMS-norm epsilon.
    pub norm_eps: f64,
    /// Rotary embedding base frequency (of the global layers, for Gemma 3).
    pub rope_base: f64,
    /// Context length the model was trained for.
    pub trained_context: usize,
}

impl HParams {
    /// Reads and sanity-checks the hyper-parameters.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let prefix = gguf.architecture()?.to_owned();
        let architecture = Architecture::from_gguf_name(&prefix)?;
        let m = Meta {
            gguf,
            prefix: &prefix,
        };
        let layers = m.count("block_count")?;
        // Every block has weights of its own: a count beyond the tensor table
        // is a corrupt header, and must not size what loading allocates.
        if layers > gguf.tensors().len() {
            return Err(m.error(
                "block_count",
                format!(
                    "{layers} blocks cannot fit in the file's {} tensors",
                    gguf.tensors().len()
                ),
            ));
        }
        let hidden = m.count("embedding_length")?;
        let heads = m.count("attention.head_count")?;
        let kv_heads = m.count_or("attention.head_count_kv", heads)?;
        if heads % kv_heads != 0 {
            return Err(m.error(
                "attention.head_count_kv",
                format!("{kv_heads} does not divide the {heads} query heads"),
            ));
        }
        let head_dim = m.count_or("attention.key_length", hidden / heads)?;
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(m.error(
                "attention.key_length",
                format!("head dimension {head_dim} must be even and non-zero"),
            ));
        }
        let vocab = gguf
            .tensor_info("token_embd.weight")
            .ok_or_else(|| Error::Tensor {
                name: "token_embd.weight".into(),
                problem: "is missing from the file".into(),
            })?
            .shape[0];
        Ok(Self {
            architecture,
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            value_dim: m.count_or("attention.value_length", head_dim)?,
            ffn: m.count("feed_forward_length")?,
            vocab,
            norm_eps: m.positive("attention.layer_norm_rms_epsilon")?,
            rope_base: m.positive_or("rope.freq_base", architecture.default_rope_base())?,
            trained_context: m.count("context_length")?,
            prefix,
        })
    }

    /// The cache this model needs per position.
    pub fn cache_shape(&self) -> CacheShape {
        CacheShape {
            layers: self.layers,
            kv_heads: self.kv_heads,
            key_dim: self.head_dim,
            value_dim: self.value_dim,
        }
    }

    /// Typed access to this family's metadata keys.
    pub fn meta<'a>(&'a self, gguf: &'a GgufFile) -> Meta<'a> {
        Meta {
            gguf,
            prefix: &self.prefix,
        }
    }
}

/// The metadata keys under one architecture's prefix (`llama.block_count`).
pub(crate) struct Meta<'a> {
    gguf: &'a GgufFile,
    prefix: &'a str,
}

impl Meta<'_> {
    pub fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.prefix)
    }

    pub fn has(&self, k: &str) -> bool {
        self.gguf.get(&self.key(k)).is_some()
    }

    pub fn error(&self, k: &str, problem: impl Into<String>) -> Error {
        Error::Metadata {
            key: self.key(k),
            problem: problem.into(),
        }
    }

    /// A positive count below 2²⁴: anything larger is a corrupt header, not
    /// a model.
    pub fn count(&self, k: &str) -> Result<usize> {
        let v = self.gguf.get_u64(&self.key(k))?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0 && v < (1 << 24))
            .ok_or_else(|| self.error(k, format!("{v} is out of range")))
    }

    pub fn count_or(&self, k: &str, default: usize) -> Result<usize> {
        if self.has(k) {
            self.count(k)
        } else {
            Ok(default)
        }
    }

    pub fn positive(&self, k: &str) -> Result<f64> {
        let v = self.gguf.get_f64(&self.key(k))?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.error(k, format!("{v} is not a positive number")))
        }
    }

    pub fn positive_or(&self, k: &str, default: f64) -> Result<f64> {
        if self.has(k) {
            self.positive(k)
        } else {
            Ok(default)
        }
    }

    pub fn get(&self, k: &str) -> Option<&crate::gguf::Value> {
        self.gguf.get(&self.key(k))
    }
}

/// What each family provides: its hyper-parameters and the forward pass of
/// one chunk of tokens. Checking the tokens, chunking a long prompt and the
/// rest of [`CausalLm`] are the same for every family.
pub(crate) trait Family: Send + Sync {
    fn hparams(&self) -> &HParams;

    /// Runs at most [`PROMPT_CHUNK`] checked tokens at the cache's position,
    /// appends their keys and values, and returns the next token's logits.
    fn forward_chunk(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor>;
}

impl<F: Family> CausalLm for F {
    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        forward_in_chunks(tokens, cache, self.hparams(), |chunk, cache| {
            self.forward_chunk(chunk, cache)
        })
    }

    fn cache_shape(&self) -> CacheShape {
        self.hparams().cache_shape()
    }

    fn vocab_size(&self) -> usize {
        self.hparams().vocab
    }

    fn trained_context(&self) -> usize {
        self.hparams().trained_context
    }
}

/// Loads the network for the file's architecture.
/// `native`: our own CPU kernels where they apply (see
/// [`crate::Kernels`]), else candle's device-generic operations only.
pub(crate) fn load(gguf: &GgufFile, device: &Device, native: bool) -> Result<Box<dyn CausalLm>> {
    let hp = HParams::from_gguf(gguf)?;
    let l = Loader {
        gguf,
        device,
        native,
    };
    Ok(match hp.architecture {
        Architecture::Llama | Architecture::Qwen2 => Box::new(llama::Llama::load(&l, hp)?),
        Architecture::Gemma3 => Box::new(gemma3::Gemma3::load(&l, hp)?),
    })
}

/// A quantized weight matrix, multiplied by whichever kernel is fastest for
/// its block type.
#[derive(Debug)]
pub(crate) enum Weight {
    Candle(QMatMul),
    Legacy(Arc<LegacyMatrix>),
    KQuant(KQuantMatrix),
}

impl Weight {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Candle(w) => w.forward(x)?,
            Self::Legacy(w) => x.contiguous()?.apply_op1_no_bwd(w.as_ref())?,
            Self::KQuant(w) => x.contiguous()?.apply_op1_no_bwd(w)?,
        })
    }

    /// `silu(x · gateᵀ) ⊙ (x · upᵀ)`, a SwiGLU feed-forward's first half:
    /// in one pass of our kernels where both matrices are theirs and of one
    /// shape, else as two products and two element-wise ops.
    pub(crate) fn gated(gate: &Self, up: &Self, x: &Tensor) -> Result<Tensor> {
        Ok(match (gate, up) {
            (Self::KQuant(g), Self::KQuant(u)) if g.shape() == u.shape() => x
                .contiguous()?
                .apply_op1_no_bwd(&Gated { gate: g, up: u })?,
            (Self::Legacy(g), Self::Legacy(u)) if g.shape() == u.shape() => {
                x.contiguous()?.apply_op1_no_bwd(&Gated {
                    gate: g.as_ref(),
                    up: u.as_ref(),
                })?
            }
            _ => (candle_nn::ops::silu(&gate.forward(x)?)? * up.forward(x)?)?,
        })
    }
}

/// The token embedding matrix.
#[derive(Debug)]
pub(crate) enum Embedding {
    /// candle's quantized tensor.
    Quantized(Arc<QTensor>),
    /// The tiles of the output projection it is tied to (`Q8_0`).
    Tiled(Arc<LegacyMatrix>),
}

impl Embedding {
    /// The embeddings of `tokens`, `(tokens, hidden)` in f32.
    pub(crate) fn rows(&self, tokens: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Self::Quantized(q) => Ok(q.embedding(&Tensor::new(tokens, device)?)?),
            Self::Tiled(m) => {
                let mut values = Vec::new();
                for &t in tokens {
                    let row = m
                        .row_values(t as usize)
                        .ok_or(Error::TokenOutOfVocabulary {
                            token: t,
                            vocab: m.rows(),
                        })?;
                    values.extend(row);
                }
                let hidden = values.len() / tokens.len().max(1);
                Ok(Tensor::from_vec(values, (tokens.len(), hidden), device)?)
            }
        }
    }
}

/// A projection with an optional bias.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// `silu(x · gateᵀ) ⊙ (x · upᵀ)`: see [`Weight::gated`]; projections
    /// with a bias take the separate ops.
    pub(crate) fn gated(gate: &Self, up: &Self, x: &Tensor) -> Result<Tensor> {
        if gate.bias.is_none() && up.bias.is_none() {
            return Weight::gated(&gate.weight, &up.weight, x);
        }
        Ok((candle_nn::ops::silu(&gate.forward(x)?)? * up.forward(x)?)?)
    }
}

/// Reads the tensors of one model, checking every shape: what each family's
/// loader uses.
pub(crate) struct Loader<'a> {
    pub gguf: &'a GgufFile,
    pub device: &'a Device,
    /// Whether our own CPU kernels run (see [`crate::Kernels`]).
    pub native: bool,
}

impl Loader<'_> {
    /// A vector (norm weights, biases), in f32.
    pub fn dense(&self, name: &str, len: usize) -> Result<Tensor> {
        Ok(self
            .gguf
            .tensor(name, Some(&[len]), self.device)?
            .dequantize(self.device)?)
    }

    /// The `out × inp` matrix `name`.
    pub fn weight(&self, name: &str, out: usize, inp: usize) -> Result<Weight> {
        let shape = [out, inp];
        let dtype = self
            .gguf
            .tensor_info(name)
            .and_then(|i| i.kind.ggml_dtype());
        if self.native {
            // Repacked straight from the file's pages: no intermediate copy.
            if let Some(kind) = dtype.and_then(KQuantType::from_ggml) {
                return self.gguf.with_bytes(name, Some(&shape), |_, _, bytes| {
                    Ok(Weight::KQuant(KQuantMatrix::new(kind, out, inp, bytes)?))
                });
            }
            if let Some(kind) = dtype.and_then(LegacyType::from_ggml) {
                return self.gguf.with_bytes(name, Some(&shape), |_, _, bytes| {
                    Ok(Weight::Legacy(Arc::new(LegacyMatrix::new(
                        kind, out, inp, bytes,
                    )?)))
                });
            }
        }
        let q = self.gguf.tensor(name, Some(&shape), self.device)?;
        Ok(Weight::Candle(QMatMul::from_qtensor(q)?))
    }

    /// `{name}.weight`, with `{name}.bias` when the file has one.
    pub fn linear(&self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        let weight = self.weight(&format!("{name}.weight"), out, inp)?;
        let bias_name = format!("{name}.bias");
        let bias = match self.gguf.tensor_info(&bias_name) {
            Some(_) => Some(self.dense(&bias_name, out)?),
            None => None,
        };
        Ok(Linear { weight, bias })
    }

    /// The token embedding matrix, kept quantized: as the output
    /// projection's tiles when the two are tied and our kernels run that
    /// type, so the matrix is held once.
    pub fn embedding(&self, hp: &HParams) -> Result<Embedding> {
        let name = "token_embd.weight";
        let shape = [hp.vocab, hp.hidden];
        let kind = self
            .gguf
            .tensor_info(name)
            .and_then(|i| i.kind.ggml_dtype())
            .and_then(LegacyType::from_ggml);
        let tied = self.gguf.tensor_info("output.weight").is_none();
        if self.native && tied && kind == Some(LegacyType::Q8_0) {
            return self.gguf.with_bytes(name, Some(&shape), |_, _, bytes| {
                let matrix = LegacyMatrix::new(LegacyType::Q8_0, hp.vocab, hp.hidden, bytes)?;
                Ok(Embedding::Tiled(Arc::new(matrix)))
            });
        }
        Ok(Embedding::Quantized(Arc::new(self.gguf.tensor(
            name,
            Some(&shape),
            self.device,
        )?)))
    }

    /// `output.weight`, or the embedding matrix when small models tie the two.
    pub fn output(&self, hp: &HParams, embed: &Embedding) -> Result<Weight> {
        match (self.gguf.tensor_info("output.weight"), embed) {
            (Some(_), _) => self.weight("output.weight", hp.vocab, hp.hidden),
            (None, Embedding::Tiled(m)) => Ok(Weight::Legacy(m.clone())),
            (None, Embedding::Quantized(q)) => Ok(Weight::Candle(QMatMul::from_arc(q.clone())?)),
        }
    }
}

/// Tokens processed per step of prompt processing: bounds the attention
/// scores held at once to `chunk × context` per head.
pub const PROMPT_CHUNK: usize = 512;

/// Checks `tokens` against the vocabulary, the cache's free room and the
/// context the model was trained for, then runs them through `chunk` in steps
/// of [`PROMPT_CHUNK`] and returns the last step's logits: the part of a
/// forward pass every architecture shares.
fn forward_in_chunks(
    tokens: &[u32],
    cache: &mut KvCache,
    hp: &HParams,
    mut chunk: impl FnMut(&[u32], &mut KvCache) -> Result<Tensor>,
) -> Result<Tensor> {
    if tokens.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= hp.vocab) {
        return Err(Error::TokenOutOfVocabulary {
            token: bad,
            vocab: hp.vocab,
        });
    }
    cache.reserve(tokens.len())?;
    let needed = cache.len() + tokens.len();
    if needed > hp.trained_context {
        return Err(Error::ContextOverflow {
            needed,
            reserve: 0,
            context: hp.trained_context,
        });
    }
    let mut last = None;
    for part in tokens.chunks(PROMPT_CHUNK) {
        last = Some(chunk(part, cache)?);
    }
    last.ok_or(Error::EmptyPrompt)
}

/// Rotary embedding angles for one base frequency: the `cos` and `sin` of
/// `position × base^(-2i/d)`, computed for the positions of each chunk as
/// it runs. A table for the whole trained context would make the header's
/// context length decide what loading allocates (8 GiB of tables for a
/// corrupt `context_length` of 2²⁴ and 128-wide heads), and would cost a
/// million-token model 512 MiB for positions most runs never reach.
#[derive(Debug)]
pub(crate) struct Rope {
    /// `base^(-2i/d)` for each pair of dimensions, `(1, d/2)`.
    inv_freq: Tensor,
}

impl Rope {
    pub(crate) fn new(head_dim: usize, base: f64, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / base.powf(2.0 * i as f64 / head_dim as f64)) as f32)
            .collect();
        Ok(Self {
            inv_freq: Tensor::from_vec(inv_freq, (1, half), device)?,
        })
    }

    /// `cos` and `sin` for positions `start..start + len`, each `(len, d/2)`.
    pub(crate) fn at(&self, start: usize, len: usize) -> Result<(Tensor, Tensor)> {
        // Positions stay below the trained context, which `Meta::count`
        // keeps under 2²⁴: exact in u32 and in f32.
        let pos = Tensor::arange(start as u32, (start + len) as u32, self.inv_freq.device())?
            .to_dtype(candle_core::DType::F32)?
            .reshape((len, 1))?;
        let angles = pos.broadcast_mul(&self.inv_freq)?;
        Ok((angles.cos()?.contiguous()?, angles.sin()?.contiguous()?))
    }
}

/// RMS norm of the last dimension of `x`, scaled by `weight`.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(x, weight, eps as f32)?)
}
