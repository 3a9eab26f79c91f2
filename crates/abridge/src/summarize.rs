//! The summarizer: a model, a way of asking, and limits.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chunk::{self, Chunk};
use crate::error::{Error, Result};
use crate::generate::{Event, GenerateOptions, GenerationStats, Stage, StopReason, generate};
use crate::input;
use crate::model::{ContextWindow, Model};
use crate::sampling::SamplingOptions;
use crate::tokenizer::TokenId;

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

/// Rounds of summarizing summaries before giving up (each round shrinks the
/// text several times over, so real documents need two or three).
const MAX_ROUNDS: usize = 6;

/// How long the summary should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Two or three sentences.
    Short,
    /// One paragraph.
    Medium,
    /// Several paragraphs.
    Long,
    /// About this many words.
    Words(usize),
}

impl Length {
    fn directive(self) -> String {
        match self {
            Length::Short => "Answer in two or three sentences.".into(),
            Length::Medium => "Answer in one paragraph.".into(),
            Length::Long => "Answer in several paragraphs, covering every main point.".into(),
            Length::Words(n) => format!("Answer in about {n} words."),
        }
    }

    /// Tokens enough for a summary of this length (English runs at about
    /// 1.4 tokens a word; the rest is room to finish the sentence).
    pub fn max_tokens(self) -> usize {
        match self {
            Length::Short => 128,
            Length::Medium => 256,
            Length::Long => 768,
            Length::Words(n) => n * 3 / 2 + 64,
        }
    }
}

/// The form of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Prose, as the model writes it.
    #[default]
    Paragraph,
    /// A bulleted list.
    Bullets,
    /// Markdown with a heading and sections.
    Markdown,
    /// A JSON object `{"title", "summary", "key_points": [...]}`, validated.
    Json,
}

impl OutputFormat {
    fn directive(self) -> Option<&'static str> {
        match self {
            OutputFormat::Paragraph => None,
            OutputFormat::Bullets => Some(
                "Answer as a bulleted list of the main points, one per line, each starting with \"- \".",
            ),
            OutputFormat::Markdown => Some(
                "Answer in Markdown: a title as a heading, then the summary in short sections.",
            ),
            OutputFormat::Json => Some(
                "Answer with only a JSON object, no other text, with the keys \"title\" (a string), \"summary\" (a string) and \"key_points\" (a list of strings).",
            ),
        }
    }
}

/// Finds and checks the JSON object a model was asked for: the first `{` to
/// the last `}` of `text`, with `title`, `summary` and `key_points`.
pub fn parse_json_summary(text: &str) -> Result<serde_json::Value> {
    let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) else {
        return Err(Error::Input(
            "the model's answer contains no JSON object".into(),
        ));
    };
    if end < start {
        return Err(Error::Input(
            "the model's answer contains no JSON object".into(),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&text[start..=end])
        .map_err(|e| Error::Input(format!("the model's JSON does not parse: {e}")))?;
    let string = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let summary = string("summary")
        .ok_or_else(|| Error::Input("the model's JSON has no \"summary\" string".into()))?;
    let key_points: Vec<String> = match v.get("key_points") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| p.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(serde_json::json!({
        "title": string("title").unwrap_or_default(),
        "summary": summary,
        "key_points": key_points,
    }))
}

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
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The summary text.
    pub text: String,
    /// With [`OutputFormat::Json`]: the validated object.
    pub json: Option<serde_json::Value>,
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
    /// Parts summarized on the way (0 for a single pass).
    pub parts: usize,
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
    strategy: Strategy,
    length: Option<Length>,
    format: OutputFormat,
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

    /// How long the summary should be: asks the model for it, and sets the
    /// token limit to match unless [`max_tokens`](Self::max_tokens) is given
    /// after this.
    pub fn length(mut self, length: Length) -> Self {
        self.inner.length = Some(length);
        self.inner.generate.max_tokens = length.max_tokens();
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
                strategy: Strategy::Auto,
                length: None,
                format: OutputFormat::Paragraph,
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
        self.prompt_for(&self.final_instruction(), text)
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

    fn prompt_for(&self, instruction: &str, text: &str) -> Result<String> {
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
        self.fitted_prompt(&self.final_instruction(), text, self.generate.max_tokens)
    }

    /// The tokens of the prompt asking `instruction` about `text`, when they
    /// and `reserve` tokens of answer fit the context window.
    fn fitted_prompt(&self, instruction: &str, text: &str, reserve: usize) -> Result<Vec<TokenId>> {
        let prompt = self.prompt_for(instruction, text)?;
        // The template writes any BOS token itself.
        let ids = self.model.tokenizer().encode(&prompt)?;
        let context = self.context().tokens();
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

    /// Tokens each part summary may take.
    fn part_reserve(&self) -> usize {
        self.generate
            .max_tokens
            .min(self.context().tokens() / 8)
            .max(16)
    }

    /// How `text` would be split for map-reduce in the first round.
    pub fn plan(&self, text: &str) -> Result<Plan> {
        input::check(text)?;
        let overhead = self
            .model
            .tokenizer()
            .encode(&self.prompt_for(PART_INSTRUCTION, "")?)?
            .len();
        // A few tokens of slack: text tokenizes slightly differently inside the prompt.
        let used = overhead + self.part_reserve() + 8;
        let context = self.context().tokens();
        if used >= context {
            return Err(Error::InvalidOption(format!(
                "a context of {context} tokens leaves no room for text after the prompt ({overhead} tokens) and the answer ({}); raise --ctx-size",
                self.part_reserve()
            )));
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
                    Error::Input(format!(
                        "{e} (after a second attempt); try another model or --format paragraph"
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
        let mut run = Run {
            summarizer: self,
            stats: GenerationStats::default(),
            parts: 0,
        };
        let single = match self.strategy {
            Strategy::Single => Some(self.prompt_tokens(text)?),
            Strategy::MapReduce => None,
            Strategy::Auto => match self.prompt_tokens(text) {
                Ok(ids) => Some(ids),
                Err(Error::ContextOverflow { .. } | Error::Input(_)) => None,
                Err(e) => return Err(e),
            },
        };
        let (text, reason) = match single {
            Some(ids) => run.generate(&ids, &self.generate, on_event, true)?,
            None => run.map_reduce(text, on_event)?,
        };
        let context = self.context();
        Ok(Summary {
            text: text.trim().to_owned(),
            json: None,
            stop_reason: reason,
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

/// The state of one summary across its generations.
struct Run<'s> {
    summarizer: &'s Summarizer,
    stats: GenerationStats,
    parts: usize,
}

impl Run<'_> {
    /// One generation; its text is streamed only when `stream` is set.
    fn generate(
        &mut self,
        prompt: &[TokenId],
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(Event<'_>) -> ControlFlow<()>,
        stream: bool,
    ) -> Result<(String, StopReason)> {
        let model = &self.summarizer.model;
        let mut cache = model.new_cache(self.summarizer.context())?;
        let mut forward = |e: Event<'_>| match e {
            Event::Text(_) if !stream => ControlFlow::Continue(()),
            e => on_event(e),
        };
        let g = generate(model, &mut cache, prompt, options, &mut forward)?;
        self.stats.prompt_tokens += g.stats.prompt_tokens;
        self.stats.generated_tokens += g.stats.generated_tokens;
        self.stats.prompt_time += g.stats.prompt_time;
        self.stats.generation_time += g.stats.generation_time;
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
        let mut current = text.to_owned();
        let mut current_tokens = tokenizer.encode(&current)?.len();
        for round in 0..MAX_ROUNDS {
            // After the first round, combine as soon as everything fits.
            if round > 0
                && let Ok(ids) =
                    s.fitted_prompt(&s.final_instruction(), &current, s.generate.max_tokens)
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
                return self.generate(&ids, &s.generate, on_event, true);
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
                let ids = s.fitted_prompt(
                    PART_INSTRUCTION,
                    &current[c.range.clone()],
                    part_options.max_tokens,
                )?;
                let (summary, reason) = self.generate(&ids, &part_options, on_event, false)?;
                if reason == StopReason::Cancelled {
                    return Ok((String::new(), reason));
                }
                self.parts += 1;
                summaries.push(summary.trim().to_owned());
            }
            let next = format!("{COMBINE_HEADER}\n\n{}", summaries.join("\n\n"));
            let next_tokens = tokenizer.encode(&next)?.len();
            if next_tokens >= current_tokens {
                return Err(Error::Input(format!(
                    "the part summaries ({next_tokens} tokens) are no shorter than the text ({current_tokens} tokens); lower --max-tokens or raise --ctx-size"
                )));
            }
            current = next;
            current_tokens = next_tokens;
        }
        Err(Error::Input(format!(
            "the text is still too long to combine after {MAX_ROUNDS} rounds of summarizing; raise --ctx-size"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_summaries_are_found_and_checked() {
        let v = parse_json_summary(
            "Sure! {\"title\": \"T\", \"summary\": \"S\", \"key_points\": [\"a\", 2]} Done.",
        )
        .unwrap();
        assert_eq!(v["summary"], "S");
        assert_eq!(v["key_points"], serde_json::json!(["a", "2"]));
        assert!(parse_json_summary("no json here").is_err());
        assert!(parse_json_summary("{\"title\": \"T\"}").is_err());
        assert!(parse_json_summary("} {").is_err());
    }
}
