//! The `abridge` command: argument parsing and printing over the `abridge`
//! library.

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use abridge::registry::{self, Catalogue};
use abridge::request::SavedRequest;
use abridge::{
    ContextWindow, Event, Length, Model, ModelOptions, OutputFormat, SamplingOptions, Stage,
    StopReason, Strategy, Summarizer,
};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

/// Summarize text offline with a local GGUF model.
#[derive(Parser)]
#[command(name = "abridge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize a text file (or standard input) and stream the summary to stdout.
    Summarize(SummarizeArgs),
    /// Count the tokens of a text as a model sees them.
    Tokenize(TokenizeArgs),
    /// Measure prompt-processing (pp) and generation (tg) throughput, as llama-bench does.
    Bench(BenchArgs),
    /// Write a synthetic checkpoint (real shapes, quantization mix and vocabulary,
    /// random weights) to benchmark a model without downloading it.
    Synth(SynthArgs),
    /// List, inspect, download and remove models.
    Models(ModelsArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens for the pp test (0: skip).
    #[arg(long, short = 'p', default_value_t = 512)]
    prompt_tokens: usize,
    /// Generated tokens for the tg test (0: skip).
    #[arg(long, short = 'n', default_value_t = 128)]
    gen_tokens: usize,
    /// Tokens already in the context before the tg test starts; several
    /// (`--depth 64,6000`) give one tg test each, measured in turn.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    depth: Vec<usize>,
    /// Repetitions of each test.
    #[arg(long, short = 'r', default_value_t = 3)]
    repetitions: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ModelArgs {
    /// A GGUF file, or a model name from models.toml (default: $ABRIDGE_MODEL, or
    /// the catalogue's default, mistral:7b-instruct-v0.2-q4_K_M).
    #[arg(long, short)]
    model: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// A catalogue file that extends the shipped models.toml (default:
    /// $XDG_CONFIG_HOME/abridge/models.toml, when it exists).
    #[arg(long, value_name = "PATH")]
    models_file: Option<PathBuf>,
}

#[derive(Args)]
struct SummarizeArgs {
    /// Files to summarize (text, Markdown, HTML or PDF, recognised by content),
    /// one summary each; `-` or nothing reads standard input.
    #[arg(conflicts_with = "request")]
    files: Vec<PathBuf>,
    /// One summary of all the files together.
    #[arg(long)]
    combine: bool,
    /// Summary length: short (2-3 sentences), medium (a paragraph), long.
    #[arg(long, value_enum, conflicts_with = "words")]
    length: Option<LengthArg>,
    /// Summary length in words (about).
    #[arg(long)]
    words: Option<usize>,
    /// Form of the summary; json gives {"title", "summary", "key_points"}, validated.
    #[arg(long, value_enum, default_value = "paragraph")]
    format: FormatArg,
    /// Replay a saved request (JSON with URL-encoded `history`, `model`, `systemText`).
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// System prompt.
    #[arg(long, short)]
    system: Option<String>,
    /// The instruction placed before the text.
    #[arg(long, short)]
    prompt: Option<String>,
    /// Most tokens in the summary (default: 512, or what --length/--words need).
    #[arg(long, short = 'n')]
    max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Sample among the most likely tokens totalling this probability.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Penalty for repeating recent tokens (1: off; Ollama uses 1.1, which keeps
    /// small models out of loops but changes what greedy decoding says).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 299_792_458)]
    seed: u64,
    /// Context window in tokens (default: the model's, at most 8192).
    #[arg(long, short = 'c')]
    ctx_size: Option<usize>,
    /// single: one pass (a text that does not fit is an error); map-reduce:
    /// summarize parts then combine; auto: single when the text fits.
    #[arg(long, value_enum, default_value = "auto")]
    strategy: StrategyArg,
    /// Download the model from Hugging Face first when it is not on this machine.
    #[arg(long)]
    pull: bool,
    /// Print statistics (tokens, tokens/s, timings) to stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Print one JSON object with the summary and statistics instead of streaming.
    #[arg(long)]
    json: bool,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LengthArg {
    Short,
    Medium,
    Long,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    Paragraph,
    Bullets,
    Markdown,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StrategyArg {
    Auto,
    Single,
    MapReduce,
}

#[derive(Args)]
struct TokenizeArgs {
    /// Text file; `-` or nothing reads standard input.
    file: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Also print the token ids, one per line.
    #[arg(long)]
    ids: bool,
    /// Print a JSON object with the count and the ids.
    #[arg(long, conflicts_with = "ids")]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Summarize(a) => a.model.threads,
        Command::Tokenize(a) => a.model.threads,
        Command::Bench(a) => a.model.threads,
        Command::Synth(_) => None,
        Command::Models(_) => None,
    };
    pin_kernel_threads(threads);
    let result = match cli.command {
        Command::Summarize(args) => summarize(args),
        Command::Tokenize(args) => tokenize(args),
        Command::Bench(args) => bench(args),
        Command::Synth(args) => synth(args),
        Command::Models(args) => models(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// candle's kernels ask how many threads to use on every call; without
/// `RAYON_NUM_THREADS` that means parsing `/proc/cpuinfo` each time (5% of
/// generation time on a small model), and it should match the model's pool.
fn pin_kernel_threads(threads: Option<usize>) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() && threads.is_none() {
        return;
    }
    let n = threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1);
    // SAFETY: called at the start of main, before any other thread exists.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
}

/// Exit status after Ctrl-C, as shells report a SIGINT death.
const INTERRUPTED: u8 = 130;

/// The text of a file or of standard input: plain text, HTML or PDF,
/// recognised by content.
fn read_document(file: Option<&Path>) -> Result<String> {
    let bytes = match file {
        None => read_stdin()?,
        Some(p) if p == Path::new("-") => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    };
    Ok(abridge::document::extract(&bytes)?)
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    Ok(bytes)
}

fn load_model(args: &ModelArgs, requested: Option<&str>) -> Result<(String, Model)> {
    let catalogue = Catalogue::load(args.models_file.as_deref())?;
    let name = model_name(args, requested, &catalogue);
    let path = registry::resolve(&name, &catalogue)?;
    let mut options = ModelOptions::new();
    if let Some(t) = catalogue.find(&name).and_then(|m| m.template.as_deref()) {
        options = options.chat_template(
            abridge::template::Builtin::from_name(t).expect("checked when the catalogue was read"),
        );
    }
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        options = options.threads(t);
    }
    let model = Model::load_with(&path, options)?;
    Ok((name, model))
}

/// One text to summarize and what to call it.
struct Document {
    label: String,
    text: String,
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
            .map(|f| {
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

fn summarize(args: SummarizeArgs) -> Result<ExitCode> {
    let request = args
        .request
        .as_deref()
        .map(SavedRequest::from_file)
        .transpose()?;
    let docs = documents(&args, request.as_ref())?;
    if args.pull {
        pull_missing(
            &args.model,
            request.as_ref().and_then(|r| r.model.as_deref()),
            args.quiet,
        )?;
    }
    let (name, model) = load_model(
        &args.model,
        request.as_ref().and_then(|r| r.model.as_deref()),
    )?;
    let model = Arc::new(model);
    let mut builder = Summarizer::builder(model.clone());
    if let Some(words) = args.words {
        builder = builder.length(Length::Words(words));
    } else if let Some(length) = args.length {
        builder = builder.length(match length {
            LengthArg::Short => Length::Short,
            LengthArg::Medium => Length::Medium,
            LengthArg::Long => Length::Long,
        });
    }
    if let Some(n) = args.max_tokens {
        builder = builder.max_tokens(n);
    }
    builder = builder
        .sampling(SamplingOptions {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repeat_penalty: args.repeat_penalty,
            seed: args.seed,
            ..SamplingOptions::default()
        })
        .format(match args.format {
            FormatArg::Paragraph => OutputFormat::Paragraph,
            FormatArg::Bullets => OutputFormat::Bullets,
            FormatArg::Markdown => OutputFormat::Markdown,
            FormatArg::Json => OutputFormat::Json,
        })
        .strategy(match args.strategy {
            StrategyArg::Auto => Strategy::Auto,
            StrategyArg::Single => Strategy::Single,
            StrategyArg::MapReduce => Strategy::MapReduce,
        });
    let system = args
        .system
        .clone()
        .or_else(|| request.as_ref().and_then(|r| r.system.clone()));
    if let Some(system) = system {
        builder = builder.system(system);
    }
    let instruction = args
        .prompt
        .clone()
        .or_else(|| request.as_ref().map(|r| r.question.clone()));
    if let Some(instruction) = instruction {
        builder = builder.instruction(instruction);
    }
    if let Some(c) = args.ctx_size {
        let window = ContextWindow::new(c).context("--ctx-size must be at least 1")?;
        builder = builder.context(window);
    }
    let summarizer = builder.build()?;
    if args.verbose {
        let window = summarizer.context();
        eprintln!(
            "context {} tokens: the KV cache takes {:.0} MiB",
            window.tokens(),
            model.cache_bytes(window) as f64 / (1u64 << 20) as f64
        );
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let several = docs.len() > 1;
    for (i, doc) in docs.iter().enumerate() {
        if several && !args.json {
            let mut stdout = std::io::stdout().lock();
            if i > 0 {
                writeln!(stdout)?;
            }
            writeln!(stdout, "==> {} <==", doc.label)?;
        }
        let outcome = summarize_one(&args, &summarizer, &name, doc, several, &interrupted)?;
        if outcome != ExitCode::SUCCESS {
            return Ok(outcome);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summarize_one(
    args: &SummarizeArgs,
    summarizer: &Summarizer,
    name: &str,
    doc: &Document,
    several: bool,
    interrupted: &AtomicBool,
) -> Result<ExitCode> {
    let model = summarizer.model();
    let progress = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {pos}/{len} tokens ({per_sec})",
            )
            .expect("the template is valid"),
        );
        bar.set_message("reading prompt");
        bar
    });
    // JSON output is checked before it is printed, so it is not streamed.
    let stream = !args.json && args.format != FormatArg::Json;
    let mut stdout = std::io::stdout().lock();
    let mut started = false;
    let mut write_error = None;
    let summary = summarizer.summarize_with(&doc.text, |event| {
        if interrupted.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
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
                if let Err(e) = stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
                {
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
        // A closed pipe (`abridge … | head`) is the reader's choice, not a failure.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(e).context("cannot write the summary");
    }
    let stats = &summary.stats;
    let g = &stats.generation;
    if args.json {
        let mut out = serde_json::json!({
            "summary": summary.json.clone().unwrap_or_else(|| summary.text.clone().into()),
            "model": name,
            "model_path": model.info().path,
            "stop_reason": format!("{:?}", summary.stop_reason),
            "context_size": stats.context.tokens(),
            "parts": stats.parts,
            "prompt_tokens": g.prompt_tokens,
            "generated_tokens": g.generated_tokens,
            "prompt_tokens_per_second": g.prompt_tokens_per_second(),
            "generation_tokens_per_second": g.generation_tokens_per_second(),
            "load_seconds": stats.load_time.as_secs_f64(),
            "prompt_seconds": g.prompt_time.as_secs_f64(),
            "generation_seconds": g.generation_time.as_secs_f64(),
            "total_seconds": stats.total_time.as_secs_f64(),
        });
        if several {
            out["file"] = doc.label.clone().into();
        }
        writeln!(stdout, "{out}")?;
    } else if let Some(v) = &summary.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(v)?)?;
    } else if started {
        writeln!(stdout)?;
    }
    if args.verbose {
        eprintln!(
            "model {name} ({}), {} threads, context {}\n\
             prompt: {} tokens in {:.2} s ({:.1} tokens/s){}\n\
             summary: {} tokens in {:.2} s ({:.1} tokens/s), stopped by {:?}\n\
             load {:.2} s, total {:.2} s",
            model.info().path.display(),
            model.threads(),
            stats.context.tokens(),
            g.prompt_tokens,
            g.prompt_time.as_secs_f64(),
            g.prompt_tokens_per_second(),
            if stats.parts > 0 {
                format!(", in {} parts", stats.parts)
            } else {
                String::new()
            },
            g.generated_tokens,
            g.generation_time.as_secs_f64(),
            g.generation_tokens_per_second(),
            summary.stop_reason,
            stats.load_time.as_secs_f64(),
            stats.total_time.as_secs_f64(),
        );
    }
    if summary.stop_reason == StopReason::Cancelled {
        eprintln!("interrupted: the summary above is incomplete");
        return Ok(ExitCode::from(INTERRUPTED));
    }
    Ok(ExitCode::SUCCESS)
}

fn tokenize(args: TokenizeArgs) -> Result<ExitCode> {
    let text = read_document(args.file.as_deref())?;
    let (_, model) = load_model(&args.model, None)?;
    let ids = model.tokenizer().encode(&text)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "count": ids.len(), "ids": ids })
        )?;
    } else {
        writeln!(out, "{}", ids.len())?;
        if args.ids {
            for id in ids {
                writeln!(out, "{id}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs) -> Result<ExitCode> {
    let (name, model) = load_model(&args.model, None)?;
    let options = abridge::bench::BenchOptions {
        prompt_tokens: args.prompt_tokens,
        generated_tokens: args.gen_tokens,
        generation_depths: args.depth.clone(),
        repetitions: args.repetitions,
    };
    let report = abridge::bench::run(&model, &options)?;
    let row = |t: &abridge::bench::Throughput| serde_json::json!({ "median": t.median(), "runs": t.runs });
    if args.json {
        let out = serde_json::json!({
            "model": name,
            "threads": model.threads(),
            "load_seconds": model.info().load_time.as_secs_f64(),
            "pp": report.prompt.as_ref().map(row),
            "tg": report
                .generation
                .iter()
                .map(|(depth, t)| serde_json::json!({ "depth": depth, "median": t.median(), "runs": t.runs }))
                .collect::<Vec<_>>(),
            "pp_tokens": args.prompt_tokens,
            "tg_tokens": args.gen_tokens,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("| model | threads | test | tokens/s (median) | min – max |");
    println!("| --- | ---: | --- | ---: | ---: |");
    let print = |test: String, t: &abridge::bench::Throughput| {
        let (lo, hi) = t.range();
        println!(
            "| {name} | {} | {test} | {:.1} | {lo:.1} – {hi:.1} |",
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

#[derive(Args)]
struct SynthArgs {
    /// The model to imitate (supported: mistral-7b-instruct-v0.2).
    model: String,
    /// Its quantization (supported: q4_K_M).
    #[arg(long, default_value = "q4_K_M")]
    quant: String,
    /// Mistral's SentencePiece tokenizer.model (default: mistral-tokenizer.model.v1
    /// in the model directory, where `scripts/fetch-models` puts it; without one, a
    /// placeholder vocabulary).
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// Write only this many transformer blocks (default: all of them).
    #[arg(long)]
    layers: Option<usize>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The file to write.
    #[arg(long, short, value_name = "OUT.gguf")]
    output: PathBuf,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
}

fn synth(args: SynthArgs) -> Result<ExitCode> {
    let tokenizer = args
        .tokenizer
        .or_else(abridge::synth::default_mistral_tokenizer);
    let options = abridge::synth::SynthOptions {
        tokenizer,
        seed: args.seed,
        layers: args.layers,
    };
    let progress = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "writing {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .expect("the template is valid"),
        );
        bar
    });
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

#[derive(Args)]
struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
    /// A catalogue file that extends the shipped models.toml (default:
    /// $XDG_CONFIG_HOME/abridge/models.toml, when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    models_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Every catalogued model, and every model in Ollama's store: size,
    /// architecture, whether it is on this machine and where.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What a model file says about itself: architecture, parameters,
    /// quantization, context length, chat template, tokenizer.
    Show {
        /// A model name, an Ollama tag or a path.
        name: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Download a model from Hugging Face into abridge's model directory
    /// (resumable; size and sha256 checked before it is used).
    Pull {
        /// A catalogued model name.
        name: String,
        /// No progress display.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Delete a model from abridge's model directory (never from the Hugging
    /// Face cache or Ollama's store).
    Rm {
        /// A catalogued model name.
        name: String,
    },
    /// Print the path of a model's file, found without any network.
    Path {
        /// A model name, an Ollama tag or a path.
        name: String,
    },
}

/// The model a command uses: `--model`, else the request's, else
/// `$ABRIDGE_MODEL`, else the catalogue's default.
fn model_name(args: &ModelArgs, requested: Option<&str>, catalogue: &Catalogue) -> String {
    args.model
        .clone()
        .or_else(|| requested.map(str::to_owned))
        .or_else(|| {
            std::env::var("ABRIDGE_MODEL")
                .ok()
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_else(|| catalogue.default.clone())
}

/// `summarize --pull`: downloads the model when it is catalogued and is
/// nowhere on this machine.
fn pull_missing(args: &ModelArgs, requested: Option<&str>, quiet: bool) -> Result<()> {
    let catalogue = Catalogue::load(args.models_file.as_deref())?;
    let name = model_name(args, requested, &catalogue);
    if registry::resolve(&name, &catalogue).is_ok() {
        return Ok(());
    }
    if let Some(entry) = catalogue.find(&name) {
        pull_entry(entry, quiet)?;
    }
    Ok(())
}

fn pull_entry(
    entry: &registry::ModelEntry,
    quiet: bool,
) -> Result<abridge::pull::Pulled, abridge::pull::PullError> {
    let options = abridge::pull::PullOptions::from_env();
    if !quiet && let Some(hf) = &entry.huggingface {
        eprintln!(
            "pulling {} ({}) from {}",
            entry.name,
            registry::human_bytes(entry.size),
            abridge::pull::url(&options.endpoint, hf)
        );
    }
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(entry.size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .expect("the template is valid"),
        );
        bar
    });
    let pulled = abridge::pull::pull(entry, &options, |p| {
        if let Some(bar) = &bar {
            bar.set_position(p.done);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    pulled
}

fn models(args: ModelsArgs) -> Result<ExitCode> {
    let catalogue = Catalogue::load(args.models_file.as_deref())?;
    let places = registry::Places::from_env();
    let entry = |name: &str| {
        catalogue.find(name).with_context(|| {
            let names: Vec<&str> = catalogue.models.iter().map(|m| m.name.as_str()).collect();
            format!(
                "`{name}` is not in the catalogue (known models: {})",
                names.join(", ")
            )
        })
    };
    match args.command {
        ModelsCommand::List { json } => models_list(&catalogue, &places, json)?,
        ModelsCommand::Show { name, json } => models_show(&catalogue, &places, &name, json)?,
        ModelsCommand::Pull { name, quiet } => {
            let entry = entry(&name)?;
            let pulled = pull_entry(entry, quiet)?;
            if pulled.already_present {
                println!("{} is already at {}", entry.name, pulled.path.display());
            } else {
                let resumed = if pulled.resumed_from > 0 {
                    format!(", resumed at byte {}", pulled.resumed_from)
                } else {
                    String::new()
                };
                println!(
                    "{} is ready at {} ({} downloaded{resumed}; size and sha256 verified)",
                    entry.name,
                    pulled.path.display(),
                    registry::human_bytes(pulled.downloaded)
                );
            }
        }
        ModelsCommand::Rm { name } => {
            for path in registry::remove(entry(&name)?, &places)? {
                println!("removed {}", path.display());
            }
        }
        ModelsCommand::Path { name } => {
            let found = registry::locate(&name, &catalogue, &places)?;
            println!("{}", found.path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn models_list(catalogue: &Catalogue, places: &registry::Places, json: bool) -> Result<()> {
    let listed = registry::list(catalogue, places);
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<_> = listed
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.name,
                    "size": l.size,
                    "arch": l.arch,
                    "description": l.description,
                    "present": l.found.is_some(),
                    "location": l.found.as_ref().map(|f| f.location.short()),
                    "path": l.found.as_ref().map(|f| f.path.display().to_string()),
                    "catalogued": l.catalogued,
                    "default": catalogue.find(&catalogue.default).is_some_and(|d| d.name == l.name),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    let width = listed
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:>9}  {:8}  {:7}  WHERE",
        "NAME", "SIZE", "ARCH", "PRESENT"
    )?;
    for l in &listed {
        let place = match &l.found {
            Some(f) => format!("{:11}  {}", f.location.short(), f.path.display()),
            None => "-".into(),
        };
        writeln!(
            out,
            "{:width$}  {:>9}  {:8}  {:7}  {place}",
            l.name,
            registry::human_bytes(l.size),
            l.arch.as_deref().unwrap_or("?"),
            if l.found.is_some() { "yes" } else { "no" },
        )?;
    }
    Ok(())
}

fn models_show(
    catalogue: &Catalogue,
    places: &registry::Places,
    name: &str,
    json: bool,
) -> Result<()> {
    let found = registry::locate(name, catalogue, places)?;
    let d = registry::inspect(&found.path)?;
    let entry = catalogue.find(name);
    let quantization = d
        .file_type_name()
        .map(str::to_owned)
        .or_else(|| d.file_type.map(|t| format!("file type {t}")));
    let mix: Vec<String> = d
        .tensor_types
        .iter()
        .map(|t| {
            format!(
                "{} ×{} ({})",
                t.kind,
                t.tensors,
                registry::human_bytes(t.bytes)
            )
        })
        .collect();
    let template_lines: Vec<&str> = d
        .chat_template
        .as_deref()
        .map(|t| t.lines().collect())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if json {
        let value = serde_json::json!({
            "name": entry.map_or(name, |e| e.name.as_str()),
            "path": d.path.display().to_string(),
            "location": found.location.short(),
            "file_size": d.file_size,
            "architecture": d.architecture,
            "general_name": d.name,
            "parameters": d.parameters,
            "file_type": d.file_type,
            "quantization": quantization,
            "tensor_types": d.tensor_types.iter().map(|t| serde_json::json!({
                "type": t.kind, "tensors": t.tensors, "bytes": t.bytes,
            })).collect::<Vec<_>>(),
            "context_length": d.context_length,
            "chat_template": d.chat_template,
            "tokenizer": d.tokenizer,
            "vocabulary": d.vocabulary,
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let parameters = match d.parameters {
        p if p >= 1_000_000_000 => format!("{:.2}B", p as f64 / 1e9),
        p if p >= 1_000_000 => format!("{:.1}M", p as f64 / 1e6),
        p => format!("{:.1}K", p as f64 / 1e3),
    };
    writeln!(
        out,
        "name          {}",
        entry.map_or(name, |e| e.name.as_str())
    )?;
    if let Some(e) = entry {
        writeln!(out, "description   {}", e.description)?;
    }
    writeln!(
        out,
        "path          {} ({})",
        d.path.display(),
        found.location
    )?;
    writeln!(
        out,
        "file size     {} ({} bytes)",
        registry::human_bytes(d.file_size),
        d.file_size
    )?;
    writeln!(out, "architecture  {}", d.architecture)?;
    if let Some(n) = &d.name {
        writeln!(out, "general.name  {n}")?;
    }
    writeln!(out, "parameters    {parameters} ({})", d.parameters)?;
    writeln!(
        out,
        "quantization  {}; tensors: {}",
        quantization.as_deref().unwrap_or("unknown"),
        mix.join(", ")
    )?;
    match d.context_length {
        Some(c) => writeln!(out, "context       {c} tokens")?,
        None => writeln!(out, "context       unknown")?,
    }
    writeln!(
        out,
        "tokenizer     {}{}",
        d.tokenizer_kind().as_deref().unwrap_or("unknown"),
        d.vocabulary
            .map(|v| format!(", {v} tokens"))
            .unwrap_or_default()
    )?;
    if template_lines.is_empty() {
        writeln!(out, "chat template none in the file")?;
    } else {
        const SHOWN: usize = 6;
        let shown = template_lines.len().min(SHOWN);
        writeln!(
            out,
            "chat template (first {shown} of {} lines)",
            template_lines.len()
        )?;
        for line in &template_lines[..shown] {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}
