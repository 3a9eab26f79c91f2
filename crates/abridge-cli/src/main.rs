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
use abridge::{ContextWindow, Event, Model, ModelOptions, SamplingOptions, StopReason, Summarizer};
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
    /// Tokens already in the context before the tg test starts.
    #[arg(long, default_value_t = 0)]
    depth: usize,
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
}

#[derive(Args)]
struct SummarizeArgs {
    /// Text file to summarize; `-` or nothing reads standard input.
    #[arg(conflicts_with = "request")]
    file: Option<PathBuf>,
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
    /// Most tokens in the summary.
    #[arg(long, short = 'n', default_value_t = 512)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Sample among the most likely tokens totalling this probability.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Penalty for repeating recent tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 299_792_458)]
    seed: u64,
    /// Context window in tokens (default: the model's, at most 8192).
    #[arg(long, short = 'c')]
    ctx_size: Option<usize>,
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
    };
    pin_kernel_threads(threads);
    let result = match cli.command {
        Command::Summarize(args) => summarize(args),
        Command::Tokenize(args) => tokenize(args),
        Command::Bench(args) => bench(args),
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

fn read_text(file: Option<&Path>) -> Result<String> {
    let bytes = match file {
        None => read_stdin()?,
        Some(p) if p == Path::new("-") => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    };
    Ok(abridge::input::decode(&bytes)?)
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    Ok(bytes)
}

fn load_model(args: &ModelArgs, requested: Option<&str>) -> Result<(String, Model)> {
    let catalogue = Catalogue::shipped();
    let name = args
        .model
        .clone()
        .or_else(|| requested.map(str::to_owned))
        .or_else(|| {
            std::env::var("ABRIDGE_MODEL")
                .ok()
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_else(|| catalogue.default.clone());
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

fn summarize(args: SummarizeArgs) -> Result<ExitCode> {
    let request = args
        .request
        .as_deref()
        .map(SavedRequest::from_file)
        .transpose()?;
    let text = match &request {
        Some(r) => r.article.clone(),
        None => read_text(args.file.as_deref())?,
    };
    abridge::input::check(&text)?;
    let (name, model) = load_model(
        &args.model,
        request.as_ref().and_then(|r| r.model.as_deref()),
    )?;
    let model = Arc::new(model);
    let mut builder = Summarizer::builder(model.clone())
        .max_tokens(args.max_tokens)
        .sampling(SamplingOptions {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repeat_penalty: args.repeat_penalty,
            seed: args.seed,
            ..SamplingOptions::default()
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

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
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
    let stream = !args.json;
    let mut stdout = std::io::stdout().lock();
    let mut started = false;
    let mut write_error = None;
    let summary = summarizer.summarize_with(&text, |event| {
        if interrupted.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        match event {
            Event::PromptProgress { done, total } => {
                if let Some(bar) = &progress {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                    if done == total {
                        bar.finish_and_clear();
                    }
                }
            }
            Event::Text(piece) if stream => {
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
    })?;
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
        let out = serde_json::json!({
            "summary": summary.text,
            "model": name,
            "model_path": model.info().path,
            "stop_reason": format!("{:?}", summary.stop_reason),
            "context_size": stats.context.tokens(),
            "prompt_tokens": g.prompt_tokens,
            "generated_tokens": g.generated_tokens,
            "prompt_tokens_per_second": g.prompt_tokens_per_second(),
            "generation_tokens_per_second": g.generation_tokens_per_second(),
            "load_seconds": stats.load_time.as_secs_f64(),
            "prompt_seconds": g.prompt_time.as_secs_f64(),
            "generation_seconds": g.generation_time.as_secs_f64(),
            "total_seconds": stats.total_time.as_secs_f64(),
        });
        writeln!(stdout, "{out}")?;
    } else if started {
        writeln!(stdout)?;
    }
    if args.verbose {
        eprintln!(
            "model {name} ({}), {} threads, context {}\n\
             prompt: {} tokens in {:.2} s ({:.1} tokens/s)\n\
             summary: {} tokens in {:.2} s ({:.1} tokens/s), stopped by {:?}\n\
             load {:.2} s, total {:.2} s",
            model.info().path.display(),
            model.threads(),
            stats.context.tokens(),
            g.prompt_tokens,
            g.prompt_time.as_secs_f64(),
            g.prompt_tokens_per_second(),
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
    let text = read_text(args.file.as_deref())?;
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
        generation_depth: args.depth,
        repetitions: args.repetitions,
    };
    let report = abridge::bench::run(&model, options)?;
    let row = |t: &abridge::bench::Throughput| serde_json::json!({ "median": t.median(), "runs": t.runs });
    if args.json {
        let out = serde_json::json!({
            "model": name,
            "threads": model.threads(),
            "load_seconds": model.info().load_time.as_secs_f64(),
            "pp": report.prompt.as_ref().map(row),
            "tg": report.generation.as_ref().map(row),
            "pp_tokens": args.prompt_tokens,
            "tg_tokens": args.gen_tokens,
            "tg_depth": args.depth,
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
    if let Some(t) = &report.generation {
        let depth = if args.depth > 0 {
            format!(" @ d{}", args.depth)
        } else {
            String::new()
        };
        print(format!("tg{}{depth}", args.gen_tokens), t);
    }
    Ok(ExitCode::SUCCESS)
}
