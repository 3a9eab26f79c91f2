//! Reference-free and reference-based quality checks for generated summaries.
//!
//! Everything here is plain text processing with the standard library only:
//! tokenisation ([`words`], [`sentences`]), degeneration detectors
//! ([`repeated_ngram_share`], [`repeated_sentences`]), truncation detection
//! ([`ends_complete`]), overlap with a reference ([`rouge_l`]) and coverage of
//! a document's distinctive terms ([`key_terms`], [`coverage`]). [`report`]
//! bundles the lot into a [`Report`].
//!
//! All functions are deterministic and never panic on arbitrary UTF-8 input.

use std::collections::{HashMap, HashSet};

/// Characters that may join two alphanumeric runs inside one word
/// ("don't", "well-architected").
const WORD_JOINERS: &[char] = &['\'', '\u{2019}', '-', '\u{2010}', '\u{2011}'];

/// Sentence-final punctuation, including the ellipsis and CJK full stops.
const TERMINATORS: &[char] = &[
    '.', '!', '?', '\u{2026}', '\u{3002}', '\u{FF01}', '\u{FF1F}', '\u{FF0E}',
];

/// CJK terminators: these end a sentence even without following whitespace.
const CJK_TERMINATORS: &[char] = &['\u{3002}', '\u{FF01}', '\u{FF1F}', '\u{FF0E}'];

/// Characters that may follow sentence-final punctuation and still belong to
/// the sentence: closing quotes and brackets, Markdown emphasis and code.
const CLOSERS: &[char] = &[
    '"', '\'', ')', ']', '}', '\u{201D}', '\u{2019}', '\u{00BB}', '\u{300D}', '\u{300F}',
    '\u{FF09}', '*', '_', '`',
];

/// Abbreviations (lower-case, without the final period) after which a period
/// never ends a sentence.
const NEVER_FINAL: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "cf", "fig", "figs",
    "eq", "approx", "dept", "vol", "viz", "resp", "u.s", "u.k", "u.n", "ph.d", "mt", "gen", "col",
    "lt", "sgt", "rev", "hon",
];

/// Abbreviations after which a period ends a sentence only when the next word
/// does not start with a lower-case letter or a digit ("etc. The" splits,
/// "etc. and" and "No. 5" do not).
const MAYBE_FINAL: &[&str] = &[
    "etc", "no", "nos", "inc", "ltd", "co", "corp", "al", "jan", "feb", "mar", "apr", "jun", "jul",
    "aug", "sep", "sept", "oct", "nov", "dec",
];

/// Small built-in English stop-word list used by [`key_terms`].
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "also", "an", "and", "any", "are",
    "because", "been", "before", "being", "below", "between", "both", "but", "can", "could", "did",
    "does", "doing", "down", "during", "each", "even", "ever", "every", "few", "from", "further",
    "had", "has", "have", "having", "here", "however", "into", "its", "itself", "just", "lets",
    "like", "made", "make", "many", "more", "most", "much", "must", "only", "other", "ought",
    "over", "same", "should", "since", "some", "such", "than", "that", "the", "their", "theirs",
    "them", "then", "there", "these", "they", "this", "those", "through", "thus", "under", "until",
    "upon", "very", "want", "were", "what", "when", "where", "whether", "which", "while", "will",
    "with", "within", "without", "would", "your", "yours",
];

/// Function words that a complete list item or heading should not end with.
const DANGLING: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "nor", "of", "to", "in", "on", "at", "by", "for", "with",
    "from", "into", "as", "is", "are", "was", "were", "be", "been", "being", "that", "which",
    "who", "whose", "than", "if", "because", "so", "while", "when", "where", "whether", "its",
    "their", "our", "your", "his", "her", "my", "this", "these", "those", "such", "very", "not",
    "can", "could", "will", "would", "should", "may", "might", "must", "has", "have", "had", "do",
    "does", "did", "via", "per", "about", "between", "through", "without", "within",
];

/// Returns true for characters that form a word on their own: CJK ideographs
/// and kana, which are written without spaces between words.
fn is_cjk_word_char(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF // Hiragana, Katakana
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0x20000..=0x2FFFF) // CJK extensions B and later
}

/// Returns true for characters that continue a word: alphanumerics and
/// combining diacritical marks (decomposed accents).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x20D0..=0x20FF)
}

/// Returns true for emoji and pictographs (and their joiners and selectors)
/// that may decorate the end of a text.
fn is_emoji_like(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF
        | 0x2600..=0x27BF
        | 0x2B00..=0x2BFF
        | 0x2190..=0x21FF
        | 0xFE00..=0xFE0F
        | 0x200D
        | 0x20E3
        | 0xE0020..=0xE007F)
}

/// Splits `text` into words.
///
/// A word is a maximal run of alphanumeric characters (Unicode, combining
/// accents included) that may contain inner apostrophes or hyphens, so
/// "don't" and "well-architected" are single words while a leading or
/// trailing apostrophe/hyphen is not part of the word. CJK ideographs and
/// kana count as one word each, since those scripts do not separate words with
/// spaces. Emoji and punctuation are separators.
pub fn words(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |j: usize| chars.get(j).map_or(text.len(), |&(b, _)| b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        if is_cjk_word_char(c) {
            out.push(&text[chars[i].0..end_of(i + 1)]);
            i += 1;
            continue;
        }
        if !c.is_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + 1;
        loop {
            if j < chars.len() && is_word_char(chars[j].1) && !is_cjk_word_char(chars[j].1) {
                j += 1;
            } else if j + 1 < chars.len()
                && WORD_JOINERS.contains(&chars[j].1)
                && chars[j + 1].1.is_alphanumeric()
                && !is_cjk_word_char(chars[j + 1].1)
            {
                j += 2;
            } else {
                break;
            }
        }
        out.push(&text[chars[start].0..end_of(j)]);
        i = j;
    }
    out
}

/// Counts the words of `text` as defined by [`words`].
pub fn word_count(text: &str) -> usize {
    words(text).len()
}

/// Lower-cased words of `text`.
fn lower_words(text: &str) -> Vec<String> {
    words(text).into_iter().map(str::to_lowercase).collect()
}

/// Length in bytes of a list marker ("- ", "* ", "+ ", "• ", "1. ", "2) ")
/// at the start of `line`, including the following whitespace.
/// Whether a line (trimmed) is a list item's or heading's marker with
/// nothing after it ("2.", "3)", "-", "##"): the next item begun, not a
/// sentence ended, though "2." ends with a period.
pub(crate) fn is_bare_marker(line: &str) -> bool {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    match &line[digits..] {
        "." | ")" => (1..=3).contains(&digits),
        "-" | "*" | "+" | "\u{2022}" => digits == 0,
        hashes => {
            digits == 0 && (1..=6).contains(&hashes.len()) && hashes.bytes().all(|b| b == b'#')
        }
    }
}

fn list_marker_len(line: &str) -> Option<usize> {
    let mut chars = line.char_indices();
    let (_, first) = chars.next()?;
    let after_marker = if matches!(first, '-' | '*' | '+' | '\u{2022}') {
        first.len_utf8()
    } else if first.is_ascii_digit() {
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 3 {
            return None;
        }
        match line.as_bytes().get(digits) {
            Some(b'.') | Some(b')') => digits + 1,
            _ => return None,
        }
    } else {
        return None;
    };
    let rest = &line[after_marker..];
    let ws: usize = rest
        .chars()
        .take_while(|c| c.is_whitespace())
        .map(char::len_utf8)
        .sum();
    if ws == 0 || rest.trim().is_empty() {
        return None;
    }
    Some(after_marker + ws)
}

/// Length in bytes of a Markdown ATX heading marker ("# ", "## ", ...) at the
/// start of `line`, including the following whitespace.
fn heading_marker_len(line: &str) -> Option<usize> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    if hashes == 0 || hashes > 6 {
        return None;
    }
    let rest = &line[hashes..];
    let ws: usize = rest
        .chars()
        .take_while(|c| c.is_whitespace())
        .map(char::len_utf8)
        .sum();
    if ws == 0 || rest.trim().is_empty() {
        return None;
    }
    Some(hashes + ws)
}

/// Splits `text` into blocks (byte ranges) at blank lines, before list items
/// and around headings. List markers and heading markers are left out.
fn blocks(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start();
        let indent = content.len() - trimmed.len();
        let line_end = line_start + content.len();
        if trimmed.trim().is_empty() {
            out.extend(current.take());
        } else if let Some(m) = list_marker_len(trimmed) {
            out.extend(current.take());
            current = Some((line_start + indent + m, line_end));
        } else if let Some(m) = heading_marker_len(trimmed) {
            out.extend(current.take());
            out.push((line_start + indent + m, line_end));
        } else {
            match current.as_mut() {
                Some(block) => block.1 = line_end,
                None => current = Some((line_start + indent, line_end)),
            }
        }
    }
    out.extend(current);
    out
}

/// Decides whether a single `.` at byte `dot` of `s` is part of an
/// abbreviation (or an initial) rather than the end of a sentence. `next` is
/// the first non-whitespace character after the period, if any.
fn is_abbreviation(s: &str, dot: usize, next: Option<char>) -> bool {
    let before = &s[..dot];
    let token_len: usize = before
        .chars()
        .rev()
        .take_while(|&c| c.is_alphanumeric() || c == '.')
        .map(char::len_utf8)
        .sum();
    let token = before[before.len() - token_len..].trim_start_matches('.');
    if token.is_empty() {
        return false;
    }
    let lower = token.to_lowercase();
    if NEVER_FINAL.contains(&lower.as_str()) {
        return true;
    }
    let mut letters = token.chars();
    let single = letters.next();
    if letters.next().is_none() && single.is_some_and(char::is_uppercase) {
        // An initial such as the "J." in "J. Smith".
        return true;
    }
    let dotted_acronym = token.contains('.')
        && token
            .split('.')
            .all(|part| part.chars().count() == 1 && part.chars().all(char::is_alphabetic));
    if dotted_acronym || MAYBE_FINAL.contains(&lower.as_str()) {
        return next.is_some_and(|c| c.is_lowercase() || c.is_ascii_digit());
    }
    false
}

/// Splits one block `s` into trimmed sentences.
fn split_block<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut sentence_start = 0;
    let mut i = 0;
    while i < chars.len() {
        if !TERMINATORS.contains(&chars[i].1) {
            i += 1;
            continue;
        }
        let run_start = i;
        let mut j = i;
        while j < chars.len() && TERMINATORS.contains(&chars[j].1) {
            j += 1;
        }
        let run_len = j - run_start;
        let cjk = chars[run_start..j]
            .iter()
            .any(|&(_, c)| CJK_TERMINATORS.contains(&c));
        while j < chars.len() && CLOSERS.contains(&chars[j].1) {
            j += 1;
        }
        let at_end = j == chars.len();
        let mut boundary = at_end || cjk || chars[j].1.is_whitespace();
        if boundary && run_len == 1 && chars[run_start].1 == '.' {
            let next = chars[j..]
                .iter()
                .map(|&(_, c)| c)
                .find(|c| !c.is_whitespace());
            if is_abbreviation(s, chars[run_start].0, next) {
                boundary = false;
            }
        }
        if boundary {
            let end = chars.get(j).map_or(s.len(), |&(b, _)| b);
            let sentence = s[sentence_start..end].trim();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            sentence_start = end;
        }
        i = j;
    }
    let rest = s[sentence_start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
}

/// Splits prose into sentences.
///
/// A sentence ends at `.`, `!`, `?` or `…` (or a run of them, possibly
/// followed by closing quotes, brackets or Markdown `*`/`_`/backticks) that
/// is followed by whitespace or the end of the text; CJK full stops (`。`,
/// `！`, `？`) end a sentence even without following whitespace. Blank lines,
/// lines that begin a list item ("- ", "* ", "+ ", "• ", "1. ", "1) ") and
/// Markdown headings also start a new sentence; list and heading markers are
/// not included in the returned sentences.
///
/// Periods of common abbreviations ("e.g.", "i.e.", "Dr.", "Mr.", "U.S."),
/// initials ("J. Smith") and periods inside numbers or version strings ("3.5",
/// "v0.2.1") do not end a sentence. "etc." and similar abbreviations end a
/// sentence only when the next word is capitalised.
///
/// The returned sentences are trimmed, non-empty slices of `text`.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (start, end) in blocks(text) {
        split_block(&text[start..end], &mut out);
    }
    out
}

/// Removes trailing whitespace and emoji decoration.
fn trim_decoration(text: &str) -> &str {
    text.trim_end_matches(|c: char| c.is_whitespace() || is_emoji_like(c))
}

/// Returns true when `text` reads as finished rather than cut off mid-sentence.
///
/// After trailing whitespace and emoji are ignored, the text is complete when:
/// - it ends with sentence-final punctuation (`.`, `!`, `?`, `…`, `。`, `！`,
///   `？`), optionally followed by closing quotes, brackets, `*`, `_` or
///   backticks; a trailing abbreviation such as "e.g." therefore counts as
///   complete, as does a trailing ellipsis;
/// - it ends with `}` or `]` (JSON output);
/// - its last line closes a code fence (```` ``` ````) or is a Markdown table
///   row (`| a | b |`);
/// - its last line is a list item or heading whose last character is
///   alphanumeric (possibly followed by closers) and whose last word is not a
///   dangling function word ("and", "the", "of", "is", ...): list items need
///   not end with a period, so "- Foo bar" is complete but "- The model is"
///   is not.
///
/// Everything else, such as "The model is" or "and the", is incomplete; so is
/// empty text.
pub fn ends_complete(text: &str) -> bool {
    let t = trim_decoration(text);
    if t.is_empty() {
        return false;
    }
    if t.ends_with('}') || t.ends_with(']') {
        return true;
    }
    let last_line = t.lines().last().unwrap_or("").trim();
    if last_line.starts_with("```") {
        let fences = t
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count();
        return fences % 2 == 0;
    }
    if last_line.len() > 1 && last_line.starts_with('|') && last_line.ends_with('|') {
        return true;
    }
    if is_bare_marker(last_line) {
        return false;
    }
    let core = t.trim_end_matches(CLOSERS);
    if core.ends_with(TERMINATORS) {
        return true;
    }
    let item = if let Some(m) = list_marker_len(last_line) {
        &last_line[m..]
    } else if let Some(m) = heading_marker_len(last_line) {
        &last_line[m..]
    } else {
        return false;
    };
    let item = item.trim_end_matches(CLOSERS);
    if !item.chars().next_back().is_some_and(char::is_alphanumeric) {
        return false;
    }
    match words(item).last() {
        Some(last) => !DANGLING.contains(&last.to_lowercase().as_str()),
        None => false,
    }
}

/// Bytes at the start of `text` known to be complete while text is still
/// arriving: up to the last [`sentence`](sentences) that another has begun
/// after (or, for a list item or heading, whose line has ended) and that
/// [`ends_complete`]. A stream that releases only this prefix never shows
/// half a sentence, nor a line that announces what follows ("Key points:")
/// without what follows.
///
/// ```
/// use abridge::quality::complete_prefix_len;
/// let text = "First one. Second one is still";
/// assert_eq!(&text[..complete_prefix_len(text)], "First one.");
/// assert_eq!(complete_prefix_len("No end yet"), 0);
/// let list = "Done. Key points:\n\n- the first";
/// assert_eq!(&list[..complete_prefix_len(list)], "Done.");
/// ```
pub fn complete_prefix_len(text: &str) -> usize {
    let all = sentences(text);
    let end_of = |s: &str| s.as_ptr() as usize - text.as_ptr() as usize + s.len();
    for (i, sentence) in all.iter().enumerate().rev() {
        let end = end_of(sentence);
        let followed = i + 1 < all.len() || text[end..].contains('\n');
        if followed && ends_complete(&text[..end]) {
            return end;
        }
    }
    0
}

/// A sentence reduced to its lower-cased words joined by single spaces, so
/// that case and punctuation do not hide a repetition.
pub fn sentence_key(sentence: &str) -> String {
    lower_words(sentence).join(" ")
}

/// Share of n-gram occurrences (over lower-cased [`words`]) that repeat an
/// n-gram already seen earlier in the same text.
///
/// With `w` words there are `w - n + 1` n-gram occurrences; the result is the
/// number of occurrences whose n-gram appeared before, divided by that total.
/// "a b c d a b c d" with `n = 4` has five 4-grams of which one repeats, so
/// the share is 0.2. Returns 0.0 when `n` is 0 or the text has fewer than `n`
/// words.
pub fn repeated_ngram_share(text: &str, n: usize) -> f64 {
    repeated_ngram_share_beyond(text, "", n)
}

/// Like [`repeated_ngram_share`], for a summary of `source`: an n-gram the
/// source itself has several times may come back as often in the summary
/// without counting (an article that says "a high-level design strategy"
/// for each of its sections is quoted, not looped on, by a summary that says
/// it for each section).
///
/// ```
/// use abridge::quality::{repeated_ngram_share, repeated_ngram_share_beyond};
///
/// let source = "one two three four five. one two three four six.";
/// let summary = "one two three four here, one two three four there";
/// assert!(repeated_ngram_share(summary, 4) > 0.0);
/// assert_eq!(repeated_ngram_share_beyond(summary, source, 4), 0.0);
/// ```
pub fn repeated_ngram_share_beyond(text: &str, source: &str, n: usize) -> f64 {
    match repeated_ngrams_beyond(text, source, n) {
        (_, 0) => 0.0,
        (repeated, total) => repeated as f64 / total as f64,
    }
}

/// How many n-gram occurrences of `text` repeat one seen before (beyond
/// what `source` repeats), and how many there are in all.
pub(crate) fn repeated_ngrams_beyond(text: &str, source: &str, n: usize) -> (usize, usize) {
    let ws = lower_words(text);
    if n == 0 || ws.len() < n {
        return (0, 0);
    }
    let source_words = lower_words(source);
    let mut in_source: HashMap<&[String], usize> = HashMap::new();
    for gram in source_words.windows(n) {
        *in_source.entry(gram).or_insert(0) += 1;
    }
    let mut seen: HashMap<&[String], usize> = HashMap::new();
    let mut repeated = 0usize;
    for gram in ws.windows(n) {
        let count = seen.entry(gram).or_insert(0);
        *count += 1;
        if *count > in_source.get(gram).copied().unwrap_or(0).max(1) {
            repeated += 1;
        }
    }
    (repeated, ws.windows(n).len())
}

/// Sentences that occur more than once in `text`, each reported once, in
/// order of first occurrence.
///
/// Sentences (see [`sentences`]) are normalised to their lower-cased
/// [`words`] joined by single spaces, so punctuation and case differences do
/// not hide a repetition. Sentences of fewer than four words are ignored.
pub fn repeated_sentences(text: &str) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut order = Vec::new();
    for sentence in sentences(text) {
        let ws = lower_words(sentence);
        if ws.len() < 4 {
            continue;
        }
        let key = ws.join(" ");
        let count = counts.entry(key.clone()).or_insert(0);
        *count += 1;
        if *count == 2 {
            order.push(key);
        }
    }
    order
}

/// Length of the longest common subsequence of `a` and `b`, in
/// O(len(a)·len(b)) time and O(min(len(a), len(b))) memory.
fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut row = vec![0usize; short.len() + 1];
    for x in long {
        let mut diagonal = 0;
        for (j, y) in short.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[short.len()]
}

/// ROUGE-L F1 score (beta = 1) of `candidate` against `reference`.
///
/// Both texts are compared as sequences of lower-cased [`words`]. With `L`
/// the length of their longest common subsequence, precision is
/// `L / len(candidate)`, recall is `L / len(reference)` and the result is
/// their harmonic mean, in `[0, 1]`. Returns 0.0 when either text has no
/// words or they share none.
pub fn rouge_l(candidate: &str, reference: &str) -> f64 {
    let c = lower_words(candidate);
    let r = lower_words(reference);
    if c.is_empty() || r.is_empty() {
        return 0.0;
    }
    let l = lcs_len(&c, &r) as f64;
    if l == 0.0 {
        return 0.0;
    }
    let precision = l / c.len() as f64;
    let recall = l / r.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Normalises a word into a candidate key term, or `None` when it does not
/// qualify (too short, all digits or a stop word). A possessive "'s" is
/// dropped.
fn term_of(word: &str) -> Option<String> {
    let lower = word.to_lowercase();
    let lower = lower
        .strip_suffix("'s")
        .or_else(|| lower.strip_suffix("\u{2019}s"))
        .unwrap_or(&lower);
    if lower.chars().count() < 4
        || lower.chars().all(char::is_numeric)
        || STOP_WORDS.contains(&lower)
    {
        return None;
    }
    Some(lower.to_string())
}

/// The `k` most distinctive terms of `document` relative to `background`
/// documents, by TF-IDF.
///
/// Candidate terms are the document's lower-cased [`words`] with at least four
/// characters that are not purely digits and not in a small built-in English
/// stop-word list (a possessive "'s" is dropped first). A term's score is
/// `tf · idf` where `tf` is its count in the document and
/// `idf = ln((1 + N) / (1 + df)) + 1`, with `N` the number of background
/// documents plus one and `df` the number of those documents (the document
/// itself included) that contain the term. Terms are returned by descending
/// score, ties broken alphabetically, so the result is deterministic. Fewer
/// than `k` terms are returned when the document has fewer candidates.
pub fn key_terms(document: &str, background: &[&str], k: usize) -> Vec<String> {
    let mut tf: HashMap<String, usize> = HashMap::new();
    for w in words(document) {
        if let Some(t) = term_of(w) {
            *tf.entry(t).or_insert(0) += 1;
        }
    }
    let background_sets: Vec<HashSet<String>> = background
        .iter()
        .map(|doc| words(doc).into_iter().filter_map(term_of).collect())
        .collect();
    let n = (background.len() + 1) as f64;
    let mut scored: Vec<(f64, String)> = tf
        .into_iter()
        .map(|(term, count)| {
            let df = 1 + background_sets.iter().filter(|s| s.contains(&term)).count();
            let idf = ((1.0 + n) / (1.0 + df as f64)).ln() + 1.0;
            (count as f64 * idf, term)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, t)| t).collect()
}

/// Share of `terms` mentioned in `summary`, in `[0, 1]`.
///
/// Matching is case-insensitive and loose: a term of `len` characters counts
/// as mentioned when some word of the summary starts with the term's first
/// `max(4, len - 2)` characters (the whole term when it is shorter than
/// that). The match is one-directional: the term "reliable" (stem "reliab")
/// is matched by "reliability", whereas the term "reliability" (stem
/// "reliabili") is not matched by "reliable". Returns 0.0 when `terms` is
/// empty, since there is nothing to cover.
pub fn coverage(summary: &str, terms: &[String]) -> f64 {
    if terms.is_empty() {
        return 0.0;
    }
    let summary_words = lower_words(summary);
    let covered = terms
        .iter()
        .filter(|term| {
            let term = term.to_lowercase();
            let len = term.chars().count();
            let keep = len.min(4.max(len.saturating_sub(2)));
            let stem: String = term.chars().take(keep).collect();
            !stem.is_empty() && summary_words.iter().any(|w| w.starts_with(&stem))
        })
        .count();
    covered as f64 / terms.len() as f64
}

/// Summary quality measurements produced by [`report`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// Number of words, as counted by [`word_count`].
    pub words: usize,
    /// Number of sentences, as split by [`sentences`].
    pub sentences: usize,
    /// Share of repeated 4-gram occurrences, see [`repeated_ngram_share`].
    pub repeated_4gram_share: f64,
    /// Number of distinct sentences that occur more than once, see
    /// [`repeated_sentences`].
    pub repeated_sentences: usize,
    /// Whether the summary ends cleanly, see [`ends_complete`].
    pub complete: bool,
    /// Share of the given key terms mentioned, see [`coverage`]; `None` when
    /// no terms were given.
    pub coverage: Option<f64>,
    /// ROUGE-L F1 against the reference, see [`rouge_l`]; `None` when no
    /// reference was given.
    pub rouge_l: Option<f64>,
    /// Signed relative length error `(words - target) / target`; `None` when
    /// no target was given or the target is zero.
    pub length_error: Option<f64>,
}

/// Measures `summary`, optionally against a target length in words, a set of
/// key terms (for example from [`key_terms`]) and a reference summary.
pub fn report(
    summary: &str,
    target_words: Option<usize>,
    terms: Option<&[String]>,
    reference: Option<&str>,
) -> Report {
    let words = word_count(summary);
    Report {
        words,
        sentences: sentences(summary).len(),
        repeated_4gram_share: repeated_ngram_share(summary, 4),
        repeated_sentences: repeated_sentences(summary).len(),
        complete: ends_complete(summary),
        coverage: terms.map(|t| coverage(summary, t)),
        rouge_l: reference.map(|r| rouge_l(summary, r)),
        length_error: target_words
            .filter(|&t| t > 0)
            .map(|t| (words as f64 - t as f64) / t as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn words_keep_inner_apostrophes_and_hyphens() {
        assert_eq!(
            words("Don't over-engineer a well-architected system -- 'quoted' end-"),
            vec![
                "Don't",
                "over-engineer",
                "a",
                "well-architected",
                "system",
                "quoted",
                "end"
            ]
        );
        assert_eq!(
            words("it\u{2019}s v0.2.1, 3.5%"),
            vec!["it\u{2019}s", "v0", "2", "1", "3", "5"]
        );
        assert_eq!(word_count(""), 0);
        assert_eq!(word_count("  ...  "), 0);
    }

    #[test]
    fn words_handle_unicode() {
        assert_eq!(
            words("Café naïve résumé 🎉 Zürich"),
            vec!["Café", "naïve", "résumé", "Zürich"]
        );
        // Decomposed accent stays inside the word.
        assert_eq!(words("cafe\u{0301} ok"), vec!["cafe\u{0301}", "ok"]);
        assert_eq!(words("I ❤️ Rust"), vec!["I", "Rust"]);
        assert_eq!(word_count("今天天气很好。"), 6);
        assert_eq!(words("Rust语言"), vec!["Rust", "语", "言"]);
    }

    #[test]
    fn sentences_basic_split() {
        assert_eq!(
            sentences("Hello world. How are you? Fine! "),
            vec!["Hello world.", "How are you?", "Fine!"]
        );
        assert_eq!(
            sentences("He said \"stop.\" Then he left. (It was late.) Done"),
            vec![
                "He said \"stop.\"",
                "Then he left.",
                "(It was late.)",
                "Done"
            ]
        );
        assert_eq!(
            sentences("Wait... what?! Ok."),
            vec!["Wait...", "what?!", "Ok."]
        );
        assert!(sentences("   \n\n  ").is_empty());
    }

    #[test]
    fn sentences_do_not_split_abbreviations_or_numbers() {
        let text = "Use a cache, e.g. Redis, i.e. an in-memory store. Dr. Smith and Mr. Jones \
                    moved to the U.S. last year. Version v0.2.1 is 3.5 times faster than 1.0. \
                    J. R. R. Tolkien wrote it.";
        assert_eq!(
            sentences(text),
            vec![
                "Use a cache, e.g. Redis, i.e. an in-memory store.",
                "Dr. Smith and Mr. Jones moved to the U.S. last year.",
                "Version v0.2.1 is 3.5 times faster than 1.0.",
                "J. R. R. Tolkien wrote it."
            ]
        );
    }

    #[test]
    fn sentences_etc_depends_on_next_word() {
        assert_eq!(
            sentences("Apples, pears, etc. are fruit. We eat apples, pears, etc. The end."),
            vec![
                "Apples, pears, etc. are fruit.",
                "We eat apples, pears, etc.",
                "The end."
            ]
        );
        assert_eq!(
            sentences("See No. 5 now. The answer is no. Ok"),
            vec!["See No. 5 now.", "The answer is no.", "Ok"]
        );
    }

    #[test]
    fn sentences_split_list_items_headings_and_paragraphs() {
        let text = "# Summary\nThe service is fast\nand reliable. It scales.\n\nKey points:\n- Low latency\n- High throughput\n  across regions\n* Simple API\n1. First step\n2) Second step\n\nFinal paragraph";
        assert_eq!(
            sentences(text),
            vec![
                "Summary",
                "The service is fast\nand reliable.",
                "It scales.",
                "Key points:",
                "Low latency",
                "High throughput\n  across regions",
                "Simple API",
                "First step",
                "Second step",
                "Final paragraph"
            ]
        );
    }

    #[test]
    fn sentences_cjk_and_emoji() {
        assert_eq!(
            sentences("今天天气很好。我们去公园吧！好吗？"),
            vec!["今天天气很好。", "我们去公园吧！", "好吗？"]
        );
        assert_eq!(
            sentences("Great job! 🎉 Next time… maybe."),
            vec!["Great job!", "🎉 Next time…", "maybe."]
        );
    }

    #[test]
    fn ends_complete_cases() {
        assert!(ends_complete("The model works."));
        assert!(ends_complete("Really?!"));
        assert!(ends_complete("He said \"done.\""));
        assert!(ends_complete("It is **important.**"));
        assert!(ends_complete("(See the appendix.)"));
        assert!(ends_complete("And then…"));
        assert!(ends_complete("For example, e.g."));
        assert!(ends_complete("Summary:\n- Foo bar"));
        assert!(ends_complete("- Fast startup\n- Low memory use  \n"));
        assert!(ends_complete("## Results"));
        assert!(ends_complete("{\"summary\": \"ok\"}"));
        assert!(ends_complete("[1, 2, 3]"));
        assert!(ends_complete("```rust\nfn main() {}\n```"));
        assert!(ends_complete("| a | b |\n|---|---|\n| 1 | 2 |"));
        assert!(ends_complete("今天天气很好。"));
        assert!(ends_complete("Great job! 🎉"));

        assert!(!ends_complete("The model is"));
        assert!(!ends_complete("It scales well, and the"));
        assert!(!ends_complete("and the"));
        assert!(!ends_complete("The results are as follows:"));
        assert!(!ends_complete("Points:\n- The model is"));
        assert!(!ends_complete("- Item,"));
        assert!(!ends_complete("1. **Reliability**: a design strategy.\n2."));
        assert!(!ends_complete("First point.\n3)"));
        assert!(!ends_complete("Points:\n-"));
        assert!(ends_complete("Revenue grew in 2024."));
        assert!(!ends_complete("```rust\nfn main() {"));
        assert!(!ends_complete("今天天气很"));
        assert!(!ends_complete(""));
        assert!(!ends_complete("   \n "));
    }

    #[test]
    fn repeated_ngram_share_exact() {
        assert!(close(repeated_ngram_share("a b c d a b c d", 4), 0.2));
        assert!(close(repeated_ngram_share("A b C d. a B c D!", 4), 0.2));
        assert!(close(
            repeated_ngram_share("The quick brown fox jumps over the lazy dog", 4),
            0.0
        ));
        // "x x x x" bigrams: "x x" three times, two repeats.
        assert!(close(repeated_ngram_share("x x x x", 2), 2.0 / 3.0));
        assert!(close(repeated_ngram_share("a b c", 4), 0.0));
        assert!(close(repeated_ngram_share("a b c", 0), 0.0));
        assert!(close(repeated_ngram_share("", 1), 0.0));
    }

    #[test]
    fn repeated_sentences_finds_loop() {
        let text = "The new cache reduces latency for most requests. It is enabled by default. \
                    The new cache reduces latency for most requests. It is enabled by default. \
                    The new cache reduces latency for most requests! Ok. Ok. Ok.";
        assert_eq!(
            repeated_sentences(text),
            strings(&[
                "the new cache reduces latency for most requests",
                "it is enabled by default"
            ])
        );
        assert!(repeated_sentences("One two three four. Five six seven eight.").is_empty());
    }

    #[test]
    fn rouge_l_values() {
        assert!(close(
            rouge_l("The cat sat on the mat", "the cat sat on the mat."),
            1.0
        ));
        assert!(close(rouge_l("alpha beta", "gamma delta"), 0.0));
        assert!(close(rouge_l("", "gamma delta"), 0.0));
        assert!(close(
            rouge_l("the cat sat on the mat", "the cat lay on the mat"),
            5.0 / 6.0
        ));
        // LCS 3, P = 1, R = 1/2 → F = 2/3.
        assert!(close(rouge_l("a b c", "a x b y c z"), 2.0 / 3.0));
        assert!(close(rouge_l("a x b y c z", "a b c"), 2.0 / 3.0));
        // LCS of "a b c d" and "b d a c" is 2.
        assert!(close(rouge_l("a b c d", "b d a c"), 0.5));
    }

    #[test]
    fn lcs_len_matches_brute_force_examples() {
        let a: Vec<char> = "ABCBDAB".chars().collect();
        let b: Vec<char> = "BDCABA".chars().collect();
        assert_eq!(lcs_len(&a, &b), 4);
        assert_eq!(lcs_len(&b, &a), 4);
        assert_eq!(lcs_len::<char>(&[], &b), 0);
    }

    #[test]
    fn key_terms_prefers_distinctive_words() {
        let background = [
            "The system serves users every day and the system logs requests.",
            "Users report that the system is fast.",
            "The system stores data for users.",
        ];
        let document = "The system scales pods with autoscaling. Autoscaling reacts to load, \
                        and the system lets users tune autoscaling thresholds for pods.";
        let terms = key_terms(document, &background, 2);
        assert_eq!(terms, strings(&["autoscaling", "pods"]));
        let all = key_terms(document, &background, 100);
        assert!(!all.iter().any(|t| t == "the" || t == "with" || t == "lets"));
        let users = all.iter().position(|t| t == "users").unwrap();
        let tune = all.iter().position(|t| t == "tune").unwrap();
        assert!(tune < users);
        assert!(key_terms(document, &background, 0).is_empty());
    }

    #[test]
    fn key_terms_filters_and_breaks_ties_alphabetically() {
        let terms = key_terms("Zebra apple mango 2024 cat Model's model", &[], 10);
        assert_eq!(terms, strings(&["model", "apple", "mango", "zebra"]));
    }

    #[test]
    fn coverage_arithmetic() {
        let terms = strings(&["reliable", "latency", "kubernetes", "cost"]);
        let summary = "Reliability improved and Latency dropped.";
        assert!(close(coverage(summary, &terms), 0.5));
        assert!(close(coverage("", &terms), 0.0));
        assert!(close(coverage("anything", &[]), 0.0));
        assert!(close(coverage("costs", &strings(&["cost"])), 1.0));
        // One-directional: the stem of "reliability" is "reliabili".
        assert!(close(coverage("reliable", &strings(&["reliability"])), 0.0));
        assert!(close(
            coverage("Kubernetes clusters", &strings(&["KUBERNETES"])),
            1.0
        ));
    }

    #[test]
    fn report_combines_measures() {
        let terms = strings(&["latency", "cache"]);
        let r = report(
            "The cache cuts latency. It is on by default.",
            Some(10),
            Some(&terms),
            Some("The cache cuts latency."),
        );
        assert_eq!(r.words, 9);
        assert_eq!(r.sentences, 2);
        assert!(close(r.repeated_4gram_share, 0.0));
        assert_eq!(r.repeated_sentences, 0);
        assert!(r.complete);
        assert_eq!(r.coverage, Some(1.0));
        assert!(close(
            r.rouge_l.unwrap(),
            2.0 * (4.0 / 9.0) / (1.0 + 4.0 / 9.0)
        ));
        assert!(close(r.length_error.unwrap(), -0.1));

        let bare = report("and the", None, None, None);
        assert!(!bare.complete);
        assert_eq!(bare.coverage, None);
        assert_eq!(bare.rouge_l, None);
        assert_eq!(bare.length_error, None);
        assert_eq!(report("x", Some(0), None, None).length_error, None);
    }
}
