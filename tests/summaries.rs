//! What the summaries say: the best small model available offline, on the
//! seed request, must produce a summary a reader would recognise.

use assert_cmd::Command;

#[test]
fn qwen_summarizes_the_seed_article_sensibly() {
    let v = abridge_tests::json_stdout(
        Command::cargo_bin("abridge")
            .unwrap()
            .args(["summarize", "--request"])
            .arg(abridge_tests::fixture("seed-request.json"))
            .args([
                "--model",
                "qwen2.5-coder:0.5b-instruct-q4_K_M",
                "-t",
                "2",
                "-n",
                "200",
                "--json",
            ]),
    );
    let summary = v["summary"].as_str().unwrap();
    let lower = summary.to_lowercase();
    assert!(
        lower.contains("azure openai"),
        "does not name the service: {summary}"
    );
    let named = abridge_tests::terms_named(
        summary,
        &[
            "reliab",
            "secur",
            "cost",
            "operational excellence",
            "performance",
        ],
    );
    assert!(
        named.len() >= 2,
        "names {named:?} of the five pillars: {summary}"
    );
    // It is a summary, not the article: far shorter, and it ends when the model is done.
    assert!(summary.len() < 2000, "{} characters", summary.len());
}
