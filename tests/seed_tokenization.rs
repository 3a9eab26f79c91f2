//! Tokenizer parity with llama.cpp on a long real text: the seed article
//! (about 21,000 characters), for every vocabulary kind. Fixtures by
//! `scripts/reference/tokenize_seed.py`; the Mistral vocabulary is checked in
//! `tests/synth.rs`, which builds it from `tokenizer.model.v1`.

use abridge::gguf::GgufFile;
use abridge::input::SavedRequest;
use abridge::tokenizer::Tokenizer;

fn check(file: &str, fixture: &str) {
    let gguf = GgufFile::open(abridge_tests::model(file)).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    let seed = SavedRequest::from_file(&abridge_tests::fixture("seed-request.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(abridge_tests::fixture(&format!(
            "golden/tokenize_seed.{fixture}.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        want["text_chars"].as_u64().unwrap() as usize,
        seed.article.chars().count()
    );
    let want: Vec<u32> = want["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let ours = tokenizer.encode(&seed.article).unwrap();
    let first_difference = ours.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(
        (ours.len(), first_difference),
        (want.len(), None),
        "{file}: lengths and first differing position"
    );
}

#[test]
fn smollm2_tokenizes_the_seed_article_like_llama_cpp() {
    check(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "smollm2-135m-instruct-q4_1",
    );
}

#[test]
fn qwen2_tokenizes_the_seed_article_like_llama_cpp() {
    check(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-q4_k_m",
    );
}

#[test]
fn gemma3_tokenizes_the_seed_article_like_llama_cpp() {
    check("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m");
}
