//! What the CPU offers, detected once per process, and the horizontal
//! reductions the vector kernels share.

use std::sync::OnceLock;

/// The instruction sets the kernels can use, worst to best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SimdLevel {
    /// Plain Rust.
    Portable,
    /// AVX2 with FMA and F16C: every x86-64 machine abridge targets has it.
    Avx2,
    /// AVX2 plus AVX-512 F, BW, VL and VNNI (one-instruction byte dot
    /// products, on 256- or 512-bit registers).
    Vnni,
}

impl SimdLevel {
    /// The best level this CPU supports; detected on the first call.
    pub(crate) fn get() -> Self {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(Self::detect)
    }

    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                if has!("avx512vnni") && has!("avx512vl") && has!("avx512bw") && has!("avx512f") {
                    return Self::Vnni;
                }
                return Self::Avx2;
            }
        }
        Self::Portable
    }
}

/// Rounds `x` to 8 bits on one step for the whole slice, the largest
/// magnitude over 127, and returns the step: `x[i] ≈ step · q[i]`. Ties
/// round to even, as llama.cpp's activation quantizers do.
///
/// Every matrix product quantizes its activations first; in plain Rust the
/// rounding went through libm's `roundf` per value and cost a tenth of the
/// 7B's prompt time.
pub(crate) fn quantize_i8(x: &[f32], q: &mut [i8]) -> f32 {
    debug_assert_eq!(x.len(), q.len());
    #[cfg(target_arch = "x86_64")]
    if x.len().is_multiple_of(32) {
        match SimdLevel::get() {
            // SAFETY: the level guarantees the kernel's features.
            SimdLevel::Vnni => return unsafe { x86::quantize_i8_avx512(x, q) },
            // SAFETY: as above.
            SimdLevel::Avx2 => return unsafe { x86::quantize_i8_avx2(x, q) },
            SimdLevel::Portable => {}
        }
    }
    quantize_i8_portable(x, q)
}

/// [`quantize_i8`] in plain Rust.
fn quantize_i8_portable(x: &[f32], q: &mut [i8]) -> f32 {
    let step = x.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
    let inv = if step != 0.0 { 1.0 / step } else { 0.0 };
    for (q, v) in q.iter_mut().zip(x) {
        *q = (v * inv).round_ties_even() as i8;
    }
    step
}

/// Horizontal reductions of AVX registers, and the vector quantizers.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// [`super::quantize_i8`] for a length that is a multiple of 32.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn quantize_i8_avx512(x: &[f32], q: &mut [i8]) -> f32 {
        let mut m = _mm512_setzero_ps();
        for c in x.chunks_exact(16) {
            // SAFETY: `c` is 16 floats.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            m = _mm512_max_ps(m, _mm512_abs_ps(v));
        }
        let step = _mm512_reduce_max_ps(m) / 127.0;
        let inv = _mm512_set1_ps(if step != 0.0 { 1.0 / step } else { 0.0 });
        for (c, q) in x.chunks_exact(16).zip(q.chunks_exact_mut(16)) {
            // SAFETY: `c` is 16 floats and `q` 16 bytes.
            unsafe {
                let v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), inv));
                _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtsepi32_epi8(v));
            }
        }
        step
    }

    /// [`super::quantize_i8`] for a length that is a multiple of 32.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn quantize_i8_avx2(x: &[f32], q: &mut [i8]) -> f32 {
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_setzero_ps();
        for c in x.chunks_exact(8) {
            // SAFETY: `c` is 8 floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let step = _mm_cvtss_f32(m) / 127.0;
        let inv = _mm256_set1_ps(if step != 0.0 { 1.0 / step } else { 0.0 });
        // The packs interleave 128-bit halves; this puts the 32 bytes back
        // in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (c, q) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
            // SAFETY: `c` is 32 floats and `q` 32 bytes.
            unsafe {
                let v: [__m256i; 4] = std::array::from_fn(|k| {
                    _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(c.as_ptr().add(8 * k)), inv))
                });
                let lo = _mm256_packs_epi32(v[0], v[1]);
                let hi = _mm256_packs_epi32(v[2], v[3]);
                let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(lo, hi), order);
                _mm256_storeu_si256(q.as_mut_ptr().cast(), bytes);
            }
        }
        step
    }

    /// The sum of the eight lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn horizontal_sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The sums of the lanes of eight vectors, as one vector.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn horizontal_sums(a: [__m256; 8]) -> __m256 {
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        // Lane k of u0 (k < 4) sums half of a[k]; lane 4 + k the other half.
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(u0, u1),
            _mm256_permute2f128_ps::<0x31>(u0, u1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector quantizer the CPU runs gives the portable one's bytes
    /// and step, ties included (values at exactly half a step).
    #[test]
    fn vector_quantizers_match_the_portable_one() {
        let mut state = 0x2545_f491_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        let mut blocks: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..256).map(|_| next()).collect())
            .collect();
        // Steps of 1/127 · 127 = 1: every k + 0.5 is a tie.
        blocks.push(
            (0..32)
                .map(|k| if k == 0 { 127.0 } else { k as f32 - 15.5 })
                .collect(),
        );
        blocks.push(vec![0.0; 32]);
        blocks.push((0..64).map(|k| -(k as f32) * 1e-3).collect());
        for x in &blocks {
            let mut want = vec![0i8; x.len()];
            let step = quantize_i8_portable(x, &mut want);
            #[cfg(target_arch = "x86_64")]
            {
                let level = SimdLevel::get();
                let mut got = vec![0i8; x.len()];
                if level >= SimdLevel::Avx2 {
                    // SAFETY: the CPU has AVX2.
                    let s = unsafe { x86::quantize_i8_avx2(x, &mut got) };
                    assert_eq!((s, &got), (step, &want), "AVX2");
                }
                if level >= SimdLevel::Vnni {
                    // SAFETY: the CPU has AVX-512.
                    let s = unsafe { x86::quantize_i8_avx512(x, &mut got) };
                    assert_eq!((s, &got), (step, &want), "AVX-512");
                }
            }
            let mut got = vec![0i8; x.len()];
            assert_eq!(quantize_i8(x, &mut got), step);
            assert_eq!(got, want);
        }
        let mut ties = [0i8; 32];
        quantize_i8(&blocks[20], &mut ties);
        assert_eq!(ties[1..4], [-14, -14, -12], "-14.5, -13.5, -12.5 to even");
    }
}
