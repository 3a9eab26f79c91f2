//! GGUF's numbering of tensor storage types, metadata value types and file
//! types: the one place these tables are written, for the reader, the writer
//! and inspection alike.

use candle_core::quantized::GgmlDType;

use super::Value;

/// GGUF's number, llama.cpp's name and candle's type for every storage type
/// candle can load from a file and compute with. Q8_1 and Q8_K are absent:
/// they are llama.cpp's activation types, which candle 0.11 does not read
/// from a file, so a file holding them is refused at open (the fuzzer found
/// one accepted and then failing to load).
const TENSOR_TYPES: &[(u32, &str, GgmlDType)] = &[
    (0, "F32", GgmlDType::F32),
    (1, "F16", GgmlDType::F16),
    (2, "Q4_0", GgmlDType::Q4_0),
    (3, "Q4_1", GgmlDType::Q4_1),
    (6, "Q5_0", GgmlDType::Q5_0),
    (7, "Q5_1", GgmlDType::Q5_1),
    (8, "Q8_0", GgmlDType::Q8_0),
    (10, "Q2_K", GgmlDType::Q2K),
    (11, "Q3_K", GgmlDType::Q3K),
    (12, "Q4_K", GgmlDType::Q4K),
    (13, "Q5_K", GgmlDType::Q5K),
    (14, "Q6_K", GgmlDType::Q6K),
    (30, "BF16", GgmlDType::BF16),
];

/// The storage type of a tensor, as GGUF numbers them.
///
/// ```
/// use abridge::gguf::TensorType;
/// assert_eq!(TensorType(12).name(), "Q4_K");
/// assert_eq!(TensorType(99).name(), "type 99");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorType(pub u32);

impl TensorType {
    /// candle's name for this type, when candle can compute with it.
    pub fn ggml_dtype(self) -> Option<GgmlDType> {
        TENSOR_TYPES
            .iter()
            .find(|(n, ..)| *n == self.0)
            .map(|&(.., d)| d)
    }

    /// The type's name as llama.cpp prints it (`Q4_K`, `F32`, ...).
    pub fn name(self) -> String {
        match TENSOR_TYPES.iter().find(|(n, ..)| *n == self.0) {
            Some((_, name, _)) => (*name).to_owned(),
            None => format!("type {}", self.0),
        }
    }

    /// Bytes taken by `elements` values of this type, or `None` when the type is
    /// unknown or `elements` is not a whole number of blocks.
    pub(crate) fn byte_size(self, elements: u64) -> Option<u64> {
        let dtype = self.ggml_dtype()?;
        let block = dtype.block_size() as u64;
        if !elements.is_multiple_of(block) {
            return None;
        }
        (elements / block).checked_mul(dtype.type_size() as u64)
    }
}

/// GGUF's number for a storage type (ggml's `ggml_type`).
pub(crate) fn gguf_type(dtype: GgmlDType) -> Option<u32> {
    TENSOR_TYPES
        .iter()
        .find(|(.., d)| *d == dtype)
        .map(|&(n, ..)| n)
}

/// The type tag of a metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The tag for `code`, when it is one GGUF defines.
    pub(crate) fn from_code(code: u32) -> Option<Self> {
        use ValueType::*;
        Some(match code {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The tag of `value`.
    pub(crate) fn of(value: &Value) -> Self {
        match value {
            Value::U8(_) => Self::U8,
            Value::I8(_) => Self::I8,
            Value::U16(_) => Self::U16,
            Value::I16(_) => Self::I16,
            Value::U32(_) => Self::U32,
            Value::I32(_) => Self::I32,
            Value::F32(_) => Self::F32,
            Value::Bool(_) => Self::Bool,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::U64(_) => Self::U64,
            Value::I64(_) => Self::I64,
            Value::F64(_) => Self::F64,
        }
    }

    /// The fewest bytes one value of this type takes on disk (a string's
    /// length prefix, an array's element tag and count): what bounds how many
    /// elements an array header can honestly claim.
    pub(crate) fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            String | U64 | I64 | F64 => 8,
            Array => 12,
        }
    }
}

/// llama.cpp's name for a `general.file_type` value (`15` is `Q4_K_M`).
///
/// ```
/// assert_eq!(abridge::gguf::file_type_name(15), Some("Q4_K_M"));
/// assert_eq!(abridge::gguf::file_type_name(4), None);
/// ```
pub fn file_type_name(file_type: u64) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// The values of `tokenizer.ggml.token_type`, which are SentencePiece's piece
/// types by number.
pub(crate) mod token_type {
    pub(crate) const NORMAL: i64 = 1;
    pub(crate) const UNKNOWN: i64 = 2;
    pub(crate) const CONTROL: i64 = 3;
    pub(crate) const USER_DEFINED: i64 = 4;
    pub(crate) const UNUSED: i64 = 5;
    pub(crate) const BYTE: i64 = 6;
}

/// `general.file_type` of a mostly-Q4_K_M file.
pub const FILE_TYPE_MOSTLY_Q4_K_M: u32 = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_types_round_trip_through_the_table() {
        for &(code, name, dtype) in TENSOR_TYPES {
            assert_eq!(gguf_type(dtype), Some(code));
            assert_eq!(TensorType(code).ggml_dtype(), Some(dtype));
            assert_eq!(TensorType(code).name(), name);
        }
        assert_eq!(TensorType(4).ggml_dtype(), None);
    }

    #[test]
    fn value_tags_round_trip() {
        for code in 0..13 {
            assert_eq!(ValueType::from_code(code).unwrap() as u32, code);
        }
        assert_eq!(ValueType::from_code(13), None);
    }
}
