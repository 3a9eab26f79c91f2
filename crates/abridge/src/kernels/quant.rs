//! Matrix products of the legacy GGUF block types, 32 values to a block:
//! `Q4_1`, `Q5_0` and `Q5_1`, which candle-core computes with scalar code
//! only, and `Q8_0`.
//!
//! SmolLM2's file is Q4_1 throughout; Qwen2.5's and Gemma 3's Q4_K_M files
//! keep most of their attention and gate/up weights in Q5_0 and their value
//! and output projections in Q8_0. Each matrix is repacked at load into
//! tiles (see `tiles`) of 16 rows × one block; activations are quantized as
//! llama.cpp's `Q8_1` (a scale and the block's sum per 32 values, both
//! rounded to f16), so the products follow its arithmetic.

use std::marker::PhantomData;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::f16;

use super::simd::SimdLevel;
use super::tiles::{GatedMatrix, ROWS, Tile, Tiles, apply, gate_apart};
use crate::error::Result;

/// Values per quantization block.
const BLOCK: usize = 32;

/// The block types these kernels cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyType {
    /// 4-bit values with a scale and a minimum.
    Q4_1,
    /// 5-bit values with a scale, centred on 16.
    Q5_0,
    /// 5-bit values with a scale and a minimum.
    Q5_1,
    /// 8-bit signed values with a scale.
    Q8_0,
}

impl LegacyType {
    /// The type for a candle dtype, when these kernels cover it.
    pub fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as D;
        match dtype {
            D::Q4_1 => Some(Self::Q4_1),
            D::Q5_0 => Some(Self::Q5_0),
            D::Q5_1 => Some(Self::Q5_1),
            D::Q8_0 => Some(Self::Q8_0),
            _ => None,
        }
    }
}

/// One block of activations quantized to 8 bits: `x ≈ d · q`, `s = d · Σq`.
#[derive(Clone, Copy)]
struct Q8Block {
    q: [i8; BLOCK],
    d: f32,
    s: f32,
    /// `Σq`, for the centred types.
    sum: i32,
}

/// Quantizes a block as llama.cpp's `quantize_row_q8_1` does, including the
/// rounding of the scale and sum to f16 that its block format implies.
fn quantize_block(x: &[f32]) -> Q8Block {
    let mut q = [0i8; BLOCK];
    let d = super::simd::quantize_i8(x, &mut q);
    let sum = q.iter().map(|&v| i32::from(v)).sum::<i32>();
    Q8Block {
        q,
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(d * sum as f32).to_f32(),
        sum,
    }
}

fn widen(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

fn f16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// How a file block of one of the nibble types is laid out.
trait Nibbles: Copy + Send + Sync {
    const NAME: &'static str;
    const BLOCK_BYTES: usize;
    /// Whether values have a fifth bit.
    const FIVE: bool;
    /// Whether blocks have a minimum; those without are centred on 16.
    /// The kernels sum the minimums' terms apart from the scaled dot
    /// products and add the two at the end: the terms are large and of
    /// opposite sign, and one accumulator for both lost enough precision to
    /// flip a greedy step of SmolLM2 that llama.cpp decides by 0.35.
    const MIN: bool;
    /// Where the minimum's f16 bits, the fifth bits and the 16 nibble bytes
    /// start, after the scale at 0.
    const AT: (usize, usize, usize);
}

#[derive(Clone, Copy)]
struct Q4_1;
#[derive(Clone, Copy)]
struct Q5_0;
#[derive(Clone, Copy)]
struct Q5_1;

impl Nibbles for Q4_1 {
    const NAME: &'static str = "Q4_1";
    const BLOCK_BYTES: usize = 20;
    const FIVE: bool = false;
    const MIN: bool = true;
    const AT: (usize, usize, usize) = (2, 0, 4);
}

impl Nibbles for Q5_0 {
    const NAME: &'static str = "Q5_0";
    const BLOCK_BYTES: usize = 22;
    const FIVE: bool = true;
    const MIN: bool = false;
    const AT: (usize, usize, usize) = (0, 2, 6);
}

impl Nibbles for Q5_1 {
    const NAME: &'static str = "Q5_1";
    const BLOCK_BYTES: usize = 24;
    const FIVE: bool = true;
    const MIN: bool = true;
    const AT: (usize, usize, usize) = (2, 4, 8);
}

impl<F: Nibbles> NibbleTile<F> {
    /// What the integer dot product of a block is offset by, per unit of
    /// the activations' `Σq`.
    const CENTRE: i32 = if F::MIN { 0 } else { 16 };
}

/// 16 rows × 32 values of a `Q4_1`, `Q5_0` or `Q5_1` matrix: 24 bytes a
/// row's block, as `Q5_1` in the file (`Q4_1` leaves the fifth bits empty,
/// `Q5_0` the minimums).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct NibbleTile<F> {
    /// For each group `g` of eight values, for each row `r`: four bytes,
    /// byte `t` holding value `8g + t` in its low nibble and `8g + t + 4` in
    /// its high one (the layout of `kquant`'s `Q4_K` tiles).
    qs: [u8; BLOCK / 8 * ROWS * 4],
    /// The fifth bits: for each row, four bytes, byte `t` holding that of
    /// value `8g + t + 4e` at bit `2g + e`, so shifting each 16-bit lane by
    /// `4 - 2g - e` brings a group's bits to bit 4 of the byte they belong
    /// to without crossing into its neighbour.
    qh: [u8; ROWS * 4],
    /// Each row's scale, f16 bits.
    d: [u16; ROWS],
    /// Each row's minimum, f16 bits.
    m: [u16; ROWS],
    format: PhantomData<F>,
}

const _: () = assert!(std::mem::size_of::<NibbleTile<Q5_0>>() == 384);

impl<F: Nibbles> NibbleTile<F> {
    /// Unsigned value `t` (of 32) of row `r`.
    fn value(&self, r: usize, t: usize) -> u8 {
        let byte = self.qs[t / 8 * ROWS * 4 + r * 4 + t % 4];
        let low = if t % 8 < 4 { byte & 0x0F } else { byte >> 4 };
        let fifth = (self.qh[r * 4 + t % 4] >> (2 * (t / 8) + t % 8 / 4)) & 1;
        low | (fifth << 4)
    }
}

impl<F: Nibbles> Tile for NibbleTile<F> {
    type Act = Q8Block;
    const NAME: &'static str = F::NAME;
    const VALUES: usize = BLOCK;
    const BLOCK_BYTES: usize = F::BLOCK_BYTES;
    const EMPTY: Self = Self {
        qs: [0; BLOCK / 8 * ROWS * 4],
        qh: [0; ROWS * 4],
        d: [0; ROWS],
        m: [0; ROWS],
        format: PhantomData,
    };

    fn set_row(&mut self, r: usize, block: &[u8]) {
        let (m_at, qh_at, qs_at) = F::AT;
        self.d[r] = f16_at(block, 0);
        if F::MIN {
            self.m[r] = f16_at(block, m_at);
        }
        let qh = if F::FIVE {
            u32::from_le_bytes(block[qh_at..qh_at + 4].try_into().expect("four bytes"))
        } else {
            0
        };
        // The file keeps values 0..16 in the low nibbles of its 16 bytes and
        // 16..32 in the high ones; bit `j` of `qh` is value `j`'s fifth.
        let qs = &block[qs_at..qs_at + 16];
        let low = |j: usize| {
            if j < 16 {
                qs[j] & 0x0F
            } else {
                qs[j - 16] >> 4
            }
        };
        let fifth = |j: usize| ((qh >> j) & 1) as u8;
        for t in 0..4 {
            let mut bits = 0u8;
            for g in 0..BLOCK / 8 {
                let (a, b) = (8 * g + t, 8 * g + t + 4);
                self.qs[g * ROWS * 4 + r * 4 + t] = low(a) | (low(b) << 4);
                bits |= (fifth(a) << (2 * g)) | (fifth(b) << (2 * g + 1));
            }
            self.qh[r * 4 + t] = bits;
        }
    }

    fn quantize(x: &[f32]) -> Q8Block {
        quantize_block(x)
    }

    fn dot_portable(tiles: &[Self], xs: &[&[Q8Block]], out: &mut [[f32; ROWS]]) {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            for (r, o) in o.iter_mut().enumerate() {
                let (mut acc, mut mins) = (0f32, 0f32);
                for (t, a) in tiles.iter().zip(x.iter()) {
                    let dot: i32 = (0..BLOCK)
                        .map(|k| i32::from(t.value(r, k)) * i32::from(a.q[k]))
                        .sum();
                    let dot = dot - Self::CENTRE * a.sum;
                    acc += widen(t.d[r]) * a.d * dot as f32;
                    if F::MIN {
                        mins += widen(t.m[r]) * a.s;
                    }
                }
                *o = acc + mins;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const R: usize>(
        tiles: &[Self],
        xs: &[&[Q8Block]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        // SAFETY: the caller checked the CPU features.
        unsafe { x86::nibbles_avx512(tiles, xs, out) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const R: usize>(
        tiles: &[Self],
        xs: &[&[Q8Block]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        // SAFETY: the caller checked the CPU features.
        unsafe { x86::nibbles_avx2(tiles, xs, out) }
    }
}

/// 16 rows × 32 values of a `Q8_0` matrix: the file's 34 bytes a row's
/// block.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Q8Tile {
    /// For each group `g` of four values, for each row `r`: value `4g + t`
    /// plus 128 at byte `t`, unsigned as VNNI's `dpbusd` wants its first
    /// operand.
    qs: [u8; BLOCK / 4 * ROWS * 4],
    /// Each row's scale, f16 bits.
    d: [u16; ROWS],
}

const _: () = assert!(std::mem::size_of::<Q8Tile>() == 16 * 34);

impl Q8Tile {
    /// Signed value `t` (of 32) of row `r`.
    fn value(&self, r: usize, t: usize) -> i32 {
        i32::from(self.qs[t / 4 * ROWS * 4 + r * 4 + t % 4]) - 128
    }
}

impl Tile for Q8Tile {
    type Act = Q8Block;
    const NAME: &'static str = "Q8_0";
    const VALUES: usize = BLOCK;
    const BLOCK_BYTES: usize = 34;
    const EMPTY: Self = Self {
        qs: [128; BLOCK / 4 * ROWS * 4],
        d: [0; ROWS],
    };

    fn set_row(&mut self, r: usize, block: &[u8]) {
        self.d[r] = f16_at(block, 0);
        for (t, &q) in block[2..2 + BLOCK].iter().enumerate() {
            self.qs[t / 4 * ROWS * 4 + r * 4 + t % 4] = q ^ 0x80;
        }
    }

    fn quantize(x: &[f32]) -> Q8Block {
        quantize_block(x)
    }

    fn dot_portable(tiles: &[Self], xs: &[&[Q8Block]], out: &mut [[f32; ROWS]]) {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            for (r, o) in o.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (t, a) in tiles.iter().zip(x.iter()) {
                    let dot: i32 = (0..BLOCK).map(|k| t.value(r, k) * i32::from(a.q[k])).sum();
                    acc += widen(t.d[r]) * a.d * dot as f32;
                }
                *o = acc;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const R: usize>(
        tiles: &[Self],
        xs: &[&[Q8Block]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        // SAFETY: the caller checked the CPU features.
        unsafe { x86::q8_avx512(tiles, xs, out) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const R: usize>(
        tiles: &[Self],
        xs: &[&[Q8Block]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        // SAFETY: the caller checked the CPU features.
        unsafe { x86::q8_avx2(tiles, xs, out) }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, NibbleTile, Nibbles, Q8Block, Q8Tile};
    use crate::kernels::tiles::{LANES, ROWS, four};
    use std::arch::x86_64::*;

    /// `out[i][r]` for the `R` activation rows `xs` and the 16 rows of a row
    /// of nibble tiles, 16 rows to a 512-bit register.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn nibbles_avx512<F: Nibbles, const R: usize>(
        tiles: &[NibbleTile<F>],
        xs: &[&[Q8Block]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        let low4 = _mm512_set1_epi8(0x0F);
        let bit4 = _mm512_set1_epi8(0x10);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut mins = [_mm512_setzero_ps(); R];
        for (b, t) in tiles.iter().enumerate() {
            let a: [&Q8Block; R] = std::array::from_fn(|i| &xs[i][b]);
            let mut p: [__m512i; R] =
                std::array::from_fn(|i| _mm512_set1_epi32(-NibbleTile::<F>::CENTRE * a[i].sum));
            // SAFETY: `qh` is 64 bytes.
            let hb = unsafe { _mm512_loadu_si512(t.qh.as_ptr().cast()) };
            for g in 0..BLOCK / 8 {
                // SAFETY: `g * 64 + 64` is within `qs` (256 bytes).
                let w = unsafe { _mm512_loadu_si512(t.qs.as_ptr().add(g * 64).cast()) };
                let mut v0 = _mm512_and_si512(w, low4);
                let mut v1 = _mm512_and_si512(_mm512_srli_epi16::<4>(w), low4);
                if F::FIVE {
                    let (h0, h1) = match g {
                        0 => (_mm512_slli_epi16::<4>(hb), _mm512_slli_epi16::<3>(hb)),
                        1 => (_mm512_slli_epi16::<2>(hb), _mm512_slli_epi16::<1>(hb)),
                        2 => (hb, _mm512_srli_epi16::<1>(hb)),
                        _ => (_mm512_srli_epi16::<2>(hb), _mm512_srli_epi16::<3>(hb)),
                    };
                    v0 = _mm512_or_si512(v0, _mm512_and_si512(h0, bit4));
                    v1 = _mm512_or_si512(v1, _mm512_and_si512(h1, bit4));
                }
                for i in 0..R {
                    // SAFETY: `8 * g + 8` ≤ 32.
                    let (x0, x1) = unsafe { (four(&a[i].q, 8 * g), four(&a[i].q, 8 * g + 4)) };
                    p[i] = _mm512_dpbusd_epi32(p[i], v0, _mm512_set1_epi32(x0));
                    p[i] = _mm512_dpbusd_epi32(p[i], v1, _mm512_set1_epi32(x1));
                }
            }
            // SAFETY: `d` and `m` are 16 f16 values.
            let (d, m) = unsafe {
                (
                    _mm512_cvtph_ps(_mm256_loadu_si256(t.d.as_ptr().cast())),
                    _mm512_cvtph_ps(_mm256_loadu_si256(t.m.as_ptr().cast())),
                )
            };
            for i in 0..R {
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(a[i].d));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[i]), scale, acc[i]);
                if F::MIN {
                    mins[i] = _mm512_fmadd_ps(m, _mm512_set1_ps(a[i].s), mins[i]);
                }
            }
        }
        for i in 0..R {
            // SAFETY: a row of `out` is 16 floats.
            unsafe { _mm512_storeu_ps(out[i].as_mut_ptr(), _mm512_add_ps(acc[i], mins[i])) };
        }
    }

    /// The same on AVX2, eight rows to a 256-bit register, `maddubs` in
    /// place of `dpbusd` (4 × 31 × 127 < 2¹⁵ for a group's two halves added
    /// in 16 bits).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn nibbles_avx2<F: Nibbles, const R: usize>(
        tiles: &[NibbleTile<F>],
        xs: &[&[Q8Block]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        let low4 = _mm256_set1_epi8(0x0F);
        let bit4 = _mm256_set1_epi8(0x10);
        let ones = _mm256_set1_epi16(1);
        for half in 0..ROWS / LANES {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut mins = [_mm256_setzero_ps(); R];
            for (b, t) in tiles.iter().enumerate() {
                let a: [&Q8Block; R] = std::array::from_fn(|i| &xs[i][b]);
                let mut p: [__m256i; R] =
                    std::array::from_fn(|i| _mm256_set1_epi32(-NibbleTile::<F>::CENTRE * a[i].sum));
                // SAFETY: `half * 32 + 32` is within `qh` (64 bytes).
                let hb = unsafe { _mm256_loadu_si256(t.qh.as_ptr().add(half * 32).cast()) };
                for g in 0..BLOCK / 8 {
                    let at = g * ROWS * 4 + half * LANES * 4;
                    // SAFETY: `at + 32` is within `qs` (256 bytes).
                    let w = unsafe { _mm256_loadu_si256(t.qs.as_ptr().add(at).cast()) };
                    let mut v0 = _mm256_and_si256(w, low4);
                    let mut v1 = _mm256_and_si256(_mm256_srli_epi16::<4>(w), low4);
                    if F::FIVE {
                        let (h0, h1) = match g {
                            0 => (_mm256_slli_epi16::<4>(hb), _mm256_slli_epi16::<3>(hb)),
                            1 => (_mm256_slli_epi16::<2>(hb), _mm256_slli_epi16::<1>(hb)),
                            2 => (hb, _mm256_srli_epi16::<1>(hb)),
                            _ => (_mm256_srli_epi16::<2>(hb), _mm256_srli_epi16::<3>(hb)),
                        };
                        v0 = _mm256_or_si256(v0, _mm256_and_si256(h0, bit4));
                        v1 = _mm256_or_si256(v1, _mm256_and_si256(h1, bit4));
                    }
                    for i in 0..R {
                        // SAFETY: `8 * g + 8` ≤ 32.
                        let (x0, x1) = unsafe { (four(&a[i].q, 8 * g), four(&a[i].q, 8 * g + 4)) };
                        let l = _mm256_maddubs_epi16(v0, _mm256_set1_epi32(x0));
                        let h = _mm256_maddubs_epi16(v1, _mm256_set1_epi32(x1));
                        let pairs = _mm256_madd_epi16(_mm256_add_epi16(l, h), ones);
                        p[i] = _mm256_add_epi32(p[i], pairs);
                    }
                }
                // SAFETY: `d` and `m` are 16 f16 values.
                let (d, m) = unsafe {
                    (
                        _mm256_cvtph_ps(_mm_loadu_si128(t.d.as_ptr().add(half * LANES).cast())),
                        _mm256_cvtph_ps(_mm_loadu_si128(t.m.as_ptr().add(half * LANES).cast())),
                    )
                };
                for i in 0..R {
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[i].d));
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p[i]), scale, acc[i]);
                    if F::MIN {
                        mins[i] = _mm256_fmadd_ps(m, _mm256_set1_ps(a[i].s), mins[i]);
                    }
                }
            }
            for i in 0..R {
                // SAFETY: `half * 8 + 8` is within a row of 16.
                unsafe {
                    _mm256_storeu_ps(
                        out[i].as_mut_ptr().add(half * LANES),
                        _mm256_add_ps(acc[i], mins[i]),
                    )
                };
            }
        }
    }

    /// `out[i][r]` for the `R` activation rows `xs` and a row of `Q8_0`
    /// tiles. The weights are stored plus 128, so each block's integer sum
    /// starts at `-128 Σq`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q8_avx512<const R: usize>(
        tiles: &[Q8Tile],
        xs: &[&[Q8Block]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, t) in tiles.iter().enumerate() {
            let a: [&Q8Block; R] = std::array::from_fn(|i| &xs[i][b]);
            let mut p: [__m512i; R] = std::array::from_fn(|i| _mm512_set1_epi32(-128 * a[i].sum));
            for g in 0..BLOCK / 4 {
                // SAFETY: `g * 64 + 64` is within `qs` (512 bytes).
                let w = unsafe { _mm512_loadu_si512(t.qs.as_ptr().add(g * 64).cast()) };
                for i in 0..R {
                    // SAFETY: `4 * g + 4` ≤ 32.
                    let x = unsafe { four(&a[i].q, 4 * g) };
                    p[i] = _mm512_dpbusd_epi32(p[i], w, _mm512_set1_epi32(x));
                }
            }
            // SAFETY: `d` is 16 f16 values.
            let d = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(t.d.as_ptr().cast()) });
            for i in 0..R {
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(a[i].d));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[i]), scale, acc[i]);
            }
        }
        for i in 0..R {
            // SAFETY: a row of `out` is 16 floats.
            unsafe { _mm512_storeu_ps(out[i].as_mut_ptr(), acc[i]) };
        }
    }

    /// The same on AVX2. `maddubs` saturates at 2¹⁵, which 2 × 255 × 127
    /// would pass, so the weights go back to signed and multiply as
    /// `|w| · (x with w's sign)` (at most 2 × 128 × 127).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_avx2<const R: usize>(
        tiles: &[Q8Tile],
        xs: &[&[Q8Block]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        for half in 0..ROWS / LANES {
            let mut acc = [_mm256_setzero_ps(); R];
            for (b, t) in tiles.iter().enumerate() {
                let a: [&Q8Block; R] = std::array::from_fn(|i| &xs[i][b]);
                let mut p = [_mm256_setzero_si256(); R];
                for g in 0..BLOCK / 4 {
                    let at = g * ROWS * 4 + half * LANES * 4;
                    // SAFETY: `at + 32` is within `qs` (512 bytes).
                    let u = unsafe { _mm256_loadu_si256(t.qs.as_ptr().add(at).cast()) };
                    let w = _mm256_xor_si256(u, flip);
                    let magnitude = _mm256_abs_epi8(w);
                    for i in 0..R {
                        // SAFETY: `4 * g + 4` ≤ 32.
                        let x = unsafe { four(&a[i].q, 4 * g) };
                        let signed = _mm256_sign_epi8(_mm256_set1_epi32(x), w);
                        let pairs = _mm256_maddubs_epi16(magnitude, signed);
                        p[i] = _mm256_add_epi32(p[i], _mm256_madd_epi16(pairs, ones));
                    }
                }
                // SAFETY: `d` is 16 f16 values.
                let d = _mm256_cvtph_ps(unsafe {
                    _mm_loadu_si128(t.d.as_ptr().add(half * LANES).cast())
                });
                for i in 0..R {
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[i].d));
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p[i]), scale, acc[i]);
                }
            }
            for i in 0..R {
                // SAFETY: `half * 8 + 8` is within a row of 16.
                unsafe { _mm256_storeu_ps(out[i].as_mut_ptr().add(half * LANES), acc[i]) };
            }
        }
    }
}

enum Repr {
    Q4_1(Tiles<NibbleTile<Q4_1>>),
    Q5_0(Tiles<NibbleTile<Q5_0>>),
    Q5_1(Tiles<NibbleTile<Q5_1>>),
    Q8_0(Tiles<Q8Tile>),
}

/// Runs `$body` with `$t` bound to the [`Tiles`] of whichever type `$repr`
/// holds.
macro_rules! each {
    ($repr:expr, $t:ident => $body:expr) => {
        match $repr {
            Repr::Q4_1($t) => $body,
            Repr::Q5_0($t) => $body,
            Repr::Q5_1($t) => $body,
            Repr::Q8_0($t) => $body,
        }
    };
}

/// A `rows × cols` matrix in one of the [`LegacyType`]s, multiplied as
/// `x · Wᵀ` (the layout of every projection in a GGUF file).
pub struct LegacyMatrix {
    kind: LegacyType,
    repr: Repr,
}

impl std::fmt::Debug for LegacyMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (rows, cols) = self.shape();
        write!(f, "LegacyMatrix({:?}, {rows}×{cols})", self.kind)
    }
}

impl LegacyMatrix {
    /// Repacks raw GGUF data for a `rows × cols` matrix, on every thread of
    /// the kernels' pool.
    pub fn new(kind: LegacyType, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        let repr = match kind {
            LegacyType::Q4_1 => Repr::Q4_1(Tiles::new(rows, cols, data)?),
            LegacyType::Q5_0 => Repr::Q5_0(Tiles::new(rows, cols, data)?),
            LegacyType::Q5_1 => Repr::Q5_1(Tiles::new(rows, cols, data)?),
            LegacyType::Q8_0 => Repr::Q8_0(Tiles::new(rows, cols, data)?),
        };
        Ok(Self { kind, repr })
    }

    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.shape().0
    }

    /// Row `r`, dequantized: a token's embedding when the embedding matrix
    /// is held only as this (tied to the output projection). `None` unless
    /// the matrix is `Q8_0` and has that row.
    pub fn row_values(&self, r: usize) -> Option<Vec<f32>> {
        let Repr::Q8_0(t) = &self.repr else {
            return None;
        };
        if r >= t.rows {
            return None;
        }
        let (tile_row, within) = (r / ROWS, r % ROWS);
        let mut out = Vec::with_capacity(t.cols);
        for tile in t.row(tile_row) {
            let d = widen(tile.d[within]);
            out.extend((0..BLOCK).map(|i| tile.value(within, i) as f32 * d));
        }
        Some(out)
    }

    /// `x · Wᵀ` for `m` rows of `x` (each `cols` long), into `m × rows`.
    ///
    /// # Panics
    /// If `x` holds fewer than `m × cols` values.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(SimdLevel::get(), x, m)
    }

    fn matmul_with(&self, simd: SimdLevel, x: &[f32], m: usize) -> Vec<f32> {
        each!(&self.repr, t => t.matmul(simd, x, m))
    }
}

impl GatedMatrix for LegacyMatrix {
    fn shape(&self) -> (usize, usize) {
        each!(&self.repr, t => (t.rows, t.cols))
    }

    fn gated(&self, up: &Self, x: &[f32], m: usize) -> Vec<f32> {
        let simd = SimdLevel::get();
        match (&self.repr, &up.repr) {
            (Repr::Q4_1(g), Repr::Q4_1(u)) => g.gated(u, simd, x, m),
            (Repr::Q5_0(g), Repr::Q5_0(u)) => g.gated(u, simd, x, m),
            (Repr::Q5_1(g), Repr::Q5_1(u)) => g.gated(u, simd, x, m),
            (Repr::Q8_0(g), Repr::Q8_0(u)) => g.gated(u, simd, x, m),
            _ => gate_apart(self.matmul(x, m), &up.matmul(x, m)),
        }
    }
}

impl CustomOp1 for LegacyMatrix {
    fn name(&self) -> &'static str {
        "legacy-quant-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        apply(storage, layout, self.shape(), |x, m| self.matmul(x, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// `x` as the kernels see it: each block quantized, back in f32.
    fn as_quantized(x: &[f32]) -> Vec<f32> {
        x.chunks(BLOCK)
            .flat_map(|b| {
                let q = quantize_block(b);
                q.q.map(|v| f32::from(v) * q.d)
            })
            .collect()
    }

    /// Our product against candle's dequantize-then-multiply in f32 of the
    /// activations as quantized, and every SIMD kernel the CPU runs against
    /// the portable one.
    fn check(dtype: GgmlDType, rows: usize, cols: usize, m: usize) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &dev).unwrap();
        let qw = QTensor::quantize(&w, dtype).unwrap();
        let exact_w = qw.dequantize(&dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, cols), &dev).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let x8 = Tensor::from_vec(as_quantized(&xs), (m, cols), &dev).unwrap();
        let want = x8
            .matmul(&exact_w.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let kind = LegacyType::from_ggml(dtype).unwrap();
        let ours = LegacyMatrix::new(kind, rows, cols, &qw.data().unwrap()).unwrap();
        // A minimum multiplies the block's `s`, `d · Σq` rounded to f16
        // (relative error ≤ 2⁻¹¹, twice with `d`'s own rounding), where the
        // reference has `d · Σq`; no minimum exceeds the largest weight.
        let w_max = w
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let rounding: Vec<f32> = xs
            .chunks(cols)
            .map(|row| {
                let sums: f32 = row.chunks(BLOCK).map(|b| quantize_block(b).s.abs()).sum();
                match kind {
                    LegacyType::Q4_1 | LegacyType::Q5_1 => 1e-3 * w_max * sums,
                    _ => 0.0,
                }
            })
            .collect();
        let portable = ours.matmul_with(SimdLevel::Portable, &xs, m);
        for (at, (p, w)) in portable.iter().zip(&want).enumerate() {
            let close = (p - w).abs() < 1e-3 * (1.0 + w.abs()) + rounding[at / rows];
            assert!(close, "{dtype:?} {at}: {p} vs exact {w}");
        }
        for simd in [SimdLevel::Avx2, SimdLevel::Vnni] {
            if simd > SimdLevel::get() {
                continue;
            }
            let got = ours.matmul_with(simd, &xs, m);
            for (at, (g, p)) in got.iter().zip(&portable).enumerate() {
                let close = (g - p).abs() < 1e-3 * (1.0 + p.abs());
                assert!(close, "{dtype:?} {simd:?} {at}: {g} vs portable {p}");
            }
        }
    }

    /// One generated row, and row counts that are not multiples of the tile
    /// or of the rows sharing a load, with more than one task of each.
    fn check_shapes(dtype: GgmlDType) {
        check(dtype, 48, 256, 1);
        check(dtype, 75, 96, 7);
        check(dtype, 130, 160, 37);
    }

    #[test]
    fn q4_1_matches_dequantized_matmul() {
        check_shapes(GgmlDType::Q4_1);
    }

    #[test]
    fn q5_0_matches_dequantized_matmul() {
        check_shapes(GgmlDType::Q5_0);
    }

    #[test]
    fn q5_1_matches_dequantized_matmul() {
        check_shapes(GgmlDType::Q5_1);
    }

    #[test]
    fn q8_0_matches_dequantized_matmul() {
        check_shapes(GgmlDType::Q8_0);
    }

    /// A tied embedding read back from the output's tiles is what candle's
    /// dequantization gives, to the bit, in every row of a ragged last tile.
    #[test]
    fn q8_0_rows_read_back_exactly() {
        let dev = Device::Cpu;
        let (rows, cols) = (37, 96);
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &dev).unwrap();
        let qw = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let m = LegacyMatrix::new(LegacyType::Q8_0, rows, cols, &qw.data().unwrap()).unwrap();
        let exact: Vec<Vec<f32>> = qw.dequantize(&dev).unwrap().to_vec2().unwrap();
        for (r, want) in exact.iter().enumerate() {
            assert_eq!(m.row_values(r).as_ref(), Some(want), "row {r}");
        }
        assert_eq!(m.row_values(rows), None);
        let q4 = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let m = LegacyMatrix::new(LegacyType::Q4_1, rows, cols, &q4.data().unwrap()).unwrap();
        assert_eq!(m.row_values(0), None, "only Q8_0 is read back");
    }

    /// Every legacy type's fused gate/up product gives exactly candle's
    /// `silu` and product of our two separate products; a pair of two types
    /// (Q5_0 gate, Q8_0 up) is multiplied apart.
    #[test]
    fn gated_pairs_match_the_separate_ops() {
        use crate::kernels::Gated;
        let dev = Device::Cpu;
        let matrix = |dtype, rows| {
            let w = Tensor::randn(0f32, 1.0, (rows, 256), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let kind = LegacyType::from_ggml(dtype).unwrap();
            LegacyMatrix::new(kind, rows, 256, &q.data().unwrap()).unwrap()
        };
        let x = Tensor::randn(0f32, 1.0, (11, 256), &dev).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let pairs = [
            (GgmlDType::Q4_1, GgmlDType::Q4_1),
            (GgmlDType::Q5_0, GgmlDType::Q5_0),
            (GgmlDType::Q5_1, GgmlDType::Q5_1),
            (GgmlDType::Q8_0, GgmlDType::Q8_0),
            (GgmlDType::Q5_0, GgmlDType::Q8_0),
        ];
        for (g, u) in pairs {
            let (gate, up) = (matrix(g, 40), matrix(u, 40));
            let separate = (candle_nn::ops::silu(&x.apply_op1_no_bwd(&gate).unwrap()).unwrap()
                * x.apply_op1_no_bwd(&up).unwrap())
            .unwrap();
            let fused = x
                .apply_op1_no_bwd(&Gated {
                    gate: &gate,
                    up: &up,
                })
                .unwrap();
            assert_eq!(flat(&fused), flat(&separate), "{g:?} with {u:?}");
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(LegacyMatrix::new(LegacyType::Q4_1, 2, 32, &[0; 39]).is_err());
        assert!(LegacyMatrix::new(LegacyType::Q4_1, 2, 30, &[0; 40]).is_err());
        assert!(LegacyMatrix::new(LegacyType::Q8_0, 2, 32, &[0; 67]).is_err());
    }
}
