//! Tokenizers built from a GGUF file's own metadata.
//!
//! A GGUF checkpoint carries its vocabulary under `tokenizer.ggml.*`, so a
//! single file is all a user needs. Two kinds exist in practice:
//!
//! - `gpt2`: byte-level BPE from `tokens` + `merges`, with the pre-tokenizer
//!   regex named by `tokenizer.ggml.pre` (SmolLM2, Qwen2, Llama 3), run by the
//!   tokenizers crate;
//! - `llama`: SentencePiece pieces with `scores` and byte-fallback tokens
//!   (Mistral, Llama 2, Gemma), run by [`spm`], llama.cpp's algorithm.
//!
//! A `tokenizer.json` beside the model can override all of this
//! ([`Tokenizer::from_json_file`]).
//!
//! Special tokens are matched by [`special`] before either runs: control
//! tokens only in markup abridge wrote ([`Tokenizer::encode_markup`],
//! [`Tokenizer::encode_rendered`]), never in text from elsewhere
//! ([`Tokenizer::encode`]).

use std::path::Path;

use tokenizers::SplitDelimiterBehavior;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, token_type};

pub mod sentencepiece;
mod special;
mod spm;
pub mod template;

use special::{Fragment, SpecialTokens};
use spm::SentencePieceBpe;
use template::RenderedPrompt;

/// A token id.
pub type TokenId = u32;

// Pre-tokenizer regexes, as llama.cpp applies them per `tokenizer.ggml.pre`.
// GPT-2's own regex is the one built into the byte-level pre-tokenizer.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token texts that end a turn in the chat formats abridge knows, in addition
/// to the file's declared end-of-sequence token (the list llama.cpp keeps).
/// Such a token is a control token whatever the file says (Gemma's vocabulary
/// calls `</s>` user-defined), as llama.cpp treats it.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "</s>",
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
];

/// Which vocabulary family a tokenizer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte-level BPE (GPT-2 style), `tokenizer.ggml.model = gpt2`.
    BytePairGpt2,
    /// SentencePiece with scores and byte fallback, `tokenizer.ggml.model = llama`.
    SentencePiece,
    /// Loaded from a `tokenizer.json`.
    HuggingFaceJson,
}

/// A model's tokenizer with the special tokens the decode loop needs.
#[derive(Clone)]
pub struct Tokenizer {
    engine: Engine,
    kind: TokenizerKind,
    tokens: Vec<String>,
    types: Vec<i64>,
    specials: SpecialTokens,
    bos: Option<TokenId>,
    eos: Option<TokenId>,
    add_bos: bool,
    end_of_generation: Vec<TokenId>,
    sequence_breakers: Vec<TokenId>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// What splits plain text (no special tokens in it) into tokens.
#[derive(Clone)]
enum Engine {
    /// The tokenizers crate: byte-level BPE, or a `tokenizer.json`.
    Crate {
        tokenizer: Box<tokenizers::Tokenizer>,
        /// Bytes a byte-level vocabulary has no token for, with their
        /// byte-level characters. llama.cpp cannot join tokens across such a
        /// byte and drops it; the tokenizers crate drops it first and then
        /// joins its neighbours, so such text is split there between the
        /// crate's pre-tokenizer and its BPE.
        missing_bytes: Box<[Option<char>; 256]>,
    },
    /// SentencePiece BPE, as llama.cpp runs it.
    SentencePiece(Box<SentencePieceBpe>),
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

struct Vocabulary {
    tokens: Vec<String>,
    types: Vec<i64>,
}

impl Vocabulary {
    fn read(gguf: &GgufFile) -> Result<Self> {
        let tokens: Vec<String> = string_array(gguf, "tokenizer.ggml.tokens")?;
        let types = match gguf.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => {
                let arr = v
                    .as_array()
                    .ok_or_else(|| metadata_err("tokenizer.ggml.token_type", "is not an array"))?;
                arr.iter()
                    .map(|x| match x {
                        crate::gguf::Value::I32(t) => Ok(i64::from(*t)),
                        other => other.as_u64().map(|t| t as i64).ok_or_else(|| {
                            metadata_err("tokenizer.ggml.token_type", "holds a non-integer")
                        }),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        if types.len() != tokens.len() {
            return Err(metadata_err(
                "tokenizer.ggml.token_type",
                &format!("has {} entries for {} tokens", types.len(), tokens.len()),
            ));
        }
        Ok(Self::new(tokens, types))
    }

    /// Texts that end a turn are control tokens whatever the file calls
    /// them, for a GGUF vocabulary and a `tokenizer.json` alike.
    fn new(tokens: Vec<String>, mut types: Vec<i64>) -> Self {
        for (tok, ty) in tokens.iter().zip(&mut types) {
            if END_OF_GENERATION_TEXTS.contains(&tok.as_str()) {
                *ty = token_type::CONTROL;
            }
        }
        Self { tokens, types }
    }

    /// Control (and unknown) tokens are matched only in markup, user-defined
    /// ones everywhere, as llama.cpp does when told not to parse specials.
    fn special_tokens(&self) -> Result<SpecialTokens> {
        let of = |wanted: &[i64]| {
            self.tokens
                .iter()
                .zip(&self.types)
                .enumerate()
                .filter(|(_, (_, t))| wanted.contains(t))
                .map(|(id, (text, _))| (text.as_str(), id as TokenId))
                .collect()
        };
        SpecialTokens::new(
            of(&[token_type::CONTROL, token_type::UNKNOWN]),
            of(&[token_type::USER_DEFINED]),
        )
    }
}

fn metadata_err(key: &str, problem: &str) -> Error {
    Error::Metadata {
        key: key.into(),
        problem: problem.into(),
    }
}

fn string_array(gguf: &GgufFile, key: &str) -> Result<Vec<String>> {
    let arr = gguf
        .get(key)
        .ok_or_else(|| metadata_err(key, "is missing"))?
        .as_array()
        .ok_or_else(|| metadata_err(key, "is not an array"))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| metadata_err(key, "holds a non-string"))
        })
        .collect()
}

fn optional_id(gguf: &GgufFile, key: &str, vocab: usize) -> Result<Option<TokenId>> {
    match gguf.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(Some(id as TokenId)),
            _ => Err(metadata_err(
                key,
                &format!("{v:?} is not a token id below {vocab}"),
            )),
        },
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` keys.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        let vocab = Vocabulary::read(gguf)?;
        let (engine, kind, default_add_bos) = match model {
            "gpt2" => (
                Engine::Crate {
                    tokenizer: Box::new(build_gpt2(gguf, &vocab)?),
                    missing_bytes: missing_bytes(&vocab),
                },
                TokenizerKind::BytePairGpt2,
                false,
            ),
            "llama" => (
                Engine::SentencePiece(Box::new(build_sentencepiece(gguf, &vocab)?)),
                TokenizerKind::SentencePiece,
                true,
            ),
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer model `{other}` is not supported (supported: gpt2, llama)"
                )));
            }
        };
        let specials = vocab.special_tokens()?;
        Self::finish(engine, kind, vocab, specials, gguf, default_add_bos)
    }

    /// Loads a Hugging Face `tokenizer.json`, taking the special token ids and
    /// the BOS policy from the model file.
    pub fn from_json_file(path: &Path, gguf: &GgufFile) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        // Special tokens are matched by `special`, which knows markup from text.
        inner.set_encode_special_tokens(true);
        let size = inner.get_vocab_size(true);
        let mut tokens = vec![String::new(); size];
        for (tok, id) in inner.get_vocab(true) {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = tok;
            }
        }
        let mut types = vec![token_type::NORMAL; tokens.len()];
        for (id, added) in inner.get_added_tokens_decoder() {
            if let Some(slot) = types.get_mut(id as usize) {
                *slot = if added.special {
                    token_type::CONTROL
                } else {
                    token_type::USER_DEFINED
                };
            }
        }
        let vocab = Vocabulary::new(tokens, types);
        let specials = vocab.special_tokens()?;
        Self::finish(
            Engine::Crate {
                tokenizer: Box::new(inner),
                missing_bytes: Box::new([None; 256]),
            },
            TokenizerKind::HuggingFaceJson,
            vocab,
            specials,
            gguf,
            false,
        )
    }

    fn finish(
        engine: Engine,
        kind: TokenizerKind,
        vocab: Vocabulary,
        specials: SpecialTokens,
        gguf: &GgufFile,
        default_add_bos: bool,
    ) -> Result<Self> {
        let n = vocab.tokens.len();
        let bos = optional_id(gguf, "tokenizer.ggml.bos_token_id", n)?;
        let eos = optional_id(gguf, "tokenizer.ggml.eos_token_id", n)?;
        let eot = optional_id(gguf, "tokenizer.ggml.eot_token_id", n)?;
        let add_bos = gguf
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(default_add_bos)
            && bos.is_some();
        let mut end_of_generation: Vec<TokenId> = eos.into_iter().chain(eot).collect();
        for (id, tok) in vocab.tokens.iter().enumerate() {
            if END_OF_GENERATION_TEXTS.contains(&tok.as_str()) {
                end_of_generation.push(id as TokenId);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        let sequence_breakers = vocab
            .tokens
            .iter()
            .enumerate()
            .filter(|(_, piece)| is_sequence_breaker(piece))
            .map(|(id, _)| id as TokenId)
            .collect();
        Ok(Self {
            engine,
            kind,
            tokens: vocab.tokens,
            types: vocab.types,
            specials,
            bos,
            eos,
            add_bos,
            end_of_generation,
            sequence_breakers,
        })
    }

    /// The vocabulary family.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos(&self) -> Option<TokenId> {
        self.bos
    }

    /// The end-of-sequence token, if the model has one.
    pub fn eos(&self) -> Option<TokenId> {
        self.eos
    }

    /// Whether the model expects a BOS token in front of every prompt.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The text of one token as the vocabulary stores it.
    pub fn token_text(&self, id: TokenId) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Every token that ends a generation (end of sequence or end of turn),
    /// sorted.
    pub fn end_of_generation(&self) -> &[TokenId] {
        &self.end_of_generation
    }

    /// Tokens that hold a newline, `:`, `"` or `*`: where a repeated
    /// sequence is allowed to restart (list markers, headings, quotes), as
    /// llama.cpp's DRY sampler breaks its matches.
    pub fn sequence_breakers(&self) -> &[TokenId] {
        &self.sequence_breakers
    }

    /// Whether `id` ends a generation (end of sequence or end of turn).
    pub fn is_end_of_generation(&self, id: TokenId) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }

    /// Tokenizes `text` as plain text, without a BOS token: strings such as
    /// `<|im_end|>` in it stay text and never become control tokens.
    /// User-defined tokens of the vocabulary are matched, as llama.cpp does.
    ///
    /// ```no_run
    /// # fn main() -> abridge::Result<()> {
    /// let model = abridge::Model::load_with("model.gguf", abridge::ModelOptions::default())?;
    /// let ids = model.tokenizer().encode("Bees <|im_end|> dance.")?;
    /// assert!(ids.iter().all(|&id| !model.tokenizer().is_control(id)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>> {
        self.encode_parts(text, std::slice::from_ref(&(0..text.len())))
    }

    /// Tokenizes markup written by the program, not taken from a document:
    /// control-token strings (`<|im_start|>`, `<s>`) become their tokens.
    /// Adds no BOS token.
    pub fn encode_markup(&self, text: &str) -> Result<Vec<TokenId>> {
        self.encode_parts(text, &[])
    }

    /// Tokenizes a rendered chat prompt: control tokens are recognised in the
    /// template's own markup and nowhere in the text the messages supplied.
    /// The template writes any BOS token itself.
    pub fn encode_rendered(&self, prompt: &RenderedPrompt) -> Result<Vec<TokenId>> {
        self.encode_parts(prompt.text(), prompt.supplied())
    }

    /// Tokenizes a whole prompt written as markup
    /// ([`encode_markup`](Self::encode_markup)), with the BOS token in front
    /// when the model asks for one: llama.cpp's tokenization with special
    /// tokens added and parsed.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<TokenId>> {
        let mut ids = Vec::new();
        if self.add_bos
            && let Some(bos) = self.bos
        {
            ids.push(bos);
        }
        ids.extend(self.encode_markup(text)?);
        Ok(ids)
    }

    fn encode_parts(
        &self,
        text: &str,
        supplied: &[std::ops::Range<usize>],
    ) -> Result<Vec<TokenId>> {
        let mut ids = Vec::new();
        let mut after_special = true;
        for fragment in self.specials.partition(text, supplied) {
            match fragment {
                Fragment::Token(id) => {
                    ids.push(id);
                    after_special = true;
                }
                Fragment::Text(range) => {
                    let piece = &text[range];
                    match &self.engine {
                        Engine::Crate {
                            tokenizer,
                            missing_bytes,
                        } => {
                            if piece
                                .bytes()
                                .any(|b| missing_bytes[usize::from(b)].is_some())
                            {
                                encode_around_missing(tokenizer, missing_bytes, piece, &mut ids)?;
                            } else {
                                let enc = tokenizer.encode_fast(piece, false).map_err(tok_err)?;
                                ids.extend_from_slice(enc.get_ids());
                            }
                        }
                        Engine::SentencePiece(spm) => spm.encode(piece, after_special, &mut ids)?,
                    }
                    after_special = false;
                }
            }
        }
        Ok(ids)
    }

    /// Whether `id` is a control token (`<s>`, `<|im_end|>`): markup that
    /// plain text never produces.
    pub fn is_control(&self, id: TokenId) -> bool {
        self.types.get(id as usize) == Some(&token_type::CONTROL)
    }

    /// The id of the token whose text is exactly `piece`, if any.
    pub fn token_id(&self, piece: &str) -> Option<TokenId> {
        self.tokens
            .iter()
            .position(|t| t == piece)
            .map(|id| id as TokenId)
    }

    /// Turns tokens back into text, leaving out control tokens.
    pub fn decode(&self, ids: &[TokenId]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.tokens.len()) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.tokens.len()
            )));
        }
        match &self.engine {
            Engine::Crate { tokenizer: t, .. } => {
                let kept: Vec<TokenId> = ids
                    .iter()
                    .copied()
                    .filter(|&id| !self.is_control(id))
                    .collect();
                t.decode(&kept, true).map_err(tok_err)
            }
            Engine::SentencePiece(spm) => Ok(spm.decode(&self.tokens, &self.types, ids)),
        }
    }
}

/// Whether a vocabulary piece holds a DRY sequence breaker. Pieces are
/// stored encoded: byte-level BPE writes a newline as `Ċ`, SentencePiece as
/// the byte piece `<0x0A>`; `:`, `"` and `*` are stored as themselves by both.
fn is_sequence_breaker(piece: &str) -> bool {
    piece == "<0x0A>" || piece.contains(['\n', '\u{010A}', ':', '"', '*'])
}

/// Byte-level BPE with merges stopped at bytes the vocabulary lacks, which
/// are dropped: pre-tokenized on the whole text, then each pre-token's runs
/// between missing bytes encoded apart.
fn encode_around_missing(
    tokenizer: &tokenizers::Tokenizer,
    missing_bytes: &[Option<char>; 256],
    text: &str,
    ids: &mut Vec<TokenId>,
) -> Result<()> {
    use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    let mut pre = PreTokenizedString::from(text);
    if let Some(p) = tokenizer.get_pre_tokenizer() {
        p.pre_tokenize(&mut pre).map_err(tok_err)?;
    }
    let missing: Vec<char> = missing_bytes.iter().flatten().copied().collect();
    for (split, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
        for part in split.split(missing.as_slice()).filter(|p| !p.is_empty()) {
            let tokens = tokenizer.get_model().tokenize(part).map_err(tok_err)?;
            ids.extend(tokens.iter().map(|t| t.id));
        }
    }
    Ok(())
}

/// The bytes whose byte-level character (GPT-2's byte-to-unicode table:
/// printable Latin-1 stands for itself, every other byte for U+0100 onwards
/// in order) is not a token of the vocabulary, with that character.
fn missing_bytes(vocab: &Vocabulary) -> Box<[Option<char>; 256]> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let known: std::collections::HashSet<&str> = vocab
        .tokens
        .iter()
        .map(String::as_str)
        .filter(|t| t.chars().count() == 1)
        .collect();
    let mut missing = Box::new([None; 256]);
    let mut next_unprintable = 0x100;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next_unprintable).unwrap_or(char::REPLACEMENT_CHARACTER);
            next_unprintable += 1;
            c
        };
        if !known.contains(c.encode_utf8(&mut [0; 4]) as &str) {
            missing[usize::from(b)] = Some(c);
        }
    }
    missing
}

fn build_gpt2(gguf: &GgufFile, vocab: &Vocabulary) -> Result<tokenizers::Tokenizer> {
    let merges = string_array(gguf, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| Error::Tokenizer(format!("merge `{m}` is not two tokens")))
        })
        .collect::<Result<Vec<_>>>()?;
    let ids: tokenizers::models::bpe::Vocab = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(ids, merges)
        .build()
        .map_err(tok_err)?;
    let pre = gguf
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let byte_level =
        |use_regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, use_regex));
    let split = |regex: &str| -> Result<PreTokenizerWrapper> {
        Ok(PreTokenizerWrapper::Split(
            Split::new(
                SplitPattern::Regex(regex.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tok_err)?,
        ))
    };
    let pre_tokenizer = match pre {
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" => byte_level(true),
        // These vocabularies isolate every digit before the GPT-2 split.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![
                split(r"\p{N}")?,
                byte_level(true),
            ]))
        }
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" | "megrez" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![
                split(QWEN2_REGEX)?,
                byte_level(false),
            ]))
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![
                split(LLAMA3_REGEX)?,
                byte_level(false),
            ]))
        }
        other => {
            return Err(Error::Tokenizer(format!(
                "pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported; put the model's tokenizer.json beside the file to use it"
            )));
        }
    };
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
    Ok(tok)
}

fn build_sentencepiece(gguf: &GgufFile, vocab: &Vocabulary) -> Result<SentencePieceBpe> {
    let scores: Vec<f32> = match gguf.get("tokenizer.ggml.scores") {
        None => vec![0.0; vocab.tokens.len()],
        Some(v) => v
            .as_array()
            .ok_or_else(|| metadata_err("tokenizer.ggml.scores", "is not an array"))?
            .iter()
            .map(|s| {
                s.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| metadata_err("tokenizer.ggml.scores", "holds a non-number"))
            })
            .collect::<Result<_>>()?,
    };
    if scores.len() != vocab.tokens.len() {
        return Err(metadata_err(
            "tokenizer.ggml.scores",
            &format!(
                "has {} entries for {} tokens",
                scores.len(),
                vocab.tokens.len()
            ),
        ));
    }
    let unknown = optional_id(gguf, "tokenizer.ggml.unknown_token_id", vocab.tokens.len())?;
    let add_space_prefix = gguf
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    Ok(SentencePieceBpe::new(
        &vocab.tokens,
        &vocab.types,
        scores,
        unknown,
        add_space_prefix,
    ))
}
