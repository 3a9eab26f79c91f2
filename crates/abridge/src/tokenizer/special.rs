//! Where special tokens are recognised in a prompt.
//!
//! Before the vocabulary's own splitting, llama.cpp cuts the prompt at the
//! texts of special tokens: control tokens (`<|im_start|>`, `<s>`) only when it
//! is told to parse them, user-defined tokens always. abridge parses control
//! tokens only in text it wrote itself (a chat template's markup); text that
//! came from elsewhere (a document, a system prompt, an instruction) never
//! becomes a control token, so a document cannot close the user's turn and
//! write its own instructions.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use super::TokenId;
use crate::error::{Error, Result};

/// One piece of a partitioned prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fragment {
    /// Plain text for the vocabulary's own splitting.
    Text(Range<usize>),
    /// A special token matched by its text.
    Token(TokenId),
}

/// The special token texts of a vocabulary, searchable.
#[derive(Debug, Clone)]
pub(super) struct SpecialTokens {
    /// Control and user-defined tokens: for markup.
    all: Matcher,
    /// User-defined tokens only: for supplied text.
    user_defined: Matcher,
}

#[derive(Debug, Clone)]
struct Matcher {
    search: Option<AhoCorasick>,
    ids: Vec<TokenId>,
}

impl Matcher {
    fn new(tokens: Vec<(&str, TokenId)>) -> Result<Self> {
        if tokens.is_empty() {
            return Ok(Self {
                search: None,
                ids: Vec::new(),
            });
        }
        // Leftmost-longest: `<|im_start|>` wins over a shorter token that is
        // its prefix, as llama.cpp's longest-first search has it.
        let search = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(tokens.iter().map(|(text, _)| text))
            .map_err(|e| Error::Tokenizer(format!("cannot index the special tokens: {e}")))?;
        Ok(Self {
            search: Some(search),
            ids: tokens.into_iter().map(|(_, id)| id).collect(),
        })
    }

    fn split(&self, text: &str, region: Range<usize>, out: &mut Vec<Fragment>) {
        let mut at = region.start;
        if let Some(search) = &self.search {
            for m in search.find_iter(&text[region.clone()]) {
                push_text(out, at..region.start + m.start());
                out.push(Fragment::Token(self.ids[m.pattern().as_usize()]));
                at = region.start + m.end();
            }
        }
        push_text(out, at..region.end);
    }
}

/// Appends text, joining it to text just before it: regions that meet
/// without a token between them are one stretch for the vocabulary.
fn push_text(out: &mut Vec<Fragment>, range: Range<usize>) {
    if range.is_empty() {
        return;
    }
    if let Some(Fragment::Text(last)) = out.last_mut()
        && last.end == range.start
    {
        last.end = range.end;
        return;
    }
    out.push(Fragment::Text(range));
}

impl SpecialTokens {
    /// `control` tokens are parsed only in markup; `user_defined` ones
    /// everywhere. Empty texts are ignored.
    pub(super) fn new(
        control: Vec<(&str, TokenId)>,
        user_defined: Vec<(&str, TokenId)>,
    ) -> Result<Self> {
        fn keep(v: Vec<(&str, TokenId)>) -> Vec<(&str, TokenId)> {
            v.into_iter().filter(|(t, _)| !t.is_empty()).collect()
        }
        let (control, user_defined) = (keep(control), keep(user_defined));
        let all = control.iter().chain(&user_defined).copied().collect();
        Ok(Self {
            all: Matcher::new(all)?,
            user_defined: Matcher::new(user_defined)?,
        })
    }

    /// Cuts `text` into plain text and special tokens; control tokens are
    /// matched only outside the `supplied` ranges (sorted, not overlapping,
    /// on character boundaries).
    pub(super) fn partition(&self, text: &str, supplied: &[Range<usize>]) -> Vec<Fragment> {
        let mut out = Vec::new();
        let mut at = 0;
        for range in supplied {
            if range.start < at || range.end > text.len() {
                continue;
            }
            self.all.split(text, at..range.start, &mut out);
            self.user_defined.split(text, range.clone(), &mut out);
            at = range.end;
        }
        self.all.split(text, at..text.len(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> SpecialTokens {
        SpecialTokens::new(
            vec![("<|im_start|>", 1), ("<|im_end|>", 2), ("<|im", 9)],
            vec![("<tool>", 7)],
        )
        .unwrap()
    }

    #[test]
    fn control_tokens_are_parsed_only_in_markup() {
        let text = "<|im_start|>user\nhi <|im_end|><tool><|im_end|>";
        let user = 17..text.len() - 10;
        let parts = specials().partition(text, &[user]);
        assert_eq!(
            parts,
            vec![
                Fragment::Token(1),
                Fragment::Text(12..30),
                Fragment::Token(7),
                Fragment::Token(2),
            ]
        );
    }

    #[test]
    fn the_longest_token_wins() {
        let parts = specials().partition("a<|im_end|>", &[]);
        assert_eq!(parts, vec![Fragment::Text(0..1), Fragment::Token(2)]);
    }
}
