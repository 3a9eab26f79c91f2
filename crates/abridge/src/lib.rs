//! abridge summarizes text with no network: it runs a quantized GGUF
//! checkpoint (Mistral-7B-Instruct, SmolLM2, Qwen2.5 …) in-process with
//! candle.
//!
//! # Design
//!
//! The one decision that shapes the crate: **the forward pass, the key/value
//! cache, the tokenizer construction and the decode loop are ours, and only
//! the tensor kernels (candle-core's quantized matmul, norms, rope) are
//! borrowed.** candle-transformers' example models were the obvious
//! alternative and were rejected: they grow the cache by concatenation every
//! token, cap the context, and build tokenizers only for GPT-2 vocabularies.
//! A summarizer lives on long prompts, so those parts have to be tuned here.
//!
//! # Layout
//!
//! The crate root is the whole API most programs need: load a [`Model`],
//! build a [`Summarizer`], call it. Beneath it, one module per concept:
//!
//! - [`gguf`]: reading (memory-mapped, validated), writing and inspecting
//!   GGUF files;
//! - [`tokenizer`]: the vocabulary from the file's own metadata, SentencePiece
//!   models, and chat prompts from the file's Jinja template;
//! - `model`: the loaded [`Model`], its [`KvCache`] (which knows the tokens
//!   it holds, so a prompt sharing an earlier one's prefix skips it), and
//!   one file per [`Architecture`] family over a shared decoder skeleton;
//! - `kernels`: our own CPU kernels (legacy quantized matmul, attention over
//!   the f16 cache), chosen at run time by what the CPU offers;
//! - `generate`: the decode loop ([`generate()`], [`generate_after_prefix`])
//!   and the [`Sampler`];
//! - `summarize`: the [`Summarizer`] (which keeps its caches for the next
//!   prompt's shared prefix), long texts by map-reduce, prompt directives and
//!   checking of JSON answers;
//! - [`batch`]: many documents into a resumable JSON Lines output, over
//!   worker threads, sharded by a stable hash of their ids, and merged;
//! - [`quality`]: measures of a summary (repetition, completeness, length,
//!   coverage, ROUGE-L), shared by the tests and `abridge eval`;
//! - [`input`]: text, HTML and PDF documents, and saved requests;
//! - [`output`]: files that appear complete under their name or not at all;
//! - [`registry`]: model names, where their files are (abridge's directory,
//!   the Hugging Face cache, Ollama's store), and downloads;
//! - [`device`]: the CPU or a GPU by name (`auto`, `cpu`, `cuda:N`, `metal`);
//! - [`parity`]: whether two forward passes of one model (another device,
//!   or the generic [`Kernels`]) agree, step by step;
//! - [`bench`]: prompt and generation throughput, as llama-bench measures it;
//! - [`synth`]: a synthetic Mistral-7B for benchmarks without the download;
//! - `server` (cargo feature `server`): Ollama's HTTP API over these models.
//!
//! # Example
//!
//! ```no_run
//! use abridge::{Model, ModelOptions, Summarizer};
//!
//! let model = Model::load_with("SmolLM2-135M-Instruct.Q4_1.gguf", ModelOptions::new().threads(2))?;
//! let summarizer = Summarizer::builder(model)
//!     .system("You are an article summarizer.")
//!     .max_tokens(256)
//!     .build()?;
//! let summary = summarizer.summarize_with("Long article text …", |event| {
//!     if let abridge::Event::Text(piece) = event {
//!         print!("{piece}");
//!     }
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! eprintln!("{:.1} tokens/s", summary.stats.generation.generation_tokens_per_second());
//! # Ok::<(), abridge::Error>(())
//! ```

#![deny(missing_docs)]
// The library reports through results and callbacks; printing is the caller's choice.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod batch;
pub mod bench;
pub mod device;
mod error;
mod generate;
pub mod gguf;
pub mod input;
#[doc(hidden)]
pub mod kernels;
mod model;
pub mod output;
pub mod parity;
pub mod quality;
pub mod registry;
mod rng;
#[cfg(feature = "server")]
pub mod server;
mod summarize;
pub mod synth;
pub mod tokenizer;

pub use candle_core::{Device, Tensor};
pub use error::{Error, Result};
pub use generate::{
    Cancel, Event, GenerateOptions, Generation, GenerationStats, Sampler, SamplingOptions, Stage,
    StopReason, TextPolicy, argmax, generate, generate_after_prefix,
};
pub use model::{
    Architecture, CacheShape, CausalLm, ContextWindow, DEFAULT_CONTEXT, Kernels, KvCache, Model,
    ModelInfo, ModelOptions,
};
pub use summarize::{
    Chunk, Length, OutputFormat, Plan, Strategy, Summarizer, SummarizerBuilder, Summary,
    SummaryStats, parse_json_summary, split_text,
};
pub use tokenizer::template::{ChatTemplate, Message, RenderedPrompt, Role};
pub use tokenizer::{TokenId, Tokenizer};

// Summaries and models are shared across threads by servers and batch jobs.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Model>();
    shared::<Summarizer>();
};
