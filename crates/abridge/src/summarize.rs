//! The summarizer: a model, a way of asking, and limits.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::generate::{Event, GenerateOptions, GenerationStats, StopReason, generate};
use crate::input;
use crate::model::{ContextWindow, Model};
use crate::sampling::SamplingOptions;
use crate::tokenizer::TokenId;

/// The system prompt used when none is given.
pub const DEFAULT_SYSTEM: &str = "You are an article summarizer.";

/// The instruction placed before the text when none is given, in the words
/// summarizing clients use.
pub const DEFAULT_INSTRUCTION: &str = "What is this article about?";

/// A finished summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The summary text.
    pub text: String,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Counts and timings.
    pub stats: SummaryStats,
}

/// Counts and timings of one summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryStats {
    /// Prompt and generation counts and times.
    pub generation: GenerationStats,
    /// The context window used.
    pub context: ContextWindow,
    /// Time it took to load the model.
    pub load_time: Duration,
    /// Time from the call to the end of the summary (tokenizing included).
    pub total_time: Duration,
}

/// Summarizes text with a loaded model.
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

    /// The context window (default: the model's, up to [`crate::model::DEFAULT_CONTEXT`]).
    pub fn context(mut self, window: ContextWindow) -> Self {
        self.inner.context = Some(window);
        self
    }

    /// Most tokens in the summary.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.inner.generate.max_tokens = n;
        self
    }

    /// How tokens are chosen (default: greedy).
    pub fn sampling(mut self, sampling: SamplingOptions) -> Self {
        self.inner.generate.sampling = sampling;
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
        if self.inner.generate.max_tokens == 0 {
            return Err(Error::InvalidOption("max tokens must be at least 1".into()));
        }
        if let Some(c) = self.inner.context {
            let trained = self.inner.model.info().trained_context;
            if c.tokens() > trained {
                return Err(Error::InvalidOption(format!(
                    "context size {} is more than the model's {trained} tokens",
                    c.tokens()
                )));
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
                generate: GenerateOptions::default(),
            },
        }
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
        let user = if self.instruction.trim().is_empty() {
            text.to_owned()
        } else {
            format!("{}\n\n{}", self.instruction, text)
        };
        self.model
            .template()
            .render_turn(self.system.as_deref(), &user)
    }

    /// The prompt's tokens, checked against the context window.
    pub fn prompt_tokens(&self, text: &str) -> Result<Vec<TokenId>> {
        let prompt = self.prompt(text)?;
        // The template writes any BOS token itself.
        let ids = self.model.tokenizer().encode(&prompt)?;
        let context = self.context().tokens();
        let reserve = self.generate.max_tokens;
        let trained = self.model.info().trained_context;
        if ids.len() + reserve > context {
            let wanted = (ids.len() + reserve).div_ceil(256) * 256;
            if wanted > trained {
                return Err(Error::Input(format!(
                    "the prompt needs {} tokens plus {reserve} for the answer, more than the model's whole context of {trained} tokens; shorten the text, lower --max-tokens, or use a model with a longer context",
                    ids.len()
                )));
            }
            return Err(Error::ContextOverflow {
                needed: ids.len(),
                reserve,
                context,
                suggested: wanted,
            });
        }
        Ok(ids)
    }

    /// Summarizes `text`.
    pub fn summarize(&self, text: &str) -> Result<Summary> {
        self.summarize_with(text, |_| ControlFlow::Continue(()))
    }

    /// Summarizes `text`, reporting progress and streaming the summary to
    /// `on_event` as it is produced; `ControlFlow::Break` stops early and
    /// returns what was produced so far.
    pub fn summarize_with(
        &self,
        text: &str,
        mut on_event: impl FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Summary> {
        let start = Instant::now();
        let ids = self.prompt_tokens(text)?;
        let context = self.context();
        let mut cache = self.model.new_cache(context)?;
        let generation = generate(&self.model, &mut cache, &ids, &self.generate, &mut on_event)?;
        Ok(Summary {
            text: generation.text.trim().to_owned(),
            stop_reason: generation.stop_reason,
            stats: SummaryStats {
                generation: generation.stats,
                context,
                load_time: self.model.info().load_time,
                total_time: start.elapsed(),
            },
        })
    }
}
