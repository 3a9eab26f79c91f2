//! The library's one error type.
//!
//! Every message is meant for a person: it names the file, tensor, key or limit
//! involved. Messages describe the problem in the library's terms, not in any
//! program's: a command-line front end adds its own flag or command that
//! fixes it (the fields are there for that).

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

    /// A server could not listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
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

    /// The text has nothing to summarize (empty, or only whitespace).
    #[error("the text is empty: there is nothing to summarize")]
    EmptyText,

    /// The text contains NUL bytes: it is binary data, not text.
    #[error("the input looks like binary data (NUL byte at offset {offset}), not text")]
    BinaryText {
        /// Byte offset of the first NUL.
        offset: usize,
    },

    /// The text is not valid UTF-8.
    #[error(
        "input is not valid UTF-8: invalid byte sequence at byte offset {offset}; convert it to UTF-8 first (e.g. with iconv)"
    )]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },

    /// A document (PDF, HTML) could not be turned into text.
    #[error("{0}")]
    Document(String),

    /// A forward pass or a generation was given no tokens.
    #[error("nothing to process: the token list is empty")]
    EmptyPrompt,

    /// A token id outside the model's vocabulary.
    #[error("token id {token} is outside the model's vocabulary of {vocab}")]
    TokenOutOfVocabulary {
        /// The token id.
        token: u32,
        /// Tokens in the vocabulary.
        vocab: usize,
    },

    /// The prompt (and the room kept for the answer) does not fit the
    /// context window.
    #[error(
        "the prompt needs {needed} tokens (plus {reserve} for the answer) but the context window is {context} tokens; use a larger context or a shorter text"
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        needed: usize,
        /// Tokens kept free for the answer.
        reserve: usize,
        /// The context window in tokens.
        context: usize,
    },

    /// The prompt is longer than the model's whole trained context, so no
    /// context window can hold it in one pass.
    #[error(
        "the prompt needs {needed} tokens plus {reserve} for the answer, more than the model's whole context of {trained} tokens; shorten the text, ask for a shorter answer, or use a model with a longer context"
    )]
    PromptTooLong {
        /// Tokens in the prompt.
        needed: usize,
        /// Tokens kept free for the answer.
        reserve: usize,
        /// The context the model was trained for.
        trained: usize,
    },

    /// A context window larger than the model was trained for.
    #[error("a context of {requested} tokens is more than this model was trained for ({trained})")]
    ContextTooLarge {
        /// The window asked for.
        requested: usize,
        /// The context the model was trained for.
        trained: usize,
    },

    /// A context window too small to hold the prompt's own text and the answer.
    #[error(
        "a context of {context} tokens leaves no room for text after the prompt ({prompt} tokens) and the answer ({answer}); use a larger context"
    )]
    ContextTooSmall {
        /// The context window.
        context: usize,
        /// Tokens the prompt takes without any text.
        prompt: usize,
        /// Tokens kept for the answer.
        answer: usize,
    },

    /// An allocation larger than the memory available, refused before it is
    /// made.
    #[error(
        "{what} needs {:.1} GiB but only {:.1} GiB of memory is available",
        *needed as f64 / (1u64 << 30) as f64,
        *available as f64 / (1u64 << 30) as f64
    )]
    OutOfMemory {
        /// What would be allocated (`a context of 32768 tokens`).
        what: String,
        /// Bytes it needs.
        needed: u64,
        /// Bytes available.
        available: u64,
    },

    /// Summarizing the parts of a long text did not make it shorter.
    #[error(
        "the part summaries ({summaries} tokens) are no shorter than the text ({text} tokens); ask for shorter summaries or use a larger context"
    )]
    NoProgress {
        /// Tokens in the part summaries.
        summaries: usize,
        /// Tokens in the text they summarize.
        text: usize,
    },

    /// The text is still too long to combine after the most rounds allowed.
    #[error(
        "the text is still too long to combine after {rounds} rounds of summarizing; use a larger context"
    )]
    TooManyRounds {
        /// Rounds made.
        rounds: usize,
    },

    /// The model did not produce the structured answer asked for.
    #[error("{0}")]
    BadModelOutput(String),

    /// A model name that is not a file and is found in none of the places
    /// abridge looks.
    #[error("{reason}{}", looked_in(looked))]
    ModelNotFound {
        /// The name asked for.
        name: String,
        /// What is missing and where it could come from, in words.
        reason: String,
        /// Every place looked at, in words.
        looked: Vec<String>,
        /// Whether the name is a catalogued model (one that can be fetched by
        /// name).
        catalogued: bool,
    },

    /// The model catalogue or a request file is malformed.
    #[error("{0}")]
    Config(String),

    /// A batch output file has a line, before its last, that is not a
    /// batch's output line (a crash can only cut the last one).
    #[error(
        "{path}, line {line}: {reason}; this is not a batch output file, or it was edited (remove or fix the line)"
    )]
    BatchOutput {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// An invalid option value.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// The device asked for cannot be used: this build lacks its feature, or
    /// the machine lacks the device.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable {
        /// The device, as `cuda:0` or `metal:0`.
        device: String,
        /// Why.
        reason: String,
    },

    /// The catalogue gives no download source for the model.
    #[error("model `{name}` cannot be pulled: {reason}")]
    NoSource {
        /// The model.
        name: String,
        /// What to do instead.
        reason: String,
    },

    /// A download server answered with an error status.
    #[error("GET {url} failed: HTTP {status}{hint}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// What the status probably means, with a leading `; `.
        hint: String,
    },

    /// No answer from a download server: the connection could not be made or
    /// broke.
    #[error("GET {url} failed: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// The connection dropped more often than the retries allow; the bytes
    /// received so far are kept and a new pull resumes from them.
    #[error(
        "the download of {url} stopped at {done} of {total} bytes ({reason}); the bytes so far are kept in {}: pull again to resume",
        partial.display()
    )]
    Interrupted {
        /// The model.
        name: String,
        /// The URL.
        url: String,
        /// Bytes on disk.
        done: u64,
        /// Bytes expected.
        total: u64,
        /// What went wrong last.
        reason: String,
        /// The partial file.
        partial: PathBuf,
    },

    /// The server's file does not have the size the catalogue says.
    #[error(
        "{url} serves {actual} bytes but the catalogue says `{name}` has {expected}; nothing was kept"
    )]
    SizeMismatch {
        /// The URL.
        url: String,
        /// The model.
        name: String,
        /// The catalogue's size.
        expected: u64,
        /// The server's size.
        actual: u64,
    },

    /// The downloaded bytes do not have the catalogue's SHA-256.
    #[error(
        "the file downloaded from {url} has sha256 {actual}, but the catalogue expects {expected} for `{name}`; the download was deleted"
    )]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The model.
        name: String,
        /// The catalogue's digest.
        expected: String,
        /// The downloaded file's digest.
        actual: String,
    },

    /// An error from candle's tensor operations.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

fn looked_in(looked: &[String]) -> String {
    if looked.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nlooked in:");
    for l in looked {
        out.push_str("\n  - ");
        out.push_str(l);
    }
    out
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
