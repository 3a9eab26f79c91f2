//! Encoding and decoding with a SentencePiece BPE vocabulary (`tokenizer.ggml.model
//! = llama`: Mistral, Llama 2, Gemma). Reading a `tokenizer.model` file is
//! [`super::sentencepiece`]'s job.
//!
//! SentencePiece BPE starts from single characters and repeatedly joins the
//! adjacent pair whose joined text is a piece with the highest score; among
//! equal scores the leftmost pair goes first. Characters no piece covers fall
//! back to byte pieces (`<0x0A>`). This is the algorithm llama.cpp runs, so
//! the ids are llama.cpp's.
//!
//! It is not expressed as a ranked merge list (as the tokenizers crate's BPE
//! would need): a piece can be joined from several different pairs that share
//! its score, and many whitespace pieces share one score, so only "leftmost
//! first" reproduces SentencePiece on runs of spaces, where any fixed ranking
//! of the pairs picks different splits.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::TokenId;
use crate::error::{Error, Result};
use crate::gguf::token_type;

/// SentencePiece's word-boundary marker, which stands for a space.
const SPACE: char = '\u{2581}';

/// A SentencePiece BPE vocabulary ready to encode.
#[derive(Debug, Clone)]
pub(super) struct SentencePieceBpe {
    /// Pieces that text may become: every piece but control, unknown and
    /// byte pieces, so no text can spell `<s>` into a control token.
    pieces: HashMap<String, TokenId>,
    scores: Vec<f32>,
    bytes: [Option<TokenId>; 256],
    unknown: Option<TokenId>,
    add_space_prefix: bool,
}

impl SentencePieceBpe {
    /// `tokens`, `types` and `scores` are parallel, one entry per id.
    pub(super) fn new(
        tokens: &[String],
        types: &[i64],
        scores: Vec<f32>,
        unknown: Option<TokenId>,
        add_space_prefix: bool,
    ) -> Self {
        let mut pieces = HashMap::with_capacity(tokens.len());
        let mut bytes = [None; 256];
        for (id, (text, &ty)) in tokens.iter().zip(types).enumerate() {
            let id = id as TokenId;
            match ty {
                token_type::BYTE => {
                    if let Some(b) = byte_piece(text) {
                        bytes[usize::from(b)] = Some(id);
                    }
                }
                token_type::CONTROL | token_type::UNKNOWN => {}
                // A later duplicate wins, as in llama.cpp's text-to-id map.
                _ => {
                    pieces.insert(text.clone(), id);
                }
            }
        }
        Self {
            pieces,
            scores,
            bytes,
            unknown,
            add_space_prefix,
        }
    }

    /// Encodes one stretch of plain text (no special tokens in it) onto `out`.
    /// `after_special` says the stretch starts the prompt or follows a special
    /// token, where SentencePiece writes its leading word boundary.
    pub(super) fn encode(
        &self,
        text: &str,
        after_special: bool,
        out: &mut Vec<TokenId>,
    ) -> Result<()> {
        let mut escaped = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && after_special {
            escaped.push(SPACE);
        }
        escaped.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));
        if escaped.is_empty() {
            return Ok(());
        }
        let mut symbols: Vec<Symbol> = escaped
            .char_indices()
            .map(|(start, c)| Symbol {
                start,
                len: c.len_utf8(),
                prev: None,
                next: None,
            })
            .collect();
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = i.checked_sub(1);
            s.next = (i + 1 < n).then_some(i + 1);
        }
        let mut queue = BinaryHeap::new();
        for left in 0..n.saturating_sub(1) {
            self.push_pair(&escaped, &symbols, left, left + 1, &mut queue);
        }
        while let Some(pair) = queue.pop() {
            let (l, r) = (&symbols[pair.left], &symbols[pair.right]);
            // A pair goes stale when either side has since joined another.
            if l.len == 0 || r.len == 0 || l.len + r.len != pair.len {
                continue;
            }
            let next = symbols[pair.right].next;
            symbols[pair.left].len += symbols[pair.right].len;
            symbols[pair.left].next = next;
            symbols[pair.right].len = 0;
            if let Some(next) = next {
                symbols[next].prev = Some(pair.left);
            }
            if let Some(prev) = symbols[pair.left].prev {
                self.push_pair(&escaped, &symbols, prev, pair.left, &mut queue);
            }
            if let Some(next) = next {
                self.push_pair(&escaped, &symbols, pair.left, next, &mut queue);
            }
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let s = &symbols[i];
            let piece = &escaped[s.start..s.start + s.len];
            match self.pieces.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        out.push(self.byte(b)?);
                    }
                }
            }
            at = s.next;
        }
        Ok(())
    }

    fn push_pair(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Pair>,
    ) {
        let start = symbols[left].start;
        let len = symbols[left].len + symbols[right].len;
        if let Some(&id) = self.pieces.get(&text[start..start + len]) {
            queue.push(Pair {
                score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                left,
                right,
                len,
            });
        }
    }

    fn byte(&self, b: u8) -> Result<TokenId> {
        self.bytes[usize::from(b)].or(self.unknown).ok_or_else(|| {
            Error::Tokenizer(format!(
                "byte 0x{b:02X} has no piece and the vocabulary has no unknown token"
            ))
        })
    }

    /// Turns pieces back into text. Control tokens say nothing; byte pieces
    /// are joined before UTF-8 decoding, since a character can span several.
    pub(super) fn decode(&self, tokens: &[String], types: &[i64], ids: &[TokenId]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let (Some(text), Some(&ty)) = (tokens.get(id as usize), types.get(id as usize)) else {
                continue;
            };
            match ty {
                token_type::CONTROL => {}
                token_type::BYTE => match byte_piece(text) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(text.as_bytes()),
                },
                _ => {
                    for c in text.chars() {
                        let c = if c == SPACE { ' ' } else { c };
                        bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
            }
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if self.add_space_prefix && text.starts_with(' ') {
            text.remove(0);
        }
        text
    }
}

/// The byte a `<0xAB>` piece stands for.
fn byte_piece(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A run of the text that is one piece so far, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Two adjacent symbols whose joined text is a piece.
#[derive(Debug)]
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Ord for Pair {
    /// Highest score first; among equal scores, leftmost first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(pieces: &[(&str, f32, i64)]) -> SentencePieceBpe {
        let tokens: Vec<String> = pieces.iter().map(|p| p.0.to_owned()).collect();
        let types: Vec<i64> = pieces.iter().map(|p| p.2).collect();
        let scores = pieces.iter().map(|p| p.1).collect();
        SentencePieceBpe::new(&tokens, &types, scores, Some(0), true)
    }

    fn encode(v: &SentencePieceBpe, text: &str) -> Vec<TokenId> {
        let mut out = Vec::new();
        v.encode(text, true, &mut out).unwrap();
        out
    }

    #[test]
    fn equal_scores_join_leftmost_first() {
        let v = vocab(&[
            ("<unk>", 0.0, token_type::UNKNOWN),
            ("\u{2581}", -1.0, 1),
            ("\u{2581}\u{2581}", -5.0, 1),
            ("\u{2581}\u{2581}\u{2581}", -5.0, 1),
        ]);
        // Three spaces plus the prefix: ▁▁ + ▁▁ would be a fixed ranking's
        // choice; leftmost-first joins ▁▁ then ▁▁▁ from the left.
        assert_eq!(encode(&v, "   "), vec![3, 1]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let mut pieces = vec![
            ("<unk>", 0.0, token_type::UNKNOWN),
            ("<s>", 0.0, token_type::CONTROL),
            ("\u{2581}", -1.0, 1),
        ];
        let names: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        pieces.extend(names.iter().map(|n| (n.as_str(), 0.0, token_type::BYTE)));
        let v = vocab(&pieces);
        let ids = encode(&v, "é");
        assert_eq!(ids, vec![2, 3 + 0xC3, 3 + 0xA9]);
        let tokens: Vec<String> = pieces.iter().map(|p| p.0.to_owned()).collect();
        let types: Vec<i64> = pieces.iter().map(|p| p.2).collect();
        assert_eq!(v.decode(&tokens, &types, &ids), "é");
    }

    #[test]
    fn a_character_with_no_piece_no_byte_and_no_unknown_is_an_error() {
        let tokens = vec!["\u{2581}".to_owned(), "a".to_owned()];
        let v = SentencePieceBpe::new(&tokens, &[1, 1], vec![0.0, 0.0], None, true);
        let mut out = Vec::new();
        let err = v.encode("é", false, &mut out).unwrap_err();
        assert!(err.to_string().contains("byte 0xC3"), "{err}");
    }

    #[test]
    fn control_pieces_are_never_spelled_from_text() {
        let v = vocab(&[
            ("<unk>", 0.0, token_type::UNKNOWN),
            ("<s>", 0.0, token_type::CONTROL),
            ("<", -1.0, 1),
            ("s", -1.0, 1),
            (">", -1.0, 1),
            ("<s", -2.0, 1),
        ]);
        let mut out = Vec::new();
        v.encode("<s>", false, &mut out).unwrap();
        assert_eq!(out, vec![5, 4]);
    }
}
