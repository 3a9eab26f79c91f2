//! Documents through the command line: HTML and PDF recognised by content,
//! several files at once, and summaries in a requested form.

use std::io::Write;

use assert_cmd::Command;
use predicates::prelude::*;

fn abridge() -> Command {
    Command::cargo_bin("abridge").unwrap()
}

fn document(name: &str) -> Vec<u8> {
    std::fs::read(abridge_tests::fixture(&format!("documents/{name}"))).unwrap()
}

#[test]
fn a_truncated_pdf_is_a_clear_error() {
    let pdf = document("libtasn1.pdf");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&pdf[..pdf.len() / 3]).unwrap();
    abridge()
        .args(["tokenize", "--model", "smollm2"])
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("PDF"))
        .stderr(predicate::str::contains("panicked").not());
}

/// A scan without a text layer and an encrypted PDF each get an error that
/// names the cause, never an empty summary.
#[test]
fn a_pdf_without_text_or_encrypted_is_a_clear_error() {
    for (file, cause) in [
        ("no-text-layer.pdf", "the PDF has no text layer"),
        (
            "libtasn1-encrypted.pdf",
            "the PDF is encrypted (password-protected)",
        ),
    ] {
        abridge()
            .args(["summarize", "--model", "smollm2"])
            .arg(abridge_tests::fixture(&format!("documents/{file}")))
            .assert()
            .code(1)
            .stderr(predicate::str::contains(cause))
            .stderr(predicate::str::contains("panicked").not());
    }
}

/// Text from anywhere through the CLI: a NUL is refused as binary, a 2 MB
/// line is counted, right-to-left text and emoji are summarized.
#[test]
fn awkward_text_has_a_defined_outcome_in_the_cli() {
    abridge()
        .args(["summarize", "--model", "smollm2", "-"])
        .write_stdin("Bees dance.\0And sing.")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("binary data"));
    let line = "honeybeesdancetosharewherefoodis".repeat((2 << 20) / 32);
    let v = abridge_tests::json_stdout(
        abridge()
            .args(["tokenize", "--model", "smollm2", "--json", "-"])
            .write_stdin(line),
    );
    assert!(v["count"].as_u64().unwrap() > 100_000, "{}", v["count"]);
    abridge()
        .args(["summarize", "--model", "smollm2", "--max-tokens", "12", "-"])
        .write_stdin("النحل يرقص ليشارك مكان الطعام. 🐝💃 הדבורים רוקדות. 🌼🍯")
        .assert()
        .success()
        .stdout(predicate::str::is_empty().not());
}

#[test]
fn the_cli_reads_html_and_pdf_by_content_not_by_name() {
    // Renamed to .txt: the content decides.
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("page.txt");
    std::fs::write(&html, document("users-and-groups.html")).unwrap();
    let v = abridge_tests::json_stdout(
        abridge()
            .args(["tokenize", "--model", "smollm2", "--json"])
            .arg(&html),
    );
    let raw =
        abridge::input::html_text(&String::from_utf8(document("users-and-groups.html")).unwrap());
    let model = abridge::Model::load(abridge_tests::smollm2()).unwrap();
    assert_eq!(
        v["count"].as_u64().unwrap() as usize,
        model.tokenizer().encode(&raw).unwrap().len()
    );
    abridge()
        .args(["tokenize", "--model", "smollm2"])
        .arg(abridge_tests::fixture("documents/libtasn1.pdf"))
        .assert()
        .success()
        .stdout(predicate::function(|s: &str| {
            s.trim().parse::<usize>().unwrap() > 10_000
        }));
}

#[test]
fn several_files_get_one_summary_each_or_one_combined() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.md");
    std::fs::write(
        &a,
        "The river flooded the valley town after three days of rain.",
    )
    .unwrap();
    std::fs::write(
        &b,
        "# Harvest\n\nFarmers reported a record apple harvest this autumn.",
    )
    .unwrap();
    abridge()
        .args(["summarize", "-m", "smollm2", "-t", "2", "-n", "12"])
        .args([&a, &b])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("==> {} <==", a.display())))
        .stdout(predicate::str::contains(format!("==> {} <==", b.display())));
    let out = abridge()
        .args([
            "summarize",
            "-m",
            "smollm2",
            "-t",
            "2",
            "-n",
            "12",
            "--combine",
            "--json",
        ])
        .args([&a, &b])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "one summary for the combined files");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let combined = v["prompt_tokens"].as_u64().unwrap();
    // Alone, each file's prompt holds the template and that file's text; the
    // combined prompt holds the template once and both texts.
    let alone = |f: &std::path::Path| {
        abridge_tests::json_stdout(
            abridge()
                .args(["summarize", "-m", "smollm2", "-t", "2", "-n", "1", "--json"])
                .arg(f),
        )["prompt_tokens"]
            .as_u64()
            .unwrap()
    };
    let (pa, pb) = (alone(&a), alone(&b));
    assert!(
        combined > pa.max(pb) && combined < pa + pb,
        "combined prompt {combined} tokens, alone {pa} and {pb}"
    );
}

#[test]
fn json_format_gives_a_checked_object() {
    let v = abridge_tests::json_stdout(
        abridge()
            .args([
                "summarize",
                "-m",
                "qwen2.5-coder:0.5b",
                "-t",
                "2",
                "--format",
                "json",
            ])
            .arg(abridge_tests::fixture("golden/paragraph.txt")),
    );
    assert!(v["title"].is_string());
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("bee")
    );
    assert!(v["key_points"].as_array().unwrap().len() >= 2);
}

#[test]
fn length_and_words_are_exclusive_and_validated() {
    abridge()
        .args(["summarize", "--length", "short", "--words", "50", "-"])
        .assert()
        .code(2);
    abridge()
        .args(["summarize", "--length", "tiny", "-"])
        .assert()
        .code(2);
}
