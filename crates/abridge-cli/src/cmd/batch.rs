//! `abridge batch`: many documents into one JSON Lines file, resumable and
//! shardable; `abridge batch merge` joins the shards' outputs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use abridge::Cancel;
use abridge::batch::{self, Batch, Journal, Progress, Record, RecordId, Shard};
use abridge::output::AtomicFile;
use anyhow::{Context, Result};

use super::{INTERRUPTED, load_model, pull_missing, summarizer};
use crate::args::{BatchArgs, BatchCommand, BatchRunArgs, MergeArgs};
use crate::output::progress_bar;

/// Exit status when the run finished but some records have no summary (failed
/// in this run or an earlier one): their lines in the output carry the errors.
pub const SOME_FAILED: u8 = 3;

pub fn run(args: BatchArgs) -> Result<ExitCode> {
    match args.command {
        Some(BatchCommand::Merge(m)) => merge(m),
        None => summarize_all(args.run),
    }
}

fn summarize_all(args: BatchRunArgs) -> Result<ExitCode> {
    let output = args.output.as_deref().context("--output is required")?;
    let shard = match args.shard {
        Some(s) => Some(s),
        None => Shard::from_env(args.shard_count).context(
            "the shard from the environment (--shard-count N gives the count, --shard I/N the shard)",
        )?,
    };
    // Before the model loads: an output that another run holds, or that is
    // damaged, ends the run at once.
    let mut journal = Journal::open(output)?;
    if journal.torn_bytes() > 0 {
        eprintln!(
            "{}: cut off a torn last line ({} bytes) left by an interrupted run; its record is done again",
            output.display(),
            journal.torn_bytes()
        );
    }
    let records = read_records(args.input.as_deref(), &[output])?;
    if args.pull {
        pull_missing(&args.model, None, args.quiet)?;
    }
    let (name, model) = load_model(&args.model, args.threads, None)?;
    let cancel = Cancel::new();
    let summarizer = summarizer(&args.summary, None, Arc::new(model), cancel.clone())?;
    let batch = Batch::new(summarizer)
        .model_name(name)
        .parallel(args.parallel.get())
        .shard(shard)
        .retry_errors(args.retry_errors);
    ctrlc::set_handler(move || cancel.cancel()).context("cannot install the Ctrl-C handler")?;

    let bar = progress_bar(
        "{bar:30} {pos}/{len} records, {msg}, {elapsed} (ETA {eta})",
        args.quiet,
    );
    let start = Instant::now();
    let mut generated = 0;
    let report = batch.run(&records, &mut journal, |event| match event {
        Progress::Planned { pending, .. } => {
            if let Some(bar) = &bar {
                bar.set_length(pending as u64);
                bar.set_message("0 tokens/s");
            }
        }
        Progress::Summarized { summary, .. } => {
            generated += summary.stats.generation.generated_tokens;
            if let Some(bar) = &bar {
                let rate = generated as f64 / start.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{rate:.1} tokens/s"));
                bar.inc(1);
            }
        }
        Progress::Failed { id, error } => {
            let line = format!("failed: {id}: {error}");
            match &bar {
                Some(bar) => {
                    bar.suspend(|| eprintln!("{line}"));
                    bar.inc(1);
                }
                None => eprintln!("{line}"),
            }
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report?;
    let shard = match shard {
        Some(s) => format!(
            ", {} in other shards (this is shard {s})",
            report.out_of_shard
        ),
        None => String::new(),
    };
    let failed_before = match report.skipped_failed {
        0 => String::new(),
        n => format!(" ({n} failed before; --retry-errors tries them again)"),
    };
    eprintln!(
        "{} done, {} skipped{failed_before}, {} failed{shard}; {} prompt and {} generated tokens in {:.1} s, {:.1} tokens/s generated",
        report.done,
        report.skipped,
        report.failed,
        report.prompt_tokens,
        report.generated_tokens,
        report.elapsed.as_secs_f64(),
        report.tokens_per_second(),
    );
    if report.cancelled {
        eprintln!(
            "interrupted: the lines already in {} are kept; run the same command again to resume",
            output.display()
        );
        return Ok(ExitCode::from(INTERRUPTED));
    }
    Ok(if report.failed + report.skipped_failed > 0 {
        ExitCode::from(SOME_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The records of a JSON Lines file, a directory (less the batch's own
/// files, `exclude`, when they are inside it), or standard input (`None` or
/// `-`).
fn read_records(input: Option<&Path>, exclude: &[&Path]) -> Result<Vec<Record>> {
    match input {
        None => read_stdin(),
        Some(p) if p == Path::new("-") => read_stdin(),
        Some(dir) if dir.is_dir() => {
            let exclude: Vec<PathBuf> = exclude
                .iter()
                .filter_map(|p| p.canonicalize().ok())
                .collect();
            let mut records = batch::read_directory(dir)?;
            records.retain(|r| match &r.source {
                batch::Source::File(p) => p.canonicalize().map_or(true, |p| !exclude.contains(&p)),
                _ => true,
            });
            Ok(records)
        }
        Some(file) => Ok(batch::read_jsonl_file(file)?),
    }
}

fn read_stdin() -> Result<Vec<Record>> {
    batch::read_jsonl(std::io::stdin().lock(), Path::new("."))
        .context("cannot read records from standard input")
}

fn merge(args: MergeArgs) -> Result<ExitCode> {
    let own: Vec<&Path> = args
        .inputs
        .iter()
        .chain([&args.output])
        .map(PathBuf::as_path)
        .collect();
    let records = args
        .input
        .as_deref()
        .map(|p| read_records(Some(p), &own))
        .transpose()?;
    let merged = batch::merge(&args.inputs, records.as_deref())?;
    let mut out = AtomicFile::create(&args.output)?;
    for line in &merged.lines {
        writeln!(out, "{line}")
            .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    out.commit()?;
    let r = &merged.report;
    for path in &r.torn {
        eprintln!(
            "{}: left out a torn last line (an interrupted run; its record is missing)",
            path.display()
        );
    }
    eprintln!(
        "merged {} files into {}: {} records, {} summarized, {} failed, {} duplicate ids{}",
        args.inputs.len(),
        args.output.display(),
        merged.lines.len(),
        r.summarized,
        r.failed,
        r.duplicates.len(),
        match &records {
            Some(_) => format!(", {} missing", r.missing.len()),
            None => String::new(),
        }
    );
    list("duplicate ids (one line kept for each)", &r.duplicates);
    list("missing ids (in the records, in no output)", &r.missing);
    list("ids the records do not have", &r.unexpected);
    Ok(if r.missing.is_empty() && r.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_FAILED)
    })
}

/// Prints `what` and the first few `ids`, when there are any.
fn list(what: &str, ids: &[RecordId]) {
    const SHOWN: usize = 20;
    if ids.is_empty() {
        return;
    }
    let mut text = ids
        .iter()
        .take(SHOWN)
        .map(|id| id.to_json().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        text += &format!(" and {} more", ids.len() - SHOWN);
    }
    eprintln!("{what}: {text}");
}
