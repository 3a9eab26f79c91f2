//! What the forward pass and the bench refuse, with real SmolLM2 weights: each
//! refusal is an error that says what was wrong, and the cache keeps what it
//! held. And where a cancelled prompt stops.

use std::ops::ControlFlow;

use abridge::bench::{self, BenchOptions};
use abridge::{
    Cancel, ContextWindow, Event, GenerateOptions, Model, ModelOptions, StopReason, generate,
};

fn model() -> Model {
    Model::load_with(abridge_tests::smollm2(), ModelOptions::new().threads(2)).unwrap()
}

#[test]
fn bad_token_lists_are_errors_and_leave_the_cache_as_it_was() {
    let model = model();
    let mut cache = model.new_cache(ContextWindow::new(16).unwrap()).unwrap();
    model.forward(&[1, 2, 3], &mut cache).unwrap();

    let empty = model.forward(&[], &mut cache).unwrap_err().to_string();
    assert!(empty.contains("empty"), "{empty}");

    let vocab = model.tokenizer().vocab_size() as u32;
    let outside = model
        .forward(&[5, vocab], &mut cache)
        .unwrap_err()
        .to_string();
    assert!(
        outside.contains(&format!("token id {vocab}")) && outside.contains("vocabulary"),
        "{outside}"
    );

    // 3 held + 14 new > 16 positions.
    let full = model.forward(&[7; 14], &mut cache).unwrap_err().to_string();
    assert!(full.contains("17") && full.contains("16"), "{full}");

    assert_eq!(cache.len(), 3, "a refused call changed the cache");
    // And the cache still works: the same next-token logits as a fresh run.
    let next = model
        .forward(&[4], &mut cache)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut fresh = model.new_cache(ContextWindow::new(16).unwrap()).unwrap();
    let want = model
        .forward(&[1, 2, 3, 4], &mut fresh)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(abridge_tests::top5(&next), abridge_tests::top5(&want));
}

#[test]
fn a_context_beyond_the_trained_one_is_refused() {
    let model = model();
    let trained = model.info().trained_context;
    let err = model
        .new_cache(ContextWindow::new(trained + 1).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{} tokens", trained + 1)) && err.contains(&trained.to_string()),
        "{err}"
    );
}

#[test]
fn a_bench_without_repetitions_is_refused() {
    let model = model();
    let options = BenchOptions {
        repetitions: 0,
        ..BenchOptions::default()
    };
    let err = bench::run(&model, &options).unwrap_err().to_string();
    assert!(err.contains("repetition"), "{err}");
}

#[test]
fn a_cancel_during_a_long_prompt_stops_after_the_chunk_in_progress() {
    let model = model();
    let mut cache = model.new_cache(ContextWindow::new(2048).unwrap()).unwrap();
    let prompt: Vec<u32> = (0..1500).map(|i| 100 + i % 1000).collect();
    let cancel = Cancel::new();
    let options = GenerateOptions {
        cancel: cancel.clone(),
        ..GenerateOptions::default()
    };
    let mut progress = Vec::new();
    let generation = generate(&model, &mut cache, &prompt, &options, &mut |event| {
        if let Event::PromptProgress { done, .. } = event {
            progress.push(done);
            // What a Ctrl-C handler does, from wherever it runs.
            cancel.cancel();
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(generation.stop_reason, StopReason::Cancelled);
    assert!(generation.tokens.is_empty());
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert!(progress[0] < prompt.len(), "{progress:?}");
    assert_eq!(cache.len(), progress[0], "work went on past the chunk");
}
