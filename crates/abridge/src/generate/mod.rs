//! The decode loop: prompt processing, token by token generation, stopping,
//! and streaming of text as it is produced.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::arch::PROMPT_CHUNK;
use crate::model::{KvCache, Model};
use crate::tokenizer::{TokenId, Tokenizer};

mod guard;
pub mod sampling;

pub use guard::TextPolicy;
use guard::{Guard, min_words};
pub use sampling::{Sampler, SamplingOptions, argmax};

/// A handle that stops a generation (or a whole summary) from elsewhere: a
/// signal handler, another thread, a server whose client went away.
///
/// Clones share one flag. A generation checks it before every token and
/// after every chunk of prompt, so it stops within one step, keeps what it
/// produced, and ends with [`StopReason::Cancelled`].
///
/// ```
/// let cancel = abridge::Cancel::new();
/// let for_handler = cancel.clone();
/// for_handler.cancel();
/// assert!(cancel.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A handle that has not been cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every generation using this handle to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl PartialEq for Cancel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Limits and sampling for one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate, and keep. When generation goes back to an
    /// earlier sentence end rather than stop short (see
    /// [`GenerationStats::discarded_tokens`]), the tokens dropped do not
    /// count, so one generation computes at most four times this many.
    pub max_tokens: usize,
    /// Generation stops before any of these strings; they are not emitted.
    pub stop: Vec<String>,
    /// How each token is chosen.
    pub sampling: SamplingOptions,
    /// Whole sentences, the loop guard and a length target.
    pub text: TextPolicy,
    /// Stops the generation from elsewhere.
    pub cancel: Cancel,
}

impl Default for GenerateOptions {
    /// 512 tokens at most, the summary sampling defaults, and the loop guard
    /// on; text is streamed as it is decoded.
    fn default() -> Self {
        Self {
            max_tokens: 512,
            stop: Vec::new(),
            sampling: SamplingOptions::default(),
            text: TextPolicy {
                whole_sentences: false,
                loop_guard: true,
                target_words: None,
                hold_end: false,
            },
            cancel: Cancel::new(),
        }
    }
}

/// What the decode loop reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// `done` of `total` prompt tokens have been processed.
    PromptProgress {
        /// Tokens processed.
        done: usize,
        /// Tokens in the prompt.
        total: usize,
    },
    /// New text, always whole UTF-8 characters.
    Text(&'a str),
    /// A long-document summary moved to a new step (emitted by the
    /// summarizer, not by [`generate`]).
    Stage {
        /// Which kind of step.
        stage: Stage,
        /// This step's number, from 1.
        index: usize,
        /// Steps of this kind in the current round.
        count: usize,
    },
}

/// The steps of a summary of a text longer than the context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Summarizing one part of the text (its text is not streamed).
    Part,
    /// Combining the part summaries into the final summary.
    Combine,
}

/// Why generation ended; serialized in snake case (`"max_tokens"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-sequence or end-of-turn token.
    EndOfGeneration,
    /// A stop string appeared.
    StopString,
    /// The token limit was reached.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The caller asked to stop.
    Cancelled,
    /// The output started repeating itself (see [`TextPolicy::loop_guard`]).
    Repetition,
    /// The length asked for was reached (see [`TextPolicy::target_words`]).
    Length,
}

/// Counts and timings of one generation.
///
/// Serialized as `prompt_tokens`, `cached_prompt_tokens`,
/// `generated_tokens`, `discarded_tokens`, `prompt_seconds`,
/// `generation_seconds`, `prompt_tokens_per_second` and
/// `generation_tokens_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GenerationStats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, tokens the cache already held from an earlier prompt that
    /// started the same way, so not processed again.
    pub cached_prompt_tokens: usize,
    /// Tokens generated, and kept.
    pub generated_tokens: usize,
    /// Tokens generated and then dropped when generation went back to an
    /// earlier sentence end rather than stop short (a loop, or the token
    /// limit, well before the length asked for); they took time too.
    pub discarded_tokens: usize,
    /// Time spent processing the prompt.
    pub prompt_time: Duration,
    /// Time spent generating, after the prompt.
    pub generation_time: Duration,
}

impl serde::Serialize for GenerationStats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("prompt_tokens", &self.prompt_tokens)?;
        m.serialize_entry("cached_prompt_tokens", &self.cached_prompt_tokens)?;
        m.serialize_entry("generated_tokens", &self.generated_tokens)?;
        m.serialize_entry("discarded_tokens", &self.discarded_tokens)?;
        m.serialize_entry("prompt_seconds", &self.prompt_time.as_secs_f64())?;
        m.serialize_entry("generation_seconds", &self.generation_time.as_secs_f64())?;
        m.serialize_entry("prompt_tokens_per_second", &self.prompt_tokens_per_second())?;
        m.serialize_entry(
            "generation_tokens_per_second",
            &self.generation_tokens_per_second(),
        )?;
        m.end()
    }
}

/// A duration as fractional seconds, the unit JSON readers expect.
pub(crate) fn seconds<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `n` per second of `t`; 0 when no time passed.
pub(crate) fn per_second(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

impl GenerationStats {
    /// Prompt tokens processed per second (cached ones not counted: they
    /// took no time).
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(
            self.prompt_tokens.saturating_sub(self.cached_prompt_tokens),
            self.prompt_time,
        )
    }

    /// Tokens generated per second.
    pub fn generation_tokens_per_second(&self) -> f64 {
        per_second(self.generated_tokens, self.generation_time)
    }
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (without any stop string, and without an
    /// unfinished sentence dropped under [`TextPolicy::whole_sentences`]).
    pub text: String,
    /// Every generated token (without the end-of-generation token).
    pub tokens: Vec<TokenId>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Whether an unfinished sentence was dropped from the end.
    pub trimmed: bool,
    /// Counts and timings.
    pub stats: GenerationStats,
}

/// Generates a continuation of `prompt` into an emptied `cache`, reporting
/// progress and text to `on_event`; returning `ControlFlow::Break` from it,
/// or cancelling [`GenerateOptions::cancel`], stops generation with
/// [`StopReason::Cancelled`] and keeps what was produced.
pub fn generate(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[TokenId],
    options: &GenerateOptions,
    on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
) -> Result<Generation> {
    generate_after_prefix(model, cache, prompt, 0, options, on_event)
}

/// Like [`generate`], for a prompt whose first `prefix` tokens are shared by
/// many prompts (the template, system prompt and instruction before a
/// document): when `cache` holds them from an earlier prompt they are not
/// processed again ([`GenerationStats::cached_prompt_tokens`]).
///
/// The prefix is always processed as a step of its own and the rest in steps
/// counted from its end, so every prompt goes through the same computations
/// whether its prefix came from the cache or not, and the output is the same
/// to the bit: which floating-point sums a step makes depends on where it
/// starts.
pub fn generate_after_prefix(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[TokenId],
    prefix: usize,
    options: &GenerateOptions,
    on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let tokenizer = model.tokenizer();
    // Repeating the document is quoting it; only self-repetition is penalized.
    let mut sampler = Sampler::new(options.sampling.clone())?
        .with_breakers(tokenizer.sequence_breakers().iter().copied())
        .with_dry_from(prompt.len());
    // The last prompt token is never taken from the cache: its logits are
    // the first step's.
    let prefix = prefix.min(prompt.len() - 1);
    let cached = if cache.keep_prefix(&prompt[..prefix]) {
        prefix
    } else {
        0
    };
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        cached_prompt_tokens: cached,
        ..Default::default()
    };
    let mut stream = TextStream::new(tokenizer, &options.stop);
    let mut guard = Guard::new(options.text);
    let mut history: Vec<TokenId> = prompt.to_vec();
    let cancelled = |event: ControlFlow<()>| event.is_break() || options.cancel.is_cancelled();

    let start = Instant::now();
    let mut logits = None;
    let mut done = cached;
    let steps = prompt[cached..prefix]
        .chunks(PROMPT_CHUNK)
        .chain(prompt[prefix..].chunks(PROMPT_CHUNK));
    for chunk in steps {
        logits = Some(model.forward(chunk, cache)?);
        done += chunk.len();
        if cancelled(on_event(Event::PromptProgress {
            done,
            total: prompt.len(),
        })) {
            stats.prompt_time = start.elapsed();
            return Ok(Generation {
                text: String::new(),
                tokens: Vec::new(),
                stop_reason: StopReason::Cancelled,
                trimmed: false,
                stats,
            });
        }
    }
    stats.prompt_time = start.elapsed();
    let mut logits = logits.ok_or(Error::EmptyPrompt)?;

    let start = Instant::now();
    let mut retries = Retries::new(&stream, &guard, &logits, cache.len());
    let reason = loop {
        if stream.ids.len() >= options.max_tokens {
            break StopReason::MaxTokens;
        }
        if options.cancel.is_cancelled() {
            break StopReason::Cancelled;
        }
        let mut values: Vec<f32> = logits.to_vec1()?;
        if let Some(target) = options.text.target_words
            && options.text.hold_end
            && guard.words_if_ended() < min_words(target)
        {
            // Too short for the length asked for (a fragment it would leave
            // does not count): the model may not end yet.
            for &id in tokenizer.end_of_generation() {
                if let Some(v) = values.get_mut(id as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        retries.exclude_tried(stream.ids.len(), &mut values);
        let token = sampler.sample(&mut values, &history);
        if tokenizer.is_end_of_generation(token) {
            break StopReason::EndOfGeneration;
        }
        history.push(token);
        let (text, stopped) = stream.push(token)?;
        let (shown, guard_stop) = guard.push(&text);
        if !shown.is_empty() && cancelled(on_event(Event::Text(&shown))) {
            break StopReason::Cancelled;
        }
        if stopped {
            break StopReason::StopString;
        }
        let limit = (stream.ids.len() >= options.max_tokens).then_some(StopReason::MaxTokens);
        if let Some(reason) = guard_stop.or(limit) {
            match retries.go_back(
                reason,
                options,
                &mut guard,
                &mut stream,
                &mut history,
                cache,
            ) {
                Some(earlier) => {
                    logits = earlier;
                    continue;
                }
                None => break reason,
            }
        }
        if cache.remaining() == 0 {
            break StopReason::ContextFull;
        }
        logits = model.forward(&[token], cache)?;
        retries.remember(&stream, &guard, &logits, cache.len());
    };
    if reason != StopReason::StopString {
        let rest = stream.flush()?;
        // Text held back as a possible stop string is released now; the
        // guard decides what of it is kept.
        let (shown, _) = guard.push(&rest);
        if !shown.is_empty() {
            // The generation is over either way; a request to stop here changes nothing.
            let _ = on_event(Event::Text(&shown));
        }
    }
    let end = guard.finish(reason);
    if !end.tail.is_empty() {
        let _ = on_event(Event::Text(&end.tail));
    }
    stats.generated_tokens = stream.ids.len();
    stats.discarded_tokens = retries.discarded;
    stats.generation_time = start.elapsed();
    Ok(Generation {
        text: end.text,
        tokens: stream.ids,
        stop_reason: end.reason,
        trimmed: end.trimmed,
        stats,
    })
}

/// Most times one generation goes back to an earlier sentence end.
const MAX_RETRIES: usize = 3;

/// Places the decode loop can go back to: the ends of the sentences
/// produced so far, with everything needed to continue from there.
///
/// A small model can fall into a loop, or ramble into a list of invented
/// links, long before the length asked for; stopping there leaves a summary
/// far too short, or nothing. Instead the loop goes back to the end of the
/// last sentence shown and continues without the token that started the
/// bad turn, a few times at most. The logits kept with each place are the
/// ones computed then, so going back recomputes nothing.
struct Retries<'a> {
    places: Vec<Place<'a>>,
    left: usize,
    /// Tokens dropped by going back.
    discarded: usize,
}

/// One sentence end.
struct Place<'a> {
    /// The text up to it, without trailing whitespace.
    text: String,
    stream: TextStream<'a>,
    cache_len: usize,
    logits: Tensor,
    /// Tokens already tried from here that led to a bad turn.
    tried: Vec<TokenId>,
}

impl<'a> Retries<'a> {
    fn new(stream: &TextStream<'a>, guard: &Guard, logits: &Tensor, cache_len: usize) -> Self {
        let mut retries = Self {
            places: Vec::new(),
            left: MAX_RETRIES,
            discarded: 0,
        };
        retries.remember(stream, guard, logits, cache_len);
        retries
    }

    /// Notes the current position when the text ends a sentence there.
    fn remember(
        &mut self,
        stream: &TextStream<'a>,
        guard: &Guard,
        logits: &Tensor,
        cache_len: usize,
    ) {
        if self.left == 0 || !stream.held.is_empty() || !guard.at_sentence_end() {
            return;
        }
        let text = guard.text();
        // Whitespace after a sentence is part of the next turn: the latest
        // place with the same text is the one to come back to.
        if self.places.last().is_some_and(|p| p.text == text) {
            self.places.pop();
        }
        // Only the end of the shown text is ever gone back to, and the
        // shown text only grows: places before it are of no more use.
        let shown = guard.shown();
        if let Some(keep) = self.places.iter().rposition(|p| p.text == shown) {
            self.places.drain(..keep);
        }
        self.places.push(Place {
            text,
            stream: stream.clone(),
            cache_len,
            logits: logits.clone(),
            tried: Vec::new(),
        });
    }

    /// Makes the token that followed the place the loop went back to
    /// unavailable there.
    fn exclude_tried(&self, generated: usize, logits: &mut [f32]) {
        if let Some(place) = self
            .places
            .last()
            .filter(|p| p.stream.ids.len() == generated)
        {
            for &id in &place.tried {
                if let Some(v) = logits.get_mut(id as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// When stopping now for `reason` (a loop or the token limit) would
    /// leave too little, goes back to the end of the text shown so far;
    /// returns the logits to continue from.
    fn go_back(
        &mut self,
        reason: StopReason,
        options: &GenerateOptions,
        guard: &mut Guard,
        stream: &mut TextStream<'a>,
        history: &mut Vec<TokenId>,
        cache: &mut KvCache,
    ) -> Option<Tensor> {
        if self.left == 0 || !matches!(reason, StopReason::Repetition | StopReason::MaxTokens) {
            return None;
        }
        let short = guard.words_short(reason);
        if short == 0 {
            return None;
        }
        let at = self.places.iter().rposition(|p| p.text == guard.shown())?;
        let generated = self.places[at].stream.ids.len();
        if reason == StopReason::MaxTokens {
            // Going back only helps when the budget left from there can
            // hold the missing words at this text's own rate: a limit set
            // far below the length asked for is the caller's choice.
            let per_word = stream.ids.len() as f64 / guard.words().max(1) as f64;
            let left_then = options.max_tokens.saturating_sub(generated) as f64;
            if short as f64 * per_word > left_then {
                return None;
            }
        }
        let taken = *stream.ids.get(generated)?;
        self.places.truncate(at + 1);
        let place = &mut self.places[at];
        place.tried.push(taken);
        self.left -= 1;
        self.discarded += stream.ids.len() - generated;
        history.truncate(history.len() - (stream.ids.len() - generated));
        *stream = place.stream.clone();
        cache.truncate(place.cache_len);
        guard.rewind();
        Some(place.logits.clone())
    }
}

/// Turns tokens into text incrementally.
///
/// A character can span tokens (byte-fallback pieces, byte-level BPE), so text
/// is released only once it decodes without a replacement character at its
/// end; text that could be the start of a stop string is held back until it
/// is known not to be one.
#[derive(Clone)]
struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    stop: &'a [String],
    ids: Vec<TokenId>,
    prefix: usize,
    read: usize,
    /// Decoded but not yet released (possible stop-string prefix).
    held: String,
}

impl<'a> TextStream<'a> {
    fn new(tokenizer: &'a Tokenizer, stop: &'a [String]) -> Self {
        Self {
            tokenizer,
            stop,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
            held: String::new(),
        }
    }

    /// Adds a token; returns the text now safe to show, and whether a stop
    /// string was reached.
    fn push(&mut self, id: TokenId) -> Result<(String, bool)> {
        self.ids.push(id);
        // Decoding from a few tokens back keeps the decoder's view of spacing
        // (a SentencePiece decoder strips the first token's leading space).
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let after = self.tokenizer.decode(&self.ids[self.prefix..])?;
        if after.len() <= before.len() || after.ends_with('\u{FFFD}') || !after.starts_with(&before)
        {
            return Ok((String::new(), false));
        }
        self.held.push_str(&after[before.len()..]);
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(self.release())
    }

    fn release(&mut self) -> (String, bool) {
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return (out, true);
        }
        let keep = self
            .stop
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out: String = self.held.drain(..cut).collect();
        (out, false)
    }

    /// Releases whatever is held back at the end of generation, including a
    /// trailing incomplete character (as U+FFFD).
    fn flush(&mut self) -> Result<String> {
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let after = self.tokenizer.decode(&self.ids[self.prefix..])?;
        if let Some(rest) = after.strip_prefix(before.as_str()) {
            self.held.push_str(rest);
        }
        self.read = self.ids.len();
        let out = std::mem::take(&mut self.held);
        Ok(out)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`,
/// on character boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .filter(|&n| stop.is_char_boundary(n) && text.is_char_boundary(text.len() - n))
        .find(|&n| text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_prefix_overlap() {
        assert_eq!(longest_suffix_prefix("hello wor", "world"), 3);
        assert_eq!(longest_suffix_prefix("hello", "xyz"), 0);
        assert_eq!(longest_suffix_prefix("é", "éa"), 2);
        assert_eq!(longest_suffix_prefix("", "abc"), 0);
    }
}
