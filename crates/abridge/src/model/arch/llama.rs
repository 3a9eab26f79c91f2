//! llama, mistral and qwen2: the plain decoder.
//!
//! These checkpoints differ in data, not in structure: the rotary
//! embedding's pairing of dimensions, biases on the attention projections,
//! norm epsilon and rope base. The biases are found by the loader, the rest
//! is in [`HParams`]; the block below is written once for all three.

use candle_core::{Device, Tensor};

use super::{Architecture, Embedding, Family, HParams, Linear, Loader, Rope, Weight, rms_norm};
use crate::error::Result;
use crate::kernels::attention::attention;
use crate::model::kv_cache::KvCache;
use crate::tokenizer::TokenId;

/// How the rotary embedding pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RopeStyle {
    /// Adjacent pairs `(x0, x1), (x2, x3)…`: llama.cpp's "normal" rope, used
    /// by llama and mistral GGUFs (whose Q/K weights are permuted for it).
    Interleaved,
    /// Halves `(x0, x[d/2])…`: GPT-NeoX style, used by qwen2.
    Neox,
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

/// A loaded llama-family model.
#[derive(Debug)]
pub(crate) struct Llama {
    hp: HParams,
    rope_style: RopeStyle,
    embed: Embedding,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Weight,
    rope: Rope,
    device: Device,
    /// Whether our own attention kernel runs.
    native: bool,
}

impl Llama {
    /// Loads the weights `hp` describes from `gguf`, checking every tensor's
    /// shape.
    pub(crate) fn load(l: &Loader, hp: HParams) -> Result<Self> {
        let (gguf, device) = (l.gguf, l.device);
        let c = &hp;
        // Values share the keys' head size in these checkpoints; the cache is
        // sized by `value_dim`, so a different one must not get that far.
        if c.value_dim != c.head_dim {
            return Err(hp.meta(gguf).error(
                "attention.value_length",
                format!("{} differs from the key length {}", c.value_dim, c.head_dim),
            ));
        }
        let q_dim = c.heads * c.head_dim;
        let kv_dim = c.kv_heads * c.head_dim;
        let embed = l.embedding(c)?;
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: l.dense(&format!("{p}.attn_norm.weight"), c.hidden)?,
                q: l.linear(&format!("{p}.attn_q"), q_dim, c.hidden)?,
                k: l.linear(&format!("{p}.attn_k"), kv_dim, c.hidden)?,
                v: l.linear(&format!("{p}.attn_v"), kv_dim, c.hidden)?,
                o: l.linear(&format!("{p}.attn_output"), c.hidden, q_dim)?,
                ffn_norm: l.dense(&format!("{p}.ffn_norm.weight"), c.hidden)?,
                gate: l.linear(&format!("{p}.ffn_gate"), c.ffn, c.hidden)?,
                up: l.linear(&format!("{p}.ffn_up"), c.ffn, c.hidden)?,
                down: l.linear(&format!("{p}.ffn_down"), c.hidden, c.ffn)?,
            });
        }
        let output_norm = l.dense("output_norm.weight", c.hidden)?;
        let output = l.output(c, &embed)?;
        let rope = Rope::new(c.head_dim, c.rope_base, device)?;
        let rope_style = match c.architecture {
            Architecture::Qwen2 => RopeStyle::Neox,
            _ => RopeStyle::Interleaved,
        };
        Ok(Self {
            hp,
            rope_style,
            embed,
            blocks,
            output_norm,
            output,
            rope,
            device: device.clone(),
            native: l.native,
        })
    }

    fn forward_chunk(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.hp;
        let seq = tokens.len();
        let pos = cache.len();
        let mut x = self.embed.rows(tokens, &self.device)?;
        let (cos, sin) = self.rope.at(pos, seq)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        for (i, b) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &b.attn_norm, c.norm_eps)?;
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
            let attn = attention(&q, &k_all, &v_all, c.kv_heads, scale, None, self.native)?
                .transpose(0, 1)?
                .reshape((seq, c.heads * c.head_dim))?;
            x = (x + b.o.forward(&attn)?)?;
            let h = rms_norm(&x, &b.ffn_norm, c.norm_eps)?;
            let ff = Linear::gated(&b.gate, &b.up, &h)?;
            x = (x + b.down.forward(&ff)?)?;
        }
        cache.advance(tokens);
        let last = x.narrow(0, seq - 1, 1)?;
        let last = rms_norm(&last, &self.output_norm, c.norm_eps)?;
        Ok(self.output.forward(&last)?.squeeze(0)?)
    }

    fn rope(&self, x: Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x = x.unsqueeze(0)?;
        let y = match self.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
            RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, cos, sin)?,
        };
        Ok(y.squeeze(0)?)
    }
}

impl Family for Llama {
    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn forward_chunk(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Tensor> {
        Llama::forward_chunk(self, tokens, cache)
    }
}
