//! Reusing the cached prompt prefix changes nothing but the time: greedy
//! output with a cache left by an earlier prompt is token for token the
//! output from an empty cache, and the summarizer processes the prefix its
//! documents share only once.

use abridge::{ContextWindow, GenerateOptions, Model, SamplingOptions, Summarizer, TokenId};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// The opening paragraphs (about 500 characters) of three real documents.
fn documents() -> Vec<String> {
    ["grep-news.txt", "gzip.1.txt", "artistic-1.0-perl.txt"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(abridge_tests::fixture(&format!("quality/{name}")))
                .unwrap();
            let mut end = 500.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            match text[..end].rfind("\n\n") {
                Some(at) if at > 200 => text[..at].to_owned(),
                _ => text[..end].to_owned(),
            }
        })
        .collect()
}

fn model(file: &str) -> Model {
    Model::load_with(abridge_tests::model(file), abridge_tests::options(1)).unwrap()
}

fn greedy(tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: tokens,
        sampling: SamplingOptions::greedy(),
        ..GenerateOptions::default()
    }
}

fn generate(
    model: &Model,
    cache: &mut abridge::KvCache,
    prompt: &[TokenId],
    prefix: usize,
) -> (Vec<TokenId>, usize) {
    let g = abridge::generate_after_prefix(model, cache, prompt, prefix, &greedy(16), &mut |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    (g.tokens, g.stats.cached_prompt_tokens)
}

/// Two documents' prompts, then the first again, each after the cache the
/// previous one left (its prompt and summary), against an empty cache.
fn reuse_matches_fresh_cache(file: &str) {
    let model = model(file);
    let summarizer = Summarizer::builder(model).build().unwrap();
    let model = summarizer.model();
    let docs = documents();
    let prompts: Vec<Vec<TokenId>> = [&docs[0], &docs[1], &docs[0]]
        .into_iter()
        .map(|d| summarizer.prompt_tokens(d).unwrap())
        .collect();
    let prefix = prompts
        .iter()
        .map(|p| {
            p.iter()
                .zip(&prompts[0])
                .take_while(|(a, b)| a == b)
                .count()
        })
        .min()
        .unwrap();
    assert!(
        prefix >= 10,
        "{file}: the shared prefix is only {prefix} tokens"
    );
    let window = ContextWindow::new(2048).unwrap();
    let mut shared = model.new_cache(window).unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        let (reused, cached) = generate(model, &mut shared, prompt, prefix);
        let (fresh, none) = generate(model, &mut model.new_cache(window).unwrap(), prompt, prefix);
        assert_eq!(none, 0);
        assert_eq!(
            reused, fresh,
            "{file}: prompt {i} differs with a reused cache"
        );
        assert_eq!(
            cached,
            if i == 0 { 0 } else { prefix },
            "{file}: prompt {i}"
        );
    }
}

#[test]
fn smollm2_greedy_tokens_are_the_same_with_a_reused_prefix() {
    reuse_matches_fresh_cache(SMOLLM2);
}

#[test]
fn qwen_greedy_tokens_are_the_same_with_a_reused_prefix() {
    reuse_matches_fresh_cache(QWEN);
}

/// The summarizer reuses the prefix across calls and across the parts of one
/// long document, and its summaries are the ones it makes without reuse.
#[test]
fn summaries_reuse_the_shared_prefix_and_are_unchanged() {
    let model = std::sync::Arc::new(model(SMOLLM2));
    let build = |reuse: bool| {
        Summarizer::builder(model.clone())
            .sampling(SamplingOptions::greedy())
            .max_tokens(16)
            .context(ContextWindow::new(256).unwrap())
            .reuse_prefix(reuse)
            .build()
            .unwrap()
    };
    let (reusing, fresh) = (build(true), build(false));
    let docs = documents();
    let long = docs.join("\n\n");
    for (i, text) in docs.iter().chain([&long]).enumerate() {
        let a = reusing.summarize(text).unwrap();
        let b = fresh.summarize(text).unwrap();
        assert_eq!(a.text, b.text, "document {i}");
        assert_eq!(b.stats.generation.cached_prompt_tokens, 0);
        let cached = a.stats.generation.cached_prompt_tokens;
        if i == docs.len() {
            assert!(a.stats.parts >= 2, "the long document fits in one pass");
            // Every part after the first shares the part prompt's prefix.
            assert!(
                cached >= 10 * (a.stats.parts - 1),
                "{cached} cached over {} parts",
                a.stats.parts
            );
        } else if i > 0 {
            assert!(cached >= 10, "document {i}: {cached} cached");
        }
    }
}
