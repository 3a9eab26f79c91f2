//! Gemma 3 (`general.architecture = gemma3`): Google's small decoder-only
//! models, Gemma-3-270m first.
//!
//! Gemma 3 shares the skeleton of [`crate::transformer`] (RMS norms, grouped
//! query attention, a gated feed-forward block, NEOX rope) but differs in
//! enough places that it is its own forward pass rather than more flags on
//! [`Transformer`](crate::transformer::Transformer):
//!
//! - token embeddings are multiplied by `√hidden`;
//! - queries and keys are RMS-normed per head (over `head_dim`) before rope;
//! - the attention and feed-forward outputs are RMS-normed again
//!   (`post_attention_norm`, `post_ffw_norm`) before they join the residual;
//! - the feed-forward gate is GELU (tanh approximation), not SiLU;
//! - attention is interleaved: five of every six layers see only the last
//!   `sliding_window` positions and rotate with a local rope base of 10 000,
//!   every sixth layer (index `% 6 == 5`) sees everything and rotates with
//!   `rope.freq_base`. llama.cpp hard-codes the same pattern and local base;
//! - queries are scaled by `1/√key_length` (`query_pre_attn_scalar`).
//!
//! The GGUF converter already adds Gemma's `+1` to every norm weight, so the
//! norms here are the plain `x / rms(x) · w` of the other architectures.
//! The output projection is tied to the embedding matrix when the file has
//! no `output.weight` (the 270m file has none).
//!
//! Weights, rope tables, attention and the preallocated [`KvCache`] are the
//! ones [`crate::transformer`] uses; sliding-window layers read only the
//! window's slice of the cache, so their attention cost stays bounded on long
//! prompts.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::kv_cache::{CacheShape, KvCache};
use crate::model::CausalLm;
use crate::tokenizer::TokenId;
use crate::transformer::{Weight, forward_in_chunks, rope_tables};

/// The `general.architecture` value this module runs.
pub const ARCHITECTURE: &str = "gemma3";

/// Every `GLOBAL_EVERY`-th layer (index `% GLOBAL_EVERY == GLOBAL_EVERY - 1`)
/// attends to the whole context; the others use the sliding window. Gemma 3
/// files do not record the pattern; llama.cpp and transformers fix it at 6.
pub const GLOBAL_EVERY: usize = 6;

/// Rope base of the sliding-window layers (`rope_local_base_freq`), which
/// Gemma 3 files do not record either.
pub const LOCAL_ROPE_BASE: f64 = 10_000.0;

/// Hyper-parameters of a Gemma 3 model, read from a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Config {
    /// Number of transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Dimension of each query and key head (`attention.key_length`).
    pub head_dim: usize,
    /// Dimension of each value head (`attention.value_length`).
    pub value_dim: usize,
    /// Inner width of the feed-forward block.
    pub ffn: usize,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab: usize,
    /// RMS-norm epsilon.
    pub norm_eps: f64,
    /// Rope base of the global-attention layers (`rope.freq_base`).
    pub rope_base_global: f64,
    /// Rope base of the sliding-window layers.
    pub rope_base_local: f64,
    /// Positions a sliding-window layer sees, its own included; `None` when
    /// the file has no window and every layer is global.
    pub sliding_window: Option<usize>,
    /// Factor applied to the queries before attention.
    pub attention_scale: f64,
    /// `final_logit_softcapping`, when the file sets one: logits become
    /// `cap · tanh(logits / cap)`.
    pub final_logit_softcap: Option<f64>,
    /// Context length the model was trained for.
    pub trained_context: usize,
}

fn metadata_err(key: &str, problem: impl Into<String>) -> Error {
    Error::Metadata {
        key: key.into(),
        problem: problem.into(),
    }
}

fn key(k: &str) -> String {
    format!("{ARCHITECTURE}.{k}")
}

/// A positive count below 2²⁴ under `gemma3.<k>`.
fn count(gguf: &GgufFile, k: &str) -> Result<usize> {
    let k = key(k);
    let v = gguf.get_u64(&k)?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0 && v < (1 << 24))
        .ok_or_else(|| metadata_err(&k, format!("{v} is out of range")))
}

/// A positive finite number under `gemma3.<k>`.
fn positive(gguf: &GgufFile, k: &str) -> Result<f64> {
    let k = key(k);
    let v = gguf.get_f64(&k)?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(metadata_err(&k, format!("{v} is not a positive number")))
    }
}

impl Gemma3Config {
    /// Reads and sanity-checks the hyper-parameters.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf.architecture()?;
        if arch != ARCHITECTURE {
            return Err(metadata_err(
                "general.architecture",
                format!("is `{arch}`, not `{ARCHITECTURE}`"),
            ));
        }
        let has = |k: &str| gguf.get(&key(k)).is_some();
        let layers = count(gguf, "block_count")?;
        let hidden = count(gguf, "embedding_length")?;
        let heads = count(gguf, "attention.head_count")?;
        let kv_heads = if has("attention.head_count_kv") {
            count(gguf, "attention.head_count_kv")?
        } else {
            heads
        };
        if heads % kv_heads != 0 {
            return Err(metadata_err(
                &key("attention.head_count_kv"),
                format!("{kv_heads} does not divide the {heads} query heads"),
            ));
        }
        let head_dim = if has("attention.key_length") {
            count(gguf, "attention.key_length")?
        } else {
            hidden / heads
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(metadata_err(
                &key("attention.key_length"),
                format!("head dimension {head_dim} must be even and non-zero"),
            ));
        }
        let value_dim = if has("attention.value_length") {
            count(gguf, "attention.value_length")?
        } else {
            head_dim
        };
        let ffn = count(gguf, "feed_forward_length")?;
        let vocab = gguf
            .tensor_info("token_embd.weight")
            .ok_or_else(|| Error::Tensor {
                name: "token_embd.weight".into(),
                problem: "is missing from the file".into(),
            })?
            .shape[0];
        let norm_eps = positive(gguf, "attention.layer_norm_rms_epsilon")?;
        let rope_base_global = if has("rope.freq_base") {
            positive(gguf, "rope.freq_base")?
        } else {
            1_000_000.0
        };
        // Gemma 3 4B and larger stretch the global layers' rope linearly
        // (factor 8); that needs position-scaled tables this module does not
        // build yet, so refuse rather than run with wrong positions.
        if let Some(kind) = gguf.get(&key("rope.scaling.type")) {
            let factor = gguf
                .get(&key("rope.scaling.factor"))
                .and_then(|v| v.as_f64())
                .unwrap_or(1.0);
            if kind.as_str() != Some("none") && factor != 1.0 {
                return Err(metadata_err(
                    &key("rope.scaling.type"),
                    format!(
                        "is {kind:?} with factor {factor}; rope scaling is not supported for gemma3 yet (Gemma-3-270m and 1B need none)"
                    ),
                ));
            }
        }
        let sliding_window = if has("attention.sliding_window") {
            let w = gguf.get_u64(&key("attention.sliding_window"))?;
            match usize::try_from(w) {
                Ok(0) => None,
                Ok(w) => Some(w),
                Err(_) => {
                    return Err(metadata_err(
                        &key("attention.sliding_window"),
                        format!("{w} is out of range"),
                    ));
                }
            }
        } else {
            None
        };
        // llama.cpp (after gemma_pytorch): Gemma 3 27B scales queries by
        // 1/√(hidden/heads); every other size by 1/√head_dim.
        let query_pre_attn_scalar = if layers == 62 {
            hidden / heads
        } else {
            head_dim
        };
        let final_logit_softcap = match gguf.get(&key("final_logit_softcapping")) {
            None => None,
            Some(v) => match v.as_f64() {
                // Zero means no capping.
                Some(c) if c.is_finite() && c >= 0.0 => (c > 0.0).then_some(c),
                _ => {
                    return Err(metadata_err(
                        &key("final_logit_softcapping"),
                        format!("{v:?} is not a non-negative number"),
                    ));
                }
            },
        };
        Ok(Self {
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            value_dim,
            ffn,
            vocab,
            norm_eps,
            rope_base_global,
            rope_base_local: LOCAL_ROPE_BASE,
            sliding_window,
            attention_scale: 1.0 / (query_pre_attn_scalar as f64).sqrt(),
            final_logit_softcap,
            trained_context: count(gguf, "context_length")?,
        })
    }

    /// Whether layer `i` attends through the sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && layer % GLOBAL_EVERY != GLOBAL_EVERY - 1
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
}

#[derive(Debug)]
struct Block {
    sliding: bool,
    attn_norm: Tensor,
    q: Weight,
    k: Weight,
    v: Weight,
    q_norm: Tensor,
    k_norm: Tensor,
    o: Weight,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    gate: Weight,
    up: Weight,
    down: Weight,
    post_ffn_norm: Tensor,
}

/// Rope tables for one base, `(positions, head_dim/2)` each.
#[derive(Debug)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

/// A loaded Gemma 3 model.
#[derive(Debug)]
pub struct Gemma3 {
    config: Gemma3Config,
    embed: Arc<QTensor>,
    embed_scale: f64,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Weight,
    rope_global: Rope,
    rope_local: Rope,
    device: Device,
}

impl Gemma3 {
    /// Loads the weights described by `config` from `gguf`, checking every
    /// tensor's shape.
    pub fn load(gguf: &GgufFile, config: Gemma3Config, device: &Device) -> Result<Self> {
        let c = &config;
        let q_dim = c.heads * c.head_dim;
        let k_dim = c.kv_heads * c.head_dim;
        let v_dim = c.kv_heads * c.value_dim;
        let o_dim = c.heads * c.value_dim;
        let dense = |name: &str, len: usize| -> Result<Tensor> {
            Ok(gguf
                .tensor(name, Some(&[len]), device)?
                .dequantize(device)?)
        };
        let weight = |name: &str, out: usize, inp: usize| -> Result<Weight> {
            Weight::new(gguf.tensor(name, Some(&[out, inp]), device)?, device)
        };
        let embed =
            Arc::new(gguf.tensor("token_embd.weight", Some(&[c.vocab, c.hidden]), device)?);
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let n = |t: &str| format!("blk.{i}.{t}.weight");
            blocks.push(Block {
                sliding: c.is_sliding(i),
                attn_norm: dense(&n("attn_norm"), c.hidden)?,
                q: weight(&n("attn_q"), q_dim, c.hidden)?,
                k: weight(&n("attn_k"), k_dim, c.hidden)?,
                v: weight(&n("attn_v"), v_dim, c.hidden)?,
                q_norm: dense(&n("attn_q_norm"), c.head_dim)?,
                k_norm: dense(&n("attn_k_norm"), c.head_dim)?,
                o: weight(&n("attn_output"), c.hidden, o_dim)?,
                post_attn_norm: dense(&n("post_attention_norm"), c.hidden)?,
                ffn_norm: dense(&n("ffn_norm"), c.hidden)?,
                gate: weight(&n("ffn_gate"), c.ffn, c.hidden)?,
                up: weight(&n("ffn_up"), c.ffn, c.hidden)?,
                down: weight(&n("ffn_down"), c.hidden, c.ffn)?,
                post_ffn_norm: dense(&n("post_ffw_norm"), c.hidden)?,
            });
        }
        let output_norm = dense("output_norm.weight", c.hidden)?;
        let output = match gguf.tensor_info("output.weight") {
            Some(_) => weight("output.weight", c.vocab, c.hidden)?,
            None => Weight::Candle(QMatMul::from_arc(embed.clone())?),
        };
        let rope = |base| -> Result<Rope> {
            let (cos, sin) = rope_tables(c.head_dim, base, c.trained_context, device)?;
            Ok(Rope { cos, sin })
        };
        let rope_global = rope(c.rope_base_global)?;
        let rope_local = rope(c.rope_base_local)?;
        Ok(Self {
            embed_scale: (c.hidden as f64).sqrt(),
            config,
            embed,
            blocks,
            output_norm,
            output,
            rope_global,
            rope_local,
            device: device.clone(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Gemma3Config {
        &self.config
    }

    /// Runs `tokens` at the cache's current position, appends their keys and
    /// values to `cache`, and returns the logits predicting the token after the
    /// last one, as a `(vocab,)` f32 tensor.
    pub fn forward(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        forward_in_chunks(tokens, cache, c.vocab, c.trained_context, |chunk, cache| {
            self.forward_chunk(chunk, cache)
        })
    }

    fn forward_chunk(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        let eps = c.norm_eps as f32;
        let seq = tokens.len();
        let pos = cache.len();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = (self.embed.embedding(&ids)? * self.embed_scale)?;
        let rope_at = |r: &Rope| -> Result<(Tensor, Tensor)> {
            Ok((r.cos.narrow(0, pos, seq)?, r.sin.narrow(0, pos, seq)?))
        };
        let global_rope = rope_at(&self.rope_global)?;
        let local_rope = rope_at(&self.rope_local)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let ((cos, sin), window) = if b.sliding {
                (&local_rope, c.sliding_window)
            } else {
                (&global_rope, None)
            };
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, eps)?;
            // (seq, n · d) → per-head RMS norm → (n, seq, d) → rope.
            let project = |w: &Weight, norm: &Tensor, n: usize| -> Result<Tensor> {
                let t = w.forward(&h)?.reshape((seq, n, c.head_dim))?;
                let t = candle_nn::ops::rms_norm(&t, norm, eps)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .unsqueeze(0)?;
                Ok(candle_nn::rotary_emb::rope(&t, cos, sin)?.squeeze(0)?)
            };
            let q = (project(&b.q, &b.q_norm, c.heads)? * c.attention_scale)?;
            let k = project(&b.k, &b.k_norm, c.kv_heads)?;
            let v =
                b.v.forward(&h)?
                    .reshape((seq, c.kv_heads, c.value_dim))?
                    .transpose(0, 1)?
                    .contiguous()?;
            let (k_all, v_all) = cache.append(i, &k, &v)?;
            // The queries carry the attention scale already.
            let attn = crate::attention::attention(&q, &k_all, &v_all, c.kv_heads, 1.0, window)?
                .transpose(0, 1)?
                .reshape((seq, c.heads * c.value_dim))?;
            let attn = b.o.forward(&attn)?;
            x = (x + candle_nn::ops::rms_norm(&attn, &b.post_attn_norm, eps)?)?;
            let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, eps)?;
            let ff = (b.gate.forward(&h)?.gelu()? * b.up.forward(&h)?)?;
            let ff = b.down.forward(&ff)?;
            x = (x + candle_nn::ops::rms_norm(&ff, &b.post_ffn_norm, eps)?)?;
        }
        cache.advance(seq);
        let last = x.narrow(0, seq - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.output_norm, eps)?;
        let mut logits = self.output.forward(&last)?.squeeze(0)?;
        if let Some(cap) = c.final_logit_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits)
    }
}

impl CausalLm for Gemma3 {
    fn forward(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Tensor> {
        Gemma3::forward(self, tokens, cache)
    }

    fn cache_shape(&self) -> CacheShape {
        self.config.cache_shape()
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab
    }

    fn trained_context(&self) -> usize {
        self.config.trained_context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sixth_layer_is_global() {
        let config = Gemma3Config {
            layers: 18,
            hidden: 640,
            heads: 4,
            kv_heads: 1,
            head_dim: 256,
            value_dim: 256,
            ffn: 2048,
            vocab: 262_144,
            norm_eps: 1e-6,
            rope_base_global: 1e6,
            rope_base_local: LOCAL_ROPE_BASE,
            sliding_window: Some(512),
            attention_scale: 1.0 / 16.0,
            final_logit_softcap: None,
            trained_context: 32_768,
        };
        let global: Vec<usize> = (0..18).filter(|&i| !config.is_sliding(i)).collect();
        assert_eq!(global, [5, 11, 17]);
        let no_window = Gemma3Config {
            sliding_window: None,
            ..config
        };
        assert!((0..18).all(|i| !no_window.is_sliding(i)));
    }
}
