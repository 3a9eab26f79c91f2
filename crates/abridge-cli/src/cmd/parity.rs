//! `abridge parity`: whether a device (or the generic kernels) computes what
//! the reference (the CPU with our own kernels) does.

use std::process::ExitCode;
use std::sync::Arc;

use abridge::parity::{self, Tolerance};
use abridge::{Model, Summarizer};
use anyhow::{Result, bail};

use super::{load_model, read_document};
use crate::args::ParityArgs;

pub fn run(args: ParityArgs) -> Result<ExitCode> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let text = read_document(args.file.as_deref())?;
    let mut reference_args = args.model.clone();
    reference_args.device = Some(args.reference_device.clone());
    reference_args.kernels = Some(args.reference_kernels.clone());
    let (name, reference) = load_model(&reference_args, args.threads, None)?;
    let (_, other) = load_model(&args.model, args.threads, Some(&name))?;
    let reference = Arc::new(reference);
    let prompt = Summarizer::builder(reference.clone())
        .build()?
        .prompt_tokens(&text)?;
    let report = parity::compare(&reference, &other, &prompt, args.steps)?;
    let default = Tolerance::default();
    let tolerance = Tolerance {
        near_tie: args.near_tie.unwrap_or(default.near_tie),
        ..default
    };
    let failures = report.failures(&tolerance);
    let side = |m: &Model| {
        serde_json::json!({
            "device": abridge::device::name(m.device()),
            "kernels": m.kernels().name(),
        })
    };
    if args.json {
        let value = serde_json::json!({
            "model": name,
            "reference": side(&reference),
            "other": side(&other),
            "prompt_tokens": report.prompt_tokens,
            "steps": report.steps.len(),
            "agreeing_steps": report.agreeing_steps(),
            "max_logit_diff": report.max_logit_diff(),
            "tolerance": tolerance,
            "pass": failures.is_empty(),
            "failures": failures,
            "per_step": report.steps,
        });
        println!("{value}");
    } else {
        let describe = |m: &Model| {
            format!(
                "{} ({} kernels)",
                abridge::device::name(m.device()),
                m.kernels().name()
            )
        };
        println!(
            "{name}: {} against {}, {} prompt tokens, {} steps\n\
             same choice at {} of {} steps; largest logit difference {:.4}",
            describe(&other),
            describe(&reference),
            report.prompt_tokens,
            report.steps.len(),
            report.agreeing_steps(),
            report.steps.len(),
            report.max_logit_diff(),
        );
        for failure in &failures {
            println!("outside tolerance: {failure}");
        }
        println!("{}", if failures.is_empty() { "PASS" } else { "FAIL" });
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
