//! Tokenizer parity with llama.cpp on a long real text, the seed article
//! (about 21,000 characters), for every vocabulary kind (fixtures by
//! `scripts/reference/tokenize_seed.py`; the Mistral vocabulary's is checked
//! in `tests/synth.rs`); on 2,500 awkward strings for all four vocabularies
//! (fixtures by `scripts/tokenizer-fixtures`); and text that spells control
//! tokens never becoming one.

use abridge::gguf::GgufFile;
use abridge::input::SavedRequest;
use abridge::tokenizer::Tokenizer;
use abridge::tokenizer::template::Builtin;
use abridge::{ChatTemplate, TokenId};

const SMOLLM2: (&str, &str) = (
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "smollm2-135m-instruct-q4_1",
);
const QWEN: (&str, &str) = (
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m",
);
const GEMMA: (&str, &str) = ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m");
const MISTRAL: &str = "mistral-7b-instruct-v0.2-synthetic-q4_k_m";

fn open(file: &str) -> (GgufFile, Tokenizer) {
    let gguf = GgufFile::open(abridge_tests::model(file)).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    (gguf, tokenizer)
}

fn check((file, fixture): (&str, &str)) {
    let (_, tokenizer) = open(file);
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
    check(SMOLLM2);
}

#[test]
fn qwen2_tokenizes_the_seed_article_like_llama_cpp() {
    check(QWEN);
}

#[test]
fn gemma3_tokenizes_the_seed_article_like_llama_cpp() {
    check(GEMMA);
}

/// Every string of the differential fixture, tokenized by llama.cpp with
/// special-token parsing off, gives the same ids here.
fn differential(tokenizer: &Tokenizer, fixture: &str) -> Vec<String> {
    let want = abridge_tests::golden("tokenize_differential.json");
    let texts = want["texts"].as_array().unwrap();
    let ids = want["ids"][fixture].as_array().unwrap();
    assert_eq!(texts.len(), ids.len());
    assert!(texts.len() >= 2000);
    let mut wrong = Vec::new();
    for (text, ids) in texts.iter().zip(ids) {
        let text = text.as_str().unwrap();
        let ours = tokenizer.encode(text).unwrap();
        if ours != abridge_tests::ids(ids) {
            wrong.push(format!("{text:?}: ours {ours:?}, llama.cpp {ids}"));
        }
    }
    if wrong.is_empty() {
        return wrong;
    }
    vec![format!(
        "{fixture}: {} of {} strings differ, e.g.\n{}",
        wrong.len(),
        texts.len(),
        wrong[..wrong.len().min(5)].join("\n")
    )]
}

#[test]
fn awkward_strings_tokenize_like_llama_cpp_in_every_vocabulary() {
    let mut wrong = Vec::new();
    for (file, fixture) in [SMOLLM2, QWEN, GEMMA] {
        wrong.extend(differential(&open(file).1, fixture));
    }
    let dir = tempfile::tempdir().unwrap();
    wrong.extend(differential(
        &abridge_tests::mistral_tokenizer(dir.path()),
        MISTRAL,
    ));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A document, system text and instruction spelling every control token of
/// the vocabulary add no control token to the prompt: the prompt holds the
/// same control tokens, in the same order, as one around a harmless text.
fn no_control_tokens_from_text(tokenizer: &Tokenizer, template: &ChatTemplate) {
    let controls: Vec<(TokenId, &str)> = (0..tokenizer.vocab_size() as TokenId)
        .filter(|&id| tokenizer.is_control(id))
        .map(|id| (id, tokenizer.token_text(id).unwrap()))
        .filter(|(_, text)| !text.is_empty())
        .collect();
    assert!(controls.len() >= 2, "{controls:?}");
    let hostile: String = controls
        .iter()
        .map(|(_, text)| format!("{text} user\n{text}"))
        .collect::<Vec<_>>()
        .join(" ");
    let control_ids = |system: &str, user: &str| -> Vec<TokenId> {
        let prompt = template.render_turn(Some(system), user).unwrap();
        let ids = tokenizer.encode_rendered(&prompt).unwrap();
        ids.into_iter()
            .filter(|&id| tokenizer.is_control(id))
            .collect()
    };
    let markup_only = control_ids("Be brief.", "Summarize:\n\nBees dance.");
    assert!(!markup_only.is_empty());
    assert_eq!(
        control_ids(&hostile, &format!("{hostile}\n\n{hostile}")),
        markup_only
    );
    // The same strings written as markup are control tokens.
    for (id, text) in controls.iter().take(50) {
        assert_eq!(tokenizer.encode_markup(text).unwrap(), vec![*id], "{text}");
        assert!(
            tokenizer
                .encode(text)
                .unwrap()
                .iter()
                .all(|&t| !tokenizer.is_control(t)),
            "{text}"
        );
    }
}

#[test]
fn text_never_becomes_a_control_token() {
    for (file, _) in [SMOLLM2, QWEN, GEMMA] {
        let (gguf, tokenizer) = open(file);
        no_control_tokens_from_text(&tokenizer, &ChatTemplate::for_model(&gguf, &tokenizer));
    }
    let dir = tempfile::tempdir().unwrap();
    let mistral = abridge_tests::mistral_tokenizer(dir.path());
    for builtin in [Builtin::Mistral, Builtin::OllamaMistral] {
        no_control_tokens_from_text(&mistral, &ChatTemplate::builtin(builtin, &mistral));
    }
}
