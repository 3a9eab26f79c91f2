//! The library's one error type.
//!
//! Every message is meant for a person: it names the file, tensor, key or limit
//! involved and, where there is one, the thing to change.

use std::path::PathBuf;

/// Everything that can go wrong in abridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said (part of the message, so not
        /// repeated as a separate cause).
        source: std::io::Error,
    },

    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The model file is not a GGUF file, or its structure is damaged.
    #[error("{path} is not a usable GGUF model: {reason}")]
    InvalidGguf {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A tensor's data extends past the end of the file: the download or copy
    /// was cut short.
    #[error(
        "model file {path} is truncated: tensor {tensor} ends at byte {end} but the file has {file_size} bytes; download it again"
    )]
    Truncated {
        /// The file involved.
        path: PathBuf,
        /// The first tensor that does not fit.
        tensor: String,
        /// The byte offset where that tensor's data ends.
        end: u64,
        /// The file's actual size.
        file_size: u64,
    },

    /// A metadata key the model needs is absent or has the wrong type.
    #[error("model metadata key `{key}` {problem}")]
    Metadata {
        /// The GGUF key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A tensor the architecture needs is absent or has the wrong shape.
    #[error("model tensor `{name}` {problem}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },

    /// The file's `general.architecture` is not one abridge runs.
    #[error("architecture `{found}` is not supported; abridge runs: {}", supported.join(", "))]
    UnsupportedArchitecture {
        /// The architecture the file declares.
        found: String,
        /// The architectures abridge can run.
        supported: Vec<&'static str>,
    },

    /// The tokenizer could not be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The chat template could not be rendered.
    #[error("chat template: {0}")]
    Template(String),

    /// The input text cannot be summarized.
    #[error("{0}")]
    Input(String),

    /// The text is not valid UTF-8.
    #[error(
        "input is not valid UTF-8: invalid byte sequence at byte offset {offset}; convert it to UTF-8 first (e.g. with iconv)"
    )]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },

    /// The prompt does not fit the context window.
    #[error(
        "the prompt needs {needed} tokens (plus {reserve} for the answer) but the context window is {context} tokens; raise the context size (--ctx-size {suggested}) or shorten the text"
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        needed: usize,
        /// Tokens kept free for the answer.
        reserve: usize,
        /// The context window in tokens.
        context: usize,
        /// A context size that would fit.
        suggested: usize,
    },

    /// A model name that `models.toml` does not know and that is not a file.
    #[error("{0}")]
    ModelNotFound(String),

    /// The model catalogue or a request file is malformed.
    #[error("{0}")]
    Config(String),

    /// An invalid option value.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// The caller asked generation to stop.
    #[error("cancelled")]
    Cancelled,

    /// An error from candle's tensor operations.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
