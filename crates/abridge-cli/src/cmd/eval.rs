//! `abridge eval`: summarize documents with several models and settings, and
//! measure what the summaries say.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use abridge::input::SavedRequest;
use abridge::quality::{self, Report};
use abridge::registry::{self, Catalogue};
use abridge::{Length, ModelOptions, Summarizer};
use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::read_document;
use crate::args::{EvalArgs, SettingsArg};

/// Key terms per document: enough to tell whether a summary covers the
/// document's subject, few enough that each one matters.
const KEY_TERMS: usize = 12;

/// One document under evaluation.
struct Doc {
    name: String,
    text: String,
    /// The answer a saved request recorded, for ROUGE-L.
    reference: Option<String>,
    terms: Vec<String>,
}

/// One summary and its measurements.
#[derive(Serialize)]
struct Row {
    model: String,
    settings: &'static str,
    document: String,
    summary: String,
    stop_reason: abridge::StopReason,
    seconds: f64,
    #[serde(flatten)]
    report: Report,
}

/// The mean of each measure over one model and settings.
#[derive(Serialize)]
struct Aggregate {
    model: String,
    settings: &'static str,
    summaries: usize,
    mean_words: f64,
    repeated_4gram_share: f64,
    with_repeated_sentence: usize,
    complete: usize,
    mean_abs_length_error: Option<f64>,
    coverage: f64,
    rouge_l: Option<f64>,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    if args.words == Some(0) {
        bail!("--words must be at least 1");
    }
    let docs = documents(&args.files)?;
    let catalogue = Catalogue::load(args.models_file.as_deref())?;
    let mut rows = Vec::new();
    for name in &args.models {
        let mut options = ModelOptions::new();
        if let Some(t) = args.threads {
            options = options.threads(t.max(1));
        }
        let model = Arc::new(registry::load(name, &catalogue, options)?);
        for &settings in &args.settings {
            for doc in &docs {
                rows.push(evaluate(&args, name, model.clone(), settings, doc)?);
                if !args.json {
                    eprintln!("{name} {} {}: done", settings.name(), doc.name);
                }
            }
        }
    }
    let aggregates = aggregate(&rows);
    if args.json {
        let out = serde_json::json!({ "summaries": rows, "table": aggregates });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&aggregates, args.words);
    Ok(ExitCode::SUCCESS)
}

fn documents(files: &[std::path::PathBuf]) -> Result<Vec<Doc>> {
    let mut docs = Vec::with_capacity(files.len());
    for f in files {
        let name = f
            .file_name()
            .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into());
        let (text, reference) = match saved_request(f) {
            Some(r) => (r.article, r.answer),
            None => (
                read_document(Some(f)).with_context(|| f.display().to_string())?,
                None,
            ),
        };
        docs.push(Doc {
            name,
            text,
            reference,
            terms: Vec::new(),
        });
    }
    // A document's key terms are the words that set it apart from the others.
    let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
    for (i, d) in docs.iter_mut().enumerate() {
        let background: Vec<&str> = texts
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, t)| t.as_str())
            .collect();
        d.terms = quality::key_terms(&d.text, &background, KEY_TERMS);
    }
    Ok(docs)
}

/// `path` read as a saved request, when it is one.
fn saved_request(path: &Path) -> Option<SavedRequest> {
    let text = std::fs::read_to_string(path).ok()?;
    SavedRequest::parse(&text).ok()
}

fn evaluate(
    args: &EvalArgs,
    name: &str,
    model: Arc<abridge::Model>,
    settings: SettingsArg,
    doc: &Doc,
) -> Result<Row> {
    let (sampling, guard) = settings.sampling();
    let mut builder = Summarizer::builder(model)
        .sampling(sampling)
        .loop_guard(guard)
        .whole_sentences(guard);
    if let Some(words) = args.words {
        builder = builder.length(Length::Words(words));
    }
    if let Some(n) = args.max_tokens {
        builder = builder.max_tokens(n);
    }
    let summary = builder.build()?.summarize(&doc.text)?;
    let report = quality::report(
        &summary.text,
        args.words,
        Some(&doc.terms),
        doc.reference.as_deref(),
    );
    Ok(Row {
        model: name.to_owned(),
        settings: settings.name(),
        document: doc.name.clone(),
        summary: summary.text,
        stop_reason: summary.stop_reason,
        seconds: summary.stats.total_time.as_secs_f64(),
        report,
    })
}

fn aggregate(rows: &[Row]) -> Vec<Aggregate> {
    let mut out: Vec<Aggregate> = Vec::new();
    for row in rows {
        if out
            .iter()
            .any(|a| a.model == row.model && a.settings == row.settings)
        {
            continue;
        }
        let group: Vec<&Row> = rows
            .iter()
            .filter(|r| r.model == row.model && r.settings == row.settings)
            .collect();
        let n = group.len() as f64;
        let mean = |f: &dyn Fn(&Row) -> f64| group.iter().map(|r| f(r)).sum::<f64>() / n;
        let mean_of = |f: &dyn Fn(&Row) -> Option<f64>| {
            let values: Vec<f64> = group.iter().filter_map(|r| f(r)).collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        out.push(Aggregate {
            model: row.model.clone(),
            settings: row.settings,
            summaries: group.len(),
            mean_words: mean(&|r| r.report.words as f64),
            repeated_4gram_share: mean(&|r| r.report.repeated_4gram_share),
            with_repeated_sentence: group
                .iter()
                .filter(|r| r.report.repeated_sentences > 0)
                .count(),
            complete: group.iter().filter(|r| r.report.complete).count(),
            mean_abs_length_error: mean_of(&|r| r.report.length_error.map(f64::abs)),
            coverage: mean(&|r| r.report.coverage.unwrap_or(0.0)),
            rouge_l: mean_of(&|r| r.report.rouge_l),
        });
    }
    out
}

fn print_table(rows: &[Aggregate], words: Option<usize>) {
    let length = match words {
        Some(n) => format!("length error vs {n} words"),
        None => "length error".into(),
    };
    println!(
        "| model | settings | summaries | words | repeated 4-grams | repeated sentence | complete | {length} | key terms | ROUGE-L |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    for a in rows {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {}/{} | {} | {} | {} |",
            a.model,
            a.settings,
            a.summaries,
            a.mean_words,
            pct(a.repeated_4gram_share),
            a.with_repeated_sentence,
            a.complete,
            a.summaries,
            a.mean_abs_length_error.map_or("-".into(), pct),
            pct(a.coverage),
            a.rouge_l.map_or("-".into(), |v| format!("{v:.3}")),
        );
    }
}
