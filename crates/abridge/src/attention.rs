//! Attention over the key/value cache, in blocks of query rows so the scores
//! held at once stay small however long the prompt.

use candle_core::Tensor;

use crate::error::Result;

/// Query rows whose attention scores are held at once: bounds the scores to
/// `heads × ATTENTION_ROWS × context` floats (56 MB for Qwen2.5-0.5B at 4,000
/// tokens) instead of a whole prompt chunk's.
const ATTENTION_ROWS: usize = 128;

/// Scaled dot-product attention of `q` (`heads, seq, d`) over the cached keys
/// and values (`kv_heads, total, d`), with `mask` (`seq, total`) for a
/// prompt; returns `heads, seq, d`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    kv_heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let (heads, seq, d) = q.dims3()?;
    let total = k.dim(1)?;
    let group = heads / kv_heads;
    let k_t = k.t()?;
    let mut outputs = Vec::with_capacity(seq.div_ceil(ATTENTION_ROWS));
    for start in (0..seq).step_by(ATTENTION_ROWS) {
        let rows = ATTENTION_ROWS.min(seq - start);
        // Query heads that share a key/value head are stacked so one batched
        // matmul per key/value head covers them all.
        let q = q
            .narrow(1, start, rows)?
            .contiguous()?
            .reshape((kv_heads, group * rows, d))?;
        let mut scores = (q.matmul(&k_t)? * scale)?;
        if let Some(mask) = mask {
            scores = scores
                .reshape((kv_heads, group, rows, total))?
                .broadcast_add(&mask.narrow(0, start, rows)?)?
                .reshape((kv_heads, group * rows, total))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outputs.push(probs.matmul(v)?.reshape((heads, rows, d))?);
    }
    Ok(if outputs.len() == 1 {
        outputs.pop().expect("one block")
    } else {
        Tensor::cat(&outputs, 1)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn blocked_attention_equals_attention_in_one_block() {
        let dev = Device::Cpu;
        let (heads, kv_heads, seq, total, d) = (4, 2, 300, 310, 16);
        let q = Tensor::randn(0f32, 1.0, (heads, seq, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (kv_heads, total, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (kv_heads, total, d), &dev).unwrap();
        let mask: Vec<f32> = (0..seq)
            .flat_map(|i| (0..total).map(move |j| if j > 10 + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (seq, total), &dev).unwrap();
        let blocked = attention(&q, &k, &v, Some(&mask), kv_heads, 0.25).unwrap();
        // The same computation written out directly, all rows at once.
        let group = heads / kv_heads;
        let scores = (q
            .reshape((kv_heads, group * seq, d))
            .unwrap()
            .matmul(&k.t().unwrap())
            .unwrap()
            * 0.25)
            .unwrap()
            .reshape((kv_heads, group, seq, total))
            .unwrap()
            .broadcast_add(&mask)
            .unwrap()
            .reshape((kv_heads, group * seq, total))
            .unwrap();
        let whole = candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&v)
            .unwrap()
            .reshape((heads, seq, d))
            .unwrap();
        let diff = (blocked - whole)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "blocks change the result by {diff}");
    }
}
