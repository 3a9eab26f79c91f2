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

/// Horizontal reductions of AVX registers.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

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
