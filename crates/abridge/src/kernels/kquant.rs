//! Matrix products of the k-quant types of a Q4_K_M file: `Q4_K` (most of
//! its projections: every attention and feed-forward input of Mistral-7B)
//! and `Q6_K` (the rest: half the value and down projections, the output).
//!
//! candle-core multiplies these through a repacked copy it makes on first
//! use and keeps beside the file's blocks, with scales widened to f32: the
//! 7B's weights sat in memory 2.3 times over, and the first prompt paid for
//! the repack. Here the blocks are repacked once, at load, straight from the
//! file's pages into the only copy: `Q4_K` 2.8% larger than the file (scales
//! unpacked to bytes), `Q6_K` the file's size.
//!
//! A tile (see `tiles`) holds 16 weight rows of one 256-value super-block:
//! the 4-bit values as nibbles, eight values a lane, with `Q6_K`'s two high
//! bits in a plane of their own, and the sub-block scales of all 16 rows
//! side by side so one vector widens them.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::f16;

use super::simd::SimdLevel;
use super::tiles::{GatedMatrix, ROWS, Tile, Tiles, apply, gate_apart};
use crate::error::Result;

/// Values per super-block, the unit k-quant scales are stored for.
const QK: usize = 256;
/// The block types these kernels cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KQuantType {
    /// 4-bit values in sub-blocks of 32 with 6-bit scales and minimums.
    Q4K,
    /// 6-bit values in sub-blocks of 16 with 8-bit scales, centred on 32.
    Q6K,
}

impl KQuantType {
    /// The type for a candle dtype, when these kernels cover it.
    pub fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as D;
        match dtype {
            D::Q4K => Some(Self::Q4K),
            D::Q6K => Some(Self::Q6K),
            _ => None,
        }
    }
}

/// 256 activations quantized to 8 bits: `x ≈ d · q`.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Q8Super {
    q: [i8; QK],
    /// `-32 Σq` of each 16-value sub-block: `Q6_K`'s centring, ready to
    /// start a sub-block's sum (broadcast from memory, it costs the vector
    /// ports nothing; made in the kernel, a tenth of `Q6_K`'s instructions).
    centres: [i32; 16],
    /// `Σq` of each 32-value sub-block, for `Q4_K`'s minimums.
    sums: [i16; 8],
    d: f32,
}

fn quantize_super(chunk: &[f32]) -> Q8Super {
    let mut q = [0i8; QK];
    let d = super::simd::quantize_i8(chunk, &mut q);
    let sum = |c: &[i8]| c.iter().map(|&v| i16::from(v)).sum::<i16>();
    let mut sums16 = [0i16; 16];
    for (s, c) in sums16.iter_mut().zip(q.chunks_exact(16)) {
        *s = sum(c);
    }
    let sums = std::array::from_fn(|j| sums16[2 * j] + sums16[2 * j + 1]);
    let centres = sums16.map(|s| -32 * i32::from(s));
    Q8Super {
        q,
        centres,
        sums,
        d,
    }
}

fn widen(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// 16 rows × 256 values of a `Q4_K` matrix.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Q4KTile {
    /// For each pair `k` of 32-value sub-blocks, for each group `l` of four
    /// values, for each row `r`: four bytes, byte `t` holding value `4l + t`
    /// of sub-block `2k` in its low nibble and of sub-block `2k + 1` in its
    /// high one. This is the file's own pairing of nibbles, so the repack
    /// copies bytes, and a kernel takes one sub-block with one mask: the
    /// high nibbles unshifted, as sixteen times their value.
    qs: [u8; QK / 8 * ROWS * 4],
    /// The 6-bit scale of each 32-value sub-block `j`, for each row:
    /// `[j][r]`.
    scales: [u8; 8 * ROWS],
    /// The 6-bit minimum of each sub-block, in pairs of sub-blocks so one
    /// `madd` takes two: `[j / 2][r][j % 2]`.
    mins: [u8; 8 * ROWS],
    /// Each row's super-block scale, f16 bits.
    d: [u16; ROWS],
    /// Each row's super-block minimum scale, f16 bits.
    dmin: [u16; ROWS],
}

const _: () = assert!(std::mem::size_of::<Q4KTile>() == 2368);

impl Q4KTile {
    /// Unsigned 4-bit value `n` (of 256) of row `r`.
    fn value(&self, r: usize, n: usize) -> u8 {
        let (j, w) = (n / 32, n % 32);
        let byte = self.qs[(j / 2 * 8 + w / 4) * ROWS * 4 + r * 4 + w % 4];
        if j % 2 == 0 { byte & 0x0F } else { byte >> 4 }
    }

    fn min(&self, r: usize, j: usize) -> u8 {
        self.mins[j / 2 * ROWS * 2 + r * 2 + j % 2]
    }
}

/// Scale and minimum of sub-block `j` from the 12 bytes that pack eight of
/// each in six bits.
fn scale_min(packed: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

impl Tile for Q4KTile {
    type Act = Q8Super;
    const NAME: &'static str = "Q4_K";
    const VALUES: usize = QK;
    const EMPTY: Self = Self {
        qs: [0; QK / 8 * ROWS * 4],
        scales: [0; 8 * ROWS],
        mins: [0; 8 * ROWS],
        d: [0; ROWS],
        dmin: [0; ROWS],
    };
    const BLOCK_BYTES: usize = 144;

    fn quantize(x: &[f32]) -> Q8Super {
        quantize_super(x)
    }

    fn set_row(&mut self, r: usize, block: &[u8]) {
        self.d[r] = u16::from_le_bytes([block[0], block[1]]);
        self.dmin[r] = u16::from_le_bytes([block[2], block[3]]);
        for j in 0..8 {
            let (sc, mn) = scale_min(&block[4..16], j);
            self.scales[j * ROWS + r] = sc;
            self.mins[j / 2 * ROWS * 2 + r * 2 + j % 2] = mn;
        }
        // The file stores sub-blocks 2k and 2k + 1 in the low and high
        // nibbles of bytes 32k ..32k + 32, as the tile does.
        for (l, four) in block[16..144].chunks_exact(4).enumerate() {
            self.qs[l * ROWS * 4 + r * 4..][..4].copy_from_slice(four);
        }
    }

    fn dot_portable(tiles: &[Self], xs: &[&[Q8Super]], out: &mut [[f32; ROWS]]) {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            for (r, o) in o.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (t, a) in tiles.iter().zip(x.iter()) {
                    let (mut dot, mut mins) = (0i32, 0i32);
                    for j in 0..8 {
                        let sub: i32 = (32 * j..32 * (j + 1))
                            .map(|k| i32::from(t.value(r, k)) * i32::from(a.q[k]))
                            .sum();
                        dot += i32::from(t.scales[j * ROWS + r]) * sub;
                        mins += i32::from(t.min(r, j)) * i32::from(a.sums[j]);
                    }
                    let (d, dmin) = (widen(t.d[r]), widen(t.dmin[r]));
                    acc += a.d * (d * dot as f32 - dmin * mins as f32);
                }
                *o = acc;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const R: usize>(
        tiles: &[Self],
        xs: &[&[Q8Super]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        // SAFETY: the caller checked the CPU features.
        unsafe { x86::q4k_avx512(tiles, xs, out) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const R: usize>(
        tiles: &[Self],
        xs: &[&[Q8Super]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        // SAFETY: the caller checked the CPU features.
        unsafe { x86::q4k_avx2(tiles, xs, out) }
    }
}

/// 16 rows × 256 values of a `Q6_K` matrix.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Q6KTile {
    /// The low four bits of each value: for each group `g` of eight
    /// values, for each row: four bytes, byte `t` holding value `8g + t` in
    /// its low nibble and `8g + t + 4` in its high one.
    lo: [u8; QK / 8 * ROWS * 4],
    /// The high two bits: for each group `h` of 16 values, for each row:
    /// four bytes, byte `t` holding those of value `16h + t + 4i` at bit
    /// `2i`.
    hi: [u8; QK / 16 * ROWS * 4],
    /// The signed scale of each 16-value sub-block `s`, for each row:
    /// `[s][r]`.
    scales: [i8; 16 * ROWS],
    /// Each row's super-block scale, f16 bits.
    d: [u16; ROWS],
}

const _: () = assert!(std::mem::size_of::<Q6KTile>() == 16 * 210);

/// Unsigned 6-bit value `n` (of 256) of a `Q6_K` file block: the low four
/// bits of two values share a byte of `ql`, the high two bits of four share
/// one of `qh`.
/// A Q6_K block's 256 six-bit values, in order: value `128c + 32q + l` has
/// its low four bits in byte `64c + 32(q % 2) + l` (low nibble for q < 2,
/// high otherwise) and its top two at bits `2q` of byte `128 + 32c + l`.
/// Written as four runs of 32 so the loop vectorizes: value by value, with
/// a bounds check on each byte, this was a third of the 7B's load time; now
/// under 2%.
fn q6_values(block: &[u8; 210]) -> [u8; QK] {
    let mut v = [0u8; QK];
    for c in 0..2 {
        let (ql, qh) = (
            &block[64 * c..64 * c + 64],
            &block[128 + 32 * c..160 + 32 * c],
        );
        let out = &mut v[128 * c..128 * c + 128];
        for l in 0..32 {
            let (a, b, h) = (ql[l], ql[32 + l], qh[l]);
            out[l] = (a & 0x0F) | ((h & 3) << 4);
            out[32 + l] = (b & 0x0F) | (((h >> 2) & 3) << 4);
            out[64 + l] = (a >> 4) | (((h >> 4) & 3) << 4);
            out[96 + l] = (b >> 4) | ((h >> 6) << 4);
        }
    }
    v
}

impl Q6KTile {
    fn value(&self, r: usize, n: usize) -> u8 {
        let byte = self.lo[n / 8 * ROWS * 4 + r * 4 + n % 4];
        let low = if n % 8 < 4 { byte & 0x0F } else { byte >> 4 };
        let hi = self.hi[n / 16 * ROWS * 4 + r * 4 + n % 4];
        low | (((hi >> (2 * (n % 16 / 4))) & 3) << 4)
    }
}

impl Tile for Q6KTile {
    type Act = Q8Super;
    const NAME: &'static str = "Q6_K";
    const VALUES: usize = QK;
    const EMPTY: Self = Self {
        lo: [0; QK / 8 * ROWS * 4],
        hi: [0; QK / 16 * ROWS * 4],
        scales: [0; 16 * ROWS],
        d: [0; ROWS],
    };
    const BLOCK_BYTES: usize = 210;

    fn quantize(x: &[f32]) -> Q8Super {
        quantize_super(x)
    }

    fn set_row(&mut self, r: usize, block: &[u8]) {
        let block: &[u8; 210] = block.try_into().expect("Q6_K blocks are 210 bytes");
        self.d[r] = u16::from_le_bytes([block[208], block[209]]);
        for s in 0..16 {
            self.scales[s * ROWS + r] = block[192 + s] as i8;
        }
        let v = q6_values(block);
        for (g, v) in v.chunks_exact(8).enumerate() {
            let lo = &mut self.lo[g * ROWS * 4 + r * 4..][..4];
            for t in 0..4 {
                lo[t] = (v[t] & 0x0F) | ((v[t + 4] & 0x0F) << 4);
            }
        }
        for (h, v) in v.chunks_exact(16).enumerate() {
            let hi = &mut self.hi[h * ROWS * 4 + r * 4..][..4];
            for t in 0..4 {
                hi[t] = (v[t] >> 4)
                    | ((v[t + 4] >> 4) << 2)
                    | ((v[t + 8] >> 4) << 4)
                    | ((v[t + 12] >> 4) << 6);
            }
        }
    }

    fn dot_portable(tiles: &[Self], xs: &[&[Q8Super]], out: &mut [[f32; ROWS]]) {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            for (r, o) in o.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (t, a) in tiles.iter().zip(x.iter()) {
                    let mut dot = 0i32;
                    for s in 0..16 {
                        let sub: i32 = (16 * s..16 * (s + 1))
                            .map(|n| i32::from(t.value(r, n)) * i32::from(a.q[n]))
                            .sum();
                        let centred = sub + a.centres[s];
                        dot += i32::from(t.scales[s * ROWS + r]) * centred;
                    }
                    acc += a.d * widen(t.d[r]) * dot as f32;
                }
                *o = acc;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const R: usize>(
        tiles: &[Self],
        xs: &[&[Q8Super]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        // SAFETY: the caller checked the CPU features.
        unsafe { x86::q6k_avx512(tiles, xs, out) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const R: usize>(
        tiles: &[Self],
        xs: &[&[Q8Super]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        // SAFETY: the caller checked the CPU features.
        unsafe { x86::q6k_avx2(tiles, xs, out) }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Q4KTile, Q6KTile, Q8Super};
    use crate::kernels::tiles::{LANES, ROWS, four};
    use std::arch::x86_64::*;

    /// Sums of sub-blocks `2 * pair` and `2 * pair + 1`, as the two i16
    /// halves of one i32.
    #[inline]
    fn sum_pair(a: &Q8Super, pair: usize) -> i32 {
        let (lo, hi) = (a.sums[2 * pair] as u16, a.sums[2 * pair + 1] as u16);
        (u32::from(lo) | (u32::from(hi) << 16)) as i32
    }

    /// `out[i][r]` for the `R` activation rows `xs` and the 16 rows of a row
    /// of tiles, 16 rows to a 512-bit register.
    ///
    /// The kernel is bound by its vector instructions, which share two
    /// ports: per sub-block, one mask per load (a high nibble is taken as
    /// sixteen times its value, its scale divided by 16), one conversion
    /// and one multiply-add per activation row; the minimums in one VNNI
    /// word product per pair of sub-blocks.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q4k_avx512<const R: usize>(
        tiles: &[Q4KTile],
        xs: &[&[Q8Super]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        let nibbles = [_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0xF0u8 as i8)];
        let sixteenth = _mm512_set1_ps(1.0 / 16.0);
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, t) in tiles.iter().enumerate() {
            let a: [&Q8Super; R] = std::array::from_fn(|i| &xs[i][b]);
            let mut sub = [_mm512_setzero_ps(); R];
            for j in 0..8 {
                let (k, high) = (j / 2, j % 2);
                let mut p = [_mm512_setzero_si512(); R];
                for l in 0..8 {
                    // SAFETY: `(8k + l) * 64 + 64` is within `qs` (2048 bytes).
                    let w =
                        unsafe { _mm512_loadu_si512(t.qs.as_ptr().add((8 * k + l) * 64).cast()) };
                    let v = _mm512_and_si512(w, nibbles[high]);
                    for i in 0..R {
                        // SAFETY: `32j + 4l + 4` ≤ 256.
                        let x = unsafe { four(&a[i].q, 32 * j + 4 * l) };
                        p[i] = _mm512_dpbusd_epi32(p[i], v, _mm512_set1_epi32(x));
                    }
                }
                // SAFETY: `j * 16 + 16` is within `scales` (128 bytes).
                let sc8 = unsafe { _mm_loadu_si128(t.scales.as_ptr().add(j * ROWS).cast()) };
                let mut sc = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc8));
                if high == 1 {
                    sc = _mm512_mul_ps(sc, sixteenth);
                }
                for i in 0..R {
                    sub[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[i]), sc, sub[i]);
                }
            }
            // SAFETY: `d` and `dmin` are 16 f16 values.
            let (d, dmin) = unsafe {
                (
                    _mm512_cvtph_ps(_mm256_loadu_si256(t.d.as_ptr().cast())),
                    _mm512_cvtph_ps(_mm256_loadu_si256(t.dmin.as_ptr().cast())),
                )
            };
            let mut mins = [_mm512_setzero_si512(); R];
            for pair in 0..4 {
                // SAFETY: `pair * 32 + 32` is within `mins` (128 bytes).
                let mn8 = unsafe { _mm256_loadu_si256(t.mins.as_ptr().add(pair * 32).cast()) };
                let mn = _mm512_cvtepu8_epi16(mn8);
                for i in 0..R {
                    let s = _mm512_set1_epi32(sum_pair(a[i], pair));
                    mins[i] = _mm512_dpwssd_epi32(mins[i], mn, s);
                }
            }
            for i in 0..R {
                let v = _mm512_mul_ps(d, sub[i]);
                let v = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(mins[i]), v);
                acc[i] = _mm512_fmadd_ps(v, _mm512_set1_ps(a[i].d), acc[i]);
            }
        }
        for i in 0..R {
            // SAFETY: a row of `out` is 16 floats.
            unsafe { _mm512_storeu_ps(out[i].as_mut_ptr(), acc[i]) };
        }
    }

    /// The same on AVX2, eight rows to a 256-bit register: `maddubs` in
    /// place of VNNI's `dpbusd`, the 16-bit pair sums of a sub-block added
    /// before widening (8 × 2 × 15 × 127 < 2¹⁵), and widened by a `madd`
    /// with the sub-block's scale, so sub-blocks add up in integers
    /// (8 × 30,480 × 63 < 2³¹) and convert once per super-block.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4k_avx2<const R: usize>(
        tiles: &[Q4KTile],
        xs: &[&[Q8Super]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        let low4 = _mm256_set1_epi8(0x0F);
        for half in 0..ROWS / LANES {
            let mut acc = [_mm256_setzero_ps(); R];
            for (b, t) in tiles.iter().enumerate() {
                let a: [&Q8Super; R] = std::array::from_fn(|i| &xs[i][b]);
                let mut sub = [_mm256_setzero_si256(); R];
                for j in 0..8 {
                    let (k, high) = (j / 2, j % 2 == 1);
                    let mut p = [_mm256_setzero_si256(); R];
                    for l in 0..8 {
                        let at = (8 * k + l) * ROWS * 4 + half * LANES * 4;
                        // SAFETY: `at + 32` is within `qs` (2048 bytes).
                        let w = unsafe { _mm256_loadu_si256(t.qs.as_ptr().add(at).cast()) };
                        let w = if high { _mm256_srli_epi16::<4>(w) } else { w };
                        let v = _mm256_and_si256(w, low4);
                        for i in 0..R {
                            // SAFETY: `32j + 4l + 4` ≤ 256.
                            let x = unsafe { four(&a[i].q, 32 * j + 4 * l) };
                            let m = _mm256_maddubs_epi16(v, _mm256_set1_epi32(x));
                            p[i] = _mm256_add_epi16(p[i], m);
                        }
                    }
                    let at = j * ROWS + half * LANES;
                    // SAFETY: `at + 8` is within `scales` (128 bytes).
                    let sc8 = unsafe { _mm_loadl_epi64(t.scales.as_ptr().add(at).cast()) };
                    // The scale in both 16-bit halves of its row's lane.
                    let sc = _mm256_cvtepu8_epi32(sc8);
                    let sc = _mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc));
                    for i in 0..R {
                        sub[i] = _mm256_add_epi32(sub[i], _mm256_madd_epi16(p[i], sc));
                    }
                }
                // SAFETY: `d` and `dmin` are 16 f16 values.
                let (d, dmin) = unsafe {
                    (
                        _mm256_cvtph_ps(_mm_loadu_si128(t.d.as_ptr().add(half * LANES).cast())),
                        _mm256_cvtph_ps(_mm_loadu_si128(t.dmin.as_ptr().add(half * LANES).cast())),
                    )
                };
                let mut mins = [_mm256_setzero_si256(); R];
                for pair in 0..4 {
                    let at = pair * ROWS * 2 + half * LANES * 2;
                    // SAFETY: `at + 16` is within `mins` (128 bytes).
                    let mn8 = unsafe { _mm_loadu_si128(t.mins.as_ptr().add(at).cast()) };
                    let mn = _mm256_cvtepu8_epi16(mn8);
                    for i in 0..R {
                        let s = _mm256_set1_epi32(sum_pair(a[i], pair));
                        mins[i] = _mm256_add_epi32(mins[i], _mm256_madd_epi16(mn, s));
                    }
                }
                for i in 0..R {
                    let v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sub[i]));
                    let v = _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(mins[i]), v);
                    acc[i] = _mm256_fmadd_ps(v, _mm256_set1_ps(a[i].d), acc[i]);
                }
            }
            for i in 0..R {
                // SAFETY: `half * 8 + 8` is within a row of 16.
                unsafe { _mm256_storeu_ps(out[i].as_mut_ptr().add(half * LANES), acc[i]) };
            }
        }
    }

    /// `out[i][r]` for the `R` activation rows `xs` and the 16 rows of a row
    /// of `Q6_K` tiles, 16 rows to a 512-bit register. Each sub-block's
    /// integer sum starts at `-32 Σq`, the centring of its values.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn q6k_avx512<const R: usize>(
        tiles: &[Q6KTile],
        xs: &[&[Q8Super]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        let low4 = _mm512_set1_epi8(0x0F);
        let high2 = _mm512_set1_epi8(0x30);
        let mut acc = [_mm512_setzero_ps(); R];
        for (b, t) in tiles.iter().enumerate() {
            let a: [&Q8Super; R] = std::array::from_fn(|i| &xs[i][b]);
            let mut sub = [_mm512_setzero_ps(); R];
            for s in 0..16 {
                let mut p: [__m512i; R] =
                    std::array::from_fn(|i| _mm512_set1_epi32(a[i].centres[s]));
                // SAFETY: `s * 64 + 64` is within `hi` (1024 bytes).
                let hb = unsafe { _mm512_loadu_si512(t.hi.as_ptr().add(s * 64).cast()) };
                // The high bits of group 2s sit at bits 0 and 2, of 2s + 1 at
                // 4 and 6; each goes to bits 4-5 of its byte.
                let highs = [
                    (_mm512_slli_epi16::<4>(hb), _mm512_slli_epi16::<2>(hb)),
                    (hb, _mm512_srli_epi16::<2>(hb)),
                ];
                for (e, (h0, h1)) in highs.into_iter().enumerate() {
                    let g = 2 * s + e;
                    // SAFETY: `g * 64 + 64` is within `lo` (2048 bytes).
                    let w = unsafe { _mm512_loadu_si512(t.lo.as_ptr().add(g * 64).cast()) };
                    let v0 =
                        _mm512_or_si512(_mm512_and_si512(w, low4), _mm512_and_si512(h0, high2));
                    let w1 = _mm512_and_si512(_mm512_srli_epi16::<4>(w), low4);
                    let v1 = _mm512_or_si512(w1, _mm512_and_si512(h1, high2));
                    for i in 0..R {
                        // SAFETY: `8 * g + 8` ≤ 256.
                        let (x0, x1) = unsafe { (four(&a[i].q, 8 * g), four(&a[i].q, 8 * g + 4)) };
                        p[i] = _mm512_dpbusd_epi32(p[i], v0, _mm512_set1_epi32(x0));
                        p[i] = _mm512_dpbusd_epi32(p[i], v1, _mm512_set1_epi32(x1));
                    }
                }
                // SAFETY: `s * 16 + 16` is within `scales` (256 bytes).
                let sc8 = unsafe { _mm_loadu_si128(t.scales.as_ptr().add(s * ROWS).cast()) };
                let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8));
                for i in 0..R {
                    sub[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[i]), sc, sub[i]);
                }
            }
            // SAFETY: `d` is 16 f16 values.
            let d = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(t.d.as_ptr().cast()) });
            for i in 0..R {
                let v = _mm512_mul_ps(d, sub[i]);
                acc[i] = _mm512_fmadd_ps(v, _mm512_set1_ps(a[i].d), acc[i]);
            }
        }
        for i in 0..R {
            // SAFETY: a row of `out` is 16 floats.
            unsafe { _mm512_storeu_ps(out[i].as_mut_ptr(), acc[i]) };
        }
    }

    /// The same on AVX2, eight rows to a 256-bit register, `maddubs` in
    /// place of `dpbusd` (2 × 2 × 63 × 127 < 2¹⁵ for the two halves of a
    /// group added in 16 bits).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q6k_avx2<const R: usize>(
        tiles: &[Q6KTile],
        xs: &[&[Q8Super]; R],
        out: &mut [[f32; ROWS]; R],
    ) {
        let low4 = _mm256_set1_epi8(0x0F);
        let high2 = _mm256_set1_epi8(0x30);
        let ones = _mm256_set1_epi16(1);
        for half in 0..ROWS / LANES {
            let mut acc = [_mm256_setzero_ps(); R];
            for (b, t) in tiles.iter().enumerate() {
                let a: [&Q8Super; R] = std::array::from_fn(|i| &xs[i][b]);
                let mut sub = [_mm256_setzero_ps(); R];
                for s in 0..16 {
                    let mut p: [__m256i; R] =
                        std::array::from_fn(|i| _mm256_set1_epi32(a[i].centres[s]));
                    let at = s * ROWS * 4 + half * LANES * 4;
                    // SAFETY: `at + 32` is within `hi` (1024 bytes).
                    let hb = unsafe { _mm256_loadu_si256(t.hi.as_ptr().add(at).cast()) };
                    let highs = [
                        (_mm256_slli_epi16::<4>(hb), _mm256_slli_epi16::<2>(hb)),
                        (hb, _mm256_srli_epi16::<2>(hb)),
                    ];
                    for (e, (h0, h1)) in highs.into_iter().enumerate() {
                        let g = 2 * s + e;
                        let at = g * ROWS * 4 + half * LANES * 4;
                        // SAFETY: `at + 32` is within `lo` (2048 bytes).
                        let w = unsafe { _mm256_loadu_si256(t.lo.as_ptr().add(at).cast()) };
                        let v0 =
                            _mm256_or_si256(_mm256_and_si256(w, low4), _mm256_and_si256(h0, high2));
                        let w1 = _mm256_and_si256(_mm256_srli_epi16::<4>(w), low4);
                        let v1 = _mm256_or_si256(w1, _mm256_and_si256(h1, high2));
                        for i in 0..R {
                            // SAFETY: `8 * g + 8` ≤ 256.
                            let (x0, x1) =
                                unsafe { (four(&a[i].q, 8 * g), four(&a[i].q, 8 * g + 4)) };
                            let l = _mm256_maddubs_epi16(v0, _mm256_set1_epi32(x0));
                            let h = _mm256_maddubs_epi16(v1, _mm256_set1_epi32(x1));
                            let pairs = _mm256_madd_epi16(_mm256_add_epi16(l, h), ones);
                            p[i] = _mm256_add_epi32(p[i], pairs);
                        }
                    }
                    let at = s * ROWS + half * LANES;
                    // SAFETY: `at + 8` is within `scales` (256 bytes).
                    let sc8 = unsafe { _mm_loadl_epi64(t.scales.as_ptr().add(at).cast()) };
                    let sc = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc8));
                    for i in 0..R {
                        sub[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p[i]), sc, sub[i]);
                    }
                }
                // SAFETY: `d` is 16 f16 values.
                let d = _mm256_cvtph_ps(unsafe {
                    _mm_loadu_si128(t.d.as_ptr().add(half * LANES).cast())
                });
                for i in 0..R {
                    let v = _mm256_mul_ps(d, sub[i]);
                    acc[i] = _mm256_fmadd_ps(v, _mm256_set1_ps(a[i].d), acc[i]);
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
    Q4K(Tiles<Q4KTile>),
    Q6K(Tiles<Q6KTile>),
}

/// A `rows × cols` matrix of one of the [`KQuantType`]s, multiplied as
/// `x · Wᵀ` (the layout of every projection in a GGUF file).
pub struct KQuantMatrix(Repr);

impl std::fmt::Debug for KQuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, rows, cols) = self.describe();
        write!(f, "KQuantMatrix({kind:?}, {rows}×{cols})")
    }
}

impl KQuantMatrix {
    /// Repacks raw GGUF data for a `rows × cols` matrix, on every thread of
    /// the kernels' pool.
    pub fn new(kind: KQuantType, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        Ok(Self(match kind {
            KQuantType::Q4K => Repr::Q4K(Tiles::new(rows, cols, data)?),
            KQuantType::Q6K => Repr::Q6K(Tiles::new(rows, cols, data)?),
        }))
    }

    fn describe(&self) -> (KQuantType, usize, usize) {
        match &self.0 {
            Repr::Q4K(t) => (KQuantType::Q4K, t.rows, t.cols),
            Repr::Q6K(t) => (KQuantType::Q6K, t.rows, t.cols),
        }
    }

    /// `x · Wᵀ` for `m` rows of `x` (each `cols` long), into `m × rows`.
    ///
    /// # Panics
    /// If `x` holds fewer than `m × cols` values.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(SimdLevel::get(), x, m)
    }

    fn matmul_with(&self, simd: SimdLevel, x: &[f32], m: usize) -> Vec<f32> {
        match &self.0 {
            Repr::Q4K(t) => t.matmul(simd, x, m),
            Repr::Q6K(t) => t.matmul(simd, x, m),
        }
    }
}

impl GatedMatrix for KQuantMatrix {
    fn shape(&self) -> (usize, usize) {
        let (_, rows, cols) = self.describe();
        (rows, cols)
    }

    fn gated(&self, up: &Self, x: &[f32], m: usize) -> Vec<f32> {
        let simd = SimdLevel::get();
        match (&self.0, &up.0) {
            (Repr::Q4K(g), Repr::Q4K(u)) => g.gated(u, simd, x, m),
            (Repr::Q6K(g), Repr::Q6K(u)) => g.gated(u, simd, x, m),
            _ => gate_apart(self.matmul(x, m), &up.matmul(x, m)),
        }
    }
}

impl CustomOp1 for KQuantMatrix {
    fn name(&self) -> &'static str {
        "k-quant-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, rows, cols) = self.describe();
        apply(storage, layout, (rows, cols), |x, m| self.matmul(x, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// `x` with each 256-value block rounded to 8 bits as llama.cpp's
    /// `Q8_K` does (step: the block's largest magnitude / 127), back in f32.
    fn rounded_to_8_bits(x: &[f32]) -> Vec<f32> {
        x.chunks(QK)
            .flat_map(|b| {
                let d = b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
                b.iter().map(move |v| (v * inv).round_ties_even() * d)
            })
            .collect()
    }

    /// Our product against candle's dequantize-then-multiply in f32 (of the
    /// activations as rounded to 8 bits, which is exact integer arithmetic
    /// in the kernel), and every SIMD kernel the CPU runs against the
    /// portable one.
    fn check(dtype: GgmlDType, rows: usize, cols: usize, m: usize) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &dev).unwrap();
        let qw = QTensor::quantize(&w, dtype).unwrap();
        let exact_w = qw.dequantize(&dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, cols), &dev).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let x8 = Tensor::from_vec(rounded_to_8_bits(&xs), (m, cols), &dev).unwrap();
        let want = x8
            .matmul(&exact_w.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let kind = KQuantType::from_ggml(dtype).unwrap();
        let ours = KQuantMatrix::new(kind, rows, cols, &qw.data().unwrap()).unwrap();
        let portable = ours.matmul_with(SimdLevel::Portable, &xs, m);
        for (at, (p, w)) in portable.iter().zip(&want).enumerate() {
            // Only the order of f32 additions differs.
            let close = (p - w).abs() < 1e-3 * (1.0 + w.abs());
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

    #[test]
    fn q4k_matches_dequantized_matmul() {
        check(GgmlDType::Q4K, 48, 512, 1);
        // Row counts that are not multiples of the tile or of the rows
        // sharing a load, and more than one task of each.
        check(GgmlDType::Q4K, 75, 256, 7);
        check(GgmlDType::Q4K, 130, 768, 37);
    }

    #[test]
    fn q6k_matches_dequantized_matmul() {
        check(GgmlDType::Q6K, 48, 512, 1);
        check(GgmlDType::Q6K, 75, 256, 7);
        check(GgmlDType::Q6K, 130, 768, 37);
    }

    #[test]
    fn inputs_the_product_cannot_take_are_errors() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (16, 256), &dev).unwrap();
        let qw = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
        let ours = KQuantMatrix::new(KQuantType::Q4K, 16, 256, &qw.data().unwrap()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 256), &dev).unwrap();
        assert_eq!(x.apply_op1_no_bwd(&ours).unwrap().dims(), &[3, 16]);
        let narrow = Tensor::randn(0f32, 1.0, (3, 128), &dev).unwrap();
        let half = x.to_dtype(candle_core::DType::F16).unwrap();
        let strided = Tensor::randn(0f32, 1.0, (256, 3), &dev)
            .unwrap()
            .t()
            .unwrap();
        for (what, bad) in [("columns", narrow), ("f32", half), ("contiguous", strided)] {
            let err = bad.apply_op1_no_bwd(&ours).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }

    /// The fused gate/up product gives exactly what candle's `silu` and
    /// product give from our two separate products: in one pass for two
    /// `Q4_K` matrices, apart for `Q4_K` with `Q6_K`. Matrices of different
    /// shapes are an error, not a panic.
    #[test]
    fn a_gated_pair_matches_the_separate_ops() {
        use crate::kernels::Gated;
        let dev = Device::Cpu;
        let matrix = |dtype, rows| {
            let w = Tensor::randn(0f32, 1.0, (rows, 512), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let kind = KQuantType::from_ggml(dtype).unwrap();
            KQuantMatrix::new(kind, rows, 512, &q.data().unwrap()).unwrap()
        };
        let gate = matrix(GgmlDType::Q4K, 75);
        let x = Tensor::randn(0f32, 1.0, (37, 512), &dev).unwrap();
        for up in [matrix(GgmlDType::Q4K, 75), matrix(GgmlDType::Q6K, 75)] {
            let g = x.apply_op1_no_bwd(&gate).unwrap();
            let u = x.apply_op1_no_bwd(&up).unwrap();
            let want = (candle_nn::ops::silu(&g).unwrap() * u).unwrap();
            let got = x
                .apply_op1_no_bwd(&Gated {
                    gate: &gate,
                    up: &up,
                })
                .unwrap();
            assert_eq!(got.dims(), &[37, 75]);
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&got), flat(&want));
        }
        let other = matrix(GgmlDType::Q4K, 48);
        let err = x.apply_op1_no_bwd(&Gated {
            gate: &gate,
            up: &other,
        });
        assert!(err.unwrap_err().to_string().contains("shape"));
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(KQuantMatrix::new(KQuantType::Q4K, 2, 256, &[0; 287]).is_err());
        assert!(KQuantMatrix::new(KQuantType::Q4K, 2, 200, &[0; 288]).is_err());
        assert!(KQuantMatrix::new(KQuantType::Q6K, 2, 256, &[0; 421]).is_err());
    }
}
