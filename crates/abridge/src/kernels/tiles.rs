//! The matrix product every quantized kernel shares: weights repacked into
//! tiles of 16 rows, activations quantized to 8 bits, and the work split
//! into tasks that each pair a block of tiles with a block of activation
//! rows, so both stay in a core's L2 cache while every pairing is computed.
//!
//! A tile holds 16 weight rows of one quantization block, laid out so one
//! load carries four consecutive values of each row: one VNNI `dpbusd` (or
//! AVX2 `maddubs`) against four activation bytes broadcast to every lane
//! then adds four products into each row's lane. Each load of weights serves
//! several activation rows. The block formats (`kquant`, `quant`) say how a
//! tile is laid out and multiplied; this module does the rest.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

use super::simd::SimdLevel;
use crate::error::{Error, Result};

/// Weight rows per tile.
pub(super) const ROWS: usize = 16;
/// Rows per 256-bit register: a tile is two of these.
pub(super) const LANES: usize = 8;
/// Activation rows that share each load of weights: as many as the 512-bit
/// kernels keep accumulators for in their 32 registers.
const SHARE: usize = 8;
/// The same for the AVX2 kernels, which have 16 registers.
#[cfg(target_arch = "x86_64")]
const SHARE_AVX2: usize = 4;

/// What the matrix product needs of a tile type.
pub(super) trait Tile: Copy + Send + Sync {
    /// One block of activations, quantized the way the kernels read them.
    type Act: Copy + Send + Sync;
    /// The block type's name in GGUF, for errors.
    const NAME: &'static str;
    /// Values per block, the unit a block's scale covers.
    const VALUES: usize;
    /// Bytes of one block (one row's block) in the file.
    const BLOCK_BYTES: usize;
    /// A tile of zero rows (scales zero), for padding.
    const EMPTY: Self;
    /// Stores row `r` from one file block.
    fn set_row(&mut self, r: usize, block: &[u8]);
    /// Quantizes [`Self::VALUES`] activations.
    fn quantize(x: &[f32]) -> Self::Act;
    /// `out[i][r]`: the dot product of weight row `r` of `tiles` (one row of
    /// tiles, every block) with activation row `xs[i]`, in plain Rust.
    fn dot_portable(tiles: &[Self], xs: &[&[Self::Act]], out: &mut [[f32; ROWS]]);
    /// The same for `R` ≤ [`SHARE`] rows with AVX-512.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI, AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const R: usize>(
        tiles: &[Self],
        xs: &[&[Self::Act]; R],
        out: &mut [[f32; ROWS]; R],
    );
    /// The same for `R` ≤ [`SHARE_AVX2`] rows with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const R: usize>(
        tiles: &[Self],
        xs: &[&[Self::Act]; R],
        out: &mut [[f32; ROWS]; R],
    );
}

/// Calls `T::$kernel::<R>` with `xs` and `out` as arrays of their length,
/// one of the listed counts, so each count gets a kernel with its
/// accumulators in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! by_count {
    ($kernel:ident, $tiles:expr, $xs:expr, $out:expr, $($r:literal)+) => {
        match $xs.len() {
            $($r => {
                let xs: &[&[T::Act]; $r] = $xs.try_into().expect("length matched");
                let out: &mut [[f32; ROWS]; $r] = $out.try_into().expect("length matched");
                // SAFETY: the caller checked the kernel's CPU features.
                unsafe { T::$kernel::<$r>($tiles, xs, out) }
            })+
            _ => T::dot_portable($tiles, $xs, $out),
        }
    };
}

/// [`Tile::dot_portable`] for up to [`SHARE`] rows, by the best kernel
/// `simd` allows.
fn dot<T: Tile>(simd: SimdLevel, tiles: &[T], xs: &[&[T::Act]], out: &mut [[f32; ROWS]]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Vnni => by_count!(dot_avx512, tiles, xs, out, 1 2 3 4 5 6 7 8),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            for (xs, out) in xs.chunks(SHARE_AVX2).zip(out.chunks_mut(SHARE_AVX2)) {
                by_count!(dot_avx2, tiles, xs, out, 1 2 3 4)
            }
        }
        _ => T::dot_portable(tiles, xs, out),
    }
}

/// Four activation bytes from `at`, as one i32: a plain load the compiler
/// folds into the broadcast operand of the dot product.
///
/// # Safety
/// `at + 4` must be at most `N`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn four<const N: usize>(q: &[i8; N], at: usize) -> i32 {
    // SAFETY: the caller keeps `at + 4` within the `N` bytes.
    unsafe { q.as_ptr().add(at).cast::<i32>().read_unaligned() }
}

/// Tiles (16 weight rows each) and activation rows one task multiplies:
/// about 150 KB of each for the 7B's rows.
const TASK_TILES: usize = 4;
const TASK_ROWS: usize = 32;

/// A buffer several tasks write at disjoint places.
struct Shared<T>(*mut T);
// SAFETY: tasks write disjoint elements (see `Tiles::new`, `Tiles::matmul`
// and `quantize_rows`), and the buffer outlives the pool's
// `pool::run`, which joins every task.
unsafe impl<T> Sync for Shared<T> {}

/// `count` values made by `make(index)` on every thread of the kernels'
/// pool, each written once into place.
fn build_in_pool<V: Send>(count: usize, make: impl Fn(usize) -> V + Sync) -> Vec<V> {
    let mut out: Vec<V> = Vec::with_capacity(count);
    let shared = Shared(out.as_mut_ptr());
    crate::kernels::pool::run(count, |range| {
        let shared = &shared;
        for at in range {
            let v = make(at);
            // SAFETY: `at` < count, the capacity, and each index is written
            // by exactly one task.
            unsafe { shared.0.add(at).write(v) };
        }
    });
    // SAFETY: the pool has returned, so all `count` values are written.
    unsafe { out.set_len(count) };
    out
}

/// The first `m` rows of `x`, `cols` long each, as quantized blocks,
/// `[row][block]`. A prompt's rows are split across the kernels' pool: on
/// one thread they cost several percent of the product. A generated token's
/// one row is not: waking the pool would cost more.
fn quantize_rows<T: Tile>(x: &[f32], cols: usize, m: usize) -> Vec<T::Act> {
    let count = m * (cols / T::VALUES);
    if m == 1 {
        return x[..count * T::VALUES]
            .chunks_exact(T::VALUES)
            .map(T::quantize)
            .collect();
    }
    build_in_pool(count, |at| {
        T::quantize(&x[at * T::VALUES..(at + 1) * T::VALUES])
    })
}

/// A `rows × cols` matrix as rows of tiles, `[row tile][block]`; the last
/// row of tiles is padded with zero rows.
pub(super) struct Tiles<T> {
    pub(super) rows: usize,
    pub(super) cols: usize,
    tiles: Vec<T>,
}

impl<T: Tile> Tiles<T> {
    /// Repacks raw GGUF blocks on every thread of the kernels' pool.
    pub(super) fn new(rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        let blocks = cols / T::VALUES;
        if !cols.is_multiple_of(T::VALUES) || data.len() != rows * blocks * T::BLOCK_BYTES {
            return Err(Error::Tensor {
                name: format!("{} matrix", T::NAME),
                problem: format!("{} bytes do not hold {rows}×{cols} values", data.len()),
            });
        }
        let tiles = build_in_pool(rows.div_ceil(ROWS) * blocks, |at| {
            let (tile_row, b) = (at / blocks, at % blocks);
            let mut tile = T::EMPTY;
            for r in 0..ROWS.min(rows - tile_row * ROWS) {
                let block = ((tile_row * ROWS + r) * blocks + b) * T::BLOCK_BYTES;
                tile.set_row(r, &data[block..block + T::BLOCK_BYTES]);
            }
            tile
        });
        Ok(Self { rows, cols, tiles })
    }

    /// Row `i` of tiles: weight rows `16 i ..16 i + 16`, every block.
    pub(super) fn row(&self, i: usize) -> &[T] {
        let n = self.cols / T::VALUES;
        &self.tiles[i * n..(i + 1) * n]
    }

    /// `x · Wᵀ` for `m` rows of `x` (each `cols` long), into `m × rows`.
    pub(super) fn matmul(&self, simd: SimdLevel, x: &[f32], m: usize) -> Vec<f32> {
        self.product(None, simd, x, m)
    }

    /// `silu(x · Gᵀ) ⊙ (x · Uᵀ)` with `self` as `G` and `up` as `U`, of the
    /// same shape: the first half of a SwiGLU feed-forward in one pass. The
    /// activations are quantized once, and of the four `m × rows` buffers
    /// the separate products and element-wise ops fill (30 MB each for a
    /// 7B's 512-token prompt), one is written.
    ///
    /// # Panics
    /// If `up`'s shape differs from `self`'s.
    pub(super) fn gated(&self, up: &Self, simd: SimdLevel, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(
            (self.rows, self.cols),
            (up.rows, up.cols),
            "gate and up shapes"
        );
        self.product(Some(up), simd, x, m)
    }

    fn product(&self, up: Option<&Self>, simd: SimdLevel, x: &[f32], m: usize) -> Vec<f32> {
        let q8 = quantize_rows::<T>(x, self.cols, m);
        let act: Vec<&[T::Act]> = q8.chunks_exact(self.cols / T::VALUES).collect();
        let tile_rows = self.rows.div_ceil(ROWS);
        let tile_tasks = tile_rows.div_ceil(TASK_TILES);
        let row_tasks = m.div_ceil(TASK_ROWS);
        let mut out = vec![0f32; m * self.rows];
        let shared = Shared(out.as_mut_ptr());
        crate::kernels::pool::run(tile_tasks * row_tasks, |range| {
            let shared = &shared;
            for task in range {
                let (tt, rt) = (task / row_tasks, task % row_tasks);
                let rows = rt * TASK_ROWS..(rt * TASK_ROWS + TASK_ROWS).min(m);
                for tile in tt * TASK_TILES..(tt * TASK_TILES + TASK_TILES).min(tile_rows) {
                    let width = (self.rows - tile * ROWS).min(ROWS);
                    for first in rows.clone().step_by(SHARE) {
                        let xs = &act[first..(first + SHARE).min(rows.end)];
                        let mut res = [[0f32; ROWS]; SHARE];
                        dot(simd, self.row(tile), xs, &mut res[..xs.len()]);
                        if let Some(up) = up {
                            let mut ups = [[0f32; ROWS]; SHARE];
                            dot(simd, up.row(tile), xs, &mut ups[..xs.len()]);
                            for (g, u) in res.iter_mut().zip(&ups).take(xs.len()) {
                                for (g, u) in g.iter_mut().zip(u) {
                                    *g = silu(*g) * u;
                                }
                            }
                        }
                        for (i, res) in res[..xs.len()].iter().enumerate() {
                            let at = (first + i) * self.rows + tile * ROWS;
                            // SAFETY: row `first + i` < m and columns
                            // `tile * 16 ..+ width` ≤ rows: within `out`, and
                            // only this task has this (row, tile) pair.
                            unsafe {
                                std::ptr::copy_nonoverlapping(res.as_ptr(), shared.0.add(at), width)
                            };
                        }
                    }
                }
            }
        });
        out
    }
}

/// `x · σ(x)`, as candle-nn's `silu` computes it, so the fused product
/// gives the separate ops' values.
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `silu(gate) ⊙ up` from two separate products, for a pair whose block
/// types differ.
pub(super) fn gate_apart(mut gate: Vec<f32>, up: &[f32]) -> Vec<f32> {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
    gate
}

/// A matrix type of our kernels that can be the gate of a SwiGLU pair.
pub trait GatedMatrix: Sync {
    /// `(rows, cols)`.
    fn shape(&self) -> (usize, usize);
    /// `silu(x · Gᵀ) ⊙ (x · Uᵀ)` for `m` rows of `x`, with `self` as `G`
    /// and `up`, of the same shape, as `U`.
    fn gated(&self, up: &Self, x: &[f32], m: usize) -> Vec<f32>;
}

/// The candle op of [`GatedMatrix::gated`], applied to the activations.
pub struct Gated<'a, M> {
    /// The gate projection.
    pub gate: &'a M,
    /// The up projection, of the gate's shape.
    pub up: &'a M,
}

impl<M: GatedMatrix> CustomOp1 for Gated<'_, M> {
    fn name(&self) -> &'static str {
        "gated-quant-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if self.gate.shape() != self.up.shape() {
            candle_core::bail!("gate and up projections differ in shape")
        }
        apply(storage, layout, self.gate.shape(), |x, m| {
            self.gate.gated(self.up, x, m)
        })
    }
}

/// The body of a quantized matrix's `CustomOp1::cpu_fwd`: checks that the
/// input is contiguous f32 with `cols` columns and multiplies its rows by
/// `matmul`, into `rows` columns.
pub(super) fn apply(
    storage: &CpuStorage,
    layout: &Layout,
    (rows, cols): (usize, usize),
    matmul: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("quantized matmul needs a contiguous input".into())
    })?;
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("quantized matmul takes f32 activations")
    };
    let dims = layout.shape().dims();
    let k = *dims.last().unwrap_or(&0);
    if k != cols {
        candle_core::bail!("input has {k} columns, the weights {cols}")
    }
    let m = layout.shape().elem_count() / k;
    let out = matmul(&data[start..end], m);
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("rank checked above") = rows;
    Ok((CpuStorage::F32(out), Shape::from(out_dims)))
}
