//! Attention of the newest positions over the key/value cache.
//!
//! On CPU, over the f16 cache, our own kernels run:
//!
//! - generation (a few query rows) spreads each row's keys over the worker
//!   threads, reads each cached key and value once per step and merges the
//!   threads' partial softmaxes. The matmul path wrote the scores out,
//!   scaled, exponentiated and re-read them in separate passes with scalar
//!   `exp`, and faulted in fresh pages for each: after a 6,000-token prompt
//!   that took more than half of every step (issue 4);
//! - a prompt chunk (many query rows) goes through `prompt`'s tiles, which
//!   keep the scores of sixteen positions at a time in the core's caches.
//!
//! Elsewhere (another device, another cache type, or the generic kernels
//! asked for) batched matmuls compute the same thing, in blocks of query rows
//! so the scores held at once stay small however long the prompt.
//!
//! Query rows are the last `seq` positions of the cache: row `i` sits at
//! absolute position `p = total - seq + i` and sees keys `first..=p`, where
//! `first` is 0, or `p + 1 - window` for sliding-window layers.

use std::ops::Range;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

#[cfg(target_arch = "x86_64")]
use super::simd::SimdLevel;
use crate::error::Result;

mod prompt;

/// Query rows whose attention scores are held at once on the matmul path:
/// bounds the scores to `heads × ATTENTION_ROWS × context` floats (7 MB for
/// Qwen2.5-0.5B at 4,000 tokens) instead of a whole prompt chunk's. 128 rows
/// put the seed article's peak memory 46 MB higher, at the same speed.
const ATTENTION_ROWS: usize = 32;

/// Up to this many query rows, CPU attention splits each row's keys over the
/// threads (generation); past it, threads take blocks of rows (`prompt`).
const KERNEL_ROWS: usize = 8;

/// Keys one task of the kernel covers: enough for the partial results that
/// tasks hand to the merge to stay few.
const KEYS_PER_TASK: usize = 512;

/// Keys a task reads at a time: their values widened to f32 (8 KB at head
/// size 64) and their scores stay in L1 while every query head of the group
/// uses them.
const KEYS_PER_BLOCK: usize = 32;

/// How far ahead of the keys being read the kernel asks for the next ones
/// (into L2): the hardware prefetcher stops at each 4 KB page, 32 keys here,
/// and alone left generation waiting on the cache's memory. Farther ahead
/// measured slower.
const PREFETCH_KEYS: usize = 64;

/// The first key a query at absolute position `p` sees.
fn first_visible(p: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (p + 1).saturating_sub(w))
}

/// Scaled dot-product attention of `q` (`heads, seq, dk`, f32) over the cached
/// keys (`kv_heads, total, dk`) and values (`kv_heads, total, dv`), of any
/// float type, with the causal rule above; returns `heads, seq, dv` in f32.
/// `native`: our CPU kernel may run (the caller checked the device); else
/// candle's device-generic matmuls always do.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_heads: usize,
    scale: f64,
    window: Option<usize>,
    native: bool,
) -> Result<Tensor> {
    if native && q.device().is_cpu() && k.dtype() == DType::F16 {
        let op = CachedAttention {
            kv_heads,
            scale: scale as f32,
            window,
        };
        return Ok(q.contiguous()?.apply_op3_no_bwd(k, v, &op)?);
    }
    blocked(q, k, v, kv_heads, scale, window)
}

/// The matmul path, for every device and cache type.
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
        // Scaling the queries rather than the scores saves a scores-sized
        // tensor at the peak.
        let q = (q.narrow(1, start, rows)?.contiguous()? * scale)?.reshape((
            kv_heads,
            group * rows,
            d,
        ))?;
        let mut scores = q.matmul(&k.t()?)?;
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

/// The CPU kernels as a candle op over `(q, k, v)`.
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
        let simd = Simd::detect(d, dv);
        let out = if seq <= KERNEL_ROWS {
            self.run(simd, q, (heads, seq, d), &keys, &values, total)
        } else {
            self.prompt(simd, q, (heads, seq, d), &keys, &values, total)
        };
        Ok((CpuStorage::F32(out), Shape::from((heads, seq, dv))))
    }
}

impl CachedAttention {
    /// The generation kernel: a few query rows, their keys split over the
    /// threads.
    fn run(
        &self,
        simd: Simd,
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
        crate::kernels::pool::run(tasks, |range| {
            let n_q = group * seq;
            let mut scores = vec![0f32; n_q * KEYS_PER_BLOCK];
            let mut scratch = vec![0f32; n_q * KEYS_PER_BLOCK * 8];
            // A block's values widened once, then read by every query head
            // of the group from L1.
            let mut v32 = vec![0f32; KEYS_PER_BLOCK * dv];
            let mut queries = Vec::with_capacity(n_q);
            for task in range {
                let kv = task / splits.len();
                let split = splits[task % splits.len()].clone();
                // Query vector i is head kv · group + i / seq at row i % seq.
                queries.clear();
                queries.extend((0..n_q).map(|i| {
                    let head = kv * group + i / seq;
                    &q[(head * seq + i % seq) * d..][..d]
                }));
                let mut slot = slots[task].lock().unwrap_or_else(|e| e.into_inner());
                for partial in slot.chunks_exact_mut(dv + PARTIAL_EXTRA) {
                    partial.fill(0.0);
                    partial[0] = f32::NEG_INFINITY;
                }
                for start in split.clone().step_by(KEYS_PER_BLOCK) {
                    let block = start..split.end.min(start + KEYS_PER_BLOCK);
                    let n = block.len();
                    let ahead = block.end..total.min(block.end + PREFETCH_KEYS);
                    simd.prefetch(keys.rows(kv, ahead.clone()));
                    simd.prefetch(values.rows(kv, ahead));
                    let scores = &mut scores[..n_q * n];
                    let keys = keys.rows(kv, block.clone());
                    simd.scores(&queries, keys, self.scale, scores, &mut scratch);
                    let v32 = &mut v32[..n * dv];
                    simd.widen(values.rows(kv, block.clone()), v32);
                    let partials = slot.chunks_exact_mut(dv + PARTIAL_EXTRA);
                    for (i, (partial, scores)) in
                        partials.zip(scores.chunks_exact_mut(n)).enumerate()
                    {
                        let p = pos + i % seq;
                        let seen =
                            block.start.max(first_visible(p, self.window))..block.end.min(p + 1);
                        if seen.is_empty() {
                            continue;
                        }
                        let local = seen.start - block.start..seen.end - block.start;
                        let scores = &mut scores[local.clone()];
                        let (stats, acc) = partial.split_at_mut(PARTIAL_EXTRA);
                        // Online softmax: rescale what the earlier blocks
                        // summed when this block raises the maximum.
                        let max = scores.iter().copied().fold(stats[0], f32::max);
                        if max > stats[0] {
                            let shrink = (stats[0] - max).exp();
                            stats[1] *= shrink;
                            acc.iter_mut().for_each(|a| *a *= shrink);
                            stats[0] = max;
                        }
                        stats[1] += simd.exp_shifted(scores, max);
                        let values = &v32[local.start * dv..local.end * dv];
                        simd.add_weighted_sum(scores, values, acc);
                    }
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

/// The inner loops this call's head sizes allow on this CPU.
#[derive(Clone, Copy)]
enum Simd {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2, and AVX-512 where a kernel has a path for it (the prompt's
    /// tiles).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Simd {
    /// The fastest kernels for heads of `d`-sized keys and `dv`-sized values
    /// (the vector ones take whole registers of eight floats).
    fn detect(d: usize, dv: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if d.is_multiple_of(8) && dv.is_multiple_of(8) {
            match SimdLevel::get() {
                SimdLevel::Vnni => return Self::Avx512,
                SimdLevel::Avx2 => return Self::Avx2,
                SimdLevel::Portable => {}
            }
        }
        let _ = (d, dv);
        Self::Portable
    }

    /// Asks for `rows` to be brought into cache while other work runs.
    fn prefetch(self, rows: &[f16]) {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 | Self::Avx512 => unsafe { x86::prefetch(rows) },
            Self::Portable => {}
        }
    }

    /// `out = f32(half)`.
    fn widen(self, half: &[f16], out: &mut [f32]) {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 | Self::Avx512 => unsafe { x86::widen(half, out) },
            Self::Portable => half.convert_to_f32_slice(out),
        }
    }

    /// `out[i · n + j] = scale · queries[i] · keys[j]` for the `n` keys;
    /// `scratch` holds eight floats per query and key.
    fn scores(
        self,
        queries: &[&[f32]],
        keys: &[f16],
        scale: f32,
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 | Self::Avx512 => unsafe { x86::scores(queries, keys, scale, out, scratch) },
            Self::Portable => {
                let d = queries[0].len();
                let rows = out.chunks_exact_mut(keys.len() / d);
                for (query, out) in queries.iter().zip(rows) {
                    for (o, key) in out.iter_mut().zip(keys.chunks_exact(d)) {
                        let dot: f32 = query.iter().zip(key).map(|(a, b)| a * b.to_f32()).sum();
                        *o = scale * dot;
                    }
                }
            }
        }
    }

    /// `s = exp(s - max)` in place; returns the sum.
    fn exp_shifted(self, s: &mut [f32], max: f32) -> f32 {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 | Self::Avx512 => unsafe { x86::exp_shifted(s, max) },
            Self::Portable => s
                .iter_mut()
                .map(|x| {
                    *x = (*x - max).exp();
                    *x
                })
                .sum(),
        }
    }

    /// `acc += Σ_j weights[j] · values[j]`.
    fn add_weighted_sum(self, weights: &[f32], values: &[f32], acc: &mut [f32]) {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 | Self::Avx512 => unsafe { x86::add_weighted_sum(weights, values, acc) },
            Self::Portable => {
                for (w, row) in weights.iter().zip(values.chunks_exact(acc.len())) {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += w * v;
                    }
                }
            }
        }
    }
}

/// AVX2 kernels; every head size is a multiple of 8 here.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::kernels::simd::x86::{horizontal_sum, horizontal_sums};

    use half::f16;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn prefetch(rows: &[f16]) {
        for line in rows.chunks(32) {
            _mm_prefetch::<_MM_HINT_T1>(line.as_ptr() as *const i8);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn widen(half: &[f16], out: &mut [f32]) {
        for (s, d) in half.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
            // SAFETY: eight values on each side.
            unsafe {
                let h = _mm_loadu_si128(s.as_ptr() as *const __m128i);
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
    }

    /// Up to eight queries against every key, each key widened once: for
    /// key j and query i, the eight partial sums of `query · key` land in
    /// `lanes[(j · N + i) · 8..]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn partial_dots<const N: usize>(queries: &[&[f32]], keys: &[f16], lanes: &mut [f32]) {
        let d = queries[0].len();
        let q: [*const f32; N] = std::array::from_fn(|i| queries[i].as_ptr());
        for (key, out) in keys.chunks_exact(d).zip(lanes.chunks_exact_mut(N * 8)) {
            let mut acc = [_mm256_setzero_ps(); N];
            for c in (0..d).step_by(8) {
                // SAFETY: c + 8 <= d, within the key and every query.
                unsafe {
                    let k = _mm256_cvtph_ps(_mm_loadu_si128(key.as_ptr().add(c) as *const __m128i));
                    for (a, q) in acc.iter_mut().zip(q) {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c)), k, *a);
                    }
                }
            }
            for (a, o) in acc.iter().zip(out.chunks_exact_mut(8)) {
                // SAFETY: eight floats.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *a) };
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores(
        queries: &[&[f32]],
        keys: &[f16],
        scale: f32,
        out: &mut [f32],
        lanes: &mut [f32],
    ) {
        let n = out.len() / queries.len();
        let scale_v = _mm256_set1_ps(scale);
        for (batch, out) in queries.chunks(8).zip(out.chunks_mut(8 * n)) {
            let m = batch.len();
            let lanes = &mut lanes[..n * m * 8];
            // SAFETY: the caller's features; the batch has the length N.
            unsafe {
                match m {
                    1 => partial_dots::<1>(batch, keys, lanes),
                    2 => partial_dots::<2>(batch, keys, lanes),
                    3 => partial_dots::<3>(batch, keys, lanes),
                    4 => partial_dots::<4>(batch, keys, lanes),
                    5 => partial_dots::<5>(batch, keys, lanes),
                    6 => partial_dots::<6>(batch, keys, lanes),
                    7 => partial_dots::<7>(batch, keys, lanes),
                    _ => partial_dots::<8>(batch, keys, lanes),
                }
            }
            let lane = |j: usize, i: usize| -> __m256 {
                // SAFETY: j < n and i < m: eight floats within `lanes`.
                unsafe { _mm256_loadu_ps(lanes.as_ptr().add((j * m + i) * 8)) }
            };
            for (i, row) in out.chunks_exact_mut(n).enumerate() {
                let mut eights = row.chunks_exact_mut(8);
                for (b, o) in (&mut eights).enumerate() {
                    let sums = horizontal_sums(std::array::from_fn(|k| lane(8 * b + k, i)));
                    // SAFETY: eight floats.
                    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(sums, scale_v)) };
                }
                let done = n - n % 8;
                for (j, o) in eights.into_remainder().iter_mut().enumerate() {
                    *o = scale * horizontal_sum(lane(done + j, i));
                }
            }
        }
    }

    /// `exp(x)` for eight lanes: `2^n · e^r` with `n = round(x / ln 2)` and
    /// `|r| <= ln 2 / 2`, `e^r` by its degree-6 Taylor polynomial (relative
    /// error about 1e-7, as good as f32 holds). Inputs below -87 give
    /// `e^-87`, never a denormal.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp8(x: __m256) -> __m256 {
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

    #[target_feature(enable = "avx2,fma")]
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

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_weighted_sum(weights: &[f32], values: &[f32], acc: &mut [f32]) {
        let d = acc.len();
        // Up to 64 output lanes at a time, held in eight registers over all
        // rows.
        let mut c = 0;
        while c < d {
            let lanes = (d - c).min(64) / 8;
            let ap = acc[c..].as_mut_ptr();
            // SAFETY: c + 8 · lanes <= d, within acc.
            let mut a: [__m256; 8] = std::array::from_fn(|l| {
                if l < lanes {
                    unsafe { _mm256_loadu_ps(ap.add(8 * l)) }
                } else {
                    _mm256_setzero_ps()
                }
            });
            for (w, row) in weights.iter().zip(values.chunks_exact(d)) {
                let w = _mm256_set1_ps(*w);
                let rp = row[c..].as_ptr();
                if lanes == 8 {
                    for (l, a) in a.iter_mut().enumerate() {
                        // SAFETY: c + 64 <= d: within the row.
                        *a = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(rp.add(8 * l)) }, *a);
                    }
                } else {
                    for (l, a) in a.iter_mut().enumerate().take(lanes) {
                        // SAFETY: c + 8 · lanes <= d.
                        *a = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(rp.add(8 * l)) }, *a);
                    }
                }
            }
            for (l, a) in a.iter().enumerate().take(lanes) {
                // SAFETY: as above, within acc.
                unsafe { _mm256_storeu_ps(ap.add(8 * l), *a) };
            }
            c += 8 * lanes;
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
            (9, 9, 64, None),
            (40, 1000, 64, None),
            (37, 37, 128, Some(20)),
            (100, 500, 32, Some(64)),
        ] {
            let (heads, kv_heads) = (6, 2);
            let q = random((heads, seq, d), 1);
            let k = cache(kv_heads, total, d, 2);
            let v = cache(kv_heads, total, d, 3);
            let want = reference(&q, &k, &v, kv_heads, window);
            let fast = attention(&q, &k, &v, kv_heads, 0.25, window, true).unwrap();
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

    impl Simd {
        /// Every path this CPU can run for these head sizes, best last.
        fn available(d: usize, dv: usize) -> Vec<Self> {
            let best = Self::detect(d, dv);
            let mut all = vec![Self::Portable];
            #[cfg(target_arch = "x86_64")]
            {
                if !matches!(best, Self::Portable) {
                    all.push(Self::Avx2);
                }
                if matches!(best, Self::Avx512) {
                    all.push(Self::Avx512);
                }
            }
            let _ = best;
            all
        }
    }

    #[test]
    fn portable_kernels_equal_the_vector_ones() {
        // Generation: query vectors per task 8, 18 (batches of 8, 8, 2) and
        // 1. Prompts: a ragged last block of lanes, a window, head size 40.
        for (heads, kv_heads, seq, total, d, window) in [
            (4, 1, 2, 333, 40, None),
            (6, 1, 3, 205, 64, None),
            (3, 3, 1, 17, 16, None),
            (4, 2, 21, 150, 40, None),
            (6, 2, 50, 300, 64, Some(70)),
        ] {
            let q = random((heads, seq, d), 4);
            let k = cache(kv_heads, total, d, 5);
            let v = cache(kv_heads, total, d, 6);
            let op = CachedAttention {
                kv_heads,
                scale: 0.25,
                window,
            };
            let (ks, kl) = k.storage_and_layout();
            let (vs, vl) = v.storage_and_layout();
            let (candle_core::Storage::Cpu(ks), candle_core::Storage::Cpu(vs)) = (&*ks, &*vs)
            else {
                panic!("cpu tensors")
            };
            let keys = CacheView::new(ks, kl, "key").unwrap();
            let values = CacheView::new(vs, vl, "value").unwrap();
            let q = q.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let shape = (heads, seq, d);
            let run = |simd| {
                if seq <= KERNEL_ROWS {
                    op.run(simd, &q, shape, &keys, &values, total)
                } else {
                    op.prompt(simd, &q, shape, &keys, &values, total)
                }
            };
            let portable = run(Simd::Portable);
            for simd in Simd::available(d, d) {
                let diff = run(simd)
                    .iter()
                    .zip(&portable)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-5, "heads {heads}, seq {seq}, d {d}: {diff}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_as_accurate_as_f32_allows() {
        if matches!(Simd::detect(8, 8), Simd::Portable) {
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
