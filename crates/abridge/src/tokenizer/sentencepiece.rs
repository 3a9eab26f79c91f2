//! Reading a SentencePiece `tokenizer.model`: its pieces, scores and types.
//!
//! A `tokenizer.model` is a protobuf `ModelProto` (sentencepiece_model.proto).
//! abridge needs little of it — the vocabulary, a few trainer settings and the
//! normalizer's `add_dummy_prefix` — so it is read with the small
//! wire-format reader below rather than a protobuf crate: four wire types,
//! varints, and skipping every field it does not know. Every length is checked
//! against the bytes present, so a damaged file is an [`Error`], never a panic.
//!
//! The piece types keep SentencePiece's numbering, which is also the numbering
//! GGUF's `tokenizer.ggml.token_type` uses (llama.cpp's `llama_token_type`):
//! NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::token_type;

/// What a piece is, as SentencePiece's `SentencePiece.Type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceType {
    /// An ordinary piece of text.
    Normal,
    /// The unknown-token piece (`<unk>`).
    Unknown,
    /// A control symbol such as `<s>`, never produced from text.
    Control,
    /// A user-defined symbol, always matched as a whole.
    UserDefined,
    /// A piece the model does not use.
    Unused,
    /// A byte-fallback piece (`<0x41>`).
    Byte,
}

impl PieceType {
    /// The type for SentencePiece's enum value; unknown values are `None`.
    pub fn from_proto(value: u64) -> Option<Self> {
        Some(match value {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }

    /// The value GGUF stores in `tokenizer.ggml.token_type` for this type.
    pub fn gguf_token_type(self) -> i32 {
        let t = match self {
            Self::Normal => token_type::NORMAL,
            Self::Unknown => token_type::UNKNOWN,
            Self::Control => token_type::CONTROL,
            Self::UserDefined => token_type::USER_DEFINED,
            Self::Unused => token_type::UNUSED,
            Self::Byte => token_type::BYTE,
        };
        t as i32
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece's text, with `▁` (U+2581) for a space.
    pub text: String,
    /// Its score: the log probability (unigram) or minus the merge rank (BPE).
    pub score: f32,
    /// What kind of piece it is.
    pub kind: PieceType,
}

/// The algorithm a SentencePiece model was trained with (`TrainerSpec.model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// Unigram language model (SentencePiece's default).
    Unigram,
    /// Byte-pair encoding (Llama, Mistral).
    Bpe,
    /// Whitespace-delimited words.
    Word,
    /// Single characters.
    Char,
}

/// The parts of a SentencePiece model that abridge uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePieceModel {
    /// The vocabulary; a piece's index is its token id.
    pub pieces: Vec<Piece>,
    /// The training algorithm.
    pub model_type: ModelType,
    /// Whether characters outside the vocabulary become byte pieces.
    pub byte_fallback: bool,
    /// Whether a space is put in front of the text before tokenizing.
    pub add_dummy_prefix: bool,
    /// The unknown token's id, if any.
    pub unk_id: Option<u32>,
    /// The beginning-of-sequence token's id, if any.
    pub bos_id: Option<u32>,
    /// The end-of-sequence token's id, if any.
    pub eos_id: Option<u32>,
    /// The padding token's id, if any.
    pub pad_id: Option<u32>,
}

// Field numbers in sentencepiece_model.proto.
const MODEL_PIECES: u32 = 1;
const MODEL_TRAINER_SPEC: u32 = 2;
const MODEL_NORMALIZER_SPEC: u32 = 3;
const PIECE_TEXT: u32 = 1;
const PIECE_SCORE: u32 = 2;
const PIECE_TYPE: u32 = 3;
const TRAINER_MODEL_TYPE: u32 = 3;
const TRAINER_BYTE_FALLBACK: u32 = 35;
const TRAINER_UNK_ID: u32 = 40;
const TRAINER_BOS_ID: u32 = 41;
const TRAINER_EOS_ID: u32 = 42;
const TRAINER_PAD_ID: u32 = 43;
const NORMALIZER_ADD_DUMMY_PREFIX: u32 = 3;

impl SentencePieceModel {
    /// Reads a `tokenizer.model` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::Tokenizer(msg) => Error::Tokenizer(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses the bytes of a `tokenizer.model`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad =
            |what: String| Error::Tokenizer(format!("not a usable SentencePiece model: {what}"));
        let mut model = Self {
            pieces: Vec::new(),
            model_type: ModelType::Unigram,
            byte_fallback: false,
            add_dummy_prefix: true,
            unk_id: Some(0),
            bos_id: Some(1),
            eos_id: Some(2),
            pad_id: None,
        };
        let mut r = Wire::new(bytes);
        while let Some((field, value)) = r.next_field().map_err(bad)? {
            match (field, value) {
                (MODEL_PIECES, Field::Bytes(b)) => {
                    let index = model.pieces.len();
                    model
                        .pieces
                        .push(parse_piece(b).map_err(|e| bad(format!("piece {index}: {e}")))?);
                }
                (MODEL_TRAINER_SPEC, Field::Bytes(b)) => model
                    .parse_trainer_spec(b)
                    .map_err(|e| bad(format!("trainer_spec: {e}")))?,
                (MODEL_NORMALIZER_SPEC, Field::Bytes(b)) => model
                    .parse_normalizer_spec(b)
                    .map_err(|e| bad(format!("normalizer_spec: {e}")))?,
                (MODEL_PIECES..=MODEL_NORMALIZER_SPEC, _) => {
                    return Err(bad(format!("field {field} has the wrong wire type")));
                }
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(bad("it holds no pieces".into()));
        }
        let n = model.pieces.len();
        for (name, id) in [
            ("unk_id", model.unk_id),
            ("bos_id", model.bos_id),
            ("eos_id", model.eos_id),
            ("pad_id", model.pad_id),
        ] {
            if let Some(id) = id
                && id as usize >= n
            {
                return Err(bad(format!("{name} {id} is outside the {n} pieces")));
            }
        }
        Ok(model)
    }

    fn parse_trainer_spec(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut r = Wire::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            let Field::Varint(v) = value else { continue };
            match field {
                TRAINER_MODEL_TYPE => {
                    self.model_type = match v {
                        1 => ModelType::Unigram,
                        2 => ModelType::Bpe,
                        3 => ModelType::Word,
                        4 => ModelType::Char,
                        other => return Err(format!("unknown model_type {other}")),
                    }
                }
                TRAINER_BYTE_FALLBACK => self.byte_fallback = v != 0,
                TRAINER_UNK_ID => self.unk_id = optional_id(v),
                TRAINER_BOS_ID => self.bos_id = optional_id(v),
                TRAINER_EOS_ID => self.eos_id = optional_id(v),
                TRAINER_PAD_ID => self.pad_id = optional_id(v),
                _ => {}
            }
        }
        Ok(())
    }

    fn parse_normalizer_spec(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut r = Wire::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            if let (NORMALIZER_ADD_DUMMY_PREFIX, Field::Varint(v)) = (field, value) {
                self.add_dummy_prefix = v != 0;
            }
        }
        Ok(())
    }

    /// The piece with id `id`.
    pub fn piece(&self, id: u32) -> Option<&Piece> {
        self.pieces.get(id as usize)
    }
}

/// An `int32` id field: protobuf encodes -1 ("none") as a ten-byte varint.
fn optional_id(v: u64) -> Option<u32> {
    let v = v as i64 as i32;
    u32::try_from(v).ok()
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, String> {
    let mut text = None;
    let mut score = 0.0;
    let mut kind = PieceType::Normal;
    let mut r = Wire::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (PIECE_TEXT, Field::Bytes(b)) => {
                text = Some(
                    String::from_utf8(b.to_vec())
                        .map_err(|_| "its text is not valid UTF-8".to_string())?,
                )
            }
            (PIECE_SCORE, Field::Fixed32(bits)) => score = f32::from_bits(bits),
            (PIECE_TYPE, Field::Varint(v)) => {
                kind = PieceType::from_proto(v).ok_or_else(|| format!("unknown type {v}"))?
            }
            (PIECE_TEXT..=PIECE_TYPE, _) => {
                return Err(format!("field {field} has the wrong wire type"));
            }
            _ => {}
        }
    }
    Ok(Piece {
        text: text.ok_or("it has no text")?,
        score,
        kind,
    })
}

/// One field's value, by wire type.
enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A bounds-checked reader of protobuf's wire format.
struct Wire<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.data.get(self.pos) else {
                return Err(format!("varint cut short at byte {}", self.pos));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return Err(format!(
                "field of {n} bytes at byte {} runs past the end ({remaining} bytes left)",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// The next field number and value, or `None` at the end.
    fn next_field(&mut self) -> Result<Option<(u32, Field<'a>)>, String> {
        if self.pos == self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field =
            u32::try_from(key >> 3).map_err(|_| format!("field number {} too large", key >> 3))?;
        if field == 0 {
            return Err(format!("field number 0 at byte {}", self.pos));
        }
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let len = self.varint()?;
                Field::Bytes(self.take(len)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("took 4 bytes"),
            )),
            other => return Err(format!("unsupported wire type {other} for field {field}")),
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
        varint(out, u64::from(field) << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend(bytes);
    }

    fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
        varint(out, u64::from(field) << 3);
        varint(out, v);
    }

    fn piece(text: &str, score: f32, kind: Option<u64>) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(&mut p, 1, text.as_bytes());
        varint(&mut p, 2 << 3 | 5);
        p.extend(score.to_le_bytes());
        if let Some(k) = kind {
            varint_field(&mut p, 3, k);
        }
        p
    }

    fn tiny() -> Vec<u8> {
        let mut m = Vec::new();
        bytes_field(&mut m, 1, &piece("<unk>", 0.0, Some(2)));
        bytes_field(&mut m, 1, &piece("<s>", 0.0, Some(3)));
        bytes_field(&mut m, 1, &piece("</s>", 0.0, Some(3)));
        bytes_field(&mut m, 1, &piece("<0x41>", 0.0, Some(6)));
        bytes_field(&mut m, 1, &piece("\u{2581}the", -1.5, None));
        let mut trainer = Vec::new();
        varint_field(&mut trainer, 3, 2);
        varint_field(&mut trainer, 35, 1);
        varint_field(&mut trainer, 43, (-1i64) as u64);
        // An unknown length-delimited field is skipped.
        bytes_field(&mut trainer, 7, b"ignored");
        bytes_field(&mut m, 2, &trainer);
        let mut normalizer = Vec::new();
        varint_field(&mut normalizer, 3, 0);
        bytes_field(&mut m, 3, &normalizer);
        m
    }

    #[test]
    fn reads_pieces_and_settings() {
        let m = SentencePieceModel::from_bytes(&tiny()).unwrap();
        assert_eq!(m.pieces.len(), 5);
        assert_eq!(m.pieces[0].kind, PieceType::Unknown);
        assert_eq!(m.pieces[1].kind.gguf_token_type(), 3);
        assert_eq!(m.pieces[3].kind, PieceType::Byte);
        assert_eq!(m.pieces[4].text, "\u{2581}the");
        assert_eq!(m.pieces[4].score, -1.5);
        assert_eq!(m.pieces[4].kind, PieceType::Normal);
        assert_eq!(m.model_type, ModelType::Bpe);
        assert!(m.byte_fallback);
        assert!(!m.add_dummy_prefix);
        assert_eq!(
            (m.unk_id, m.bos_id, m.eos_id, m.pad_id),
            (Some(0), Some(1), Some(2), None)
        );
    }

    #[test]
    fn truncations_never_panic() {
        let bytes = tiny();
        for len in 0..bytes.len() {
            // A cut between fields is a shorter valid model; any other cut is an error.
            let _ = SentencePieceModel::from_bytes(&bytes[..len]);
        }
        // Cut inside the first piece.
        assert!(SentencePieceModel::from_bytes(&bytes[..5]).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        let err = SentencePieceModel::from_bytes(b"\xff\xff\xff").unwrap_err();
        assert!(err.to_string().contains("SentencePiece"), "{err}");
        assert!(SentencePieceModel::from_bytes(b"").is_err());
    }
}
