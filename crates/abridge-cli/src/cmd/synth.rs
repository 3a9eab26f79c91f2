//! `abridge synth`: a synthetic checkpoint for benchmarks.

use std::process::ExitCode;

use anyhow::Result;

use crate::args::SynthArgs;
use crate::output::progress_bar;

pub fn run(args: SynthArgs) -> Result<ExitCode> {
    let tokenizer = args
        .tokenizer
        .or_else(abridge::synth::default_mistral_tokenizer);
    let options = abridge::synth::SynthOptions {
        tokenizer,
        seed: args.seed,
        layers: args.layers,
    };
    let progress = progress_bar(
        "writing {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        args.quiet,
    );
    let start = std::time::Instant::now();
    let written = abridge::synth::write_named(
        &args.model,
        &args.quant,
        &args.output,
        &options,
        |done, total| {
            if let Some(bar) = &progress {
                bar.set_length(total);
                bar.set_position(done);
            }
        },
    )?;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let vocabulary = match (&options.tokenizer, written.real_vocabulary) {
        (Some(path), true) => format!("Mistral's vocabulary from {}", path.display()),
        _ => "a placeholder vocabulary (run scripts/fetch-models mistral-tokenizer, or pass --tokenizer, for Mistral's)".into(),
    };
    println!(
        "wrote {}: {} bytes ({:.2} GiB), {} layers, {} tensors, {vocabulary}, in {:.1} s",
        written.path.display(),
        written.bytes,
        written.bytes as f64 / (1u64 << 30) as f64,
        written.layers,
        written.tensors,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
