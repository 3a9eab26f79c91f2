//! The README's first command: the seed request replayed with the default
//! settings and the model that summarizes best here prints a readable
//! summary of the article.

use assert_cmd::Command;

#[test]
fn the_readme_command_summarizes_the_seed_article() {
    let v = abridge_tests::json_stdout(
        Command::cargo_bin("abridge")
            .unwrap()
            .args(["summarize", "--request"])
            .arg(abridge_tests::fixture("seed-request.json"))
            .args(["--model", "qwen2.5-coder:0.5b", "-t", "2", "--json"]),
    );
    let summary = v["summary"].as_str().unwrap();
    eprintln!("{summary}");
    assert!(
        summary.to_lowercase().contains("azure openai"),
        "does not name the service: {summary}"
    );
    let named = abridge_tests::terms_named(summary, &abridge_tests::SEED_PILLARS);
    assert!(
        named.len() >= 2,
        "names {named:?} of the five pillars: {summary}"
    );
    assert!(
        abridge::quality::repeated_sentences(summary).is_empty(),
        "repeats itself: {summary}"
    );
    // Runs of words the article itself repeats ("a high-level design
    // strategy", once per pillar) may come back once per pillar.
    let article =
        abridge::input::SavedRequest::from_file(&abridge_tests::fixture("seed-request.json"))
            .unwrap()
            .article;
    assert!(
        abridge::quality::repeated_ngram_share_beyond(summary, &article, 4) < 0.05,
        "repeats runs of words: {summary}"
    );
    assert!(
        abridge::quality::ends_complete(summary),
        "stops mid-sentence: {summary}"
    );
    // A summary, not the article: it ends well before the token limit.
    let words = abridge::quality::word_count(summary);
    assert!((30..=220).contains(&words), "{words} words: {summary}");
}
