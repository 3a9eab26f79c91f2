//! Helpers shared by abridge's end-to-end tests and benchmarks: where the real
//! model files and the reference fixtures live.
//!
//! Tests never skip when a model is missing: they fail with a message that says
//! how to fetch it.

use std::path::PathBuf;

/// The repository root (where `models.toml` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(name)
}

/// The path of a catalogued model in abridge's model directory; panics with the
/// command that fetches it when it is not there.
pub fn model(file: &str) -> PathBuf {
    let dir = abridge::registry::models_dir();
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "test model {} is missing: run `scripts/fetch-models` (it downloads the checkpoints \
         listed in models.toml into {})",
        path.display(),
        dir.display()
    );
    path
}

/// SmolLM2-135M-Instruct Q4_1: the small llama-architecture model every test uses.
pub fn smollm2() -> PathBuf {
    model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A reference fixture under `tests/fixtures/golden`, parsed.
pub fn golden(name: &str) -> serde_json::Value {
    let path = fixture(&format!("golden/{name}"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of token ids")
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

/// The indices of the five largest values, largest first.
pub fn top5(values: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx.truncate(5);
    idx
}

/// Asserts that two logit vectors of the same prompt lead with the same token
/// and share their top five up to near-ties: chunking a prompt changes the
/// lengths and offsets of the attention reductions, activations quantized to
/// 8 bits before each quantized matmul turn those last-bit differences into
/// logit differences of a few tenths, and candidates that close may swap
/// places, or trade the fifth place with the sixth. A candidate in one top
/// five but not the other must be within [`NEAR_TIE`] of the other's fifth.
pub fn assert_same_top_candidates(one: &[f32], split: &[f32]) {
    let (a, b) = (top5(one), top5(split));
    let show = |t: &[usize], l: &[f32]| -> Vec<String> {
        t.iter().map(|&i| format!("{i}: {:.3}", l[i])).collect()
    };
    let message = format!(
        "top five in one call {:?}, in chunks {:?}",
        show(&a, one),
        show(&b, split)
    );
    eprintln!("{message}");
    assert_eq!(a[0], b[0], "the leading token differs: {message}");
    for (mine, theirs, logits) in [(&a, &b, split), (&b, &a, one)] {
        for &t in mine.iter().filter(|t| !theirs.contains(t)) {
            let gap = logits[theirs[4]] - logits[t];
            assert!(
                gap < NEAR_TIE,
                "token {t} is {gap:.3} below the other fifth: {message}"
            );
        }
    }
}

/// Logit gap under which two candidates count as tied (see
/// [`assert_same_top_candidates`]).
pub const NEAR_TIE: f32 = 0.5;

/// Runs an `abridge` command that must succeed and parses its standard output
/// as one JSON value.
pub fn json_stdout(cmd: &mut assert_cmd::Command) -> serde_json::Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out)))
}

/// Which of `terms` (lower case) a text contains, ignoring case.
pub fn terms_named<'a>(text: &str, terms: &[&'a str]) -> Vec<&'a str> {
    let lower = text.to_lowercase();
    terms
        .iter()
        .copied()
        .filter(|t| lower.contains(t))
        .collect()
}

/// The next-token logits after `tokens`, processed in one call and in calls
/// of `chunk` tokens, each on a fresh 1,024-position cache.
pub fn logits_whole_and_chunked(
    model: &abridge::Model,
    tokens: &[u32],
    chunk: usize,
) -> (Vec<f32>, Vec<f32>) {
    let window = abridge::ContextWindow::new(1024).expect("non-zero");
    let mut whole = model.new_cache(window).unwrap();
    let one = model
        .forward(tokens, &mut whole)
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut parts = model.new_cache(window).unwrap();
    let mut split = Vec::new();
    for c in tokens.chunks(chunk) {
        split = model.forward(c, &mut parts).unwrap().to_vec1().unwrap();
    }
    assert_eq!(parts.len(), tokens.len());
    (one, split)
}
