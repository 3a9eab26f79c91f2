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
//! # Pieces
//!
//! - [`gguf`]: opening a model file, validated before anything trusts it;
//! - [`tokenizer`]: the vocabulary from the file's own metadata;
//! - [`sentencepiece`]: reading a SentencePiece `tokenizer.model`;
//! - [`template`]: chat prompts from the file's Jinja template;
//! - [`transformer`] and [`kv_cache`]: the network and its state;
//! - [`gemma3`]: the Gemma 3 network (sliding-window attention, extra norms);
//! - [`quant`]: our own matmul kernels for block types candle runs slowly;
//! - [`model`]: all of the above, loaded together;
//! - [`sampling`] and [`generate`]: the decode loop;
//! - [`summarize`] and [`chunk`]: the [`Summarizer`], and splitting long texts for it;
//! - [`registry`]: model names and where their files are (abridge's directory,
//!   the Hugging Face cache, Ollama's store), with no network;
//! - [`pull`]: downloading a catalogued model, resumable and verified;
//! - [`bench`]: prompt and generation throughput, as llama-bench measures it;
//! - [`synth`]: writing GGUF files, and a synthetic Mistral-7B for benchmarks;
//! - [`input`], [`document`] and [`request`]: the text to summarize (plain, HTML or
//!   PDF), and saved requests.
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

mod attention;
pub mod bench;
pub mod chunk;
pub mod document;
pub mod error;
pub mod gemma3;
pub mod generate;
pub mod gguf;
pub mod input;
pub mod kv_cache;
pub mod model;
pub mod pull;
pub mod quant;
pub mod registry;
pub mod request;
mod rng;
pub mod sampling;
pub mod sentencepiece;
pub mod summarize;
pub mod synth;
pub mod template;
pub mod tokenizer;
pub mod transformer;

pub use error::{Error, Result};
pub use generate::{
    Event, GenerateOptions, Generation, GenerationStats, Stage, StopReason, generate,
};
pub use model::{CausalLm, ContextWindow, Model, ModelInfo, ModelOptions};
pub use sampling::SamplingOptions;
pub use summarize::{
    Length, OutputFormat, Strategy, Summarizer, SummarizerBuilder, Summary, SummaryStats,
};
pub use tokenizer::{TokenId, Tokenizer};
