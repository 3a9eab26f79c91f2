//! Attention of the newest positions over the key/value cache.
//!
//! Two paths compute the same thing:
//!
//! - a prompt chunk (many query rows) goes through batched matmuls, in blocks
//!   of query rows so the scores held at once stay small however long the
//!   prompt;
//! - generation on CPU (a few query rows) goes through our own kernel, which
//!   reads each cached key and value once per step, spreads the keys over the
//!   worker threads and merges their partial softmaxes. The matmul path wrote
//!   the scores out, scaled, exponentiated and re-read them in separate passes
//!   with scalar `exp`, and faulted in fresh pages for each: after a
//!   6,000-token prompt that took more than half of every step (issue 4).
//!
//! Query rows are the last `seq` positions of the cache: row `i` sits at
//! absolute position `p = total - seq + i` and sees keys `first..=p`, where
//! `first` is 0, or `p + 1 - window` for sliding-window layers.

use std::ops::Range;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use half::f16;

use crate::error::Result;

/// Query rows whose attention scores are held at once on the matmul path:
/// bounds the scores to `heads × ATTENTION_ROWS × context` floats (56 MB for
/// Qwen2.5-0.5B at 4,000 tokens) instead of a whole prompt chunk's.
const ATTENTION_ROWS: usize = 128;

/// Up to this many query rows, CPU attention runs on the kernel below: past
/// it, batched matmuls use the cores better than one dot product per key.
const KERNEL_ROWS: usize = 8;

/// Keys one task of the kernel covers: its keys and values (16 KB each at
/// f16 and head size 64) stay in L1/L2 while every query head of the group
/// reads them.
const KEYS_PER_TASK: usize = 128;

/// The first key a query at absolute position `p` sees.
fn first_visible(p: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (p + 1).saturating_sub(w))
}

/// Scaled dot-product attention of `q` (`heads, seq, dk`, f32) over the cached
/// keys (`kv_heads, total, dk`) and values (`kv_heads, total, dv`), of any
/// float type, with the causal rule above; returns `heads, seq, dv` in f32.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_heads: usize,
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    let seq = q.dim(1)?;
    if q.device().is_cpu() && seq <= KERNEL_ROWS && k.dtype() == DType::F16 {
        let op = CachedAttention {
            kv_heads,
            scale: scale as f32,
            window,
        };
        return Ok(q.contiguous()?.apply_op3_no_bwd(k, v, &op)?);
    }
    blocked(q, k, v, kv_heads, scale, window)
}

/// The matmul path.
fn blocked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_heads: usize,
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    let (heads, seq, d) = q.dims3()?;
    let (total, dv) = (k.dim(1)?, v.dim(2)?);
    let pos = total - seq;
    let group = heads / kv_heads;
    // Keys no row of this chunk can see (outside every row's window) are
    // never converted or multiplied.
    let chunk_first = first_visible(pos, window);
    let k = k
        .narrow(1, chunk_first, total - chunk_first)?
        .to_dtype(DType::F32)?;
    let v = v
        .narrow(1, chunk_first, total - chunk_first)?
        .to_dtype(DType::F32)?;
    let mut outputs = Vec::with_capacity(seq.div_ceil(ATTENTION_ROWS));
    for start in (0..seq).step_by(ATTENTION_ROWS) {
        let rows = ATTENTION_ROWS.min(seq - start);
        let first = first_visible(pos + start, window);
        let end = pos + start + rows;
        let k = k.narrow(1, first - chunk_first, end - first)?;
        let v = v.narrow(1, first - chunk_first, end - first)?;
        // Query heads that share a key/value head are stacked so one batched
        // matmul per key/value head covers them all.
        let q = q
            .narrow(1, start, rows)?
            .contiguous()?
            .reshape((kv_heads, group * rows, d))?;
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if rows > 1 {
            let mask = visibility_mask(pos + start, rows, first..end, window, q.device())?;
            scores = scores
                .reshape((kv_heads, group, rows, end - first))?
                .broadcast_add(&mask)?
                .reshape((kv_heads, group * rows, end - first))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outputs.push(probs.matmul(&v)?.reshape((heads, rows, dv))?);
    }
    Ok(if outputs.len() == 1 {
        outputs.pop().expect("one block")
    } else {
        Tensor::cat(&outputs, 1)?
    })
}

/// `(rows, keys.len())`: 0 where the query at absolute position `first_row +
/// i` sees key `keys.start + j`, `-inf` elsewhere.
fn visibility_mask(
    first_row: usize,
    rows: usize,
    keys: Range<usize>,
    window: Option<usize>,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let width = keys.len();
    let mask: Vec<f32> = (first_row..first_row + rows)
        .flat_map(|p| {
            let seen = first_visible(p, window)..p + 1;
            keys.clone().map(move |j| {
                if seen.contains(&j) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (rows, width), device)?)
}

/// The generation kernel as a candle op over `(q, k, v)`.
struct CachedAttention {
    kv_heads: usize,
    scale: f32,
    window: Option<usize>,
}

/// A query row's softmax over a subset of its keys: the running maximum, the
/// sum of `exp(score - max)` and the values weighted by those, which merge
/// exactly into the softmax over all keys.
const PARTIAL_EXTRA: usize = 2;

/// Where the kernel finds one head's cached rows in a storage buffer.
struct CacheView<'a> {
    data: &'a [f16],
    offset: usize,
    head_stride: usize,
    d: usize,
}

impl<'a> CacheView<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout, what: &str) -> candle_core::Result<Self> {
        let CpuStorage::F16(data) = storage else {
            candle_core::bail!("the attention kernel reads an f16 {what} cache")
        };
        let stride = layout.stride();
        let dims = layout.shape().dims();
        if dims.len() != 3 || stride[2] != 1 || stride[1] != dims[2] {
            candle_core::bail!("the {what} cache must have contiguous rows")
        }
        Ok(Self {
            data,
            offset: layout.start_offset(),
            head_stride: stride[0],
            d: dims[2],
        })
    }

    /// Rows `keys` of head `head`, one after the other.
    fn rows(&self, head: usize, keys: Range<usize>) -> &'a [f16] {
        let at = self.offset + head * self.head_stride;
        &self.data[at + keys.start * self.d..at + keys.end * self.d]
    }
}

impl CustomOp3 for CachedAttention {
    fn name(&self) -> &'static str {
        "cached-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(q) = qs else {
            candle_core::bail!("attention queries must be f32")
        };
        let Some((q_start, q_end)) = ql.contiguous_offsets() else {
            candle_core::bail!("attention queries must be contiguous")
        };
        let q = &q[q_start..q_end];
        let (heads, seq, d) = ql.shape().dims3()?;
        let keys = CacheView::new(ks, kl, "key")?;
        let values = CacheView::new(vs, vl, "value")?;
        let (kv_heads, total, kd) = kl.shape().dims3()?;
        let (v_heads, v_total, dv) = vl.shape().dims3()?;
        if kv_heads != self.kv_heads
            || heads % kv_heads != 0
            || kd != d
            || (v_heads, v_total) != (kv_heads, total)
            || total < seq
        {
            candle_core::bail!(
                "attention shapes disagree: q {:?}, k {:?}, v {:?}",
                ql.shape(),
                kl.shape(),
                vl.shape()
            )
        }
        let out = self.run(q, (heads, seq, d), &keys, &values, total);
        Ok((CpuStorage::F32(out), Shape::from((heads, seq, dv))))
    }
}

impl CachedAttention {
    fn run(
        &self,
        q: &[f32],
        (heads, seq, d): (usize, usize, usize),
        keys: &CacheView,
        values: &CacheView,
        total: usize,
    ) -> Vec<f32> {
        let pos = total - seq;
        let group = heads / self.kv_heads;
        let dv = values.d;
        let first = first_visible(pos, self.window);
        let splits: Vec<Range<usize>> = (first..total)
            .step_by(KEYS_PER_TASK)
            .map(|s| s..total.min(s + KEYS_PER_TASK))
            .collect();
        let tasks = self.kv_heads * splits.len();
        // Each task's partial softmaxes: for every query row it serves, the
        // row's max, sum and weighted values.
        let per_task = group * seq * (dv + PARTIAL_EXTRA);
        let mut partials = vec![0f32; tasks * per_task];
        let slots = partials
            .chunks_mut(per_task)
            .map(Mutex::new)
            .collect::<Vec<_>>();
        let simd = Simd::detect();
        candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
            let mut scores = [0f32; KEYS_PER_TASK];
            for task in range {
                let kv = task / splits.len();
                let split = splits[task % splits.len()].clone();
                let mut slot = slots[task].lock().unwrap_or_else(|e| e.into_inner());
                for (i, partial) in slot.chunks_exact_mut(dv + PARTIAL_EXTRA).enumerate() {
                    let (g, row) = (i / seq, i % seq);
                    let p = pos + row;
                    let seen = split.start.max(first_visible(p, self.window))..split.end.min(p + 1);
                    let (stats, acc) = partial.split_at_mut(PARTIAL_EXTRA);
                    if seen.is_empty() {
                        stats[0] = f32::NEG_INFINITY;
                        continue;
                    }
                    let head = kv * group + g;
                    let query = &q[(head * seq + row) * d..][..d];
                    let scores = &mut scores[..seen.len()];
                    simd.scores(query, keys.rows(kv, seen.clone()), self.scale, scores);
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    stats[0] = max;
                    stats[1] = simd.exp_shifted(scores, max);
                    simd.weighted_sum(scores, values.rows(kv, seen), acc);
                }
            }
        });
        drop(slots);
        merge(&partials, tasks / self.kv_heads, (heads, seq, dv), group)
    }
}

/// Combines every task's partial softmaxes into each row's attention output
/// (`heads, seq, d` for values of size `d`).
fn merge(
    partials: &[f32],
    splits: usize,
    (heads, seq, d): (usize, usize, usize),
    group: usize,
) -> Vec<f32> {
    let width = d + PARTIAL_EXTRA;
    let per_task = group * seq * width;
    let mut out = vec![0f32; heads * seq * d];
    for (h, head_out) in out.chunks_exact_mut(seq * d).enumerate() {
        let (kv, g) = (h / group, h % group);
        for (row, o) in head_out.chunks_exact_mut(d).enumerate() {
            let part = |s: usize| {
                let at = (kv * splits + s) * per_task + (g * seq + row) * width;
                &partials[at..at + width]
            };
            let max = (0..splits)
                .map(|s| part(s)[0])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for s in 0..splits {
                let p = part(s);
                if p[0] == f32::NEG_INFINITY {
                    continue;
                }
                let w = (p[0] - max).exp();
                sum += w * p[1];
                for (o, a) in o.iter_mut().zip(&p[PARTIAL_EXTRA..]) {
                    *o += w * a;
                }
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|x| *x *= inv);
        }
    }
    out
}

/// The instruction set the kernel's inner loops use, detected once per call.
#[derive(Clone, Copy)]
enum Simd {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Simd {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Self::Avx2;
        }
        Self::Portable
    }

    /// `out[j] = scale · query · keys[j]`.
    fn scores(self, query: &[f32], keys: &[f16], scale: f32, out: &mut [f32]) {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { x86::scores(query, keys, scale, out) },
            Self::Portable => {
                for (o, key) in out.iter_mut().zip(keys.chunks_exact(query.len())) {
                    *o = scale
                        * query
                            .iter()
                            .zip(key)
                            .map(|(a, b)| a * b.to_f32())
                            .sum::<f32>();
                }
            }
        }
    }

    /// `s = exp(s - max)` in place; returns the sum.
    fn exp_shifted(self, s: &mut [f32], max: f32) -> f32 {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { x86::exp_shifted(s, max) },
            Self::Portable => s
                .iter_mut()
                .map(|x| {
                    *x = (*x - max).exp();
                    *x
                })
                .sum(),
        }
    }

    /// `acc = Σ_j weights[j] · values[j]`.
    fn weighted_sum(self, weights: &[f32], values: &[f16], acc: &mut [f32]) {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { x86::weighted_sum(weights, values, acc) },
            Self::Portable => {
                acc.fill(0.0);
                for (w, row) in weights.iter().zip(values.chunks_exact(acc.len())) {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += w * v.to_f32();
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    /// Eight f16 at `p`, widened.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn horizontal_sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores(query: &[f32], keys: &[f16], scale: f32, out: &mut [f32]) {
        let d = query.len();
        let wide = d - d % 8;
        for (o, key) in out.iter_mut().zip(keys.chunks_exact(d)) {
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            // SAFETY: i + 16 <= wide <= d for both slices.
            unsafe {
                while i + 16 <= wide {
                    let q0 = _mm256_loadu_ps(query.as_ptr().add(i));
                    let q1 = _mm256_loadu_ps(query.as_ptr().add(i + 8));
                    a0 = _mm256_fmadd_ps(q0, load_f16(key.as_ptr().add(i)), a0);
                    a1 = _mm256_fmadd_ps(q1, load_f16(key.as_ptr().add(i + 8)), a1);
                    i += 16;
                }
                if i < wide {
                    let q0 = _mm256_loadu_ps(query.as_ptr().add(i));
                    a0 = _mm256_fmadd_ps(q0, load_f16(key.as_ptr().add(i)), a0);
                }
            }
            let mut dot = horizontal_sum(_mm256_add_ps(a0, a1));
            for j in wide..d {
                dot += query[j] * key[j].to_f32();
            }
            *o = scale * dot;
        }
    }

    /// `exp(x)` for eight lanes: `2^n · e^r` with `n = round(x / ln 2)` and
    /// `|r| <= ln 2 / 2`, `e^r` by its degree-6 Taylor polynomial (relative
    /// error about 1e-7, as good as f32 holds). Inputs below -87 give
    /// `e^-87`, never a denormal.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(88.0),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 split so that n · LN2_HI is exact.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(exponent)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn exp_shifted(s: &mut [f32], max: f32) -> f32 {
        let shift = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        let mut chunks = s.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: c holds exactly eight floats.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), shift));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
                sum = _mm256_add_ps(sum, e);
            }
        }
        let mut total = horizontal_sum(sum);
        for x in chunks.into_remainder() {
            *x = (*x - max).exp();
            total += *x;
        }
        total
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum(weights: &[f32], values: &[f16], acc: &mut [f32]) {
        let d = acc.len();
        let wide = d - d % 8;
        // Thirty-two output lanes at a time in four registers, over all rows.
        let mut c = 0;
        while c < wide {
            let lanes = (wide - c).min(32) / 8;
            let mut a = [_mm256_setzero_ps(); 4];
            for (w, row) in weights.iter().zip(values.chunks_exact(d)) {
                let w = _mm256_set1_ps(*w);
                for (l, a) in a.iter_mut().enumerate().take(lanes) {
                    // SAFETY: c + 8 · l + 8 <= wide <= d.
                    *a = _mm256_fmadd_ps(w, unsafe { load_f16(row.as_ptr().add(c + 8 * l)) }, *a);
                }
            }
            for (l, a) in a.iter().enumerate().take(lanes) {
                // SAFETY: as above, within acc.
                unsafe { _mm256_storeu_ps(acc.as_mut_ptr().add(c + 8 * l), *a) };
            }
            c += 8 * lanes;
        }
        for (j, a) in acc.iter_mut().enumerate().skip(wide) {
            *a = weights
                .iter()
                .zip(values.chunks_exact(d))
                .map(|(w, row)| w * row[j].to_f32())
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(shape: (usize, usize, usize), seed: u64) -> Tensor {
        // Scores of several units, like a trained model's, so the softmax is
        // peaked and a merge error would show.
        let dev = Device::Cpu;
        let n = shape.0 * shape.1 * shape.2;
        let mut state = seed;
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
            })
            .collect();
        Tensor::from_vec(data, shape, &dev).unwrap()
    }

    /// Attention written out directly over all rows at once with a full mask.
    fn reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kv_heads: usize,
        window: Option<usize>,
    ) -> Tensor {
        let (heads, seq, d) = q.dims3().unwrap();
        let total = k.dim(1).unwrap();
        let group = heads / kv_heads;
        let k = k.to_dtype(DType::F32).unwrap();
        let v = v.to_dtype(DType::F32).unwrap();
        let mask = visibility_mask(total - seq, seq, 0..total, window, &Device::Cpu).unwrap();
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
        candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&v)
            .unwrap()
            .reshape((heads, seq, d))
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A cache view like the model's: `total` filled rows of a longer buffer.
    fn cache(kv_heads: usize, total: usize, d: usize, seed: u64) -> Tensor {
        random((kv_heads, total + 37, d), seed)
            .to_dtype(DType::F16)
            .unwrap()
            .narrow(1, 0, total)
            .unwrap()
    }

    #[test]
    fn both_paths_equal_attention_written_out() {
        for (seq, total, d, window) in [
            (1, 1, 64, None),
            (1, 700, 64, None),
            (3, 300, 64, None),
            (8, 520, 48, None),
            (1, 700, 20, Some(100)),
            (5, 400, 64, Some(130)),
            (300, 310, 16, None),
            (300, 310, 16, Some(50)),
        ] {
            let (heads, kv_heads) = (6, 2);
            let q = random((heads, seq, d), 1);
            let k = cache(kv_heads, total, d, 2);
            let v = cache(kv_heads, total, d, 3);
            let want = reference(&q, &k, &v, kv_heads, window);
            let fast = attention(&q, &k, &v, kv_heads, 0.25, window).unwrap();
            let slow = blocked(&q, &k, &v, kv_heads, 0.25, window).unwrap();
            let case = format!("seq {seq}, total {total}, d {d}, window {window:?}");
            assert!(
                max_diff(&fast, &want) < 1e-4,
                "{case}: {}",
                max_diff(&fast, &want)
            );
            assert!(
                max_diff(&slow, &want) < 1e-4,
                "{case}: {}",
                max_diff(&slow, &want)
            );
        }
    }

    #[test]
    fn portable_kernel_equals_the_detected_one() {
        let (heads, kv_heads, seq, total, d) = (4, 1, 2, 333, 40);
        let q = random((heads, seq, d), 4);
        let k = cache(kv_heads, total, d, 5);
        let v = cache(kv_heads, total, d, 6);
        let op = CachedAttention {
            kv_heads,
            scale: 0.25,
            window: None,
        };
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (candle_core::Storage::Cpu(ks), candle_core::Storage::Cpu(vs)) = (&*ks, &*vs) else {
            panic!("cpu tensors")
        };
        let keys = CacheView::new(ks, kl, "key").unwrap();
        let values = CacheView::new(vs, vl, "value").unwrap();
        let q = q.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let detected = op.run(&q, (heads, seq, d), &keys, &values, total);
        let mut portable = detected.clone();
        portable.fill(0.0);
        // Run the portable loops directly on the same data.
        let group = heads / kv_heads;
        for h in 0..heads {
            for row in 0..seq {
                let p = total - seq + row;
                let query = &q[(h * seq + row) * d..][..d];
                let mut s = vec![0f32; p + 1];
                Simd::Portable.scores(query, keys.rows(h / group, 0..p + 1), 0.25, &mut s);
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum = Simd::Portable.exp_shifted(&mut s, max);
                let out = &mut portable[(h * seq + row) * d..][..d];
                Simd::Portable.weighted_sum(&s, values.rows(h / group, 0..p + 1), out);
                out.iter_mut().for_each(|x| *x /= sum);
            }
        }
        let diff = detected
            .iter()
            .zip(&portable)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_as_accurate_as_f32_allows() {
        if !matches!(Simd::detect(), Simd::Avx2) {
            return;
        }
        let mut xs: Vec<f32> = (0..=2000).map(|i| -86.0 + i as f32 * 0.0435).collect();
        let want: Vec<f32> = xs.iter().map(|x| x.exp()).collect();
        // SAFETY: detected above.
        let sum = unsafe { x86::exp_shifted(&mut xs, 0.0) };
        for (got, want) in xs.iter().zip(&want) {
            assert!((got - want).abs() <= 4e-7 * want, "{got} vs {want}");
        }
        let want_sum: f32 = want.iter().sum();
        assert!((sum - want_sum).abs() <= 1e-5 * want_sum);
    }

    #[test]
    fn mask_lets_each_query_see_its_past_only() {
        let m = visibility_mask(3, 2, 0..5, None, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0], [0.0, 0.0, 0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(m[1], [0.0; 5]);
    }

    #[test]
    fn sliding_window_hides_the_distant_past() {
        // Rows at positions 4..7 over keys 2..7 with a window of 3.
        let m = visibility_mask(4, 3, 2..7, Some(3), &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m[0], [0.0, 0.0, 0.0, inf, inf]);
        assert_eq!(m[1], [inf, 0.0, 0.0, 0.0, inf]);
        assert_eq!(m[2], [inf, inf, 0.0, 0.0, 0.0]);
    }
}
