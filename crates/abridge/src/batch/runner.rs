//! Running a batch: records through worker threads, lines into the journal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Journal, Outcome, Record, RecordId, Shard, Status};
use crate::error::Result;
use crate::{StopReason, Summarizer, Summary};

/// What a batch reports as it goes, on the thread that called
/// [`Batch::run`].
#[derive(Debug)]
pub enum Progress<'a> {
    /// Before any work: the records to summarize, those the output already
    /// has, and those that belong to other shards.
    Planned {
        /// Records to summarize now.
        pending: usize,
        /// Records the output file already has a line for.
        skipped: usize,
        /// Records of other shards.
        out_of_shard: usize,
    },
    /// A record was summarized and its line written.
    Summarized {
        /// The record.
        id: &'a RecordId,
        /// Its summary, with its token counts.
        summary: &'a Summary,
    },
    /// A record failed and its line, with the error, was written.
    Failed {
        /// The record.
        id: &'a RecordId,
        /// Why.
        error: &'a str,
    },
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Report {
    /// Records summarized.
    pub done: usize,
    /// Records skipped because the output already had them.
    pub skipped: usize,
    /// Of those, records whose lines are errors (skipped unless
    /// [`Batch::retry_errors`]): they have no summary either.
    pub skipped_failed: usize,
    /// Records that failed (their lines carry the errors).
    pub failed: usize,
    /// Records left to other shards.
    pub out_of_shard: usize,
    /// Prompt tokens processed, over every summary.
    pub prompt_tokens: usize,
    /// Tokens generated, over every summary.
    pub generated_tokens: usize,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Whether the run was cancelled before every record was done.
    pub cancelled: bool,
}

impl Report {
    /// Generated tokens per second of wall-clock time, over all workers.
    pub fn tokens_per_second(&self) -> f64 {
        crate::generate::per_second(self.generated_tokens, self.elapsed)
    }
}

/// Summarizes many records with one model, appending a line per record to a
/// [`Journal`] in the order they finish.
///
/// ```no_run
/// use abridge::batch::{Batch, Journal, read_jsonl_file};
/// use abridge::{Model, Summarizer};
///
/// let summarizer = Summarizer::builder(Model::load("SmolLM2-135M-Instruct.Q4_1.gguf")?).build()?;
/// let records = read_jsonl_file("records.jsonl".as_ref())?;
/// let mut journal = Journal::open("summaries.jsonl")?;
/// let report = Batch::new(summarizer).run(&records, &mut journal, |_| {})?;
/// eprintln!("{} done, {} skipped, {} failed", report.done, report.skipped, report.failed);
/// # Ok::<(), abridge::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Batch {
    summarizer: Summarizer,
    model_name: String,
    parallel: usize,
    shard: Option<Shard>,
    retry_errors: bool,
}

impl Batch {
    /// A batch summarizing with `summarizer` (records with their own
    /// settings get a variant of it that shares its model), one record at a
    /// time, every record, skipping those the output has any line for.
    ///
    /// The summarizer's [`Cancel`](crate::Cancel) handle stops the batch: no
    /// record starts after it is cancelled, the summaries in progress stop
    /// within a token, and their records get no line (a later run does
    /// them). The batch cancels it itself when the output cannot be written.
    pub fn new(summarizer: Summarizer) -> Self {
        let info = summarizer.model().info();
        let model_name = info.name.clone().unwrap_or_else(|| {
            info.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        Self {
            summarizer,
            model_name,
            parallel: 1,
            shard: None,
            retry_errors: false,
        }
    }

    /// The `model` written in each line (default: the name the file gives
    /// itself, else its file name).
    pub fn model_name(mut self, name: impl Into<String>) -> Self {
        self.model_name = name.into();
        self
    }

    /// Records summarized at once, each on its own thread with its own cache
    /// over the one shared model (default 1: the forward pass already runs on
    /// every core the model was given; 0 counts as 1).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// Only the records of this shard.
    pub fn shard(mut self, shard: Option<Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// Summarizes again the records whose only lines are errors (the new
    /// line comes after the old one, and wins when the outputs are merged).
    pub fn retry_errors(mut self, on: bool) -> Self {
        self.retry_errors = on;
        self
    }

    /// Runs the batch over `records`, reporting each record's end to
    /// `on_progress`. A record that fails gets a line with its error and the
    /// batch goes on; only an output that cannot be written (or a summarizer
    /// setting that is invalid) ends it with an error.
    pub fn run(
        &self,
        records: &[Record],
        journal: &mut Journal,
        mut on_progress: impl FnMut(Progress<'_>),
    ) -> Result<Report> {
        let start = Instant::now();
        let summarizer = &self.summarizer;
        let cancel = summarizer.cancel_handle();
        let mut report = Report::default();
        let mut pending = Vec::new();
        for record in records {
            if self.shard.is_some_and(|s| !s.contains(&record.id)) {
                report.out_of_shard += 1;
                continue;
            }
            match journal.status(&record.id) {
                Some(Status::Summarized) => report.skipped += 1,
                Some(Status::Failed) if !self.retry_errors => {
                    report.skipped += 1;
                    report.skipped_failed += 1;
                }
                _ => pending.push(record),
            }
        }
        on_progress(Progress::Planned {
            pending: pending.len(),
            skipped: report.skipped,
            out_of_shard: report.out_of_shard,
        });
        let next = AtomicUsize::new(0);
        let mut write_error = None;
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel();
            for _ in 0..self.parallel.min(pending.len()) {
                let (tx, summarizer) = (tx.clone(), summarizer.clone());
                let (pending, next) = (&pending, &next);
                scope.spawn(move || {
                    while !cancel.is_cancelled() {
                        let Some(record) = pending.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            break;
                        };
                        let outcome = summarize(&summarizer, record);
                        // A summary cut short by the cancel is not the
                        // record's summary, and an error may be the cancel's
                        // doing: a later run does the record again.
                        if cancel.is_cancelled()
                            && !matches!(&outcome, Outcome::Summarized(s) if s.stop_reason != StopReason::Cancelled)
                        {
                            break;
                        }
                        if tx.send((*record, outcome)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for (record, outcome) in rx {
                if write_error.is_some() {
                    continue;
                }
                if let Err(e) = journal.append(&record.id, &self.model_name, &outcome) {
                    cancel.cancel();
                    write_error = Some(e);
                    continue;
                }
                match &outcome {
                    Outcome::Summarized(summary) => {
                        report.done += 1;
                        report.prompt_tokens += summary.stats.generation.prompt_tokens;
                        report.generated_tokens += summary.stats.generation.generated_tokens;
                        on_progress(Progress::Summarized {
                            id: &record.id,
                            summary,
                        });
                    }
                    Outcome::Failed(error) => {
                        report.failed += 1;
                        on_progress(Progress::Failed {
                            id: &record.id,
                            error,
                        });
                    }
                }
            }
        });
        if let Some(e) = write_error {
            return Err(e);
        }
        report.elapsed = start.elapsed();
        report.cancelled = cancel.is_cancelled();
        Ok(report)
    }
}

/// One record's outcome: its text read and summarized, with its own settings.
fn summarize(base: &Summarizer, record: &Record) -> Outcome {
    let text = match record.load() {
        Ok(text) => text,
        Err(why) => return Outcome::Failed(why),
    };
    match record.options.apply(base).and_then(|s| s.summarize(&text)) {
        Ok(summary) => Outcome::Summarized(summary),
        Err(e) => Outcome::Failed(record.named(e.to_string())),
    }
}
