//! Tokenizing a long text: the seed article (21,000 characters) with each
//! vocabulary kind. `cargo bench --bench tokenizer`.

use abridge::Tokenizer;
use abridge::gguf::GgufFile;
use abridge::input::SavedRequest;

fn main() {
    divan::main();
}

fn article() -> String {
    SavedRequest::from_file(&abridge_tests::fixture("seed-request.json"))
        .unwrap()
        .article
}

fn tokenizer(file: &str) -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(abridge_tests::model(file)).unwrap()).unwrap()
}

/// Byte-level BPE (SmolLM2's GPT-2 style vocabulary).
#[divan::bench(sample_count = 20)]
fn bpe(bencher: divan::Bencher) {
    let t = tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf");
    let text = article();
    bencher.bench_local(|| t.encode(&text).unwrap().len());
}

/// SentencePiece with scores (Gemma 3's 262k vocabulary, the kind Mistral uses).
#[divan::bench(sample_count = 20)]
fn sentencepiece(bencher: divan::Bencher) {
    let t = tokenizer("gemma-3-270m-q4_k_m.gguf");
    let text = article();
    bencher.bench_local(|| t.encode(&text).unwrap().len());
}
