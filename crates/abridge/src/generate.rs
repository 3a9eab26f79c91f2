//! The decode loop: prompt processing, token by token generation, stopping,
//! and streaming of text as it is produced.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::sampling::{Sampler, SamplingOptions};
use crate::tokenizer::{TokenId, Tokenizer};
use crate::transformer::PROMPT_CHUNK;

/// Limits and sampling for one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Generation stops before any of these strings; they are not emitted.
    pub stop: Vec<String>,
    /// How each token is chosen.
    pub sampling: SamplingOptions,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            stop: Vec::new(),
            sampling: SamplingOptions::default(),
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

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// Counts and timings of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GenerationStats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Time spent processing the prompt.
    pub prompt_time: Duration,
    /// Time spent generating, after the prompt.
    pub generation_time: Duration,
}

fn per_second(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

impl GenerationStats {
    /// Prompt tokens processed per second.
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens, self.prompt_time)
    }

    /// Tokens generated per second.
    pub fn generation_tokens_per_second(&self) -> f64 {
        per_second(self.generated_tokens, self.generation_time)
    }
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (without any stop string).
    pub text: String,
    /// The generated tokens (without the end-of-generation token).
    pub tokens: Vec<TokenId>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Counts and timings.
    pub stats: GenerationStats,
}

/// Generates a continuation of `prompt`, which is appended to `cache` (usually
/// empty), reporting progress and text to `on_event`; returning
/// `ControlFlow::Break` from it stops generation with
/// [`StopReason::Cancelled`].
pub fn generate(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[TokenId],
    options: &GenerateOptions,
    on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::Input("the prompt is empty".into()));
    }
    let mut sampler = Sampler::new(options.sampling.clone())?;
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };
    let mut stream = TextStream::new(model.tokenizer(), &options.stop);
    let mut history: Vec<TokenId> = prompt.to_vec();
    let finish = |stream: TextStream<'_>, stop_reason, stats| Generation {
        text: stream.text,
        tokens: stream.ids,
        stop_reason,
        stats,
    };

    let start = Instant::now();
    let mut logits = None;
    let mut done = 0;
    for chunk in prompt.chunks(PROMPT_CHUNK) {
        logits = Some(model.forward(chunk, cache)?);
        done += chunk.len();
        if on_event(Event::PromptProgress {
            done,
            total: prompt.len(),
        })
        .is_break()
        {
            stats.prompt_time = start.elapsed();
            return Ok(finish(stream, StopReason::Cancelled, stats));
        }
    }
    stats.prompt_time = start.elapsed();
    let mut logits = logits.ok_or_else(|| Error::Input("the prompt is empty".into()))?;

    let start = Instant::now();
    let reason = loop {
        if stream.ids.len() >= options.max_tokens {
            break StopReason::MaxTokens;
        }
        let mut values: Vec<f32> = logits.to_vec1()?;
        let token = sampler.sample(&mut values, &history);
        if model.tokenizer().is_end_of_generation(token) {
            break StopReason::EndOfGeneration;
        }
        history.push(token);
        let (text, stopped) = stream.push(token)?;
        if !text.is_empty() && on_event(Event::Text(&text)).is_break() {
            break StopReason::Cancelled;
        }
        if stopped {
            break StopReason::StopString;
        }
        if stream.ids.len() >= options.max_tokens {
            break StopReason::MaxTokens;
        }
        if cache.remaining() == 0 {
            break StopReason::ContextFull;
        }
        logits = model.forward(&[token], cache)?;
    };
    let tail = if reason == StopReason::StopString {
        String::new()
    } else {
        stream.flush()?
    };
    if !tail.is_empty() && reason != StopReason::Cancelled {
        // The generation is over either way; a request to stop here changes nothing.
        let _ = on_event(Event::Text(&tail));
    }
    stats.generated_tokens = stream.ids.len();
    stats.generation_time = start.elapsed();
    Ok(finish(stream, reason, stats))
}

/// Turns tokens into text incrementally.
///
/// A character can span tokens (byte-fallback pieces, byte-level BPE), so text
/// is released only once it decodes without a replacement character at its
/// end; text that could be the start of a stop string is held back until it
/// is known not to be one.
struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    stop: &'a [String],
    ids: Vec<TokenId>,
    prefix: usize,
    read: usize,
    /// Everything released so far.
    text: String,
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
            text: String::new(),
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
            self.text.push_str(&out);
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
        self.text.push_str(&out);
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
        self.text.push_str(&out);
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
