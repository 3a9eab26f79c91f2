//! The decoder-only transformer shared by the architectures abridge runs.
//!
//! llama, mistral and qwen2 checkpoints differ in data, not in structure: the
//! rotary embedding's pairing of dimensions, biases on the attention
//! projections, norm epsilon and rope base. Those differences live in
//! [`TransformerConfig`]; the forward pass below is written once.
//!
//! The forward pass processes a prompt in chunks against a preallocated
//! [`KvCache`], so attention scores are at most `chunk × context` per head
//! rather than `prompt × prompt`.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::kv_cache::{CacheShape, KvCache};
use crate::quant::{LegacyMatrix, LegacyType};

/// How the rotary embedding pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x0, x1), (x2, x3)…`: llama.cpp's "normal" rope, used
    /// by llama and mistral GGUFs (whose Q/K weights are permuted for it).
    Interleaved,
    /// Halves `(x0, x[d/2])…`: GPT-NeoX style, used by qwen2 and gemma.
    Neox,
}

/// The architecture families abridge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `llama` (Llama, Mistral, SmolLM2 and other llama-layout files).
    Llama,
    /// `qwen2` (Qwen2 and Qwen2.5).
    Qwen2,
}

impl Architecture {
    /// Maps a GGUF `general.architecture` value to a family.
    pub fn from_gguf_name(name: &str) -> Result<Self> {
        match name {
            "llama" | "mistral" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            other => Err(Error::UnsupportedArchitecture {
                found: other.into(),
                supported: crate::model::SUPPORTED_ARCHITECTURES.to_vec(),
            }),
        }
    }
}

/// Hyper-parameters read from a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerConfig {
    /// The architecture family.
    pub architecture: Architecture,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` with grouped-query attention).
    pub kv_heads: usize,
    /// Dimension of each attention head.
    pub head_dim: usize,
    /// Inner width of the feed-forward block.
    pub ffn: usize,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab: usize,
    /// RMS-norm epsilon.
    pub norm_eps: f64,
    /// Rotary embedding base frequency.
    pub rope_base: f64,
    /// Rotary pairing.
    pub rope_style: RopeStyle,
    /// Context length the model was trained for.
    pub trained_context: usize,
}

impl TransformerConfig {
    /// Reads and sanity-checks the hyper-parameters.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch_name = gguf.architecture()?;
        let architecture = Architecture::from_gguf_name(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_key = |k: &str| -> Result<usize> {
            let v = gguf.get_u64(&key(k))?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0 && v < (1 << 24))
                .ok_or_else(|| Error::Metadata {
                    key: key(k),
                    problem: format!("{v} is out of range"),
                })
        };
        let layers = usize_key("block_count")?;
        let hidden = usize_key("embedding_length")?;
        let heads = usize_key("attention.head_count")?;
        let kv_heads = if gguf.get(&key("attention.head_count_kv")).is_some() {
            usize_key("attention.head_count_kv")?
        } else {
            heads
        };
        if heads % kv_heads != 0 {
            return Err(Error::Metadata {
                key: key("attention.head_count_kv"),
                problem: format!("{kv_heads} does not divide the {heads} query heads"),
            });
        }
        let head_dim = if gguf.get(&key("attention.key_length")).is_some() {
            usize_key("attention.key_length")?
        } else {
            hidden / heads
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::Metadata {
                key: key("attention.key_length"),
                problem: format!("head dimension {head_dim} must be even and non-zero"),
            });
        }
        let ffn = usize_key("feed_forward_length")?;
        let embd = gguf
            .tensor_info("token_embd.weight")
            .ok_or_else(|| Error::Tensor {
                name: "token_embd.weight".into(),
                problem: "is missing from the file".into(),
            })?;
        let vocab = embd.shape[0];
        let norm_eps = gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))?;
        let rope_base = match gguf.get(&key("rope.freq_base")) {
            Some(_) => gguf.get_f64(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let trained_context = usize_key("context_length")?;
        Ok(Self {
            architecture,
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            ffn,
            vocab,
            norm_eps,
            rope_base,
            rope_style: match architecture {
                Architecture::Llama => RopeStyle::Interleaved,
                Architecture::Qwen2 => RopeStyle::Neox,
            },
            trained_context,
        })
    }

    /// The cache this model needs per position.
    pub fn cache_shape(&self) -> CacheShape {
        CacheShape {
            layers: self.layers,
            kv_heads: self.kv_heads,
            key_dim: self.head_dim,
            value_dim: self.head_dim,
        }
    }
}

/// A quantized weight matrix, multiplied by whichever kernel is fastest for
/// its block type.
#[derive(Debug)]
pub(crate) enum Weight {
    Candle(QMatMul),
    Legacy(LegacyMatrix),
}

impl Weight {
    pub(crate) fn new(q: QTensor, device: &Device) -> Result<Self> {
        if device.is_cpu()
            && let Some(kind) = LegacyType::from_ggml(q.dtype())
        {
            let (rows, cols) = q.shape().dims2()?;
            return Ok(Self::Legacy(LegacyMatrix::new(
                kind,
                rows,
                cols,
                &q.data()?,
            )?));
        }
        Ok(Self::Candle(QMatMul::from_qtensor(q)?))
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Candle(w) => w.forward(x)?,
            Self::Legacy(w) => x.contiguous()?.apply_op1_no_bwd(w)?,
        })
    }
}

/// A projection with an optional bias.
#[derive(Debug)]
struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

#[derive(Debug)]
struct Block {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A loaded decoder-only transformer.
#[derive(Debug)]
pub struct Transformer {
    config: TransformerConfig,
    embed: Arc<QTensor>,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Weight,
    rope_cos: Tensor,
    rope_sin: Tensor,
    device: Device,
}

/// Tokens processed per step of prompt processing: bounds the attention
/// scores held at once to `chunk × context` per head.
pub const PROMPT_CHUNK: usize = 512;

impl Transformer {
    /// Loads the weights described by `config` from `gguf`, checking every
    /// tensor's shape.
    pub fn load(gguf: &GgufFile, config: TransformerConfig, device: &Device) -> Result<Self> {
        let c = &config;
        let q_dim = c.heads * c.head_dim;
        let kv_dim = c.kv_heads * c.head_dim;
        let dense = |name: &str, shape: &[usize]| -> Result<Tensor> {
            Ok(gguf.tensor(name, Some(shape), device)?.dequantize(device)?)
        };
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear> {
            let q = gguf.tensor(&format!("{name}.weight"), Some(&[out, inp]), device)?;
            let weight = Weight::new(q, device)?;
            let bias_name = format!("{name}.bias");
            let bias = match gguf.tensor_info(&bias_name) {
                Some(_) => Some(dense(&bias_name, &[out])?),
                None => None,
            };
            Ok(Linear { weight, bias })
        };
        let embed =
            Arc::new(gguf.tensor("token_embd.weight", Some(&[c.vocab, c.hidden]), device)?);
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: dense(&format!("{p}.attn_norm.weight"), &[c.hidden])?,
                q: linear(&format!("{p}.attn_q"), q_dim, c.hidden)?,
                k: linear(&format!("{p}.attn_k"), kv_dim, c.hidden)?,
                v: linear(&format!("{p}.attn_v"), kv_dim, c.hidden)?,
                o: linear(&format!("{p}.attn_output"), c.hidden, q_dim)?,
                ffn_norm: dense(&format!("{p}.ffn_norm.weight"), &[c.hidden])?,
                gate: linear(&format!("{p}.ffn_gate"), c.ffn, c.hidden)?,
                up: linear(&format!("{p}.ffn_up"), c.ffn, c.hidden)?,
                down: linear(&format!("{p}.ffn_down"), c.hidden, c.ffn)?,
            });
        }
        let output_norm = dense("output_norm.weight", &[c.hidden])?;
        // Small models tie the output projection to the embedding matrix.
        let output = match gguf.tensor_info("output.weight") {
            Some(_) => Weight::new(
                gguf.tensor("output.weight", Some(&[c.vocab, c.hidden]), device)?,
                device,
            )?,
            None => Weight::Candle(QMatMul::from_arc(embed.clone())?),
        };
        let (rope_cos, rope_sin) = rope_tables(c.head_dim, c.rope_base, c.trained_context, device)?;
        Ok(Self {
            config,
            embed,
            blocks,
            output_norm,
            output,
            rope_cos,
            rope_sin,
            device: device.clone(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// Runs `tokens` at the cache's current position, appends their keys and
    /// values to `cache`, and returns the logits predicting the token after the
    /// last one, as a `(vocab,)` f32 tensor.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        forward_in_chunks(tokens, cache, c.vocab, c.trained_context, |chunk, cache| {
            self.forward_chunk(chunk, cache)
        })
    }

    fn forward_chunk(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        let seq = tokens.len();
        let pos = cache.len();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?;
        let cos = self.rope_cos.narrow(0, pos, seq)?;
        let sin = self.rope_sin.narrow(0, pos, seq)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        for (i, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, c.norm_eps as f32)?;
            let q = b.q.forward(&h)?;
            let k = b.k.forward(&h)?;
            let v = b.v.forward(&h)?;
            let heads_first = |t: Tensor, n: usize| -> Result<Tensor> {
                Ok(t.reshape((seq, n, c.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()?)
            };
            let q = self.rope(heads_first(q, c.heads)?, &cos, &sin)?;
            let k = self.rope(heads_first(k, c.kv_heads)?, &cos, &sin)?;
            let v = heads_first(v, c.kv_heads)?;
            let (k_all, v_all) = cache.append(i, &k, &v)?;
            let attn = crate::attention::attention(&q, &k_all, &v_all, c.kv_heads, scale, None)?
                .transpose(0, 1)?
                .reshape((seq, c.heads * c.head_dim))?;
            x = (x + b.o.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, c.norm_eps as f32)?;
            let ff = (candle_nn::ops::silu(&b.gate.forward(&h)?)? * b.up.forward(&h)?)?;
            x = (x + b.down.forward(&ff)?)?;
        }
        cache.advance(seq);
        let last = x.narrow(0, seq - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.output_norm, c.norm_eps as f32)?;
        Ok(self.output.forward(&last)?.squeeze(0)?)
    }

    fn rope(&self, x: Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x = x.unsqueeze(0)?;
        let y = match self.config.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
            RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, cos, sin)?,
        };
        Ok(y.squeeze(0)?)
    }
}

/// Checks `tokens` against the vocabulary, the cache's free room and the
/// context the model was trained for, then runs them through `chunk` in steps
/// of [`PROMPT_CHUNK`] and returns the last step's logits: the part of a
/// forward pass every architecture shares.
pub(crate) fn forward_in_chunks(
    tokens: &[u32],
    cache: &mut KvCache,
    vocab: usize,
    trained_context: usize,
    mut chunk: impl FnMut(&[u32], &mut KvCache) -> Result<Tensor>,
) -> Result<Tensor> {
    if tokens.is_empty() {
        return Err(Error::Input(
            "nothing to process: the token list is empty".into(),
        ));
    }
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Input(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        )));
    }
    cache.reserve(tokens.len())?;
    let needed = cache.len() + tokens.len();
    if needed > trained_context {
        return Err(Error::ContextOverflow {
            needed,
            reserve: 0,
            context: trained_context,
            suggested: trained_context,
        });
    }
    let mut last = None;
    for part in tokens.chunks(PROMPT_CHUNK) {
        last = Some(chunk(part, cache)?);
    }
    last.ok_or_else(|| Error::Input("nothing to process".into()))
}

/// `cos` and `sin` of `position × base^(-2i/d)` for every position the model
/// can see, each `(positions, d/2)`.
pub(crate) fn rope_tables(
    head_dim: usize,
    base: f64,
    positions: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| (1.0 / base.powf(2.0 * i as f64 / head_dim as f64)) as f32)
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
    let pos = Tensor::arange(0u32, positions as u32, device)?
        .to_dtype(candle_core::DType::F32)?
        .reshape((positions, 1))?;
    let angles = pos.broadcast_mul(&inv_freq)?;
    Ok((angles.cos()?.contiguous()?, angles.sin()?.contiguous()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architecture_lists_the_supported_ones() {
        let err = Architecture::from_gguf_name("mamba")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mamba") && err.contains("llama") && err.contains("qwen2"),
            "{err}"
        );
    }
}
