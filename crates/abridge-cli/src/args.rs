//! The command line: every subcommand's arguments, and their conversion into
//! the library's types.

use std::path::PathBuf;

use abridge::{Length, OutputFormat, SamplingOptions, Strategy};
use clap::{Args, Parser, Subcommand};

/// Summarize text offline with a local GGUF model.
#[derive(Parser)]
#[command(name = "abridge", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Summarize a text file (or standard input) and stream the summary to stdout.
    Summarize(Box<SummarizeArgs>),
    /// Summarize many documents into a JSON Lines file: resumable, shardable
    /// across machines.
    Batch(Box<BatchArgs>),
    /// Count the tokens of a text as a model sees them.
    Tokenize(TokenizeArgs),
    /// Measure prompt-processing (pp) and generation (tg) throughput, as llama-bench does.
    Bench(BenchArgs),
    /// Check that a device (or the generic kernels) computes what the CPU
    /// does: greedy steps over a document's summary prompt, logits compared
    /// at every step.
    Parity(ParityArgs),
    /// Summarize a set of documents and measure the summaries: repetition,
    /// length against the target, complete sentences, key-term coverage, ROUGE-L.
    Eval(EvalArgs),
    /// Write a synthetic checkpoint (real shapes, quantization mix and vocabulary,
    /// random weights) to benchmark a model without downloading it.
    Synth(SynthArgs),
    /// List, inspect, download and remove models.
    Models(ModelsArgs),
    /// Serve Ollama's HTTP API (and OpenAI's chat completions) on
    /// 127.0.0.1:11434, so Ollama clients summarize through abridge.
    Serve(ServeArgs),
}

impl Command {
    /// The `--models-file` the command was given.
    pub fn models_file(&self) -> Option<&std::path::Path> {
        match self {
            Command::Summarize(a) => a.model.models_file.as_deref(),
            Command::Batch(a) => a.run.model.models_file.as_deref(),
            Command::Tokenize(a) => a.model.models_file.as_deref(),
            Command::Bench(a) => a.model.models_file.as_deref(),
            Command::Parity(a) => a.model.models_file.as_deref(),
            Command::Eval(a) => a.models_file.as_deref(),
            Command::Models(a) => a.models_file.as_deref(),
            Command::Serve(a) => a.models_file.as_deref(),
            Command::Synth(_) => None,
        }
    }
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A GGUF file, or a model name from models.toml (default: $ABRIDGE_MODEL, or
    /// the catalogue's default, mistral:7b-instruct-v0.2-q4_K_M).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Where the model runs: auto (a CUDA or Metal GPU when this build
    /// supports one and the machine has it, else the CPU), cpu, cuda, cuda:N,
    /// metal (default: $ABRIDGE_DEVICE, else cpu).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// native (abridge's own CPU kernels where they apply) or generic
    /// (candle's device-generic operations only, the arithmetic a GPU runs)
    /// (default: $ABRIDGE_KERNELS, else native).
    #[arg(long, value_name = "KERNELS")]
    pub kernels: Option<String>,
    /// A catalogue file that extends the shipped models.toml (default:
    /// $XDG_CONFIG_HOME/abridge/models.toml, when it exists).
    #[arg(long, value_name = "PATH")]
    pub models_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct SummarizeArgs {
    /// Files to summarize (text, Markdown, HTML or PDF, recognised by content),
    /// one summary each; `-` or nothing reads standard input.
    #[arg(conflicts_with = "request")]
    pub files: Vec<PathBuf>,
    /// One summary of all the files together.
    #[arg(long)]
    pub combine: bool,
    /// Replay a saved request (JSON with URL-encoded `history`, `model`, `systemText`).
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// CPU threads (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub summary: SummaryArgs,
    /// Download the model from Hugging Face first when it is not on this machine.
    #[arg(long)]
    pub pull: bool,
    /// Print statistics (tokens, tokens/s, timings) to stderr.
    #[arg(long, short)]
    pub verbose: bool,
    /// Print one JSON object with the summary and statistics instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Write the summary (with --json, the JSON object) to FILE, through a
    /// temporary file beside it renamed into place only when the run
    /// succeeds: an error or Ctrl-C leaves FILE as it was. The text still
    /// streams to stdout as it is generated, unless --quiet.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// No progress display (and with --output, nothing on stdout).
    #[arg(long, short)]
    pub quiet: bool,
}

/// How a summary is asked for and generated: `summarize` and `batch` share
/// these.
#[derive(Args)]
pub struct SummaryArgs {
    /// Summary length: short (2-3 sentences, ~50 words), medium (a paragraph,
    /// ~120 words), long (~300 words).
    #[arg(long, value_enum, conflicts_with = "words")]
    pub length: Option<LengthArg>,
    /// Summary length in words (about; generation stops at a sentence end near it).
    #[arg(long)]
    pub words: Option<usize>,
    /// Form of the summary; json gives {"title", "summary", "key_points"}, validated.
    #[arg(long, value_enum, default_value = "paragraph")]
    pub format: FormatArg,
    /// System prompt.
    #[arg(long, short)]
    pub system: Option<String>,
    /// The instruction placed before the text.
    #[arg(long, short)]
    pub prompt: Option<String>,
    /// Most tokens in the summary (default: 512, or what --length/--words need);
    /// a summary that reaches it ends at its last complete sentence.
    #[arg(long, short = 'n')]
    pub max_tokens: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Keep generating when the summary starts repeating itself (the loop
    /// guard stops it at the last new sentence by default).
    #[arg(long)]
    pub no_loop_guard: bool,
    /// Context window in tokens (default: the model's, at most 8192).
    #[arg(long, short = 'c')]
    pub ctx_size: Option<usize>,
    /// single: one pass (a text that does not fit is an error); map-reduce:
    /// summarize parts then combine; auto: single when the text fits.
    #[arg(long, value_enum, default_value = "auto")]
    pub strategy: StrategyArg,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub command: Option<BatchCommand>,
    #[command(flatten)]
    pub run: BatchRunArgs,
}

#[derive(Subcommand)]
pub enum BatchCommand {
    /// Join the outputs of a batch's shards (or runs) into one file, one line
    /// per id; exits with 3 when a record has no summary.
    Merge(MergeArgs),
}

#[derive(Args)]
pub struct BatchRunArgs {
    /// The records: a JSON Lines file (one object per line: `id`, `text` or
    /// `path`, and optionally `system`, `prompt`, `length`, `format`), a
    /// directory (every file under it, its relative path the id), or `-` or
    /// nothing for JSON Lines on standard input.
    pub input: Option<PathBuf>,
    /// The output, one JSON line per record. Lines are appended as records
    /// finish; running again with the same file skips the records it has.
    #[arg(long, short, value_name = "OUT.jsonl", required = true)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// CPU threads (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub summary: SummaryArgs,
    /// Records summarized at once, each with its own cache over the one shared
    /// model. The default, 1, is right for most machines: the forward pass
    /// already uses every core (--threads), so more records at once mostly
    /// share the same cores.
    #[arg(long, default_value = "1", value_name = "N")]
    pub parallel: std::num::NonZeroUsize,
    /// Only the records of shard I of N (by a stable hash of their id). Without
    /// it, the shard comes from a Kubernetes Indexed Job (JOB_COMPLETION_INDEX,
    /// with --shard-count) or a Slurm job array (SLURM_ARRAY_TASK_ID).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<abridge::batch::Shard>,
    /// The number of shards when the index comes from the environment
    /// (required with JOB_COMPLETION_INDEX; overrides SLURM_ARRAY_TASK_COUNT).
    #[arg(long, value_name = "N", conflicts_with = "shard")]
    pub shard_count: Option<u64>,
    /// Summarize again the records whose line in the output is an error.
    #[arg(long)]
    pub retry_errors: bool,
    /// Download the model from Hugging Face first when it is not on this machine.
    #[arg(long)]
    pub pull: bool,
    /// No progress bar (the bar is also off when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct MergeArgs {
    /// Batch output files (the shards' outputs).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The merged file, written whole or not at all.
    #[arg(long, short, value_name = "MERGED.jsonl")]
    pub output: PathBuf,
    /// The batch's records (JSON Lines file or directory): the merge lists those
    /// no output has, and keeps their order.
    #[arg(long, value_name = "RECORDS")]
    pub input: Option<PathBuf>,
}

/// How tokens are chosen. The defaults are deterministic (greedy) with
/// penalties that keep small models out of loops; `--greedy` turns them off.
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Plain greedy decoding with every penalty off (what llama.cpp's greedy
    /// sampler does): for comparisons, not for reading.
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens totalling this probability.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than this share of the most likely one.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Penalty for repeating recent tokens (1: off; default 1.1 over the last 64, as Ollama).
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the repeat, presence and frequency penalties look at.
    #[arg(long)]
    pub repeat_last_n: Option<usize>,
    /// Subtracted from the logit of every token already in the window (0: off).
    #[arg(long)]
    pub presence_penalty: Option<f32>,
    /// Subtracted per occurrence in the window (0: off).
    #[arg(long)]
    pub frequency_penalty: Option<f32>,
    /// DRY penalty on tokens that would extend a repeated sequence (0: off;
    /// default 0.8, base 1.75, allowed length 2, as llama.cpp suggests).
    #[arg(long)]
    pub dry_multiplier: Option<f32>,
    /// Random seed for sampling.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The options these flags ask for, over the summary defaults (or plain
    /// greedy with `--greedy`).
    pub fn options(&self) -> SamplingOptions {
        let mut o = if self.greedy {
            SamplingOptions::greedy()
        } else {
            SamplingOptions::default()
        };
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    o.$field = v;
                }
            )*};
        }
        set!(
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            dry_multiplier,
            seed
        );
        o
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LengthArg {
    Short,
    Medium,
    Long,
}

impl From<LengthArg> for Length {
    fn from(l: LengthArg) -> Self {
        match l {
            LengthArg::Short => Length::Short,
            LengthArg::Medium => Length::Medium,
            LengthArg::Long => Length::Long,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Paragraph,
    Bullets,
    Markdown,
    Json,
}

impl From<FormatArg> for OutputFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Paragraph => OutputFormat::Paragraph,
            FormatArg::Bullets => OutputFormat::Bullets,
            FormatArg::Markdown => OutputFormat::Markdown,
            FormatArg::Json => OutputFormat::Json,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StrategyArg {
    Auto,
    Single,
    MapReduce,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Auto => Strategy::Auto,
            StrategyArg::Single => Strategy::Single,
            StrategyArg::MapReduce => Strategy::MapReduce,
        }
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on, as Ollama's OLLAMA_HOST is written (`0.0.0.0`,
    /// `:8080`, `http://127.0.0.1:11434`) (default: $ABRIDGE_HOST, else
    /// $OLLAMA_HOST, else 127.0.0.1:11434).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,
    /// Generations that run at once (default: one per two cores).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Requests that may wait for a slot; beyond them the server answers 503
    /// (default: 16 per slot).
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,
    /// Largest request body accepted, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_body_mib: usize,
    /// How long a model stays loaded after its last request: `5m`, `1h`,
    /// `0`, or `-1` for ever (default: $OLLAMA_KEEP_ALIVE, else 5m).
    #[arg(long, value_name = "DURATION")]
    pub keep_alive: Option<String>,
    /// Accept file paths as model names (by default only names the
    /// registry resolves).
    #[arg(long)]
    pub allow_paths: bool,
    /// Browser origins allowed besides local pages, comma-separated, `*` as
    /// a wildcard (`chrome-extension://*`) (default: $OLLAMA_ORIGINS).
    #[arg(long, value_name = "LIST")]
    pub origins: Option<String>,
    /// Require `Authorization: Bearer KEY` on API requests (default:
    /// $ABRIDGE_API_KEY).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// CPU threads each loaded model computes on (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// Where models run: auto, cpu, cuda, cuda:N, metal (default:
    /// $ABRIDGE_DEVICE, else cpu).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// native or generic kernels (default: $ABRIDGE_KERNELS, else native).
    #[arg(long, value_name = "KERNELS")]
    pub kernels: Option<String>,
    /// A catalogue file that extends the shipped models.toml.
    #[arg(long, value_name = "PATH")]
    pub models_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// Text file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// CPU threads (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// Also print the token ids, one per line.
    #[arg(long)]
    pub ids: bool,
    /// Tokenize the whole prompt `summarize` would send with its defaults
    /// (chat template, instruction and the text), not the text alone. Control
    /// tokens come only from the template: the text's never become one.
    #[arg(long)]
    pub prompt: bool,
    /// Print a JSON object with the count and the ids.
    #[arg(long, conflicts_with = "ids")]
    pub json: bool,
}

#[derive(Args)]
pub struct ParityArgs {
    /// Text file whose summary prompt is fed to both; `-` or nothing reads
    /// standard input.
    pub file: Option<PathBuf>,
    /// The model, and the device and kernels under test.
    #[command(flatten)]
    pub model: ModelArgs,
    /// CPU threads (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// The device the reference runs on.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub reference_device: String,
    /// The reference's kernels.
    #[arg(long, default_value = "native", value_name = "KERNELS")]
    pub reference_kernels: String,
    /// Tokens generated (by the reference, fed to both) and compared.
    #[arg(long, short = 'n', default_value_t = 64)]
    pub steps: usize,
    /// Largest gap in the reference's logits between two different choices
    /// that counts as a near-tie (default 1.0).
    #[arg(long)]
    pub near_tie: Option<f32>,
    /// Print a JSON object with every step.
    #[arg(long)]
    pub json: bool,
}

/// llama-bench's options, with its letters: several values, comma-separated,
/// give one row per combination.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Benchmark a synthetic checkpoint instead of a model file (e.g.
    /// `mistral-7b-instruct-v0.2:q4_K_M`): real shapes and quantization,
    /// random weights, written once into the model directory and reused.
    #[arg(long, value_name = "MODEL:QUANT", conflicts_with = "model")]
    pub synthetic: Option<String>,
    /// CPU threads; several (`-t 1,2`) load the model once for each
    /// (default: all cores).
    #[arg(long, short, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Prompt sizes, one pp test each (0: none).
    #[arg(
        long = "n-prompt",
        short = 'p',
        value_delimiter = ',',
        default_value = "512"
    )]
    pub prompt: Vec<usize>,
    /// Generation sizes, one tg test each (0: none).
    #[arg(
        long = "n-gen",
        short = 'n',
        value_delimiter = ',',
        default_value = "128"
    )]
    pub generate: Vec<usize>,
    /// Tokens already in the context before each test (`-d 0,4096`).
    #[arg(
        long = "n-depth",
        short = 'd',
        visible_alias = "depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub depth: Vec<usize>,
    /// Repetitions of each test.
    #[arg(long, short = 'r', default_value_t = 3)]
    pub repetitions: usize,
    /// Output format: md, json, jsonl or csv (llama-bench's field names).
    #[arg(long, short = 'o', default_value = "md", value_name = "FORMAT")]
    pub output: String,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Documents to summarize (text, HTML or PDF; a saved request is read as
    /// its article, and its recorded answer is the reference for ROUGE-L).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Models to compare (names or paths).
    #[arg(long, short, value_delimiter = ',', default_value = "smollm2")]
    pub models: Vec<String>,
    /// Settings to compare: default (abridge's), greedy (plain), ollama
    /// (Ollama's defaults: repeat penalty 1.1 over 64 tokens, no loop guard).
    #[arg(long, value_delimiter = ',', default_value = "default,greedy,ollama")]
    pub settings: Vec<SettingsArg>,
    /// Target length in words (also reported as the length error).
    #[arg(long)]
    pub words: Option<usize>,
    /// Most tokens in each summary.
    #[arg(long, short = 'n')]
    pub max_tokens: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(long, short)]
    pub threads: Option<usize>,
    /// A catalogue file that extends the shipped models.toml.
    #[arg(long, value_name = "PATH")]
    pub models_file: Option<PathBuf>,
    /// Print JSON (one object per summary, then the table's rows) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The named sampling settings `abridge eval` compares.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SettingsArg {
    Default,
    Greedy,
    Ollama,
}

impl SettingsArg {
    pub fn name(self) -> &'static str {
        match self {
            SettingsArg::Default => "default",
            SettingsArg::Greedy => "greedy",
            SettingsArg::Ollama => "ollama",
        }
    }

    /// Sampling and whether the loop guard runs.
    pub fn sampling(self) -> (SamplingOptions, bool) {
        match self {
            SettingsArg::Default => (SamplingOptions::default(), true),
            SettingsArg::Greedy => (SamplingOptions::greedy(), false),
            SettingsArg::Ollama => (
                SamplingOptions {
                    repeat_penalty: 1.1,
                    repeat_last_n: 64,
                    ..SamplingOptions::greedy()
                },
                false,
            ),
        }
    }
}

#[derive(Args)]
pub struct SynthArgs {
    /// The model to imitate (supported: mistral-7b-instruct-v0.2).
    pub model: String,
    /// Its quantization (supported: q4_K_M).
    #[arg(long, default_value = "q4_K_M")]
    pub quant: String,
    /// Mistral's SentencePiece tokenizer.model (default: mistral-tokenizer.model.v1
    /// in the model directory, where `scripts/fetch-models` puts it; without one, a
    /// placeholder vocabulary).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Write only this many transformer blocks (default: all of them).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The file to write.
    #[arg(long, short, value_name = "OUT.gguf")]
    pub output: PathBuf,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
    /// A catalogue file that extends the shipped models.toml (default:
    /// $XDG_CONFIG_HOME/abridge/models.toml, when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    pub models_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ModelsCommand {
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
