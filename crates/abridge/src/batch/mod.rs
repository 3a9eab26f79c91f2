//! Summarizing many documents with one model: resumable, and shardable
//! across machines.
//!
//! A batch reads [`Record`]s (JSON Lines, or the files of a directory),
//! keeps those of its [`Shard`], skips those its output file already has a
//! line for, and summarizes the rest, appending one JSON line per record to
//! the output as each finishes ([`Journal`]). Running it again with the same
//! output resumes it; [`merge`] joins the outputs of several shards.
//!
//! - `records`: the input, and per-record settings;
//! - `shard`: which records a worker takes, by a hash of their id;
//! - `journal`: the output file, appended line by line, and read back to
//!   resume;
//! - `runner`: the [`Batch`], its worker threads and its report;
//! - `merge`: joining shard outputs.

mod journal;
mod merge;
mod records;
mod runner;
mod shard;

pub use journal::{Journal, Outcome, Status, output_line};
pub use merge::{MergeReport, Merged, merge};
pub use records::{
    Record, RecordId, RecordOptions, Source, read_directory, read_jsonl, read_jsonl_file,
};
pub use runner::{Batch, Progress, Report};
pub use shard::Shard;
