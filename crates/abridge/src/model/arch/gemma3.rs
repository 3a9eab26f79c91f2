//! Gemma 3 (`general.architecture = gemma3`): Google's small decoder-only
//! models, Gemma-3-270m first.
//!
//! Gemma 3 shares the skeleton of the llama family (RMS norms, grouped
//! query attention, a gated feed-forward block, NEOX rope) but differs in
//! enough places that it is its own block rather than more flags on
//! [`super::llama`]:
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
//! Weights, rope, attention and the preallocated [`KvCache`] are the
//! ones every family uses; sliding-window layers read only the
//! window's slice of the cache, so their attention cost stays bounded on long
//! prompts.

use candle_core::{Device, Tensor};

use super::{Embedding, Family, HParams, Loader, Rope, Weight, rms_norm};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::attention::attention;
use crate::model::kv_cache::KvCache;
use crate::tokenizer::TokenId;

/// Every `GLOBAL_EVERY`-th layer (index `% GLOBAL_EVERY == GLOBAL_EVERY - 1`)
/// attends to the whole context; the others use the sliding window. Gemma 3
/// files do not record the pattern; llama.cpp and transformers fix it at 6.
const GLOBAL_EVERY: usize = 6;

/// Rope base of the sliding-window layers (`rope_local_base_freq`), which
/// Gemma 3 files do not record either.
const LOCAL_ROPE_BASE: f64 = 10_000.0;

/// What Gemma 3 has beyond the [`HParams`] every family shares.
#[derive(Debug, Clone, PartialEq)]
struct Gemma3Params {
    /// Positions a sliding-window layer sees, its own included; `None` when
    /// the file has no window and every layer is global.
    sliding_window: Option<usize>,
    /// Factor applied to the queries before attention.
    attention_scale: f64,
    /// `final_logit_softcapping`, when the file sets one: logits become
    /// `cap · tanh(logits / cap)`.
    final_logit_softcap: Option<f64>,
}

impl Gemma3Params {
    fn from_gguf(gguf: &GgufFile, hp: &HParams) -> Result<Self> {
        let m = hp.meta(gguf);
        // Gemma 3 4B and larger stretch the global layers' rope linearly
        // (factor 8); that needs position-scaled tables this module does not
        // build yet, so refuse rather than run with wrong positions.
        if let Some(kind) = m.get("rope.scaling.type") {
            let factor = m
                .get("rope.scaling.factor")
                .and_then(|v| v.as_f64())
                .unwrap_or(1.0);
            if kind.as_str() != Some("none") && factor != 1.0 {
                return Err(m.error(
                    "rope.scaling.type",
                    format!(
                        "is {kind:?} with factor {factor}; rope scaling is not supported for gemma3 yet (Gemma-3-270m and 1B need none)"
                    ),
                ));
            }
        }
        let sliding_window = if m.has("attention.sliding_window") {
            let w = gguf.get_u64(&m.key("attention.sliding_window"))?;
            match usize::try_from(w) {
                Ok(0) => None,
                Ok(w) => Some(w),
                Err(_) => {
                    return Err(m.error("attention.sliding_window", format!("{w} is out of range")));
                }
            }
        } else {
            None
        };
        // llama.cpp (after gemma_pytorch): Gemma 3 27B scales queries by
        // 1/√(hidden/heads); every other size by 1/√head_dim.
        let query_pre_attn_scalar = if hp.layers == 62 {
            hp.hidden / hp.heads
        } else {
            hp.head_dim
        };
        let final_logit_softcap = match m.get("final_logit_softcapping") {
            None => None,
            Some(v) => match v.as_f64() {
                // Zero means no capping.
                Some(c) if c.is_finite() && c >= 0.0 => (c > 0.0).then_some(c),
                _ => {
                    return Err(m.error(
                        "final_logit_softcapping",
                        format!("{v:?} is not a non-negative number"),
                    ));
                }
            },
        };
        Ok(Self {
            sliding_window,
            attention_scale: 1.0 / (query_pre_attn_scalar as f64).sqrt(),
            final_logit_softcap,
        })
    }

    /// Whether layer `i` attends through the sliding window.
    fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && layer % GLOBAL_EVERY != GLOBAL_EVERY - 1
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

/// A loaded Gemma 3 model.
#[derive(Debug)]
pub(crate) struct Gemma3 {
    hp: HParams,
    extra: Gemma3Params,
    embed: Embedding,
    embed_scale: f64,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Weight,
    rope_global: Rope,
    rope_local: Rope,
    device: Device,
    /// Whether our own attention kernel runs.
    native: bool,
}

impl Gemma3 {
    /// Loads the weights `hp` describes from `gguf`, checking every tensor's
    /// shape.
    pub(crate) fn load(l: &Loader, hp: HParams) -> Result<Self> {
        let (gguf, device) = (l.gguf, l.device);
        let extra = Gemma3Params::from_gguf(gguf, &hp)?;
        let c = &hp;
        let q_dim = c.heads * c.head_dim;
        let k_dim = c.kv_heads * c.head_dim;
        let v_dim = c.kv_heads * c.value_dim;
        let o_dim = c.heads * c.value_dim;
        let embed = l.embedding(c)?;
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let n = |t: &str| format!("blk.{i}.{t}.weight");
            blocks.push(Block {
                sliding: extra.is_sliding(i),
                attn_norm: l.dense(&n("attn_norm"), c.hidden)?,
                q: l.weight(&n("attn_q"), q_dim, c.hidden)?,
                k: l.weight(&n("attn_k"), k_dim, c.hidden)?,
                v: l.weight(&n("attn_v"), v_dim, c.hidden)?,
                q_norm: l.dense(&n("attn_q_norm"), c.head_dim)?,
                k_norm: l.dense(&n("attn_k_norm"), c.head_dim)?,
                o: l.weight(&n("attn_output"), c.hidden, o_dim)?,
                post_attn_norm: l.dense(&n("post_attention_norm"), c.hidden)?,
                ffn_norm: l.dense(&n("ffn_norm"), c.hidden)?,
                gate: l.weight(&n("ffn_gate"), c.ffn, c.hidden)?,
                up: l.weight(&n("ffn_up"), c.ffn, c.hidden)?,
                down: l.weight(&n("ffn_down"), c.hidden, c.ffn)?,
                post_ffn_norm: l.dense(&n("post_ffw_norm"), c.hidden)?,
            });
        }
        let output_norm = l.dense("output_norm.weight", c.hidden)?;
        let output = l.output(c, &embed)?;
        let rope_global = Rope::new(c.head_dim, c.rope_base, device)?;
        let rope_local = Rope::new(c.head_dim, LOCAL_ROPE_BASE, device)?;
        Ok(Self {
            embed_scale: (c.hidden as f64).sqrt(),
            hp,
            extra,
            embed,
            blocks,
            output_norm,
            output,
            rope_global,
            rope_local,
            device: device.clone(),
            native: l.native,
        })
    }

    fn forward_chunk(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.hp;
        let eps = c.norm_eps;
        let seq = tokens.len();
        let pos = cache.len();
        let mut x = (self.embed.rows(tokens, &self.device)? * self.embed_scale)?;
        let global_rope = self.rope_global.at(pos, seq)?;
        let local_rope = self.rope_local.at(pos, seq)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let ((cos, sin), window) = if b.sliding {
                (&local_rope, self.extra.sliding_window)
            } else {
                (&global_rope, None)
            };
            let h = rms_norm(&x, &b.attn_norm, eps)?;
            // (seq, n · d) → per-head RMS norm → (n, seq, d) → rope.
            let project = |w: &Weight, norm: &Tensor, n: usize| -> Result<Tensor> {
                let t = w.forward(&h)?.reshape((seq, n, c.head_dim))?;
                let t = rms_norm(&t, norm, eps)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .unsqueeze(0)?;
                Ok(candle_nn::rotary_emb::rope(&t, cos, sin)?.squeeze(0)?)
            };
            let q = (project(&b.q, &b.q_norm, c.heads)? * self.extra.attention_scale)?;
            let k = project(&b.k, &b.k_norm, c.kv_heads)?;
            let v =
                b.v.forward(&h)?
                    .reshape((seq, c.kv_heads, c.value_dim))?
                    .transpose(0, 1)?
                    .contiguous()?;
            let (k_all, v_all) = cache.append(i, &k, &v)?;
            // The queries carry the attention scale already.
            let attn = attention(&q, &k_all, &v_all, c.kv_heads, 1.0, window, self.native)?
                .transpose(0, 1)?
                .reshape((seq, c.heads * c.value_dim))?;
            let attn = b.o.forward(&attn)?;
            x = (x + rms_norm(&attn, &b.post_attn_norm, eps)?)?;
            let h = rms_norm(&x, &b.ffn_norm, eps)?;
            let ff = (b.gate.forward(&h)?.gelu()? * b.up.forward(&h)?)?;
            let ff = b.down.forward(&ff)?;
            x = (x + rms_norm(&ff, &b.post_ffn_norm, eps)?)?;
        }
        cache.advance(tokens);
        let last = x.narrow(0, seq - 1, 1)?;
        let last = rms_norm(&last, &self.output_norm, eps)?;
        let mut logits = self.output.forward(&last)?.squeeze(0)?;
        if let Some(cap) = self.extra.final_logit_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        Ok(logits)
    }
}

impl Family for Gemma3 {
    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn forward_chunk(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Tensor> {
        Gemma3::forward_chunk(self, tokens, cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sixth_layer_is_global() {
        let extra = Gemma3Params {
            sliding_window: Some(512),
            attention_scale: 1.0 / 16.0,
            final_logit_softcap: None,
        };
        let global: Vec<usize> = (0..18).filter(|&i| !extra.is_sliding(i)).collect();
        assert_eq!(global, [5, 11, 17]);
        let no_window = Gemma3Params {
            sliding_window: None,
            ..extra
        };
        assert!((0..18).all(|i| !no_window.is_sliding(i)));
    }
}
