//! Tokenizers built from a GGUF file's own metadata.
//!
//! A GGUF checkpoint carries its vocabulary under `tokenizer.ggml.*`, so a
//! single file is all a user needs. Two kinds exist in practice:
//!
//! - `gpt2`: byte-level BPE from `tokens` + `merges`, with the pre-tokenizer
//!   regex named by `tokenizer.ggml.pre` (SmolLM2, Qwen2, Llama 3);
//! - `llama`: SentencePiece pieces with `scores` and byte-fallback tokens
//!   (Mistral, Llama 2, Gemma).
//!
//! Both become a [`tokenizers::Tokenizer`] so encoding runs on the tokenizers
//! crate's tested pipeline. For SentencePiece the merges are derived from the
//! scores: llama.cpp merges the adjacent pair whose joined piece has the highest
//! score, which is what BPE does when merges are ranked by that score.
//! A `tokenizer.json` beside the model can override all of this
//! ([`Tokenizer::from_json_file`]).

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip as StripDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, token_type};

pub mod sentencepiece;
pub mod template;

/// A token id.
pub type TokenId = u32;

/// SentencePiece's word-boundary marker.
const SPIECE_SPACE: &str = "\u{2581}";

// Pre-tokenizer regexes, as llama.cpp applies them per `tokenizer.ggml.pre`.
// GPT-2's own regex is the one built into the byte-level pre-tokenizer.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token texts that end a turn in the chat formats abridge knows, in addition
/// to the file's declared end-of-sequence token (the list llama.cpp keeps).
const END_OF_GENERATION_TEXTS: &[&str] = &[
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
    inner: tokenizers::Tokenizer,
    kind: TokenizerKind,
    tokens: Vec<String>,
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
        Ok(Self { tokens, types })
    }

    /// Control and user-defined tokens are matched in the text before the
    /// model's own splitting, as llama.cpp does when it parses special tokens.
    fn added_tokens(&self) -> Vec<AddedToken> {
        self.tokens
            .iter()
            .zip(&self.types)
            .filter(|(_, t)| **t == token_type::CONTROL || **t == token_type::USER_DEFINED)
            .map(|(tok, t)| {
                AddedToken::from(tok.clone(), *t == token_type::CONTROL).normalized(false)
            })
            .collect()
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
        let (inner, kind, default_add_bos) = match model {
            "gpt2" => (
                build_gpt2(gguf, &vocab)?,
                TokenizerKind::BytePairGpt2,
                false,
            ),
            "llama" => (
                build_sentencepiece(gguf, &vocab)?,
                TokenizerKind::SentencePiece,
                true,
            ),
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer model `{other}` is not supported (supported: gpt2, llama)"
                )));
            }
        };
        Self::finish(inner, kind, vocab, gguf, default_add_bos)
    }

    /// Loads a Hugging Face `tokenizer.json`, taking the special token ids and
    /// the BOS policy from the model file.
    pub fn from_json_file(path: &Path, gguf: &GgufFile) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let size = inner.get_vocab_size(true);
        let mut tokens = vec![String::new(); size];
        for (tok, id) in inner.get_vocab(true) {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = tok;
            }
        }
        let types = vec![1; tokens.len()];
        Self::finish(
            inner,
            TokenizerKind::HuggingFaceJson,
            Vocabulary { tokens, types },
            gguf,
            false,
        )
    }

    fn finish(
        inner: tokenizers::Tokenizer,
        kind: TokenizerKind,
        vocab: Vocabulary,
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
        for (id, (tok, ty)) in vocab.tokens.iter().zip(&vocab.types).enumerate() {
            if *ty == token_type::CONTROL && END_OF_GENERATION_TEXTS.contains(&tok.as_str()) {
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
            inner,
            kind,
            tokens: vocab.tokens,
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

    /// Tokenizes `text`, matching the vocabulary's special tokens (such as
    /// `<|im_start|>`) where they occur, without adding a BOS token.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>> {
        let enc = self.inner.encode_fast(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokenizes a whole prompt: [`encode`](Self::encode), with the BOS token in
    /// front when the model asks for one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<TokenId>> {
        let mut ids = Vec::new();
        if self.add_bos
            && let Some(bos) = self.bos
        {
            ids.push(bos);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Turns tokens back into text, leaving out control tokens.
    pub fn decode(&self, ids: &[TokenId]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.tokens.len()) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.tokens.len()
            )));
        }
        self.inner.decode(ids, true).map_err(tok_err)
    }
}

/// Whether a vocabulary piece holds a DRY sequence breaker. Pieces are
/// stored encoded: byte-level BPE writes a newline as `Ċ`, SentencePiece as
/// the byte piece `<0x0A>`; `:`, `"` and `*` are stored as themselves by both.
fn is_sequence_breaker(piece: &str) -> bool {
    piece == "<0x0A>" || piece.contains(['\n', '\u{010A}', ':', '"', '*'])
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
    tok.add_special_tokens(vocab.added_tokens())
        .map_err(tok_err)?;
    Ok(tok)
}

fn build_sentencepiece(gguf: &GgufFile, vocab: &Vocabulary) -> Result<tokenizers::Tokenizer> {
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
    let merges = sentencepiece_merges(vocab, &scores);
    let ids: tokenizers::models::bpe::Vocab = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(ids, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = optional_id(gguf, "tokenizer.ggml.unknown_token_id", vocab.tokens.len())? {
        builder = builder.unk_token(vocab.tokens[unk as usize].clone());
    }
    let bpe = builder.build().map_err(tok_err)?;
    let add_space_prefix = gguf
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let replace = NormalizerWrapper::Replace(Replace::new(" ", SPIECE_SPACE).map_err(tok_err)?);
    let normalizer = if add_space_prefix {
        NormalizerWrapper::Sequence(NormalizerSequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new(SPIECE_SPACE.into())),
            replace,
        ]))
    } else {
        replace
    };
    let mut decoders = vec![
        DecoderWrapper::Replace(Replace::new(SPIECE_SPACE, " ").map_err(tok_err)?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        decoders.push(DecoderWrapper::Strip(StripDecoder::new(' ', 1, 0)));
    }
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_normalizer(Some(normalizer)).map_err(tok_err)?;
    tok.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    tok.add_special_tokens(vocab.added_tokens())
        .map_err(tok_err)?;
    Ok(tok)
}

/// Every split of a piece into two pieces that are both in the vocabulary is a
/// merge; merges rank by the joined piece's score, highest first, which makes
/// BPE reproduce SentencePiece's highest-score-first merging.
fn sentencepiece_merges(vocab: &Vocabulary, scores: &[f32]) -> Vec<(String, String)> {
    let mergeable =
        |i: usize| vocab.types[i] != token_type::BYTE && vocab.types[i] != token_type::CONTROL;
    let index: HashMap<&str, usize> = vocab
        .tokens
        .iter()
        .enumerate()
        .filter(|&(i, _)| mergeable(i))
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f32, usize, usize, String, String)> = Vec::new();
    for (&piece, &id) in &index {
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (index.get(left), index.get(right)) {
                merges.push((scores[id], l, r, left.to_owned(), right.to_owned()));
            }
        }
    }
    // Highest score first; ties in vocabulary order keep the result deterministic.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges.into_iter().map(|(_, _, _, l, r)| (l, r)).collect()
}
