//! `abridge summarize`: the main job.

use std::io::{BufWriter, ErrorKind, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use abridge::input::SavedRequest;
use abridge::output::AtomicFile;
use abridge::{Cancel, Event, Stage, StopReason, Summarizer, Summary};
use anyhow::{Context, Result};

use super::{INTERRUPTED, load_model, pull_missing, read_document, summarizer};
use crate::args::{FormatArg, SummarizeArgs};
use crate::output::progress_bar;

/// One text to summarize and what to call it.
struct Document {
    label: String,
    text: String,
}

pub fn run(args: SummarizeArgs) -> Result<ExitCode> {
    let request = args
        .request
        .as_deref()
        .map(SavedRequest::from_file)
        .transpose()?;
    let docs = documents(&args, request.as_ref())?;
    let requested = request.as_ref().and_then(|r| r.model.as_deref());
    if args.pull {
        pull_missing(&args.model, requested, args.quiet)?;
    }
    let (name, model) = load_model(&args.model, args.threads, requested)?;
    let model = Arc::new(model);
    let cancel = Cancel::new();
    let summarizer = summarizer(
        &args.summary,
        request.as_ref(),
        model.clone(),
        cancel.clone(),
    )?;
    // Installed before the output file exists: from then on an interrupt ends
    // the run through the code that removes the file's temporary copy.
    ctrlc::set_handler(move || cancel.cancel()).context("cannot install the Ctrl-C handler")?;
    let mut sink = Sink::new(args.output.as_deref(), args.quiet)?;
    if args.verbose {
        let window = summarizer.context();
        eprintln!(
            "context {} tokens: the KV cache takes {:.0} MiB",
            window.tokens(),
            model.cache_bytes(window) as f64 / (1u64 << 20) as f64
        );
    }
    let several = docs.len() > 1;
    for (i, doc) in docs.iter().enumerate() {
        if several && !args.json {
            let header = format!("{}==> {} <==\n", if i > 0 { "\n" } else { "" }, doc.label);
            let written = if streamed(&args) {
                sink.stream(&header)
            } else {
                sink.whole(&header)
            };
            if let ControlFlow::Break(code) = outcome(written)? {
                return Ok(code);
            }
        }
        if let ControlFlow::Break(code) =
            summarize_one(&args, &summarizer, &name, doc, several, &mut sink)?
        {
            return Ok(code);
        }
    }
    sink.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// Where summaries go: stdout, or the `--output` file, with the text that is
/// streamed echoed to stdout as it is generated (unless quiet).
struct Sink {
    file: Option<BufWriter<AtomicFile>>,
    echo: bool,
}

impl Sink {
    fn new(output: Option<&Path>, quiet: bool) -> Result<Self> {
        Ok(Self {
            file: output
                .map(|path| AtomicFile::create(path).map(BufWriter::new))
                .transpose()?,
            echo: output.is_none() || !quiet,
        })
    }

    /// Text shown as it is generated.
    fn stream(&mut self, text: &str) -> Result<()> {
        self.write_file(text)?;
        if self.echo {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                // Stdout only shows the text on its way to the file: a reader
                // that goes away does not stop it.
                Err(e) if e.kind() == ErrorKind::BrokenPipe && self.file.is_some() => {
                    self.echo = false;
                }
                r => r.context("cannot write the summary")?,
            }
        }
        Ok(())
    }

    /// Output that exists only once the summary is done (JSON): to the file
    /// when there is one, else to stdout.
    fn whole(&mut self, text: &str) -> Result<()> {
        if self.file.is_some() {
            return self.write_file(text);
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write the summary")
    }

    fn write_file(&mut self, text: &str) -> Result<()> {
        if let Some(file) = &mut self.file {
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", file.get_ref().dest().display()))?;
        }
        Ok(())
    }

    /// What an interrupted run says about what it wrote.
    fn interrupted(&self) -> String {
        match &self.file {
            Some(f) => format!(
                "interrupted: {} was not written",
                f.get_ref().dest().display()
            ),
            None => "interrupted: the summary above is incomplete".into(),
        }
    }

    /// Puts the file in place, now that every summary is in it.
    fn finish(self) -> Result<()> {
        if let Some(file) = self.file {
            let dest = file.get_ref().dest().to_path_buf();
            file.into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("cannot write {}", dest.display()))?
                .commit()?;
        }
        Ok(())
    }
}

/// Whether the summary's text is streamed as it is generated: JSON output is
/// checked before it is printed, so it is not.
fn streamed(args: &SummarizeArgs) -> bool {
    !args.json && args.summary.format != FormatArg::Json
}

/// Whether the run goes on after a write: a closed stdout (`abridge … |
/// head`) is the reader's choice and ends it successfully; other write errors
/// are failures.
fn outcome(written: Result<()>) -> Result<ControlFlow<ExitCode>> {
    match written {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e)
            if e.root_cause()
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) =>
        {
            Ok(ControlFlow::Break(ExitCode::SUCCESS))
        }
        Err(e) => Err(e),
    }
}

fn documents(args: &SummarizeArgs, request: Option<&SavedRequest>) -> Result<Vec<Document>> {
    let docs = match request {
        Some(r) => vec![Document {
            label: "request".into(),
            text: r.article.clone(),
        }],
        None if args.files.is_empty() => vec![Document {
            label: "-".into(),
            text: read_document(None)?,
        }],
        None => args
            .files
            .iter()
            .map(|f: &PathBuf| {
                Ok(Document {
                    label: f.display().to_string(),
                    text: read_document(Some(f)).with_context(|| format!("{}", f.display()))?,
                })
            })
            .collect::<Result<_>>()?,
    };
    for d in &docs {
        abridge::input::check(&d.text).with_context(|| d.label.clone())?;
    }
    if args.combine && docs.len() > 1 {
        let text = docs
            .iter()
            .map(|d| d.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        return Ok(vec![Document {
            label: "combined".into(),
            text,
        }]);
    }
    Ok(docs)
}

fn summarize_one(
    args: &SummarizeArgs,
    summarizer: &Summarizer,
    name: &str,
    doc: &Document,
    several: bool,
    sink: &mut Sink,
) -> Result<ControlFlow<ExitCode>> {
    let progress = progress_bar("{msg} {bar:30} {pos}/{len} tokens ({per_sec})", args.quiet);
    if let Some(bar) = &progress {
        bar.set_message("reading prompt");
    }
    let stream = streamed(args);
    let mut started = false;
    let mut write_error = None;
    let summary = summarizer.summarize_with(&doc.text, |event| {
        match event {
            Event::PromptProgress { done, total } => {
                if let Some(bar) = &progress {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                }
            }
            Event::Stage {
                stage,
                index,
                count,
            } => {
                if let Some(bar) = &progress {
                    bar.reset();
                    bar.set_message(match stage {
                        Stage::Part => format!("summarizing part {index}/{count}"),
                        Stage::Combine => "combining the parts".to_owned(),
                    });
                }
            }
            Event::Text(piece) if stream => {
                if let Some(bar) = &progress {
                    bar.finish_and_clear();
                }
                // The first token often carries the space that separates it from
                // the prompt; a summary starts at its first visible character.
                let piece = if started { piece } else { piece.trim_start() };
                started |= !piece.is_empty();
                if let Err(e) = sink.stream(piece) {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            Event::Text(_) => {}
        }
        ControlFlow::Continue(())
    });
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let summary = summary?;
    if let Some(e) = write_error {
        return outcome(Err(e));
    }
    let written = if args.json {
        let mut out = serde_json::to_value(&summary)?;
        out["model"] = name.into();
        out["model_path"] = summarizer.model().info().path.display().to_string().into();
        if several {
            out["file"] = doc.label.clone().into();
        }
        sink.whole(&format!("{out}\n"))
    } else if let Some(v) = &summary.json {
        sink.whole(&format!("{}\n", serde_json::to_string_pretty(v)?))
    } else if started {
        sink.stream("\n")
    } else {
        Ok(())
    };
    if let ControlFlow::Break(code) = outcome(written)? {
        return Ok(ControlFlow::Break(code));
    }
    if args.verbose {
        print_stats(summarizer, name, &summary);
    }
    if summary.stop_reason == StopReason::Cancelled {
        eprintln!("{}", sink.interrupted());
        return Ok(ControlFlow::Break(ExitCode::from(INTERRUPTED)));
    }
    Ok(ControlFlow::Continue(()))
}

fn print_stats(summarizer: &Summarizer, name: &str, summary: &Summary) {
    let model = summarizer.model();
    let stats = &summary.stats;
    let g = &stats.generation;
    let parts = if stats.parts > 0 {
        format!(", in {} parts", stats.parts)
    } else {
        String::new()
    };
    let trimmed = if summary.trimmed {
        " (an unfinished last sentence was dropped)"
    } else {
        ""
    };
    let reason = serde_json::to_value(summary.stop_reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    eprintln!(
        "model {name} ({}) on {} ({} kernels), {} threads, context {}\n\
         prompt: {} tokens in {:.2} s ({:.1} tokens/s){parts}\n\
         summary: {} tokens in {:.2} s ({:.1} tokens/s), stopped by {reason}{trimmed}\n\
         load {:.2} s, total {:.2} s",
        model.info().path.display(),
        abridge::device::name(model.device()),
        model.kernels().name(),
        model.threads(),
        stats.context.tokens(),
        g.prompt_tokens,
        g.prompt_time.as_secs_f64(),
        g.prompt_tokens_per_second(),
        g.generated_tokens,
        g.generation_time.as_secs_f64(),
        g.generation_tokens_per_second(),
        stats.load_time.as_secs_f64(),
        stats.total_time.as_secs_f64(),
    );
}
