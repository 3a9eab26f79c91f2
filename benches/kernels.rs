//! The kernels at Mistral-7B's shapes: quantized matrix products for one
//! token (generation) and a block of prompt tokens, and attention over the
//! f16 cache at two depths. `cargo bench --bench kernels`.

use abridge::kernels::attention::attention;
use abridge::kernels::kquant::{KQuantMatrix, KQuantType};
use abridge::kernels::quant::{LegacyMatrix, LegacyType};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

fn main() {
    divan::main();
}

/// (output rows, input columns) of the 7B's projections: attention, the
/// feed-forward up and down, and the vocabulary.
const SHAPES: [(usize, usize); 4] = [(4096, 4096), (14336, 4096), (4096, 14336), (32000, 4096)];

/// Activation rows: one generated token, and a block of prompt tokens.
const ROWS: [usize; 2] = [1, 64];

/// One generated token and a whole 512-token prompt batch, for the 7B's
/// own weight types.
const PROMPT_ROWS: [usize; 2] = [1, 512];

fn weights(rows: usize, cols: usize, dtype: GgmlDType) -> QTensor {
    let w = Tensor::randn(0f32, 0.02, (rows, cols), &Device::Cpu).unwrap();
    QTensor::quantize(&w, dtype).unwrap()
}

fn activations(m: usize, cols: usize) -> Tensor {
    Tensor::randn(0f32, 1.0, (m, cols), &Device::Cpu).unwrap()
}

/// Q4_K, most of the 7B's weights, through candle's kernels.
#[divan::bench(args = SHAPES, consts = ROWS, sample_count = 5)]
fn q4k_matmul<const M: usize>(bencher: divan::Bencher, (rows, cols): (usize, usize)) {
    let w = QMatMul::from_qtensor(weights(rows, cols, GgmlDType::Q4K)).unwrap();
    let x = activations(M, cols);
    bencher.bench_local(|| w.forward(&x).unwrap());
}

fn flat_activations(m: usize, cols: usize) -> Vec<f32> {
    activations(m, cols)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Q4_K through our own kernel, repacked as the loader does.
#[divan::bench(args = SHAPES, consts = PROMPT_ROWS, sample_count = 3)]
fn q4k_own<const M: usize>(bencher: divan::Bencher, (rows, cols): (usize, usize)) {
    let q = weights(rows, cols, GgmlDType::Q4K);
    let w = KQuantMatrix::new(KQuantType::Q4K, rows, cols, &q.data().unwrap()).unwrap();
    let x = flat_activations(M, cols);
    bencher.bench_local(|| w.matmul(&x, M));
}

/// Q6_K (the 7B's value, down and output weights) through our own kernel.
#[divan::bench(args = SHAPES, consts = PROMPT_ROWS, sample_count = 3)]
fn q6k_own<const M: usize>(bencher: divan::Bencher, (rows, cols): (usize, usize)) {
    let q = weights(rows, cols, GgmlDType::Q6K);
    let w = KQuantMatrix::new(KQuantType::Q6K, rows, cols, &q.data().unwrap()).unwrap();
    let x = flat_activations(M, cols);
    bencher.bench_local(|| w.matmul(&x, M));
}

/// Q5_0 (Qwen2.5's attention and gate/up weights) through our own kernel.
#[divan::bench(args = SHAPES, consts = ROWS, sample_count = 5)]
fn q5_0_matmul<const M: usize>(bencher: divan::Bencher, (rows, cols): (usize, usize)) {
    let q = weights(rows, cols, GgmlDType::Q5_0);
    let w = LegacyMatrix::new(LegacyType::Q5_0, rows, cols, &q.data().unwrap()).unwrap();
    let x = flat_activations(M, cols);
    bencher.bench_local(|| w.matmul(&x, M));
}

/// Q8_0 (Qwen2.5's output and value weights) through our own kernel.
#[divan::bench(args = SHAPES, consts = ROWS, sample_count = 5)]
fn q8_0_own<const M: usize>(bencher: divan::Bencher, (rows, cols): (usize, usize)) {
    let q = weights(rows, cols, GgmlDType::Q8_0);
    let w = LegacyMatrix::new(LegacyType::Q8_0, rows, cols, &q.data().unwrap()).unwrap();
    let x = flat_activations(M, cols);
    bencher.bench_local(|| w.matmul(&x, M));
}

/// One generated token's attention (32 query heads over 8 key/value heads
/// of 128) over a cache of `depth` f16 positions.
#[divan::bench(args = [512, 4096], sample_count = 10)]
fn attention_step(bencher: divan::Bencher, depth: usize) {
    let q = Tensor::randn(0f32, 1.0, (32, 1, 128), &Device::Cpu).unwrap();
    let cache = |d| {
        Tensor::randn(0f32, 1.0, (8, d, 128), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap()
    };
    let (k, v) = (cache(depth), cache(depth));
    let scale = 1.0 / (128f64).sqrt();
    bencher.bench_local(|| attention(&q, &k, &v, 8, scale, None, true).unwrap());
}

/// A 128-row prompt chunk's attention (the 7B's heads, as above) over
/// `depth` earlier positions and its own.
#[divan::bench(args = [512, 4096], sample_count = 5)]
fn attention_prompt(bencher: divan::Bencher, depth: usize) {
    let rows = 128;
    let q = Tensor::randn(0f32, 1.0, (32, rows, 128), &Device::Cpu).unwrap();
    let cache = |d| {
        Tensor::randn(0f32, 1.0, (8, d, 128), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap()
    };
    let (k, v) = (cache(depth + rows), cache(depth + rows));
    let scale = 1.0 / (128f64).sqrt();
    bencher.bench_local(|| attention(&q, &k, &v, 8, scale, None, true).unwrap());
}
