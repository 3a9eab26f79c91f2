//! `abridge bench`: prompt and generation throughput.

use std::process::ExitCode;

use abridge::bench::{BenchOptions, Throughput};
use anyhow::Result;

use super::load_model;
use crate::args::BenchArgs;

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let (name, model) = load_model(&args.model, None)?;
    let options = BenchOptions {
        prompt_tokens: args.prompt_tokens,
        generated_tokens: args.gen_tokens,
        generation_depths: args.depth.clone(),
        repetitions: args.repetitions,
    };
    let report = abridge::bench::run(&model, &options)?;
    if args.json {
        let mut out = serde_json::to_value(&report)?;
        out["model"] = name.into();
        out["device"] = abridge::device::name(model.device()).into();
        out["kernels"] = model.kernels().name().into();
        out["threads"] = model.threads().into();
        out["load_seconds"] = model.info().load_time.as_secs_f64().into();
        out["pp_tokens"] = args.prompt_tokens.into();
        out["tg_tokens"] = args.gen_tokens.into();
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("| model | device | threads | test | tokens/s (median) | min – max |");
    println!("| --- | --- | ---: | --- | ---: | ---: |");
    let device = abridge::device::name(model.device());
    let print = |test: String, t: &Throughput| {
        let (lo, hi) = t.range();
        println!(
            "| {name} | {device} | {} | {test} | {:.1} | {lo:.1} – {hi:.1} |",
            model.threads(),
            t.median()
        );
    };
    if let Some(t) = &report.prompt {
        print(format!("pp{}", args.prompt_tokens), t);
    }
    for (depth, t) in &report.generation {
        let at = if *depth > 0 {
            format!(" @ d{depth}")
        } else {
            String::new()
        };
        print(format!("tg{}{at}", args.gen_tokens), t);
    }
    Ok(ExitCode::SUCCESS)
}
