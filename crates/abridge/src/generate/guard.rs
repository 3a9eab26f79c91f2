//! What stands between the decoded text and the reader: whole sentences, a
//! loop guard and a length target.
//!
//! Penalties in the sampler make loops unlikely; this makes them visible and
//! short. Text is held back until the sentence it belongs to is complete, so
//! a generation that must stop early (token limit, a loop, the length
//! reached) ends at a sentence boundary and nothing already shown has to be
//! taken back.

use std::collections::HashSet;

use super::StopReason;
use crate::quality;

/// A run of this many words that already occurred in the output means the
/// model is looping: no summary repeats eight words verbatim on purpose.
const LOOP_WORDS: usize = 8;

/// Words at the end of the output whose variety is watched: a model stuck in
/// a loop that varies a word ("delivered via recommendations provided by
/// recommendations delivered via …") never repeats eight words in a row,
/// but it keeps using the same few.
const RECENT_WORDS: usize = 24;

/// Fewest different words among the last [`RECENT_WORDS`] before the output
/// counts as a loop. Summaries measured here use 18 to 21 (the function
/// words repeat); the loop above used 8.
const MIN_DISTINCT_WORDS: usize = 12;

/// Sentences shorter than this may repeat ("See below.").
const MIN_SENTENCE_WORDS: usize = 4;

/// Share of the output's runs of four words that may repeat an earlier run
/// before a sentence that adds to them counts as a loop. A small model that
/// paraphrases its last sentence ("guidelines on how to use and distribute"
/// and then "guidelines on how to distribute and use") never repeats a
/// sentence or eight words, but it recycles four-word runs; the summaries of
/// `tests/summaries.rs` that do not loop stay at or below 3.3%.
const MAX_REPEATED_4GRAM_SHARE: f64 = 0.05;

/// Repeated runs of four words that are always allowed, so that a short
/// summary naming one thing twice is not cut.
const ALLOWED_REPEATED_4GRAMS: usize = 2;

/// How the decode loop shapes its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextPolicy {
    /// Release text only in whole sentences, and drop an unfinished one when
    /// generation has to stop early or the model ends on one.
    pub whole_sentences: bool,
    /// Stop when the output starts repeating itself.
    pub loop_guard: bool,
    /// About this many words: generation stops at the first sentence end
    /// past 85% of it.
    pub target_words: Option<usize>,
    /// Whether the model may not end below three quarters of
    /// [`target_words`](Self::target_words) (a length that was asked for),
    /// rather than whenever it is done (a ceiling).
    pub hold_end: bool,
}

/// The words below which an end of generation is not accepted.
pub(crate) fn min_words(target: usize) -> usize {
    target * 3 / 4
}

/// The words at which the next sentence end stops generation.
fn enough_words(target: usize) -> usize {
    (target * 85).div_ceil(100)
}

/// The words past which an unfinished sentence is abandoned.
fn too_many_words(target: usize) -> usize {
    target * 6 / 5
}

/// Text produced so far, split into what the reader has seen and what is
/// held back.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    policy: TextPolicy,
    released: String,
    pending: String,
    sentences: HashSet<String>,
    /// Whitespace at the start of the next text is dropped: the shown text
    /// already ends with the whitespace that followed the sentence the
    /// decoder went back to.
    skip_space: bool,
}

impl Guard {
    pub(crate) fn new(policy: TextPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Words produced so far, held back or not.
    pub(crate) fn words(&self) -> usize {
        quality::word_count(&self.released) + quality::word_count(&self.pending)
    }

    /// Words the text would keep if the model ended its turn now: a
    /// held-back fragment would be dropped (see [`Guard::finish`]).
    pub(crate) fn words_if_ended(&self) -> usize {
        let held = if !self.policy.whole_sentences || quality::ends_complete(&self.pending) {
            quality::word_count(&self.pending)
        } else {
            0
        };
        quality::word_count(&self.released) + held
    }

    /// Adds decoded text; returns what may be shown now, and a reason to stop
    /// when there is one.
    pub(crate) fn push(&mut self, text: &str) -> (String, Option<StopReason>) {
        let text = if self.skip_space {
            let rest = text.trim_start();
            self.skip_space = rest.is_empty();
            rest
        } else {
            text
        };
        self.pending.push_str(text);
        if self.policy.loop_guard && self.ends_in_a_loop() {
            return (String::new(), Some(StopReason::Repetition));
        }
        let cut = if self.policy.whole_sentences {
            quality::complete_prefix_len(&self.pending)
        } else {
            self.pending.len()
        };
        let mut stop = None;
        let mut release = cut;
        if self.policy.loop_guard
            && let Some(at) = self.first_repeat(cut)
        {
            release = at;
            stop = Some(StopReason::Repetition);
        }
        if stop.is_none() && self.policy.loop_guard && self.lines_recycle_phrases(cut) {
            stop = Some(StopReason::Repetition);
        }
        let out: String = self.pending.drain(..release).collect();
        self.released.push_str(&out);
        if stop.is_none()
            && let Some(target) = self.policy.target_words
        {
            let shown = quality::word_count(&self.released);
            let enough = release > 0 && shown >= enough_words(target);
            let overlong = self.policy.whole_sentences && self.words() > too_many_words(target);
            if enough || overlong {
                stop = Some(StopReason::Length);
            }
        }
        (out, stop)
    }

    /// Whether the last [`LOOP_WORDS`] words already occurred, in order,
    /// earlier in the output, or the last words mostly recycle phrases
    /// already written.
    fn ends_in_a_loop(&self) -> bool {
        let all = format!("{}{}", self.released, self.pending);
        let words: Vec<String> = quality::words(&all)
            .iter()
            .map(|w| w.to_lowercase())
            .collect();
        if words.len() <= LOOP_WORDS {
            return false;
        }
        let tail = &words[words.len() - LOOP_WORDS..];
        let repeats_a_run = words[..words.len() - 1]
            .windows(LOOP_WORDS)
            .any(|w| w == tail);
        repeats_a_run || distinct_recent_words(&words) < MIN_DISTINCT_WORDS
    }

    /// Where, in the held-back text up to `upto`, the first sentence starts
    /// that repeats an earlier one or makes the output recycle too many runs
    /// of four words (at its line's start when only a list or heading marker
    /// precedes it there, so no bare "2." is left behind); the sentences
    /// before it are remembered as written.
    fn first_repeat(&mut self, upto: usize) -> Option<usize> {
        for sentence in quality::sentences(&self.pending[..upto]) {
            let start = sentence.as_ptr() as usize - self.pending.as_ptr() as usize;
            let key = quality::sentence_key(sentence);
            let repeated =
                key.split(' ').count() >= MIN_SENTENCE_WORDS && !self.sentences.insert(key);
            let first = start == 0 && self.released.trim().is_empty();
            if repeated || !first && self.recycles_phrases(&self.pending[..start + sentence.len()])
            {
                let line = self.pending[..start].rfind('\n').map_or(0, |i| i + 1);
                let marked = quality::is_bare_marker(self.pending[line..start].trim());
                return Some(if marked { line } else { start });
            }
        }
        None
    }

    /// Whether the whole lines held back after the first `cut` bytes (the
    /// complete sentences) would make the output recycle too many runs of
    /// four words. A model listing invented links under near-identical
    /// headings ("The article is about a bug fix …:" and a URL, again and
    /// again) never ends a sentence, so the sentence checks never see it.
    fn lines_recycle_phrases(&self, cut: usize) -> bool {
        match self.pending.rfind('\n') {
            Some(end) if end > cut => self.recycles_phrases(&self.pending[..end]),
            _ => false,
        }
    }

    /// Whether the output, if `more` of the held-back text were released,
    /// would repeat too many runs of four words.
    fn recycles_phrases(&self, more: &str) -> bool {
        let text = format!("{}{more}", self.released);
        let (repeated, total) = quality::repeated_ngrams_beyond(&text, "", 4);
        repeated > ALLOWED_REPEATED_4GRAMS
            && repeated as f64 >= MAX_REPEATED_4GRAM_SHARE * total as f64
    }

    /// Whether the held-back text is a finished sentence: one that ends with
    /// its punctuation, or a list item or heading whose line has ended (the
    /// next token could still have extended it).
    fn pending_is_complete(&self) -> bool {
        let text = self.pending.trim_end();
        let core =
            text.trim_end_matches(['"', '\'', ')', ']', '*', '_', '`', '\u{201D}', '\u{2019}']);
        quality::ends_complete(text)
            && (self.pending.ends_with('\n')
                || core.ends_with(['.', '!', '?', '\u{2026}', '\u{3002}']))
    }

    /// The text so far, shown or held back, without trailing whitespace:
    /// where the decoder may come back to when it is a finished sentence.
    pub(crate) fn text(&self) -> String {
        format!("{}{}", self.released, self.pending)
            .trim_end()
            .to_owned()
    }

    /// The shown text, without trailing whitespace.
    pub(crate) fn shown(&self) -> &str {
        self.released.trim_end()
    }

    /// Whether the text so far ends with a finished sentence (or nothing
    /// has been produced yet): a place the decoder may come back to.
    pub(crate) fn at_sentence_end(&self) -> bool {
        self.pending.trim().is_empty() || self.pending_is_complete()
    }

    /// Words the text would lack if generation stopped now for `reason`:
    /// those below three quarters of the length asked for, or, with no
    /// length asked for, one when a loop would leave nothing at all (at the
    /// token limit whole words are kept instead; see [`Guard::finish`]).
    /// Going back and trying another continuation beats stopping short.
    pub(crate) fn words_short(&self, reason: StopReason) -> usize {
        if !self.policy.whole_sentences || !self.policy.loop_guard {
            return 0;
        }
        // At the token limit a finished sentence still held back is kept;
        // after a loop it is not.
        let held = if reason == StopReason::MaxTokens && self.pending_is_complete() {
            quality::word_count(&self.pending)
        } else {
            0
        };
        let kept = quality::word_count(&self.released) + held;
        match self.policy.target_words {
            Some(target) if self.policy.hold_end => min_words(target).saturating_sub(kept),
            _ => usize::from(reason == StopReason::Repetition && kept == 0),
        }
    }

    /// Drops the held-back text: the decoder went back to the end of the
    /// shown text, and what follows is generated anew.
    pub(crate) fn rewind(&mut self) {
        self.pending.clear();
        self.skip_space = self.released.ends_with(char::is_whitespace);
    }

    /// Ends the text for `reason`: what is still to be shown, the whole text,
    /// and whether anything held back was dropped.
    pub(crate) fn finish(mut self, reason: StopReason) -> Ending {
        let mut reason = reason;
        let keep_all = !self.policy.whole_sentences || reason == StopReason::Cancelled;
        let finished_early = matches!(reason, StopReason::Length | StopReason::Repetition);
        // The model ended its turn, so nothing can extend the held-back
        // text: it stays if it is a complete sentence or all there is. A
        // fragment after finished sentences ("let me know at my email
        // address: [email]") is the model wandering off, and is dropped.
        let ended = matches!(reason, StopReason::EndOfGeneration | StopReason::StopString);
        let ended_well =
            ended && (quality::ends_complete(&self.pending) || self.released.trim().is_empty());
        let keep = ended_well || !finished_early && !ended && self.pending_is_complete();
        let mut tail = if keep_all || keep {
            self.pending.clone()
        } else if self.released.trim().is_empty() && !finished_early {
            // Not one sentence finished: whole words beat nothing.
            let words_end = self
                .pending
                .trim_end()
                .rfind(char::is_whitespace)
                .unwrap_or(0);
            self.pending[..words_end].to_owned()
        } else {
            String::new()
        };
        // The last sentences never had another begin after them: they are
        // checked for loops here.
        if keep
            && !keep_all
            && self.policy.loop_guard
            && let Some(at) = self.first_repeat(self.pending.len())
        {
            tail.truncate(at);
            reason = StopReason::Repetition;
        }
        let trimmed = !self.pending[tail.len()..].trim().is_empty();
        self.released.push_str(&tail);
        Ending {
            tail,
            text: self.released,
            trimmed,
            reason,
        }
    }
}

/// How a generation's text ends.
#[derive(Debug)]
pub(crate) struct Ending {
    /// Text not shown before, to show now.
    pub(crate) tail: String,
    /// The whole text.
    pub(crate) text: String,
    /// Whether held-back text was dropped: an unfinished sentence, or one
    /// that repeats the text before it.
    pub(crate) trimmed: bool,
    /// Why generation ended: the reason [`Guard::finish`] was given, or
    /// [`StopReason::Repetition`] when it dropped a sentence for repeating.
    pub(crate) reason: StopReason,
}

/// How many different words the last [`RECENT_WORDS`] of `words` are; as
/// many as there are words while the output is shorter.
fn distinct_recent_words(words: &[String]) -> usize {
    if words.len() < RECENT_WORDS {
        return RECENT_WORDS;
    }
    let recent: HashSet<&String> = words[words.len() - RECENT_WORDS..].iter().collect();
    recent.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(policy: TextPolicy, pieces: &[&str]) -> (String, Option<StopReason>, String) {
        let mut g = Guard::new(policy);
        let mut shown = String::new();
        for p in pieces {
            let (out, stop) = g.push(p);
            shown.push_str(&out);
            if let Some(reason) = stop {
                let end = g.finish(reason);
                shown.push_str(&end.tail);
                return (shown, Some(end.reason), end.text);
            }
        }
        let end = g.finish(StopReason::MaxTokens);
        shown.push_str(&end.tail);
        (
            shown,
            Some(end.reason).filter(|r| *r != StopReason::MaxTokens),
            end.text,
        )
    }

    const SENTENCES: TextPolicy = TextPolicy {
        whole_sentences: true,
        loop_guard: true,
        target_words: None,
        hold_end: false,
    };

    #[test]
    fn text_is_released_a_sentence_at_a_time() {
        let mut g = Guard::new(SENTENCES);
        assert_eq!(g.push("The model reads").0, "");
        assert_eq!(g.push(" the text. It").0, "The model reads the text.");
        let Ending {
            tail,
            text,
            trimmed,
            ..
        } = g.finish(StopReason::MaxTokens);
        assert_eq!(tail, "");
        assert_eq!(text, "The model reads the text.");
        assert!(trimmed, "the unfinished sentence was dropped");
    }

    #[test]
    fn a_repeated_sentence_stops_before_it_is_shown() {
        let (shown, stop, text) = feed(
            SENTENCES,
            &[
                "Azure OpenAI serves models. ",
                "It scales well. ",
                "Azure OpenAI serves models. ",
                "More.",
            ],
        );
        assert_eq!(stop, Some(StopReason::Repetition));
        assert_eq!(shown, text);
        assert_eq!(text.trim(), "Azure OpenAI serves models. It scales well.");
    }

    #[test]
    fn a_recycling_list_item_goes_with_its_marker() {
        // Qwen2.5-0.5B on the seed article, with the default settings.
        let intro = "The article covers the following key recommendations:\n\n\
                     1. **Reliability**: Provides a high-level design strategy applied \
                     for individual components, system flows, and the system as a whole.\n";
        let recycled = "2. **Security**: Offers a high-level design strategy for securing \
                        individual components, system flows, the system as a whole.\n\
                        3. **Cost";
        // Word by word, as a model writes it.
        let pieces: Vec<&str> = intro
            .split_inclusive(' ')
            .chain(recycled.split_inclusive(' '))
            .collect();
        let (shown, stop, text) = feed(SENTENCES, &pieces);
        assert_eq!(stop, Some(StopReason::Repetition));
        assert_eq!(shown, text);
        assert_eq!(text.trim(), intro.trim(), "no bare \"2.\" left behind");
    }

    #[test]
    fn a_repeated_run_of_words_stops_mid_sentence() {
        let looping = "one two three four five six seven eight nine ";
        let (_, stop, text) = feed(SENTENCES, &["Intro sentence here. ", looping, looping]);
        assert_eq!(stop, Some(StopReason::Repetition));
        assert_eq!(text.trim(), "Intro sentence here.");
    }

    #[test]
    fn lines_recycling_phrases_without_sentence_ends_are_a_loop() {
        let lines = [
            "The article about a bug fix for grep is here:\n",
            "https://example.org/grep/bug-1.html\n",
            "The article is about a bug fix that was introduced in grep 3.5:\n",
            "https://example.org/grep/bug-2.html\n",
            "The article is about a bug that was introduced in grep -i:\n",
            "https://example.org/grep/bug-3.html\n",
            "The article is about a bug in grep that has been fixed:\n",
        ];
        let mut g = Guard::new(SENTENCES);
        let stopped_at = lines.iter().position(|line| g.push(line).1.is_some());
        assert_eq!(stopped_at, Some(4), "{:?}", g.pending);
    }

    #[test]
    fn going_back_drops_held_text_and_does_not_double_the_shown_space() {
        let target = TextPolicy {
            target_words: Some(60),
            hold_end: true,
            ..SENTENCES
        };
        let mut g = Guard::new(target);
        let (shown, stop) =
            g.push("Azure OpenAI serves models. It scales well. Azure OpenAI serves models. More");
        assert_eq!(stop, Some(StopReason::Repetition));
        assert_eq!(shown, "Azure OpenAI serves models. It scales well. ");
        assert_eq!(
            g.words_short(StopReason::Repetition),
            45 - 7,
            "7 of 60 words"
        );
        g.rewind();
        assert_eq!(g.text(), "Azure OpenAI serves models. It scales well.");
        let (more, stop) = g.push(" Prices vary. And");
        assert_eq!((more.as_str(), stop), ("Prices vary.", None));
        let end = g.finish(StopReason::MaxTokens);
        assert_eq!(
            end.text,
            "Azure OpenAI serves models. It scales well. Prices vary."
        );
    }

    #[test]
    fn a_stop_after_enough_words_is_not_gone_back_from() {
        let mut g = Guard::new(TextPolicy {
            target_words: Some(8),
            hold_end: true,
            ..SENTENCES
        });
        g.push("One two three four five six seven. Azure serves. ");
        assert_eq!(g.words_short(StopReason::Repetition), 0);
        let mut unasked = Guard::new(SENTENCES);
        unasked.push("One two three. Four five six. ");
        assert_eq!(unasked.words_short(StopReason::Repetition), 0);
        let nothing = Guard::new(SENTENCES);
        assert_eq!(nothing.words_short(StopReason::Repetition), 1);
        assert_eq!(
            nothing.words_short(StopReason::MaxTokens),
            0,
            "whole words are kept"
        );
        let mut one = Guard::new(TextPolicy {
            target_words: Some(8),
            hold_end: true,
            ..SENTENCES
        });
        one.push("A single finished sentence.");
        assert_eq!(
            one.words_short(StopReason::MaxTokens),
            6 - 4,
            "kept at the limit"
        );
        assert_eq!(
            one.words_short(StopReason::Repetition),
            6,
            "dropped after a loop"
        );
    }

    #[test]
    fn distinct_text_is_not_a_loop() {
        let (_, stop, text) = feed(
            SENTENCES,
            &["A first point. ", "A second point. ", "A third point.\n"],
        );
        assert_eq!(stop, None);
        assert_eq!(text, "A first point. A second point. A third point.");
    }

    #[test]
    fn a_target_length_stops_at_a_sentence_end() {
        let policy = TextPolicy {
            target_words: Some(10),
            hold_end: true,
            ..SENTENCES
        };
        let (_, stop, text) = feed(
            policy,
            &[
                "One two three four five. ",
                "Six seven eight nine ten. ",
                "Eleven twelve.",
            ],
        );
        assert_eq!(stop, Some(StopReason::Length));
        assert_eq!(
            text.trim(),
            "One two three four five. Six seven eight nine ten."
        );
        assert_eq!(min_words(100), 75);
        let mut g = Guard::new(policy);
        g.push("One two three four five. Six seven");
        assert_eq!(g.words_if_ended(), 5, "the fragment would be dropped");
        g.push(" eight.");
        assert_eq!(g.words_if_ended(), 8);
    }

    #[test]
    fn a_fragment_before_the_end_of_turn_is_dropped() {
        let mut g = Guard::new(SENTENCES);
        g.push("The licence lets anyone copy the package. If you would like ");
        g.push("changes, write to my email address:\n\n[email] (https://example.com)");
        let Ending {
            tail,
            text,
            trimmed,
            ..
        } = g.finish(StopReason::EndOfGeneration);
        assert_eq!(tail, "");
        assert_eq!(text, "The licence lets anyone copy the package.");
        assert!(trimmed);
    }

    #[test]
    fn a_finished_sentence_or_list_item_at_the_end_of_turn_is_kept() {
        for last in ["It ends here.", "- a final item", "```\ncode\n```"] {
            let mut g = Guard::new(SENTENCES);
            g.push("A first point.\n");
            g.push(last);
            let Ending { text, trimmed, .. } = g.finish(StopReason::EndOfGeneration);
            assert_eq!(text, format!("A first point.\n{last}"));
            assert!(!trimmed, "{last:?}");
        }
        let mut g = Guard::new(SENTENCES);
        g.push("only a fragment with no end");
        let Ending { text, .. } = g.finish(StopReason::StopString);
        assert_eq!(text, "only a fragment with no end", "all there is stays");
    }

    #[test]
    fn without_whole_sentences_everything_is_shown_at_once() {
        let policy = TextPolicy::default();
        let mut g = Guard::new(policy);
        assert_eq!(g.push("half a sen").0, "half a sen");
        let Ending { text, trimmed, .. } = g.finish(StopReason::MaxTokens);
        assert_eq!(text, "half a sen");
        assert!(!trimmed);
    }

    #[test]
    fn with_no_sentence_finished_whole_words_are_kept() {
        let mut g = Guard::new(SENTENCES);
        g.push("a very long opening clause with no end in sig");
        let Ending { text, trimmed, .. } = g.finish(StopReason::MaxTokens);
        assert_eq!(text, "a very long opening clause with no end in");
        assert!(trimmed);
    }

    #[test]
    fn an_unfinished_list_item_is_dropped_at_the_token_limit() {
        let mut g = Guard::new(SENTENCES);
        g.push("1. **Reliability**: resilience.\n\n2. **Security**: identities.\n\n3. **Res");
        let Ending { text, trimmed, .. } = g.finish(StopReason::MaxTokens);
        assert_eq!(
            text,
            "1. **Reliability**: resilience.\n\n2. **Security**: identities."
        );
        assert!(trimmed);
    }

    #[test]
    fn recycling_the_same_phrases_is_a_loop() {
        let text = "The article gives recommendations for workloads. It shows how \
            recommendations are delivered through recommendations provided by recommendations \
            delivered via recommendations offered by recommendations delivered via \
            recommendations provided via recommendations delivered via recommendations \
            available to recommendations delivered via recommendations";
        // Word by word, as tokens arrive.
        let pieces: Vec<String> = text.split(' ').map(|w| format!("{w} ")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (_, stop, text) = feed(SENTENCES, &pieces);
        assert_eq!(stop, Some(StopReason::Repetition));
        assert_eq!(
            text.trim(),
            "The article gives recommendations for workloads."
        );
    }

    #[test]
    fn paraphrasing_earlier_sentences_is_a_loop() {
        let (_, stop, text) = feed(
            SENTENCES,
            &[
                "This document describes a licence that requires users to provide a \
                 licence agreement that is available in all versions of the software. ",
                "The document includes guidelines on how to use and distribute the \
                 package, and requires users to provide a copy of the agreement. ",
                "The document also includes guidelines on how to distribute and use \
                 this software, and a licence agreement that is available to all.\n",
            ],
        );
        assert_eq!(stop, Some(StopReason::Repetition));
        assert!(
            text.trim_end().ends_with("a copy of the agreement."),
            "{text}"
        );
    }

    #[test]
    fn a_last_sentence_that_paraphrases_is_dropped_at_the_end_of_turn() {
        let mut g = Guard::new(SENTENCES);
        g.push("The licence requires users to provide a licence agreement for all versions. ");
        g.push("It also requires users to provide a copy of the licence agreement for all ");
        g.push("versions.");
        let end = g.finish(StopReason::EndOfGeneration);
        assert_eq!(end.reason, StopReason::Repetition);
        assert!(end.trimmed);
        assert_eq!(
            end.text.trim(),
            "The licence requires users to provide a licence agreement for all versions."
        );
    }

    #[test]
    fn a_phrase_used_twice_is_not_a_loop() {
        let (_, stop, _) = feed(
            SENTENCES,
            &[
                "The Well-Architected Framework has five pillars. ",
                "Each of the five pillars gets its own section. ",
                "The Well-Architected Framework has a section on cost.\n",
            ],
        );
        assert_eq!(stop, None);
    }

    #[test]
    fn a_name_quoted_a_few_times_is_not_a_loop() {
        let words: Vec<String> = "Azure OpenAI supports reliability. Azure OpenAI supports \
             security through managed identities. Azure OpenAI supports cost control with \
             quotas, and Azure OpenAI supports monitoring with diagnostic logs."
            .split_whitespace()
            .map(|w| w.trim_matches(['.', ',']).to_lowercase())
            .collect();
        assert!(distinct_recent_words(&words) >= MIN_DISTINCT_WORDS);
    }
}
