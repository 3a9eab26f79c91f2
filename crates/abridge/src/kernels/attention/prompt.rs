//! Attention of a prompt chunk's query rows over the f16 key/value cache, in
//! tiles that never leave the core's caches.
//!
//! The matmul path this replaces converted the whole cache to f32 for every
//! chunk and wrote each block's scores out (7B: 18 MB per 32 rows at 4,000
//! keys), then re-read them to mask, to softmax and to weight the values:
//! memory traffic, not arithmetic, set its speed (Qwen2.5-0.5B after 4,096
//! tokens: 43 GFLOP/s, prompts at 0.9× llama.cpp's speed; now 206). Here a
//! task takes sixteen query positions of one key/value head and walks their
//! keys in blocks: each block is widened to f32 once, for every query head
//! of the group, and the scores, the running softmax and the weighted values
//! stay in a few kilobytes.
//!
//! The sixteen positions sit side by side in vector lanes (queries
//! transposed, once per task), so every step is a broadcast multiply-add
//! with no horizontal sums: scores are `Σ_d key[j][d] · query[d][lane]`, the
//! softmax statistics are per lane, and the output is held transposed,
//! `out[c][lane] += Σ_j value[j][c] · weight[j][lane]`.

use std::ops::Range;
use std::sync::Mutex;

use super::{CacheView, CachedAttention, Simd, first_visible};

/// Query positions one task serves, one per vector lane (two AVX registers).
pub(super) const LANES: usize = 16;

/// Keys widened to f32 at a time: a block's keys and values (32 KB each at
/// head size 128) stay in L2 while every query head of the group reads them.
const KEYS: usize = 64;

impl CachedAttention {
    /// Attention of `q` (`heads, seq, d`, f32) over the first `total` cached
    /// rows; returns `heads, seq, dv`.
    pub(super) fn prompt(
        &self,
        simd: Simd,
        q: &[f32],
        (heads, seq, d): (usize, usize, usize),
        keys: &CacheView,
        values: &CacheView,
        total: usize,
    ) -> Vec<f32> {
        let group = heads / self.kv_heads;
        let dv = values.d;
        let blocks = seq.div_ceil(LANES);
        let mut out = vec![0f32; heads * seq * dv];
        // One slot per head and block of positions: the rows a task writes.
        let slots: Vec<Mutex<&mut [f32]>> = out
            .chunks_mut(seq * dv)
            .flat_map(|head| head.chunks_mut(LANES * dv))
            .map(Mutex::new)
            .collect();
        crate::kernels::pool::run(self.kv_heads * blocks, |range| {
            let mut tile = Tile::new(group, d, dv);
            for task in range {
                // Later positions see more keys: handing those out first
                // leaves short tasks for the end, when threads run dry.
                let block = blocks - 1 - task / self.kv_heads;
                let kv = task % self.kv_heads;
                let rows = block * LANES..seq.min((block + 1) * LANES);
                let chunk = Chunk {
                    simd,
                    q,
                    seq,
                    pos: total - seq,
                    rows: rows.clone(),
                    kv,
                };
                tile.attend(self, &chunk, keys, values);
                for g in 0..group {
                    let head = kv * group + g;
                    let mut slot = slots[head * blocks + block]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    tile.write(g, rows.len(), &mut slot);
                }
            }
        });
        drop(slots);
        out
    }
}

/// What one task attends: positions `pos + rows` of key/value head `kv`.
struct Chunk<'a> {
    simd: Simd,
    /// All queries, `heads, seq, d`.
    q: &'a [f32],
    seq: usize,
    /// Absolute position of query row 0.
    pos: usize,
    rows: Range<usize>,
    kv: usize,
}

/// A thread's working set, reused from task to task.
struct Tile {
    group: usize,
    d: usize,
    dv: usize,
    /// Scaled queries of each head of the group, `d × LANES`.
    queries: Vec<f32>,
    /// Unnormalised output of each head, `dv × LANES`.
    out: Vec<f32>,
    /// Running maximum score and sum of weights of each head's lanes.
    max: Vec<f32>,
    sum: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    /// A block's scores, then its weights: `KEYS × LANES`.
    scores: Vec<f32>,
}

impl Tile {
    fn new(group: usize, d: usize, dv: usize) -> Self {
        Self {
            group,
            d,
            dv,
            queries: vec![0.0; group * d * LANES],
            out: vec![0.0; group * dv * LANES],
            max: vec![0.0; group * LANES],
            sum: vec![0.0; group * LANES],
            keys: vec![0.0; KEYS * d],
            values: vec![0.0; KEYS * dv],
            scores: vec![0.0; KEYS * LANES],
        }
    }

    fn attend(&mut self, op: &CachedAttention, c: &Chunk, keys: &CacheView, values: &CacheView) {
        let (d, dv, simd) = (self.d, self.dv, c.simd);
        let first_row = c.pos + c.rows.start;
        let last_row = c.pos + c.rows.end - 1;
        // Lanes past the last row repeat it: finite, and never written out.
        let position = |lane: usize| (first_row + lane).min(last_row);
        for g in 0..self.group {
            let head = c.kv * self.group + g;
            let queries = &mut self.queries[g * d * LANES..][..d * LANES];
            for lane in 0..LANES {
                let row = c.rows.start + lane;
                let query = (row < c.rows.end).then(|| &c.q[(head * c.seq + row) * d..][..d]);
                for (i, x) in queries[lane..].iter_mut().step_by(LANES).enumerate() {
                    *x = query.map_or(0.0, |q| op.scale * q[i]);
                }
            }
        }
        self.out.fill(0.0);
        self.max.fill(f32::NEG_INFINITY);
        self.sum.fill(0.0);
        let all = first_visible(first_row, op.window)..last_row + 1;
        for start in all.clone().step_by(KEYS) {
            let block = start..all.end.min(start + KEYS);
            let n = block.len();
            let (k32, v32) = (&mut self.keys[..n * d], &mut self.values[..n * dv]);
            simd.widen(keys.rows(c.kv, block.clone()), k32);
            simd.widen(values.rows(c.kv, block.clone()), v32);
            let seen_by_all =
                block.end - 1 <= first_row && block.start >= first_visible(last_row, op.window);
            for g in 0..self.group {
                let scores = &mut self.scores[..n * LANES];
                simd.tile_scores(k32, &self.queries[g * d * LANES..][..d * LANES], scores);
                if !seen_by_all {
                    for (key, row) in block.clone().zip(scores.chunks_exact_mut(LANES)) {
                        for (lane, s) in row.iter_mut().enumerate() {
                            let p = position(lane);
                            if key > p || key < first_visible(p, op.window) {
                                *s = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                let out = &mut self.out[g * dv * LANES..][..dv * LANES];
                let max = &mut self.max[g * LANES..][..LANES];
                let sum = &mut self.sum[g * LANES..][..LANES];
                simd.tile_softmax(scores, max, sum, out);
                simd.tile_values(v32, scores, out);
            }
        }
    }

    /// Head `g`'s first `rows` positions, normalised, into `slot`
    /// (`rows × dv`).
    fn write(&self, g: usize, rows: usize, slot: &mut [f32]) {
        let dv = self.dv;
        let out = &self.out[g * dv * LANES..][..dv * LANES];
        let sum = &self.sum[g * LANES..][..LANES];
        for (lane, row) in slot.chunks_exact_mut(dv).take(rows).enumerate() {
            let inv = 1.0 / sum[lane];
            for (o, x) in row.iter_mut().zip(out[lane..].iter().step_by(LANES)) {
                *o = x * inv;
            }
        }
    }
}

impl Simd {
    /// `scores[j][lane] = keys[j] · queries[.][lane]` for the block's keys
    /// (`n × d`) and transposed queries (`d × LANES`).
    fn tile_scores(self, keys: &[f32], queries: &[f32], scores: &mut [f32]) {
        let d = queries.len() / LANES;
        scores.fill(0.0);
        match self {
            // SAFETY: the features were detected at run time; the shapes
            // are the ones `outer` reads.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe {
                let n = scores.len() / LANES;
                for j in (0..n).step_by(x86::ROWS) {
                    let m = x86::ROWS.min(n - j);
                    x86::outer(
                        m,
                        keys[j * d..].as_ptr(),
                        1,
                        d,
                        queries,
                        &mut scores[j * LANES..],
                    );
                }
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => unsafe {
                let n = scores.len() / LANES;
                x86::outer512(n, keys.as_ptr(), 1, d, queries, scores);
            },
            Self::Portable => {
                for (key, row) in keys.chunks_exact(d).zip(scores.chunks_exact_mut(LANES)) {
                    for (k, qs) in key.iter().zip(queries.chunks_exact(LANES)) {
                        for (s, q) in row.iter_mut().zip(qs) {
                            *s += k * q;
                        }
                    }
                }
            }
        }
    }

    /// Online softmax of one block: raises each lane's running `max` to the
    /// block's, shrinks what `sum` and `out` hold by as much, and turns the
    /// scores into weights (`exp(score - max)`), added to `sum`.
    fn tile_softmax(self, scores: &mut [f32], max: &mut [f32], sum: &mut [f32], out: &mut [f32]) {
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 | Self::Avx512 => unsafe { x86::tile_softmax(scores, max, sum, out) },
            Self::Portable => {
                let mut shift = [0f32; LANES];
                for lane in 0..LANES {
                    let top = scores[lane..]
                        .iter()
                        .step_by(LANES)
                        .copied()
                        .fold(max[lane], f32::max);
                    // A lane that has seen no key yet shifts by 0, so that
                    // no `-inf - -inf` appears.
                    shift[lane] = if top == f32::NEG_INFINITY { 0.0 } else { top };
                    let shrink = (max[lane] - shift[lane]).exp();
                    sum[lane] *= shrink;
                    out[lane..]
                        .iter_mut()
                        .step_by(LANES)
                        .for_each(|o| *o *= shrink);
                    max[lane] = top;
                }
                for row in scores.chunks_exact_mut(LANES) {
                    for ((s, shift), total) in row.iter_mut().zip(shift).zip(sum.iter_mut()) {
                        *s = (*s - shift).exp();
                        *total += *s;
                    }
                }
            }
        }
    }

    /// `out[c][lane] += Σ_j values[j][c] · weights[j][lane]`.
    fn tile_values(self, values: &[f32], weights: &[f32], out: &mut [f32]) {
        let dv = out.len() / LANES;
        match self {
            // SAFETY: the features were detected at run time; the shapes
            // are the ones `outer` reads.
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe {
                for c in (0..dv).step_by(x86::ROWS) {
                    let m = x86::ROWS.min(dv - c);
                    x86::outer(
                        m,
                        values[c..].as_ptr(),
                        dv,
                        1,
                        weights,
                        &mut out[c * LANES..],
                    );
                }
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => unsafe { x86::outer512(dv, values.as_ptr(), dv, 1, weights, out) },
            Self::Portable => {
                for (value, ws) in values.chunks_exact(dv).zip(weights.chunks_exact(LANES)) {
                    for (v, row) in value.iter().zip(out.chunks_exact_mut(LANES)) {
                        for (o, w) in row.iter_mut().zip(ws) {
                            *o += v * w;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::LANES;
    use crate::kernels::attention::x86::exp8;

    /// Output rows one call of `outer_rows` keeps in registers: 6 × 2
    /// accumulators, two operand registers and a broadcast, of sixteen.
    pub(super) const ROWS: usize = 6;

    /// `c[i][..LANES] += Σ_t a[t · step + i · stride] · b[t][..LANES]` for
    /// the `m ≤ ROWS` rows `i`, over all `b.len() / LANES` rows `t` of `b`.
    ///
    /// # Safety
    /// AVX2 and FMA; `a` readable at every index named; `c` holds `m` rows.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn outer(
        m: usize,
        a: *const f32,
        step: usize,
        stride: usize,
        b: &[f32],
        c: &mut [f32],
    ) {
        assert!(c.len() >= m * LANES);
        // SAFETY: forwarded from the caller; m picks the instance.
        unsafe {
            match m {
                1 => outer_rows::<1>(a, step, stride, b, c),
                2 => outer_rows::<2>(a, step, stride, b, c),
                3 => outer_rows::<3>(a, step, stride, b, c),
                4 => outer_rows::<4>(a, step, stride, b, c),
                5 => outer_rows::<5>(a, step, stride, b, c),
                _ => outer_rows::<ROWS>(a, step, stride, b, c),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn outer_rows<const M: usize>(
        a: *const f32,
        step: usize,
        stride: usize,
        b: &[f32],
        c: &mut [f32],
    ) {
        let cp = c.as_mut_ptr();
        // SAFETY: c holds M rows of LANES (checked by `outer`).
        let mut acc: [[__m256; 2]; M] = std::array::from_fn(|i| unsafe {
            [
                _mm256_loadu_ps(cp.add(i * LANES)),
                _mm256_loadu_ps(cp.add(i * LANES + 8)),
            ]
        });
        // One pointer per row of `a`, moved on by `step`: no multiplication
        // (and its overflow check, in test builds) in the loop.
        // SAFETY: a's indices are the caller's promise.
        let mut at: [*const f32; M] = std::array::from_fn(|i| unsafe { a.add(i * stride) });
        for row in b.chunks_exact(LANES) {
            // SAFETY: row holds LANES = 16 floats; a's indices are the
            // caller's promise.
            unsafe {
                let lo = _mm256_loadu_ps(row.as_ptr());
                let hi = _mm256_loadu_ps(row.as_ptr().add(8));
                for (acc, at) in acc.iter_mut().zip(&mut at) {
                    let x = _mm256_broadcast_ss(&**at);
                    acc[0] = _mm256_fmadd_ps(x, lo, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, hi, acc[1]);
                    *at = at.add(step);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            // SAFETY: as at the load.
            unsafe {
                _mm256_storeu_ps(cp.add(i * LANES), acc[0]);
                _mm256_storeu_ps(cp.add(i * LANES + 8), acc[1]);
            }
        }
    }

    /// `outer` for all `m` rows, sixteen at a time, one 512-bit register
    /// each: with 32 registers, sixteen accumulators hide the multiply-add
    /// latency, and each broadcast folds into its multiply-add.
    ///
    /// # Safety
    /// AVX-512 F; `a` readable at every index named; `c` holds `m` rows.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn outer512(
        m: usize,
        a: *const f32,
        step: usize,
        stride: usize,
        b: &[f32],
        c: &mut [f32],
    ) {
        assert!(c.len() >= m * LANES);
        let mut i = 0;
        while i < m {
            // Sixteen rows while they last, then 8, 4, 2, 1.
            let take = (m - i).min(16);
            let take = 1 << take.ilog2();
            // SAFETY: rows i..i + take of a and c, within the caller's.
            unsafe {
                let (a, c) = (a.add(i * stride), &mut c[i * LANES..]);
                match take {
                    16 => outer512_rows::<16>(a, step, stride, b, c),
                    8 => outer512_rows::<8>(a, step, stride, b, c),
                    4 => outer512_rows::<4>(a, step, stride, b, c),
                    2 => outer512_rows::<2>(a, step, stride, b, c),
                    _ => outer512_rows::<1>(a, step, stride, b, c),
                }
            }
            i += take;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn outer512_rows<const M: usize>(
        a: *const f32,
        step: usize,
        stride: usize,
        b: &[f32],
        c: &mut [f32],
    ) {
        let cp = c.as_mut_ptr();
        // SAFETY: c holds M rows of LANES (checked by `outer512`).
        let mut acc: [__m512; M] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_ps(cp.add(i * LANES)) });
        // SAFETY: a's indices are the caller's promise.
        let mut at: [*const f32; M] = std::array::from_fn(|i| unsafe { a.add(i * stride) });
        for row in b.chunks_exact(LANES) {
            // SAFETY: row holds LANES = 16 floats; a's indices are the
            // caller's promise.
            unsafe {
                let x = _mm512_loadu_ps(row.as_ptr());
                for (acc, at) in acc.iter_mut().zip(&mut at) {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(**at), x, *acc);
                    *at = at.add(step);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            // SAFETY: as at the load.
            unsafe { _mm512_storeu_ps(cp.add(i * LANES), *acc) };
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_softmax(
        scores: &mut [f32],
        max: &mut [f32],
        sum: &mut [f32],
        out: &mut [f32],
    ) {
        assert!(max.len() == LANES && sum.len() == LANES);
        assert!(scores.len().is_multiple_of(LANES) && out.len().is_multiple_of(LANES));
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        for half in [0, 8] {
            // SAFETY: every access is eight floats at `half` (0 or 8) into a
            // row of LANES, within the slices (asserted above).
            unsafe {
                let old = _mm256_loadu_ps(max.as_ptr().add(half));
                let mut top = old;
                for row in scores.chunks_exact(LANES) {
                    top = _mm256_max_ps(top, _mm256_loadu_ps(row.as_ptr().add(half)));
                }
                // Lanes that have seen no key yet shift by 0: no -inf - -inf.
                let unseen = _mm256_cmp_ps::<_CMP_EQ_OQ>(top, neg_inf);
                let shift = _mm256_blendv_ps(top, _mm256_setzero_ps(), unseen);
                let shrink = exp8(_mm256_sub_ps(old, shift));
                _mm256_storeu_ps(max.as_mut_ptr().add(half), top);
                for row in out.chunks_exact_mut(LANES) {
                    let p = row.as_mut_ptr().add(half);
                    _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), shrink));
                }
                let mut total = _mm256_mul_ps(_mm256_loadu_ps(sum.as_ptr().add(half)), shrink);
                for row in scores.chunks_exact_mut(LANES) {
                    let p = row.as_mut_ptr().add(half);
                    let w = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), shift));
                    _mm256_storeu_ps(p, w);
                    total = _mm256_add_ps(total, w);
                }
                _mm256_storeu_ps(sum.as_mut_ptr().add(half), total);
            }
        }
    }
}
