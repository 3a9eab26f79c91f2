//! A tokenizer built from any GGUF file's metadata: an error, or a
//! tokenizer that encodes and decodes text and every one of its tokens.

#![no_main]

use abridge::Tokenizer;
use abridge::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

/// Text with what tokenizers trip on: markup of chat formats, runs of
/// spaces and newlines, digits, accents, emoji and a lone control byte.
const TEXTS: &[&str] = &[
    "Summarize: the cat sat on the mat.",
    "<|im_start|>user\nHi<|im_end|>\n<start_of_turn>model\n<s>[INST] x [/INST]",
    "    \n\n\t  12345 6.02e23  ünïcödé 日本語 🙂\u{1}",
];

/// The most token ids decoded one by one per run.
const MAX_DECODED: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data) else {
        return;
    };
    let Ok(tokenizer) = Tokenizer::from_gguf(&file) else {
        return;
    };
    for text in TEXTS {
        // As text from a document, and as markup abridge wrote.
        for ids in [tokenizer.encode(text), tokenizer.encode_prompt(text)]
            .into_iter()
            .flatten()
        {
            assert!(ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
            let _ = tokenizer.decode(&ids);
        }
    }
    let vocab = u32::try_from(tokenizer.vocab_size()).unwrap_or(u32::MAX);
    for id in 0..vocab.min(MAX_DECODED) {
        assert!(tokenizer.token_text(id).is_some());
        let _ = tokenizer.decode(&[id]);
    }
});
