//! Texts longer than the context window: split into parts that fit, every
//! part of the input read, and the part summaries combined.

use std::ops::ControlFlow;

use abridge::input::SavedRequest;
use abridge::{ContextWindow, Event, Model, Stage, Strategy, Summarizer};

/// The seed article followed by six licence texts: over 30,000 tokens.
fn long_document() -> String {
    let seed = SavedRequest::from_file(&abridge_tests::fixture("seed-request.json")).unwrap();
    let mut doc = seed.article;
    for name in [
        "GPL-3",
        "Apache-2.0",
        "LGPL-2.1",
        "MPL-2.0",
        "GPL-2",
        "GFDL-1.3",
    ] {
        let path = abridge_tests::fixture(&format!("long/{name}"));
        doc.push_str("\n\n");
        doc.push_str(&std::fs::read_to_string(path).unwrap());
    }
    doc
}

#[test]
fn a_30000_token_document_is_summarized_by_map_reduce_in_a_2048_token_context() {
    let model = Model::load_with(abridge_tests::smollm2(), abridge_tests::options(2)).unwrap();
    let doc = long_document();
    let total = model.tokenizer().encode(&doc).unwrap().len();
    assert!(total >= 30_000, "the document has only {total} tokens");
    let summarizer = Summarizer::builder(model)
        .context(ContextWindow::new(2048).unwrap())
        .max_tokens(40)
        .build()
        .unwrap();

    // One pass cannot hold it, and says so: it is longer than the model's
    // whole trained context, not only than this window.
    let err = summarizer.prompt_tokens(&doc).unwrap_err();
    assert!(
        matches!(err, abridge::Error::PromptTooLong { needed, trained: 8192, .. } if needed >= total),
        "{err}"
    );

    // Every part fits its budget, and the parts cover the text exactly.
    let plan = summarizer.plan(&doc).unwrap();
    assert!(
        plan.budget > 1500 && plan.budget < 2048,
        "budget {}",
        plan.budget
    );
    let mut at = 0;
    for c in &plan.chunks {
        assert_eq!(c.range.start, at, "a gap or overlap before byte {at}");
        assert!(c.tokens <= plan.budget, "a part of {} tokens", c.tokens);
        at = c.range.end;
    }
    assert_eq!(at, doc.len(), "the end of the text is not read");
    assert!(plan.chunks.len() >= 15, "{} parts", plan.chunks.len());

    let mut parts_seen = 0;
    let mut combined = false;
    let mut streamed = String::new();
    let summary = summarizer
        .summarize_with(&doc, |event| {
            match event {
                Event::Stage {
                    stage: Stage::Part,
                    index,
                    count,
                } => {
                    assert_eq!(index, parts_seen + 1);
                    assert!(index <= count);
                    parts_seen += 1;
                }
                Event::Stage {
                    stage: Stage::Combine,
                    ..
                } => combined = true,
                Event::Text(t) => {
                    assert!(combined, "part summaries must not be streamed");
                    streamed.push_str(t);
                }
                Event::PromptProgress { .. } => {}
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(combined, "the part summaries were never combined");
    assert_eq!(summary.stats.parts, parts_seen);
    assert!(parts_seen >= plan.chunks.len());
    assert!(!summary.text.is_empty());
    assert_eq!(summary.text, streamed.trim());
    assert!(
        summary.stats.generation.prompt_tokens >= total,
        "not every token was read"
    );
}

#[test]
fn single_strategy_refuses_a_text_that_does_not_fit() {
    let model = Model::load_with(abridge_tests::smollm2(), abridge_tests::options(2)).unwrap();
    let summarizer = Summarizer::builder(model)
        .context(ContextWindow::new(1024).unwrap())
        .strategy(Strategy::Single)
        .build()
        .unwrap();
    let err = summarizer.summarize(&long_document()).unwrap_err();
    assert!(
        matches!(err, abridge::Error::PromptTooLong { needed, .. } if needed >= 30_000),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("tokens") && message.contains("8192"),
        "{message}"
    );
}
