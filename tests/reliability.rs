//! What abridge promises about threads and about text from anywhere (the
//! README's "Reliability" section): one model shared by many threads gives
//! each the result it would get alone, the thread count does not change greedy
//! output, and awkward text (right-to-left scripts, emoji, one 2 MB line,
//! 10 MB) is planned or summarized, never a panic or a hang.

use std::sync::Arc;

use abridge::{ContextWindow, GenerateOptions, Model, SamplingOptions, Summarizer, TokenId};

fn smollm2(threads: usize) -> Arc<Model> {
    Arc::new(Model::load_with(abridge_tests::smollm2(), abridge_tests::options(threads)).unwrap())
}

fn greedy(tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: tokens,
        sampling: SamplingOptions::greedy(),
        ..GenerateOptions::default()
    }
}

/// Greedy tokens for `text` as a summary prompt, on a cache of its own.
fn continue_greedily(model: &Arc<Model>, text: &str, tokens: usize) -> Vec<TokenId> {
    let prompt = Summarizer::builder(model.clone())
        .build()
        .unwrap()
        .prompt_tokens(text)
        .unwrap();
    let mut cache = model.new_cache(ContextWindow::new(1024).unwrap()).unwrap();
    abridge::generate(model, &mut cache, &prompt, &greedy(tokens), &mut |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap()
    .tokens
}

fn texts() -> Vec<String> {
    let article = abridge_tests::seed_article();
    let sentences: Vec<&str> = article.split(". ").filter(|s| s.len() > 40).collect();
    (0..8).map(|i| format!("{}.", sentences[3 * i])).collect()
}

#[test]
fn eight_threads_sharing_one_model_get_what_each_gets_alone() {
    let model = smollm2(2);
    let texts = texts();
    let alone: Vec<Vec<TokenId>> = texts
        .iter()
        .map(|t| continue_greedily(&model, t, 8))
        .collect();
    let together: Vec<Vec<TokenId>> = std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .iter()
            .map(|t| s.spawn(|| continue_greedily(&model, t, 8)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(alone.iter().all(|t| t.len() == 8), "{alone:?}");
    assert_eq!(together, alone);
    // Different texts, different continuations: the comparison has teeth.
    assert!(alone.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn greedy_output_does_not_depend_on_the_thread_count() {
    let text = &texts()[0];
    let one = continue_greedily(&smollm2(1), text, 24);
    let two = continue_greedily(&smollm2(2), text, 24);
    assert_eq!(one.len(), 24);
    assert_eq!(one, two);
}

fn summarizer(context: usize) -> Summarizer {
    Summarizer::builder(smollm2(2))
        .context(ContextWindow::new(context).unwrap())
        .max_tokens(16)
        .build()
        .unwrap()
}

#[test]
fn empty_binary_and_non_utf8_text_get_their_own_errors() {
    let s = summarizer(1024);
    for blank in ["", " \n\t \r\n", "\u{3000}\u{a0}"] {
        assert!(
            matches!(s.summarize(blank), Err(abridge::Error::EmptyText)),
            "{blank:?}"
        );
    }
    assert!(matches!(
        s.summarize("Bees\0dance."),
        Err(abridge::Error::BinaryText { offset: 4 })
    ));
    // Invalid UTF-8 is refused where it is read, with the offset, never
    // replaced: a summary of damaged text would hide the damage.
    assert!(matches!(
        abridge::input::decode(b"Bees \xff dance."),
        Err(abridge::Error::NotUtf8 { offset: 5 })
    ));
    assert!(matches!(
        abridge::input::extract(b"Bees \xc3"),
        Err(abridge::Error::NotUtf8 { offset: 5 })
    ));
}

#[test]
fn right_to_left_and_emoji_text_is_summarized() {
    let text = "النحل يرقص ليشارك مكان الطعام مع الخلية. 🐝💃\n\
                הדבורים רוקדות כדי לספר לכוורת איפה יש מזון. 🌼🍯\n\
                Bees 🐝 dance to tell the hive where the flowers 🌸 are.";
    let summary = summarizer(1024).summarize(text).unwrap();
    assert!(summary.stats.generation.generated_tokens > 0, "{summary:?}");
    assert!(!summary.text.contains('\u{fffd}'), "{:?}", summary.text);
}

/// A plan's parts fit the budget and cover the text, in order.
fn assert_covers(plan: &abridge::Plan, len: usize) {
    assert!(plan.chunks.len() > 1);
    let mut at = 0;
    for c in &plan.chunks {
        assert_eq!(c.range.start, at);
        assert!(c.tokens <= plan.budget, "{c:?} over {}", plan.budget);
        at = c.range.end;
    }
    assert_eq!(at, len);
}

#[test]
fn one_two_megabyte_line_and_a_ten_megabyte_document_are_split_into_parts() {
    let s = summarizer(4096);
    let article = abridge_tests::seed_article();
    // 2 MB of words run together: no space, no newline, no sentence end.
    let run_together: String = article.split(|c: char| !c.is_alphanumeric()).collect();
    let line = run_together.repeat((2 << 20) / run_together.len() + 1);
    let plan = s.plan(&line).unwrap();
    assert_covers(&plan, line.len());
    // Parts are cut near the budget, not character by character.
    assert!(
        plan.chunks
            .iter()
            .all(|c| c.tokens * 10 >= plan.budget * 9 || c.range.end == line.len())
    );

    let mut big = String::with_capacity(10 << 20);
    while big.len() < 10 << 20 {
        big.push_str(&article);
        big.push_str("\n\n");
    }
    let plan = s.plan(&big).unwrap();
    assert_covers(&plan, big.len());
}
