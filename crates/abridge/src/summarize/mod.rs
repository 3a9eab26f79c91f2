//! The summarizer: a model, a way of asking, and limits.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod chunk;
mod directives;

use crate::error::{Error, Result};
use crate::generate::SamplingOptions;
use crate::generate::{
    Event, GenerateOptions, GenerationStats, Stage, StopReason, TextPolicy, generate_after_prefix,
};
use crate::input;
use crate::model::{ContextWindow, KvCache, Model, common_prefix};
use crate::tokenizer::TokenId;
use crate::tokenizer::template::RenderedPrompt;
pub use chunk::{Chunk, split as split_text};
pub use directives::{Length, OutputFormat, parse_json_summary};

/// The system prompt used when none is given.
pub const DEFAULT_SYSTEM: &str = "You are an article summarizer.";

/// The instruction placed before the text when none is given, in the words
/// summarizing clients use.
pub const DEFAULT_INSTRUCTION: &str = "What is this article about?";

/// The instruction for each part of a text too long for one pass.
pub const PART_INSTRUCTION: &str =
    "This is one part of a longer document. Summarize the main points of this part.";

/// What precedes the part summaries when they are combined.
const COMBINE_HEADER: &str = "Summaries of consecutive parts of one document, in order:";

/// The token limit of a summary when neither a limit nor a length is given.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// Words after which a summary with no length asked for ends at its next
/// sentence end: the seed request's recorded answer is 74 words; small
/// models left alone go on until the token limit, repeating themselves in
/// other words.
pub const DEFAULT_TARGET_WORDS: usize = 150;

/// Rounds of summarizing summaries before giving up (each round shrinks the
/// text several times over, so real documents need two or three).
const MAX_ROUNDS: usize = 6;

/// How a text is summarized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// One pass when the text fits the context window, map-reduce otherwise.
    #[default]
    Auto,
    /// One pass; a text that does not fit is an error.
    Single,
    /// Always split: summarize parts, then combine their summaries.
    MapReduce,
}

/// How a text is split for map-reduce: the token budget of each part and the
/// parts themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Most tokens of text a part may hold.
    pub budget: usize,
    /// The parts, covering the whole text in order.
    pub chunks: Vec<Chunk>,
}

/// A finished summary.
///
/// Serialized as one flat object: `summary` (the text), `json`,
/// `stop_reason` in snake case (`"end_of_generation"`, `"max_tokens"`,
/// `"repetition"`, `"length"`, …), `trimmed`, and the fields of
/// [`SummaryStats`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// The summary text.
    #[serde(rename = "summary")]
    pub text: String,
    /// With [`OutputFormat::Json`]: the validated object.
    pub json: Option<serde_json::Value>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Whether an unfinished last sentence was dropped (the token limit came
    /// first, or the model ended its turn on a fragment).
    pub trimmed: bool,
    /// Counts and timings.
    #[serde(flatten)]
    pub stats: SummaryStats,
}

/// Counts and timings of one summary.
///
/// Serialized with the [`GenerationStats`] fields inline, `context_size` in
/// tokens, `parts`, `load_seconds` and `total_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SummaryStats {
    /// Prompt and generation counts and times.
    #[serde(flatten)]
    pub generation: GenerationStats,
    /// The context window used.
    #[serde(rename = "context_size")]
    pub context: ContextWindow,
    /// Parts summarized on the way (0 for a single pass).
    pub parts: usize,
    /// Time it took to load the model.
    #[serde(rename = "load_seconds", serialize_with = "crate::generate::seconds")]
    pub load_time: Duration,
    /// Time from the call to the end of the summary (tokenizing included).
    #[serde(rename = "total_seconds", serialize_with = "crate::generate::seconds")]
    pub total_time: Duration,
}

/// Summarizes text with a loaded model.
///
/// A summarizer keeps the key/value caches it used, so a prompt that starts
/// like an earlier one (the template, system prompt and instruction every
/// document shares, or the parts of one long document) has only its new
/// tokens processed; clones and [`to_builder`](Self::to_builder) variants
/// share them, one cache per summary running at once.
///
/// ```no_run
/// use abridge::{Model, Summarizer};
///
/// let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let summarizer = Summarizer::builder(model).max_tokens(200).build()?;
/// let summary = summarizer.summarize("Honeybees tell each other where food is by dancing.")?;
/// println!("{}", summary.text);
/// # Ok::<(), abridge::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Summarizer {
    model: Arc<Model>,
    system: Option<String>,
    instruction: String,
    context: Option<ContextWindow>,
    generate: GenerateOptions,
    /// The token limit given explicitly; without one it follows the length.
    max_tokens: Option<usize>,
    strategy: Strategy,
    length: Option<Length>,
    format: OutputFormat,
    reuse_prefix: bool,
    caches: Arc<CachePool>,
}

/// Caches left by finished generations, for the next ones to start from.
#[derive(Debug, Default)]
struct CachePool(Mutex<Vec<KvCache>>);

impl CachePool {
    /// A free cache of `window` positions, the one holding most of `prefix`.
    fn take(&self, prefix: &[TokenId], window: ContextWindow) -> Option<KvCache> {
        let mut caches = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let best = caches
            .iter()
            .enumerate()
            .filter(|(_, c)| c.capacity() == window.tokens())
            .max_by_key(|(_, c)| c.shared_prefix(prefix))
            .map(|(i, _)| i)?;
        Some(caches.swap_remove(best))
    }

    fn put(&self, cache: KvCache) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(cache);
    }
}

/// Configures a [`Summarizer`].
#[derive(Debug, Clone)]
pub struct SummarizerBuilder {
    inner: Summarizer,
}

impl SummarizerBuilder {
    /// The system prompt; an empty string means none.
    pub fn system(mut self, system: impl Into<String>) -> Self {
        let s = system.into();
        self.inner.system = (!s.trim().is_empty()).then_some(s);
        self
    }

    /// The instruction placed before the text.
    pub fn instruction(mut self, instruction: impl Into<String>) -> Self {
        self.inner.instruction = instruction.into();
        self
    }

    /// The context window (default: the model's, up to [`crate::DEFAULT_CONTEXT`]).
    pub fn context(mut self, window: ContextWindow) -> Self {
        self.inner.context = Some(window);
        self
    }

    /// Most tokens in the summary (default: enough for the
    /// [`length`](Self::length) asked for, or 512). A summary that reaches it
    /// ends at its last complete sentence.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.inner.max_tokens = Some(n);
        self
    }

    /// How tokens are chosen (default: [`SamplingOptions::default`], greedy
    /// with penalties against repetition; [`SamplingOptions::greedy`] for
    /// plain greedy decoding).
    pub fn sampling(mut self, sampling: SamplingOptions) -> Self {
        self.inner.generate.sampling = sampling;
        self
    }

    /// How long the summary should be: the prompt asks for it, generation
    /// aims at its word count (it does not end well short of it, and stops
    /// at the first sentence end near it), and the token limit follows it
    /// unless [`max_tokens`](Self::max_tokens) is given.
    pub fn length(mut self, length: Length) -> Self {
        self.inner.length = Some(length);
        self
    }

    /// Whether the summary is made of whole sentences (default: on): text
    /// is streamed a sentence at a time, and a summary that has to stop
    /// early (token limit, loop guard) ends at its last complete sentence.
    pub fn whole_sentences(mut self, on: bool) -> Self {
        self.inner.generate.text.whole_sentences = on;
        self
    }

    /// Whether the loop guard stops a summary that starts repeating itself
    /// (default: on).
    pub fn loop_guard(mut self, on: bool) -> Self {
        self.inner.generate.text.loop_guard = on;
        self
    }

    /// A handle that stops the summary from elsewhere (another thread, a
    /// Ctrl-C handler); the summary keeps what was produced.
    pub fn cancel(mut self, cancel: crate::generate::Cancel) -> Self {
        self.inner.generate.cancel = cancel;
        self
    }

    /// The form of the summary (default: prose).
    pub fn format(mut self, format: OutputFormat) -> Self {
        self.inner.format = format;
        self
    }

    /// Single pass, map-reduce, or whichever fits (the default).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.inner.strategy = strategy;
        self
    }

    /// Whether the caches of finished summaries are kept for the next ones to
    /// reuse their shared prompt prefix (default: on). Off, every generation
    /// starts from an empty cache and frees it when done; the summaries are
    /// the same either way.
    pub fn reuse_prefix(mut self, on: bool) -> Self {
        self.inner.reuse_prefix = on;
        self
    }

    /// Strings that end the summary.
    pub fn stop(mut self, stop: Vec<String>) -> Self {
        self.inner.generate.stop = stop;
        self
    }

    /// Checks the options and returns the summarizer.
    pub fn build(self) -> Result<Summarizer> {
        self.inner.generate.sampling.validate()?;
        if self.inner.max_tokens == Some(0) || self.inner.length == Some(Length::Words(0)) {
            return Err(Error::InvalidOption(
                "max tokens and words must be at least 1".into(),
            ));
        }
        if let Some(c) = self.inner.context {
            let trained = self.inner.model.info().trained_context;
            if c.tokens() > trained {
                return Err(Error::ContextTooLarge {
                    requested: c.tokens(),
                    trained,
                });
            }
        }
        Ok(self.inner)
    }
}

impl Summarizer {
    /// Starts configuring a summarizer for `model` (a [`Model`] or an
    /// `Arc<Model>` shared with other users).
    pub fn builder(model: impl Into<Arc<Model>>) -> SummarizerBuilder {
        SummarizerBuilder {
            inner: Summarizer {
                model: model.into(),
                system: Some(DEFAULT_SYSTEM.into()),
                instruction: DEFAULT_INSTRUCTION.into(),
                context: None,
                generate: GenerateOptions {
                    text: TextPolicy {
                        whole_sentences: true,
                        ..GenerateOptions::default().text
                    },
                    ..GenerateOptions::default()
                },
                max_tokens: None,
                strategy: Strategy::Auto,
                length: None,
                format: OutputFormat::Paragraph,
                reuse_prefix: true,
                caches: Arc::default(),
            },
        }
    }

    /// A builder starting from this summarizer's settings, to derive a
    /// variant (another length, system prompt or format) that shares its
    /// model.
    ///
    /// ```no_run
    /// use abridge::{Length, Model, Summarizer};
    ///
    /// let base = Summarizer::builder(Model::load("SmolLM2-135M-Instruct.Q4_1.gguf")?).build()?;
    /// let short = base.to_builder().length(Length::Short).build()?;
    /// # Ok::<(), abridge::Error>(())
    /// ```
    pub fn to_builder(&self) -> SummarizerBuilder {
        SummarizerBuilder {
            inner: self.clone(),
        }
    }

    /// The handle that stops this summarizer's summaries (the one given to
    /// [`SummarizerBuilder::cancel`], shared by its clones).
    pub fn cancel_handle(&self) -> &crate::generate::Cancel {
        &self.generate.cancel
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The context window summaries run in.
    pub fn context(&self) -> ContextWindow {
        self.model.context_window(self.context)
    }

    /// The chat prompt for `text`, as the model will see it.
    pub fn prompt(&self, text: &str) -> Result<String> {
        input::check(text)?;
        Ok(self
            .prompt_for(&self.final_instruction(), text)?
            .into_text())
    }

    /// The instruction with the length and format asked for.
    fn final_instruction(&self) -> String {
        let mut out = self.instruction.clone();
        let directives = self
            .length
            .map(Length::directive)
            .into_iter()
            .chain(self.format.directive().map(str::to_owned));
        for d in directives {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&d);
        }
        out
    }

    fn prompt_for(&self, instruction: &str, text: &str) -> Result<RenderedPrompt> {
        let user = if instruction.trim().is_empty() {
            text.to_owned()
        } else {
            format!("{instruction}\n\n{text}")
        };
        self.model
            .template()
            .render_turn(self.system.as_deref(), &user)
    }

    /// The prompt's tokens, checked against the context window.
    pub fn prompt_tokens(&self, text: &str) -> Result<Vec<TokenId>> {
        input::check(text)?;
        let reserve = self.options_for(text)?.max_tokens;
        self.prompt_ids(&self.final_instruction(), text, reserve)
    }

    /// The generation options for a summary of `text`: the token limit
    /// given, or one that fits the length asked for with this tokenizer on
    /// this kind of text, or [`DEFAULT_MAX_TOKENS`].
    fn options_for(&self, text: &str) -> Result<GenerateOptions> {
        let mut options = self.generate.clone();
        options.max_tokens = match (self.max_tokens, self.length) {
            (Some(n), _) => n,
            (None, Some(length)) => length.max_tokens(self.tokens_per_word(text)?),
            (None, None) => DEFAULT_MAX_TOKENS,
        };
        // Without a length asked for, a summary may end whenever the model is
        // done, but not ramble on past a few paragraphs.
        options.text.target_words = Some(
            self.length
                .map_or(DEFAULT_TARGET_WORDS, Length::target_words),
        );
        options.text.hold_end = self.length.is_some();
        Ok(options)
    }

    /// Tokens per word of `text` for this model's tokenizer, measured on its
    /// first few thousand characters (code and non-Latin scripts take many
    /// more tokens per word than English prose).
    fn tokens_per_word(&self, text: &str) -> Result<f64> {
        let mut end = text.len().min(8192);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let sample = &text[..end];
        let words = crate::quality::word_count(sample).max(1);
        let tokens = self.model.tokenizer().encode(sample)?.len();
        Ok((tokens as f64 / words as f64).clamp(1.0, 4.0))
    }

    /// The tokens of the prompt asking `instruction` about `text`, when they
    /// and `reserve` tokens of answer fit the context window.
    fn prompt_ids(&self, instruction: &str, text: &str, reserve: usize) -> Result<Vec<TokenId>> {
        let prompt = self.prompt_for(instruction, text)?;
        let ids = self.model.tokenizer().encode_rendered(&prompt)?;
        let context = self.context().tokens();
        let trained = self.model.info().trained_context;
        if ids.len() + reserve > context {
            if ids.len() + reserve > trained {
                return Err(Error::PromptTooLong {
                    needed: ids.len(),
                    reserve,
                    trained,
                });
            }
            return Err(Error::ContextOverflow {
                needed: ids.len(),
                reserve,
                context,
            });
        }
        Ok(ids)
    }

    /// [`prompt_ids`](Self::prompt_ids), with how many of them every text
    /// asked about with `instruction` shares.
    fn fitted_prompt(&self, instruction: &str, text: &str, reserve: usize) -> Result<Fitted> {
        let ids = self.prompt_ids(instruction, text, reserve)?;
        let prefix = common_prefix(&ids, &self.shared_prefix(instruction)?);
        Ok(Fitted { ids, prefix })
    }

    /// The tokens every prompt asking `instruction` starts with, whatever
    /// the text: the prompt up to where the text begins, less the tokens a
    /// text's first character can change ("\n\n" before a digit is one token
    /// for SmolLM2, before a letter two). A prefix that depended on the text
    /// would not be in the cache the previous text left.
    fn shared_prefix(&self, instruction: &str) -> Result<Vec<TokenId>> {
        let tokenizer = self.model.tokenizer();
        let ids = |text: &str| -> Result<Vec<TokenId>> {
            tokenizer.encode_rendered(&self.prompt_for(instruction, text)?)
        };
        let mut shared = ids("")?;
        for probe in PREFIX_PROBES {
            let other = ids(probe)?;
            shared.truncate(common_prefix(&shared, &other));
        }
        Ok(shared)
    }

    /// Tokens each part summary may take.
    fn part_reserve(&self) -> usize {
        self.max_tokens
            .unwrap_or(DEFAULT_MAX_TOKENS)
            .min(self.context().tokens() / 8)
            .max(16)
    }

    /// How `text` would be split for map-reduce in the first round.
    pub fn plan(&self, text: &str) -> Result<Plan> {
        input::check(text)?;
        let overhead = self
            .model
            .tokenizer()
            .encode_rendered(&self.prompt_for(PART_INSTRUCTION, "")?)?
            .len();
        // A few tokens of slack: text tokenizes slightly differently inside the prompt.
        let used = overhead + self.part_reserve() + 8;
        let context = self.context().tokens();
        if used >= context {
            return Err(Error::ContextTooSmall {
                context,
                prompt: overhead,
                answer: self.part_reserve(),
            });
        }
        let budget = context - used;
        let tokenizer = self.model.tokenizer();
        let chunks = chunk::split(text, budget, |s| Ok(tokenizer.encode(s)?.len()))?;
        Ok(Plan { budget, chunks })
    }

    /// Summarizes `text`.
    pub fn summarize(&self, text: &str) -> Result<Summary> {
        self.summarize_with(text, |_| ControlFlow::Continue(()))
    }

    /// Summarizes `text`, reporting progress and streaming the summary to
    /// `on_event` as it is produced; `ControlFlow::Break` stops early and
    /// returns what was produced so far.
    ///
    /// A text longer than the context window (with [`Strategy::Auto`] or
    /// [`Strategy::MapReduce`]) is split into parts that are summarized one
    /// by one ([`Event::Stage`] with [`Stage::Part`]; their text is not
    /// streamed), then the part summaries are combined, recursively while
    /// they are themselves too long; only the final summary is streamed.
    ///
    /// With [`OutputFormat::Json`] the answer is parsed and checked; when it
    /// is not valid, the summary is made once more with light sampling, and a
    /// second failure is an error.
    pub fn summarize_with(
        &self,
        text: &str,
        mut on_event: impl FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Summary> {
        let mut summary = self.summarize_once(text, &mut on_event)?;
        if self.format != OutputFormat::Json || summary.stop_reason == StopReason::Cancelled {
            return Ok(summary);
        }
        match parse_json_summary(&summary.text) {
            Ok(v) => summary.json = Some(v),
            Err(_) => {
                let mut retry = self.clone();
                retry.generate.sampling.temperature = retry.generate.sampling.temperature.max(0.5);
                retry.generate.sampling.seed = retry.generate.sampling.seed.wrapping_add(1);
                summary = retry.summarize_once(text, &mut on_event)?;
                summary.json = Some(parse_json_summary(&summary.text).map_err(|e| {
                    Error::BadModelOutput(format!(
                        "{e} (after a second attempt); try another model or prose output"
                    ))
                })?);
            }
        }
        Ok(summary)
    }

    fn summarize_once(
        &self,
        text: &str,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Summary> {
        let start = Instant::now();
        input::check(text)?;
        let options = self.options_for(text)?;
        let mut run = Run {
            summarizer: self,
            options,
            stats: GenerationStats::default(),
            parts: 0,
            trimmed: false,
        };
        let instruction = self.final_instruction();
        let fitted = || self.fitted_prompt(&instruction, text, run.options.max_tokens);
        let single = match self.strategy {
            Strategy::Single => Some(fitted()?),
            Strategy::MapReduce => None,
            Strategy::Auto => match fitted() {
                Ok(prompt) => Some(prompt),
                Err(Error::ContextOverflow { .. } | Error::PromptTooLong { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        let (text, reason) = match single {
            Some(prompt) => run.generate(&prompt, &run.options.clone(), on_event, true)?,
            None => run.map_reduce(text, on_event)?,
        };
        let context = self.context();
        Ok(Summary {
            text: text.trim().to_owned(),
            json: None,
            stop_reason: reason,
            trimmed: run.trimmed,
            stats: SummaryStats {
                generation: run.stats,
                context,
                parts: run.parts,
                load_time: self.model.info().load_time,
                total_time: start.elapsed(),
            },
        })
    }
}

/// Texts of one character of each kind a text can start with, whose
/// prompts, with the prompt for no text, bound the prefix every text's
/// prompt shares.
const PREFIX_PROBES: [&str; 7] = ["a", "A", "1", " ", "\n", ".", "\u{4E00}"];

/// A prompt's tokens, of which the first `prefix` are the same for every text.
struct Fitted {
    ids: Vec<TokenId>,
    prefix: usize,
}

/// The state of one summary across its generations.
struct Run<'s> {
    summarizer: &'s Summarizer,
    /// How the final summary is generated.
    options: GenerateOptions,
    stats: GenerationStats,
    parts: usize,
    /// Whether the final summary lost an unfinished sentence.
    trimmed: bool,
}

impl Run<'_> {
    /// One generation; its text is streamed only when `stream` is set.
    fn generate(
        &mut self,
        prompt: &Fitted,
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
        stream: bool,
    ) -> Result<(String, StopReason)> {
        let s = self.summarizer;
        let window = s.context();
        let pooled = s
            .reuse_prefix
            .then(|| s.caches.take(&prompt.ids[..prompt.prefix], window))
            .flatten();
        let mut cache = match pooled {
            Some(cache) => cache,
            None => s.model.new_cache(window)?,
        };
        let mut forward = |e: Event<'_>| match e {
            Event::Text(_) if !stream => ControlFlow::Continue(()),
            e => on_event(e),
        };
        // A cache whose forward pass failed halfway is dropped, not reused.
        let g = generate_after_prefix(
            &s.model,
            &mut cache,
            &prompt.ids,
            prompt.prefix,
            options,
            &mut forward,
        )?;
        if s.reuse_prefix {
            s.caches.put(cache);
        }
        self.stats.prompt_tokens += g.stats.prompt_tokens;
        self.stats.cached_prompt_tokens += g.stats.cached_prompt_tokens;
        self.stats.generated_tokens += g.stats.generated_tokens;
        self.stats.discarded_tokens += g.stats.discarded_tokens;
        self.stats.prompt_time += g.stats.prompt_time;
        self.stats.generation_time += g.stats.generation_time;
        if stream {
            self.trimmed = g.trimmed;
        }
        Ok((g.text, g.stop_reason))
    }

    fn map_reduce(
        &mut self,
        text: &str,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<(String, StopReason)> {
        let s = self.summarizer;
        let tokenizer = s.model.tokenizer();
        let part_options = GenerateOptions {
            max_tokens: s.part_reserve(),
            ..s.generate.clone()
        };
        let options = self.options.clone();
        let mut current = text.to_owned();
        let mut current_tokens = tokenizer.encode(&current)?.len();
        for round in 0..MAX_ROUNDS {
            // After the first round, combine as soon as everything fits.
            if round > 0
                && let Ok(prompt) =
                    s.fitted_prompt(&s.final_instruction(), &current, options.max_tokens)
            {
                if on_event(Event::Stage {
                    stage: Stage::Combine,
                    index: 1,
                    count: 1,
                })
                .is_break()
                {
                    return Ok((String::new(), StopReason::Cancelled));
                }
                return self.generate(&prompt, &options, on_event, true);
            }
            let plan = s.plan(&current)?;
            let count = plan.chunks.len();
            let mut summaries = Vec::with_capacity(count);
            for (i, c) in plan.chunks.iter().enumerate() {
                if on_event(Event::Stage {
                    stage: Stage::Part,
                    index: i + 1,
                    count,
                })
                .is_break()
                {
                    return Ok((String::new(), StopReason::Cancelled));
                }
                let prompt = s.fitted_prompt(
                    PART_INSTRUCTION,
                    &current[c.range.clone()],
                    part_options.max_tokens,
                )?;
                let (summary, reason) = self.generate(&prompt, &part_options, on_event, false)?;
                if reason == StopReason::Cancelled {
                    return Ok((String::new(), reason));
                }
                self.parts += 1;
                summaries.push(summary.trim().to_owned());
            }
            let next = format!("{COMBINE_HEADER}\n\n{}", summaries.join("\n\n"));
            let next_tokens = tokenizer.encode(&next)?.len();
            if next_tokens >= current_tokens {
                return Err(Error::NoProgress {
                    summaries: next_tokens,
                    text: current_tokens,
                });
            }
            current = next;
            current_tokens = next_tokens;
        }
        Err(Error::TooManyRounds { rounds: MAX_ROUNDS })
    }
}
