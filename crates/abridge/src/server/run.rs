//! One generation on a worker thread, its text sent back piece by piece, and
//! stopped when the client goes away or the server shuts down.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use crate::generate::{Cancel, Event, GenerateOptions, GenerationStats, StopReason, generate};
use crate::model::ContextWindow;
use crate::tokenizer::TokenId;

use super::api::Options;
use super::http::ApiError;
use super::metrics::Metrics;
use super::models::Lease;
use super::slots::Slot;

/// What a running job sends back.
pub(crate) enum Piece {
    Text(String),
    Done(Box<Finished>),
    Failed(ApiError),
}

/// The end of a generation: why, and its counts and times.
pub(crate) struct Finished {
    pub model: String,
    pub reason: StopReason,
    pub stats: GenerationStats,
    pub load_time: Duration,
    /// From the request's arrival to the last token.
    pub total: Duration,
}

impl Finished {
    /// Ollama's `done_reason`.
    pub fn done_reason(&self) -> &'static str {
        match self.reason {
            StopReason::MaxTokens | StopReason::ContextFull => "length",
            _ => "stop",
        }
    }

    /// OpenAI's `finish_reason`.
    pub fn finish_reason(&self) -> &'static str {
        self.done_reason()
    }

    /// The fields Ollama adds to its last streamed object, in nanoseconds.
    pub fn ollama_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let ns = |d: Duration| d.as_nanos() as u64;
        let mut m = serde_json::Map::new();
        m.insert("done_reason".into(), self.done_reason().into());
        m.insert("total_duration".into(), ns(self.total).into());
        m.insert("load_duration".into(), ns(self.load_time).into());
        m.insert(
            "prompt_eval_count".into(),
            (self.stats.prompt_tokens - self.stats.cached_prompt_tokens).into(),
        );
        m.insert(
            "prompt_eval_duration".into(),
            ns(self.stats.prompt_time).into(),
        );
        m.insert("eval_count".into(), self.stats.generated_tokens.into());
        m.insert(
            "eval_duration".into(),
            ns(self.stats.generation_time).into(),
        );
        m
    }
}

/// A generation ready to run: the prompt fits, the limits are set.
pub(crate) struct Job {
    pub lease: Lease,
    pub prompt: Vec<TokenId>,
    /// Positions the cache needs: the prompt and the most it may generate.
    pub cache: ContextWindow,
    pub options: GenerateOptions,
    pub arrived: Instant,
    /// `METHOD path` for the request's log line.
    pub route: &'static str,
}

impl Job {
    /// Checks the prompt against the context window (`num_ctx`, else the
    /// model's default) and sizes the cache. A prompt that does not fit is
    /// refused with its figures, never cut.
    pub fn new(
        lease: Lease,
        prompt: Vec<TokenId>,
        request: &Options,
        mut options: GenerateOptions,
        arrived: Instant,
        route: &'static str,
    ) -> Result<Self, ApiError> {
        let requested = match request.num_ctx {
            Some(n) => Some(
                ContextWindow::new(n)
                    .ok_or_else(|| ApiError::bad_request("num_ctx must be at least 1"))?,
            ),
            None => None,
        };
        let model = &lease.model;
        let window = model.context_window(requested);
        let trained = model.info().trained_context;
        if window.tokens() > trained {
            return Err(ApiError::bad_request(format!(
                "num_ctx {} is more than {} was trained for ({trained} tokens)",
                window.tokens(),
                lease.name
            )));
        }
        if prompt.len() >= window.tokens() {
            let mut e = ApiError::bad_request(format!(
                "the prompt is {} tokens but the context window (num_ctx) is {} tokens, which leaves no room \
                 for an answer; abridge never cuts a prompt: raise num_ctx ({} was trained for {trained}), \
                 or send the text to POST /api/summarize, which summarizes long texts in parts",
                prompt.len(),
                window.tokens(),
                lease.name,
            ));
            e.extra = Some(json!({
                "prompt_tokens": prompt.len(),
                "num_ctx": window.tokens(),
                "trained_context": trained,
            }));
            return Err(e);
        }
        let room = window.tokens() - prompt.len();
        options.max_tokens = request.max_tokens()?.map_or(room, |n| n.min(room));
        let cache = ContextWindow::new(prompt.len() + options.max_tokens)
            .ok_or_else(|| ApiError::bad_request("empty prompt"))?;
        Ok(Self {
            lease,
            prompt,
            cache,
            options,
            arrived,
            route,
        })
    }
}

/// The generations running now, so a shutdown can stop them.
#[derive(Default)]
pub(crate) struct Jobs {
    next: AtomicU64,
    running: Mutex<HashMap<u64, Cancel>>,
    /// Set at shutdown: a job that starts after it (one that was queued) is
    /// cancelled at once.
    closed: std::sync::atomic::AtomicBool,
}

impl Jobs {
    /// Tracks a generation until [`remove`](Self::remove).
    pub fn add(&self, cancel: Cancel) -> u64 {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut running = self.lock();
        if self.closed.load(Ordering::SeqCst) {
            cancel.cancel();
        }
        running.insert(id, cancel);
        id
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cancel>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every running generation; each keeps what it produced and ends
    /// its response normally.
    pub fn cancel_all(&self) {
        let running = self.lock();
        self.closed.store(true, Ordering::SeqCst);
        for cancel in running.values() {
            cancel.cancel();
        }
    }
}

/// A job's output as it arrives; dropping it (the client went away)
/// cancels the job within one token step.
pub(crate) struct Pieces {
    rx: mpsc::Receiver<Piece>,
    cancel: Cancel,
}

impl Pieces {
    pub async fn next(&mut self) -> Option<Piece> {
        self.rx.recv().await
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Where request log lines go.
pub(crate) type Log = Arc<dyn Fn(String) + Send + Sync>;

/// Runs `job` on a blocking thread in its `slot`.
pub(crate) fn start(
    mut job: Job,
    slot: Slot,
    jobs: &Arc<Jobs>,
    metrics: &Arc<Metrics>,
    log: &Log,
) -> Pieces {
    let (tx, rx) = mpsc::channel(64);
    let cancel = Cancel::new();
    job.options.cancel = cancel.clone();
    let id = jobs.add(cancel.clone());
    let (jobs, metrics, log) = (Arc::clone(jobs), Arc::clone(metrics), Arc::clone(log));
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let model = &job.lease.model;
        let outcome = model.new_cache(job.cache).and_then(|mut cache| {
            let kv = model.cache_bytes(job.cache);
            metrics.kv_bytes.fetch_add(kv, Ordering::SeqCst);
            let result =
                generate(
                    model,
                    &mut cache,
                    &job.prompt,
                    &job.options,
                    &mut |event| match event {
                        Event::Text(text)
                            if tx.blocking_send(Piece::Text(text.to_owned())).is_err() =>
                        {
                            ControlFlow::Break(())
                        }
                        _ => ControlFlow::Continue(()),
                    },
                );
            metrics.kv_bytes.fetch_sub(kv, Ordering::SeqCst);
            result
        });
        jobs.remove(id);
        let piece = match outcome {
            Ok(generation) => {
                metrics.record_generation(&generation.stats);
                let finished = Finished {
                    model: job.lease.name.clone(),
                    reason: generation.stop_reason,
                    stats: generation.stats,
                    load_time: job.lease.load_time,
                    total: job.arrived.elapsed(),
                };
                log(format!(
                    "{} 200 {:.3}s model={} tokens_in={} tokens_out={} stop={}",
                    job.route,
                    finished.total.as_secs_f64(),
                    finished.model,
                    finished.stats.prompt_tokens,
                    finished.stats.generated_tokens,
                    serde_json::to_value(finished.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                ));
                Piece::Done(Box::new(finished))
            }
            Err(e) => {
                let e = ApiError::from(e);
                log(format!(
                    "{} {} {:.3}s model={} error: {}",
                    job.route,
                    e.status.as_u16(),
                    job.arrived.elapsed().as_secs_f64(),
                    job.lease.name,
                    e.message
                ));
                Piece::Failed(e)
            }
        };
        // The client may be gone; nothing is left to tell it.
        let _ = tx.blocking_send(piece);
    });
    Pieces { rx, cancel }
}
