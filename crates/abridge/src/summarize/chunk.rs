//! Splitting a long text into pieces that each fit a token budget.
//!
//! Splits prefer the largest natural boundary that works: paragraphs, then
//! sentences, then words, then characters. Chunks are contiguous byte ranges
//! of the original text that together cover all of it, so every part of the
//! input is read by exactly one chunk.

use std::ops::Range;

use crate::error::{Error, Result};

/// One piece of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Where the piece lies in the text, in bytes.
    pub range: Range<usize>,
    /// Its length in tokens.
    pub tokens: usize,
}

/// Splits `text` into consecutive chunks of at most `budget` tokens, where
/// `count` gives the number of tokens in a piece of text.
///
/// ```
/// let text = "One two three.\n\nFour five six seven.";
/// let words = |s: &str| Ok(s.split_whitespace().count());
/// let chunks = abridge::split_text(text, 4, words).unwrap();
/// assert_eq!(&text[chunks[0].range.clone()], "One two three.\n\n");
/// assert!(chunks.iter().all(|c| c.tokens <= 4));
/// ```
pub fn split(
    text: &str,
    budget: usize,
    count: impl Fn(&str) -> Result<usize>,
) -> Result<Vec<Chunk>> {
    if budget == 0 {
        return Err(Error::InvalidOption(
            "a chunk budget of 0 tokens cannot hold any text".into(),
        ));
    }
    let mut units = Vec::new();
    for para in pieces(text, 0..text.len(), paragraph_ends) {
        units_within(text, para, budget, &count, 0, &mut units)?;
    }
    pack(text, units, budget, &count)
}

/// A unit of text that fits the budget on its own.
struct Unit {
    range: Range<usize>,
    tokens: usize,
}

type Splitter = fn(&str) -> Vec<usize>;

/// The levels below paragraphs, finest last; below words,
/// [`cut_by_characters`].
const LEVELS: [Splitter; 2] = [sentence_ends, word_ends];

fn units_within(
    text: &str,
    range: Range<usize>,
    budget: usize,
    count: &impl Fn(&str) -> Result<usize>,
    level: usize,
    out: &mut Vec<Unit>,
) -> Result<()> {
    let tokens = count(&text[range.clone()])?;
    if tokens <= budget || range.len() <= 1 {
        out.push(Unit { range, tokens });
        return Ok(());
    }
    let Some(&splitter) = LEVELS.get(level) else {
        return cut_by_characters(text, range, tokens, budget, count, out);
    };
    let parts = pieces(text, range.clone(), splitter);
    if parts.len() == 1 {
        return units_within(text, range, budget, count, level + 1, out);
    }
    for p in parts {
        units_within(text, p, budget, count, level + 1, out)?;
    }
    Ok(())
}

/// Cuts a stretch with no word boundary (a 2 MB line of base64, a URL
/// list without spaces) into the longest pieces that fit, each found by
/// binary search over its length: a few counts per piece, where a unit per
/// character would mean millions of counts and packing them quadratic work.
fn cut_by_characters(
    text: &str,
    range: Range<usize>,
    tokens: usize,
    budget: usize,
    count: &impl Fn(&str) -> Result<usize>,
    out: &mut Vec<Unit>,
) -> Result<()> {
    let boundary = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    // Bytes a piece of `budget` tokens takes, judged from the whole stretch,
    // a little short so the first probe usually fits.
    let guess = (range.len() as f64 / tokens.max(1) as f64 * budget as f64 * 0.95) as usize;
    let mut start = range.start;
    while start < range.end {
        let first = start + text[start..].chars().next().map_or(1, char::len_utf8);
        // From the guess: grow by doubling the step while it fits, then
        // halve between what fits and what does not.
        let mut fits = first;
        let mut fits_tokens = count(&text[start..first])?;
        let mut over = range.end + 1;
        let mut probe = boundary((start + guess.max(1)).min(range.end)).max(first);
        // Within 5% of the longest piece that fits is close enough.
        while probe > fits && probe < over && (over - fits) * 20 > fits - start {
            let tokens = count(&text[start..probe])?;
            if tokens <= budget {
                (fits, fits_tokens) = (probe, tokens);
                if probe == range.end {
                    break;
                }
                probe = if over > range.end {
                    boundary((probe + (probe - start) / 32 + 1).min(range.end))
                } else {
                    boundary(fits + (over - fits) / 2)
                };
            } else {
                over = probe;
                probe = boundary(fits + (over - fits) / 2);
            }
        }
        // A single character over budget is kept: packing reports it.
        out.push(Unit {
            range: start..fits,
            tokens: fits_tokens,
        });
        start = fits;
    }
    Ok(())
}

/// Greedily joins consecutive units while the joined text fits.
fn pack(
    text: &str,
    units: Vec<Unit>,
    budget: usize,
    count: &impl Fn(&str) -> Result<usize>,
) -> Result<Vec<Chunk>> {
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut current: Option<Chunk> = None;
    let mut joins = 0;
    for unit in units {
        if unit.tokens > budget {
            return Err(Error::Document(format!(
                "a single character at byte {} takes {} tokens, more than the chunk budget of {budget}",
                unit.range.start, unit.tokens
            )));
        }
        current = Some(match current.take() {
            None => Chunk {
                range: unit.range,
                tokens: unit.tokens,
            },
            Some(c) => {
                // Joined text takes about the sum of its parts' tokens, a
                // token or so more or less at each seam; count for real only
                // when that slack could reach the budget.
                let joined = c.range.start..unit.range.end;
                let estimate = c.tokens + unit.tokens;
                let slack = 2 * (joins + 1);
                let tokens = if estimate > budget + slack {
                    estimate
                } else if estimate + slack > budget {
                    count(&text[joined.clone()])?
                } else {
                    estimate
                };
                if tokens <= budget {
                    joins += 1;
                    Chunk {
                        range: joined,
                        tokens,
                    }
                } else {
                    chunks.push(c);
                    joins = 0;
                    Chunk {
                        range: unit.range,
                        tokens: unit.tokens,
                    }
                }
            }
        });
    }
    chunks.extend(current);
    // Estimated chunks are recounted once so every reported count is exact.
    for c in &mut chunks {
        c.tokens = count(&text[c.range.clone()])?;
        if c.tokens > budget {
            return Err(Error::Document(format!(
                "cannot split the text into pieces of {budget} tokens: bytes {}..{} take {}",
                c.range.start, c.range.end, c.tokens
            )));
        }
    }
    Ok(chunks)
}

/// Consecutive ranges covering `range`, cut after each boundary `ends`
/// finds (offsets relative to the start of the range's text).
fn pieces(text: &str, range: Range<usize>, ends: Splitter) -> Vec<Range<usize>> {
    let base = range.start;
    let mut out = Vec::new();
    let mut start = base;
    for end in ends(&text[range.clone()]) {
        let end = base + end;
        if end > start && end < range.end {
            out.push(start..end);
            start = end;
        }
    }
    if start < range.end || out.is_empty() {
        out.push(start..range.end);
    }
    out
}

/// After each run of blank lines.
fn paragraph_ends(s: &str) -> Vec<usize> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' && bytes[i + 1] == b'\n' {
            let mut j = i + 2;
            while j < bytes.len() && (bytes[j] == b'\n' || bytes[j] == b'\r') {
                j += 1;
            }
            out.push(j);
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// After `.`, `!`, `?` or a line break, and the whitespace that follows.
fn sentence_ends(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?' | '\n') {
            let mut end = None;
            while let Some(&(j, n)) = chars.peek() {
                if n.is_whitespace() {
                    chars.next();
                    end = Some(j + n.len_utf8());
                } else {
                    break;
                }
            }
            if let Some(e) = end {
                out.push(e);
            }
        }
    }
    out
}

/// After each run of whitespace.
fn word_ends(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prev_space = false;
    for (i, c) in s.char_indices() {
        if prev_space && !c.is_whitespace() {
            out.push(i);
        }
        prev_space = c.is_whitespace();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chars(s: &str) -> Result<usize> {
        Ok(s.chars().count())
    }

    fn check(text: &str, budget: usize) {
        let chunks = split(text, budget, chars).unwrap();
        let mut at = 0;
        for c in &chunks {
            assert_eq!(c.range.start, at, "chunks must be contiguous");
            assert!(
                c.tokens <= budget,
                "chunk of {} over budget {budget}",
                c.tokens
            );
            assert_eq!(c.tokens, text[c.range.clone()].chars().count());
            at = c.range.end;
        }
        assert_eq!(at, text.len(), "chunks must cover the whole text");
    }

    #[test]
    fn prefers_paragraph_then_sentence_boundaries() {
        let text = "Aa bb. Cc dd.\n\nEe ff gg. Hh.";
        let chunks = split(text, 15, chars).unwrap();
        let parts: Vec<&str> = chunks.iter().map(|c| &text[c.range.clone()]).collect();
        assert_eq!(parts, ["Aa bb. Cc dd.\n\n", "Ee ff gg. Hh."]);
        let chunks = split(text, 8, chars).unwrap();
        let parts: Vec<&str> = chunks.iter().map(|c| &text[c.range.clone()]).collect();
        assert_eq!(parts, ["Aa bb. ", "Cc dd.\n\n", "Ee ff ", "gg. Hh."]);
    }

    #[test]
    fn long_words_are_cut_by_characters() {
        check("abcdefghijklmnopqrstuvwxyz", 5);
        check("naïve façade œuvre", 3);
    }

    #[test]
    fn zero_budget_is_an_error() {
        assert!(split("x", 0, chars).is_err());
    }

    proptest! {
        #[test]
        fn chunks_fit_and_cover_everything(text in "[a-zé .!?\\n]{0,400}", budget in 1usize..60) {
            check(&text, budget);
        }
    }
}
