//! `abridge bench`: prompt and generation throughput, as llama-bench reports it.

use std::process::ExitCode;

use abridge::bench::{self, Format, ModelFacts, Row, Test};
use anyhow::{Result, bail};

use super::load_model;
use crate::args::BenchArgs;
use crate::output::progress_bar;

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let format = Format::by_name(&args.output)?;
    let tests = Test::matrix(&args.prompt, &args.generate, &args.depth);
    if tests.is_empty() {
        bail!("nothing to measure: every -p and -n value is 0");
    }
    if args.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    if args.threads.contains(&0) {
        bail!("--threads must be at least 1");
    }
    let mut model_args = args.model.clone();
    if let Some(spec) = &args.synthetic {
        model_args.model = Some(synthetic(spec)?);
    }
    let threads: Vec<Option<usize>> = if args.threads.is_empty() {
        vec![None]
    } else {
        args.threads.iter().copied().map(Some).collect()
    };
    let mut rows = Vec::new();
    for t in threads {
        // The peak of this load and its tests, not of the one before.
        bench::reset_peak_rss();
        let (_, model) = load_model(&model_args, t, None)?;
        let facts = ModelFacts::of(&model)?;
        let samples = bench::run(&model, &tests, args.repetitions)?;
        rows.extend(samples.iter().map(|s| Row::new(&model, &facts, s)));
    }
    bench::write(&rows, format, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// The cached synthetic checkpoint's path, written first (with a progress
/// bar) when it is not there yet.
fn synthetic(spec: &str) -> Result<String> {
    let bar = progress_bar(
        "writing the synthetic checkpoint {bar:30} {bytes}/{total_bytes} ({eta} left)",
        false,
    );
    let path = abridge::synth::cached(spec, |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    })?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    Ok(path.display().to_string())
}
