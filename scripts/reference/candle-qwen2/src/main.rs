//! Times candle-transformers' quantized Qwen2 like `abridge bench --depth`:
//! process DEPTH prompt tokens, then generate TOKENS one at a time (greedy),
//! and print generated tokens/s. The prompt is the same synthetic token
//! sequence `abridge bench` uses.

use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, depth, tokens] = &args[..] else {
        eprintln!("usage: candle-qwen2-reference MODEL.gguf DEPTH TOKENS");
        std::process::exit(2);
    };
    let depth: usize = depth.parse().expect("DEPTH is a number");
    let tokens: usize = tokens.parse().expect("TOKENS is a number");
    let device = Device::Cpu;
    let mut file = std::fs::File::open(path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut model = ModelWeights::from_gguf(content, &mut file, &device)?;
    let vocab = 151_936usize;
    let span = vocab - 1000;
    let prompt: Vec<u32> = (0..depth + 1).map(|i| ((i * 7919) % span + 500) as u32).collect();
    let start = Instant::now();
    let input = Tensor::new(prompt.as_slice(), &device)?.unsqueeze(0)?;
    let logits = model.forward(&input, 0)?;
    let pp = start.elapsed();
    let mut next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
    let start = Instant::now();
    for i in 0..tokens {
        let input = Tensor::new(&[next], &device)?.unsqueeze(0)?;
        let logits = model.forward(&input, prompt.len() + i)?;
        next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
    }
    let tg = start.elapsed();
    println!(
        "{{\"engine\": \"candle-transformers quantized_qwen2\", \"depth\": {depth}, \"prompt_seconds\": {:.3}, \"tg_tokens_per_second\": {:.2}}}",
        pp.as_secs_f64(),
        tokens as f64 / tg.as_secs_f64()
    );
    Ok(())
}
