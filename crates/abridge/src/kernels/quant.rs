//! Quantized matrix multiplication for the legacy GGUF block types that
//! candle-core computes with scalar code only: `Q4_1`, `Q5_0` and `Q5_1`.
//!
//! SmolLM2's Q4_1 file spent 90% of its time in candle's unoptimised Q4_1 dot
//! product (28 prompt tokens/s on 2 threads), and Qwen2.5's Q4_K_M file keeps
//! most of its attention and gate/up weights in Q5_0. These kernels do what
//! llama.cpp does: quantize each activation row to 8 bits in blocks of 32
//! (`Q8_1`: a scale and the block's sum), then take integer dot products with
//! AVX2 `maddubs`, falling back to portable code on CPUs without AVX2.
//!
//! Work is split across threads by blocks of weight rows; each task runs every
//! activation row against its rows, so a block of weights is read from memory
//! once per call rather than once per prompt token.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::f16;
use std::sync::Mutex;

use super::simd::SimdLevel;
use super::tiles::apply;
use crate::error::{Error, Result};

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
}

impl LegacyType {
    /// The type for a candle dtype, when these kernels cover it.
    pub fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as D;
        match dtype {
            D::Q4_1 => Some(Self::Q4_1),
            D::Q5_0 => Some(Self::Q5_0),
            D::Q5_1 => Some(Self::Q5_1),
            _ => None,
        }
    }

    /// Bytes per block of 32 values.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
        }
    }
}

/// One block of weights, repacked at load time into one aligned layout for
/// all three types: scales as their f16 bits (one F16C instruction to widen;
/// f32 scales made Qwen2.5-0.5B's Q5_0 matrices take 27% more memory than
/// the file), nibbles and fifth bits as stored.
#[derive(Debug, Clone, Copy)]
struct WeightBlock {
    /// The block scale, f16 bits.
    d: u16,
    /// The block minimum (`Q4_1`, `Q5_1`), f16 bits; unused for `Q5_0`.
    m: u16,
    /// Fifth bits (`Q5_*`), bit `i` for value `i`.
    qh: u32,
    /// Low nibbles are values 0..16, high nibbles values 16..32.
    qs: [u8; 16],
}

// Two bytes over Q5_0's 22 in the file, four under Q5_1's 24 plus padding.
const _: () = assert!(std::mem::size_of::<WeightBlock>() == 24);

/// A weight matrix of `rows × cols` in one of the [`LegacyType`]s, multiplied
/// as `x · Wᵀ` (the layout of every projection in a GGUF file).
#[derive(Debug, Clone)]
pub struct LegacyMatrix {
    kind: LegacyType,
    rows: usize,
    cols: usize,
    blocks: Vec<WeightBlock>,
}

fn f16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn widen(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl LegacyMatrix {
    /// Wraps raw GGUF block data for a `rows × cols` matrix.
    pub fn new(kind: LegacyType, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) || data.len() != rows * cols / BLOCK * kind.block_bytes() {
            return Err(Error::Tensor {
                name: format!("{kind:?} matrix"),
                problem: format!("{} bytes do not hold {rows}×{cols} values", data.len()),
            });
        }
        let blocks = data
            .chunks_exact(kind.block_bytes())
            .map(|b| {
                let (d, m, qh, qs_at) = match kind {
                    LegacyType::Q4_1 => (f16_at(b, 0), f16_at(b, 2), 0, 4),
                    LegacyType::Q5_0 => (f16_at(b, 0), 0, u32_at(b, 2), 6),
                    LegacyType::Q5_1 => (f16_at(b, 0), f16_at(b, 2), u32_at(b, 4), 8),
                };
                let qs = b[qs_at..qs_at + 16].try_into().expect("16 nibble bytes");
                WeightBlock { d, m, qh, qs }
            })
            .collect();
        Ok(Self {
            kind,
            rows,
            cols,
            blocks,
        })
    }

    fn row(&self, r: usize) -> &[WeightBlock] {
        let n = self.cols / BLOCK;
        &self.blocks[r * n..(r + 1) * n]
    }
}

/// One activation block quantized to 8 bits: `x ≈ d · q`, `s = d · Σq`.
#[derive(Clone, Copy)]
struct Q8Block {
    d: f32,
    s: f32,
    /// `Σq`, for the centred `Q5_0` type.
    sum: i32,
    q: [i8; BLOCK],
}

/// Quantizes a row as llama.cpp's `quantize_row_q8_1` does, including the
/// rounding of the scale and sum to f16 that its block format implies.
fn quantize_row(x: &[f32], out: &mut Vec<Q8Block>) {
    out.clear();
    for chunk in x.chunks_exact(BLOCK) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0i8; BLOCK];
        let mut sum = 0i32;
        for (qi, v) in q.iter_mut().zip(chunk) {
            *qi = (v * inv).round() as i8;
            sum += i32::from(*qi);
        }
        out.push(Q8Block {
            d: f16::from_f32(d).to_f32(),
            s: f16::from_f32(d * sum as f32).to_f32(),
            sum,
            q,
        });
    }
}

/// The block's 32 unsigned values.
fn unpack(w: &WeightBlock) -> [u8; BLOCK] {
    let mut q = [0u8; BLOCK];
    for j in 0..16 {
        q[j] = (w.qs[j] & 0x0F) | ((((w.qh >> j) & 1) as u8) << 4);
        q[j + 16] = (w.qs[j] >> 4) | ((((w.qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// The contribution of the block's offset, given its scale `d` and minimum
/// `m`: the minimum times the activation sum, or for `Q5_0` the centring at
/// 16.
fn offset_term(kind: LegacyType, d: f32, m: f32, y: &Q8Block) -> f32 {
    match kind {
        LegacyType::Q5_0 => -16.0 * d * y.d * y.sum as f32,
        _ => m * y.s,
    }
}

/// Dot products of one weight row with up to [`TILE`] activation rows.
fn dot_rows_portable(kind: LegacyType, row: &[WeightBlock], xs: &[&[Q8Block]], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(xs) {
        let mut acc = 0f32;
        for (w, y) in row.iter().zip(x.iter()) {
            let q = unpack(w);
            let dot: i32 = q
                .iter()
                .zip(&y.q)
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
            let (d, m) = (widen(w.d), widen(w.m));
            acc += d * y.d * dot as f32 + offset_term(kind, d, m, y);
        }
        *o = acc;
    }
}

/// Activation rows sharing one pass over a weight row.
const TILE: usize = 4;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{LegacyType, Q8Block, TILE, WeightBlock, offset_term};
    use crate::kernels::simd::x86::horizontal_sum;
    use std::arch::x86_64::*;

    /// A block's scale and minimum, widened from f16 together.
    #[inline]
    #[target_feature(enable = "f16c")]
    fn scales(w: &WeightBlock) -> (f32, f32) {
        let bits = u32::from(w.d) | (u32::from(w.m) << 16);
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_shuffle_ps::<1>(v, v)))
    }

    /// Sums of products of unsigned by signed bytes, four to an i32 lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn int_dot_avx2(q: __m256i, y: __m256i) -> __m256i {
        // Unsigned 5-bit × signed 8-bit pairs stay far below i16 saturation.
        _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1))
    }

    /// The same in one VNNI instruction.
    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn int_dot_vnni(q: __m256i, y: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, y)
    }

    /// Defines a kernel: dot products of one weight row with up to [`TILE`]
    /// activation rows, each weight block unpacked once and used for every
    /// row. The two instances differ only in the integer dot product, and
    /// must be compiled separately so the AVX2 one never contains AVX-512.
    macro_rules! kernel {
        ($name:ident, $features:literal, $int_dot:ident) => {
            /// # Safety
            #[doc = concat!("The CPU must support ", $features, ".")]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                kind: LegacyType,
                row: &[WeightBlock],
                xs: &[&[Q8Block]],
                out: &mut [f32],
            ) {
                let low4 = _mm_set1_epi8(0x0F);
                let bit_select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
                let byte_spread = _mm256_setr_epi8(
                    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                    3, 3, 3, 3, 3, 3,
                );
                let fifth_bit = _mm256_set1_epi8(0x10);
                let five_bits = kind != LegacyType::Q4_1;
                let n = xs.len().min(TILE);
                let mut acc = [_mm256_setzero_ps(); TILE];
                let mut extra = [0f32; TILE];
                for (b, w) in row.iter().enumerate() {
                    let (d, m) = scales(w);
                    // SAFETY: `qs` is 16 bytes.
                    let packed = unsafe { _mm_loadu_si128(w.qs.as_ptr() as *const __m128i) };
                    let lo = _mm_and_si128(packed, low4);
                    let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
                    let mut q = _mm256_set_m128i(hi, lo);
                    if five_bits {
                        let spread =
                            _mm256_shuffle_epi8(_mm256_set1_epi32(w.qh as i32), byte_spread);
                        let set =
                            _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit_select), bit_select);
                        q = _mm256_or_si256(q, _mm256_and_si256(set, fifth_bit));
                    }
                    for i in 0..n {
                        let y = &xs[i][b];
                        // SAFETY: `y.q` is 32 bytes.
                        let yq = unsafe { _mm256_loadu_si256(y.q.as_ptr() as *const __m256i) };
                        let dot = $int_dot(q, yq);
                        acc[i] = _mm256_fmadd_ps(
                            _mm256_set1_ps(d * y.d),
                            _mm256_cvtepi32_ps(dot),
                            acc[i],
                        );
                        extra[i] += offset_term(kind, d, m, y);
                    }
                }
                for i in 0..n {
                    out[i] = horizontal_sum(acc[i]) + extra[i];
                }
            }
        };
    }

    kernel!(dot_rows_avx2, "avx2,fma,f16c", int_dot_avx2);
    kernel!(
        dot_rows_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        int_dot_vnni
    );
}

fn dot_rows(
    kind: LegacyType,
    row: &[WeightBlock],
    xs: &[&[Q8Block]],
    out: &mut [f32],
    simd: SimdLevel,
) {
    match simd {
        // SAFETY: `detect` chose these only when the CPU reported the features.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Vnni => unsafe { x86::dot_rows_vnni(kind, row, xs, out) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::dot_rows_avx2(kind, row, xs, out) },
        _ => dot_rows_portable(kind, row, xs, out),
    }
}

/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 16;

impl LegacyMatrix {
    /// `x · Wᵀ` for `m` rows of `x` (each `cols` long), into `m × rows`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let simd = SimdLevel::get();
        let mut q8 = Vec::with_capacity(m);
        for r in x.chunks_exact(self.cols) {
            let mut blocks = Vec::with_capacity(self.cols / BLOCK);
            quantize_row(r, &mut blocks);
            q8.push(blocks);
        }
        let q8: Vec<&[Q8Block]> = q8.iter().map(Vec::as_slice).collect();
        // Column-major while computing so each task owns a contiguous slice.
        let mut out_t = vec![0f32; self.rows * m];
        let tasks = out_t
            .chunks_mut(ROWS_PER_TASK * m)
            .map(Mutex::new)
            .collect::<Vec<_>>();
        // candle's own worker pool runs its quantized kernels; running ours on
        // the same threads keeps a second pool from spinning on the same cores.
        candle_core::utils::barrier_pool().execute_chunked(tasks.len(), |range| {
            for task in range {
                let mut dst = tasks[task].lock().unwrap_or_else(|e| e.into_inner());
                let first = task * ROWS_PER_TASK;
                for (local, col) in dst.chunks_exact_mut(m).enumerate() {
                    let row = self.row(first + local);
                    for (xs, out) in q8.chunks(TILE).zip(col.chunks_mut(TILE)) {
                        dot_rows(self.kind, row, xs, out, simd);
                    }
                }
            }
        });
        drop(tasks);
        if m == 1 {
            return out_t;
        }
        let mut out = vec![0f32; m * self.rows];
        for (r, col) in out_t.chunks_exact(m).enumerate() {
            for (i, v) in col.iter().enumerate() {
                out[i * self.rows + r] = *v;
            }
        }
        out
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
        apply(storage, layout, (self.rows, self.cols), |x, m| {
            self.matmul(x, m)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn check(dtype: GgmlDType, m: usize) {
        let (rows, cols) = (40, 256);
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &dev).unwrap();
        let qw = QTensor::quantize(&w, dtype).unwrap();
        let exact_w = qw.dequantize(&dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, cols), &dev).unwrap();
        let want = x
            .matmul(&exact_w.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let kind = LegacyType::from_ggml(dtype).unwrap();
        let ours = LegacyMatrix::new(kind, rows, cols, &qw.data().unwrap()).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let portable = {
            let mut out = Vec::new();
            for r in xs.chunks_exact(cols) {
                let mut q8 = Vec::new();
                quantize_row(r, &mut q8);
                for j in 0..rows {
                    let mut v = [0f32];
                    dot_rows_portable(kind, ours.row(j), &[&q8], &mut v);
                    out.push(v[0]);
                }
            }
            out
        };
        let got = ours.matmul(&xs, m);
        for ((g, p), w) in got.iter().zip(&portable).zip(&want) {
            // 8-bit activations: error grows like sqrt(cols) × 1/254 of the row's range.
            assert!((g - w).abs() < 0.6, "{dtype:?}: {g} vs exact {w}");
            assert!((g - p).abs() < 1e-3, "{dtype:?}: simd {g} vs portable {p}");
        }
    }

    #[test]
    fn q4_1_matches_dequantized_matmul() {
        check(GgmlDType::Q4_1, 1);
        check(GgmlDType::Q4_1, 7);
    }

    #[test]
    fn q5_0_matches_dequantized_matmul() {
        check(GgmlDType::Q5_0, 1);
        check(GgmlDType::Q5_0, 5);
    }

    #[test]
    fn q5_1_matches_dequantized_matmul() {
        check(GgmlDType::Q5_1, 3);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(LegacyMatrix::new(LegacyType::Q4_1, 2, 32, &[0; 39]).is_err());
        assert!(LegacyMatrix::new(LegacyType::Q4_1, 2, 30, &[0; 40]).is_err());
    }
}
