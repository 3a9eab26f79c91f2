//! `abridge batch`, run for real on the real SmolLM2 file: records built
//! from the licence and manual texts under `tests/fixtures`, processes
//! interrupted and killed mid-run, shards through flags and through the
//! schedulers' environment.
//!
//! Every run uses one thread and a short summary (`-n 24`): the harness runs
//! two tests at a time, which then share the two cores without contending.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::{Value, json};

/// Exit status of a run in which some records failed.
const SOME_FAILED: i32 = 3;

/// A `batch` command on SmolLM2 with the settings every test shares.
fn batch(args: &[&str]) -> StdCommand {
    let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("abridge"));
    cmd.arg("batch")
        .args(args)
        .args(["-m", &abridge_tests::smollm2().display().to_string()])
        .args(["-t", "1", "-n", "24"])
        // A test run inside a scheduler's job must not be sharded by it.
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_ID");
    cmd
}

fn run(mut cmd: StdCommand) -> Output {
    let out = cmd.output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fixture's text.
fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(abridge_tests::fixture(name)).unwrap()
}

/// Cuts `texts` into pieces of about the given lengths in characters, each
/// ending at a whitespace, taking the texts in turn so that neighbouring
/// pieces come from different documents.
fn pieces(texts: &[String], lengths: impl IntoIterator<Item = usize>) -> Vec<String> {
    let mut cursors = vec![0; texts.len()];
    let mut out = Vec::new();
    for (i, want) in lengths.into_iter().enumerate() {
        let k = i % texts.len();
        let text = &texts[k][cursors[k]..];
        let end = text
            .char_indices()
            .skip(want)
            .find(|(_, c)| c.is_whitespace())
            .map_or(text.len(), |(at, _)| at);
        let piece = text[..end].trim();
        assert!(
            piece.chars().count() + 40 >= want,
            "the fixture texts ran out: {k} at {}",
            cursors[k]
        );
        out.push(piece.to_owned());
        cursors[k] += end;
    }
    out
}

/// The documents of the resume and shard tests: twelve short pieces.
fn short_documents() -> Vec<(String, String)> {
    let texts = [
        "long/MPL-2.0",
        "quality/grep-news.txt",
        "long/Apache-2.0",
        "documents/libtasn1.copyright",
    ]
    .map(fixture_text);
    pieces(&texts, (0..12).map(|i| 150 + i * 37))
        .into_iter()
        .enumerate()
        .map(|(i, text)| (format!("doc-{:02}.txt", i + 1), text))
        .collect()
}

/// Writes the first `count` short documents under `dir/docs` and a JSON
/// Lines file of records pointing at them (`path` relative to the file),
/// and returns the file.
fn write_documents(dir: &Path, count: usize) -> PathBuf {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let mut records = String::new();
    for (name, text) in short_documents().into_iter().take(count) {
        std::fs::write(docs.join(&name), text).unwrap();
        records.push_str(&format!(
            "{}\n",
            json!({"id": name, "path": format!("docs/{name}")})
        ));
    }
    let path = dir.join("records.jsonl");
    std::fs::write(&path, records).unwrap();
    path
}

/// The lines of a batch output, each checked to be a complete JSON object.
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a torn line: {text:?}",
        path.display()
    );
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a complete JSON line ({e}): {l:?}"));
            assert!(v.is_object() && v.get("id").is_some(), "{l}");
            v
        })
        .collect()
}

fn id_of(line: &Value) -> String {
    match &line["id"] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Id → line, checking that no id has two lines.
fn by_id(lines: &[Value]) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for l in lines {
        assert!(
            map.insert(id_of(l), l.clone()).is_none(),
            "{} has two lines",
            id_of(l)
        );
    }
    map
}

/// Id → summary, for lines that all succeeded.
fn summaries(lines: &[Value]) -> BTreeMap<String, String> {
    by_id(lines)
        .into_iter()
        .map(|(id, l)| {
            assert!(l["error"].is_null(), "{id} failed: {l}");
            let s = l["summary"].as_str().unwrap().to_owned();
            assert!(!s.trim().is_empty(), "{id} has an empty summary");
            (id, s)
        })
        .collect()
}

/// An uninterrupted, unsharded run over the short documents: what the other
/// runs must reproduce (decoding is greedy, so it is deterministic).
struct Reference {
    summaries: BTreeMap<String, String>,
    output: String,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let records = write_documents(dir.path(), 12);
        let out = dir.path().join("reference.jsonl");
        let start = Instant::now();
        let run = run(batch(&[
            records.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]));
        eprintln!("reference run: {:.1} s", start.elapsed().as_secs_f64());
        assert!(run.status.success(), "{}", stderr(&run));
        assert!(
            stderr(&run).contains("12 done, 0 skipped, 0 failed"),
            "{}",
            stderr(&run)
        );
        let summaries = summaries(&lines(&out));
        assert_eq!(summaries.len(), 12);
        Reference {
            summaries,
            output: std::fs::read_to_string(&out).unwrap(),
        }
    })
}

/// Waits until `path` holds at least `n` complete lines, while `child` runs.
fn wait_for_lines(child: &mut Child, path: &Path, n: usize) -> usize {
    let start = Instant::now();
    loop {
        let have = std::fs::read(path)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        if have >= n {
            return have;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the batch ended ({status}) with {have} lines, before {n}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no {n} lines after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_batch_of_forty_records_gives_thirty_seven_summaries_and_three_errors_naming_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "long/Apache-2.0",
        "quality/gzip.1.txt",
        "long/GPL-2",
        "documents/libtasn1.copyright",
        "long/MPL-2.0",
        "quality/xdg-shared-mime-info-spec.txt",
        "long/LGPL-2.1",
        "quality/artistic-1.0-perl.txt",
        "long/GFDL-1.3",
        "quality/grep-news.txt",
    ]
    .map(fixture_text);
    // 100 to 1,500 characters, most of them short (the time goes into
    // reading the prompts).
    let lengths: Vec<usize> = (0..37)
        .map(|i| (100.0 * 15f64.powf((i as f64 / 36.0).powi(2))).round() as usize)
        .collect();
    let mut records = String::new();
    for (i, text) in pieces(&texts, lengths).into_iter().enumerate() {
        // Integer ids and string ids both, as callers have them.
        let id = if i % 2 == 0 {
            json!(i)
        } else {
            json!(format!("piece-{i}"))
        };
        records.push_str(&format!("{}\n", json!({"id": id, "text": text})));
    }
    let too_long = fixture_text("long/GPL-3")[..6000].to_owned();
    for extra in [
        json!({"id": "empty", "text": ""}),
        json!({"id": "unreadable", "path": "no-such-document.txt"}),
        json!({"id": "too-long", "text": too_long}),
    ] {
        records.push_str(&format!("{extra}\n"));
    }
    let input = dir.path().join("records.jsonl");
    std::fs::write(&input, records).unwrap();
    let out = dir.path().join("summaries.jsonl");
    let start = Instant::now();
    let first = run(batch(&[
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--strategy",
        "single",
        "--ctx-size",
        "640",
    ]));
    eprintln!("40 records: {:.1} s", start.elapsed().as_secs_f64());
    assert_eq!(first.status.code(), Some(SOME_FAILED), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("37 done, 0 skipped, 3 failed"),
        "{}",
        stderr(&first)
    );

    let written = lines(&out);
    assert_eq!(written.len(), 40);
    let outputs = by_id(&written);
    let (ok, failed): (Vec<_>, Vec<_>) = outputs.iter().partition(|(_, l)| l["error"].is_null());
    assert_eq!(ok.len(), 37);
    for (id, l) in &ok {
        let summary = l["summary"].as_str().unwrap_or_default();
        assert!(!summary.trim().is_empty(), "{id}: {l}");
        assert_eq!(
            l["model"],
            json!(abridge_tests::smollm2().display().to_string())
        );
        assert!(l["generated_tokens"].as_u64().unwrap() <= 24, "{l}");
        assert!(l["prompt_tokens"].as_u64().unwrap() > 20, "{l}");
        assert!(l["stop_reason"].is_string(), "{l}");
    }
    // One record at a time, all asked the same way: every prompt after the
    // first takes the shared prefix (template, system prompt, instruction)
    // from the cache, whether its text starts with a letter, a digit or a
    // bracket.
    let cached: Vec<u64> = ok
        .iter()
        .map(|(_, l)| l["cached_prompt_tokens"].as_u64().unwrap())
        .collect();
    let prefix = cached.iter().copied().max().unwrap();
    assert!(prefix >= 10, "{cached:?}");
    assert_eq!(cached.iter().filter(|&&c| c == 0).count(), 1, "{cached:?}");
    assert!(cached.iter().all(|&c| c == 0 || c == prefix), "{cached:?}");
    // Ids come back in the form they were given.
    assert_eq!(outputs["0"]["id"], json!(0));
    assert_eq!(outputs["piece-1"]["id"], json!("piece-1"));

    let failed: BTreeMap<&str, &str> = failed
        .iter()
        .map(|(id, l)| {
            assert!(l["summary"].is_null(), "{l}");
            (id.as_str(), l["error"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        failed.keys().copied().collect::<Vec<_>>(),
        ["empty", "too-long", "unreadable"]
    );
    assert!(
        failed["empty"].starts_with("line 38: ") && failed["empty"].contains("empty"),
        "{}",
        failed["empty"]
    );
    assert!(
        failed["unreadable"].starts_with("line 39: ")
            && failed["unreadable"].contains("no-such-document.txt")
            && failed["unreadable"].contains("No such file"),
        "{}",
        failed["unreadable"]
    );
    assert!(
        failed["too-long"].starts_with("line 40: ")
            && failed["too-long"].contains("context window is 640 tokens"),
        "{}",
        failed["too-long"]
    );

    // Run again: every record has its line, and the failures still count.
    let again = |extra: &[&str]| {
        let mut cmd = batch(&[input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        cmd.args(["--strategy", "single", "--ctx-size", "640"])
            .args(extra);
        run(cmd)
    };
    let skipped = again(&[]);
    assert_eq!(skipped.status.code(), Some(SOME_FAILED));
    assert!(
        stderr(&skipped).contains(
            "0 done, 40 skipped (3 failed before; --retry-errors tries them again), 0 failed"
        ),
        "{}",
        stderr(&skipped)
    );
    // --retry-errors: the three are tried again, and fail again, after
    // their first lines; the merge keeps one line for each.
    let retried = again(&["--retry-errors"]);
    assert_eq!(retried.status.code(), Some(SOME_FAILED));
    assert!(
        stderr(&retried).contains("0 done, 37 skipped, 3 failed"),
        "{}",
        stderr(&retried)
    );
    let all = lines(&out);
    assert_eq!(all.len(), 43);
    let tail: BTreeSet<String> = all[40..].iter().map(id_of).collect();
    assert_eq!(tail, failed.keys().map(|k| k.to_string()).collect());
    let merged = dir.path().join("merged.jsonl");
    let merge = Command::cargo_bin("abridge")
        .unwrap()
        .args(["batch", "merge"])
        .arg(&out)
        .arg("-o")
        .arg(&merged)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(merge.status.code(), Some(SOME_FAILED), "{}", stderr(&merge));
    assert!(
        stderr(&merge).contains("40 records, 37 summarized, 3 failed, 3 duplicate ids, 0 missing"),
        "{}",
        stderr(&merge)
    );
    assert_eq!(by_id(&lines(&merged)).len(), 40);
}

#[test]
fn an_interrupted_then_killed_batch_resumes_with_every_record_once() {
    // Eight records: enough for two stops and a resume.
    const COUNT: usize = 8;
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let records = write_documents(dir.path(), COUNT);
    let out = dir.path().join("out.jsonl");
    let spawn = || {
        batch(&[records.to_str().unwrap(), "-o", out.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Ctrl-C: the record in progress gets no line, those written stay.
    let mut child = spawn();
    wait_for_lines(&mut child, &out, 2);
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let interrupted = child.wait_with_output().unwrap();
    assert_eq!(
        interrupted.status.code(),
        Some(130),
        "{}",
        stderr(&interrupted)
    );
    assert!(
        stderr(&interrupted).contains("interrupted: the lines already in"),
        "{}",
        stderr(&interrupted)
    );
    let after_interrupt = lines(&out).len();
    assert!(
        (2..COUNT).contains(&after_interrupt),
        "{after_interrupt} lines"
    );

    // SIGKILL: no handler runs; whatever was written stays.
    let mut child = spawn();
    wait_for_lines(&mut child, &out, after_interrupt + 2);
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let complete = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && serde_json::from_str::<Value>(l).is_ok())
        .count();
    assert!(complete < COUNT, "the killed run finished first");

    // The rest, two records at a time: each record exactly once, the same
    // summaries as a run that was never stopped.
    let resumed = run(batch(&[
        records.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--parallel",
        "2",
    ]));
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains(&format!(
            "{} done, {complete} skipped, 0 failed",
            COUNT - complete
        )),
        "{complete} lines were complete: {}",
        stderr(&resumed)
    );
    let expected: BTreeMap<String, String> = reference
        .summaries
        .iter()
        .take(COUNT)
        .map(|(id, s)| (id.clone(), s.clone()))
        .collect();
    assert_eq!(summaries(&lines(&out)), expected);
}

#[test]
fn a_last_line_cut_mid_way_is_cut_off_and_its_record_redone() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let records = write_documents(dir.path(), 12);
    let out = dir.path().join("out.jsonl");
    let full = &reference.output;
    let last_start = full[..full.len() - 1].rfind('\n').unwrap() + 1;
    let cut = last_start + (full.len() - last_start) / 2;
    std::fs::write(&out, &full[..cut]).unwrap();
    let last_id = id_of(&serde_json::from_str(&full[last_start..]).unwrap());

    let run = run(batch(&[
        records.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    assert!(run.status.success(), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        err.contains(&format!(
            "cut off a torn last line ({} bytes)",
            cut - last_start
        )),
        "{err}"
    );
    assert!(err.contains("1 done, 11 skipped, 0 failed"), "{err}");
    let lines = lines(&out);
    assert_eq!(id_of(lines.last().unwrap()), last_id);
    assert_eq!(summaries(&lines), reference.summaries);
}

#[test]
fn four_shards_cover_every_record_once_and_merge_into_the_unsharded_run() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let records = write_documents(dir.path(), 12);
    let docs = dir.path().join("docs");
    let shard_out = |i: usize| dir.path().join(format!("shard-{i}.jsonl"));

    // --shard I/4 over the directory: ids are the file names, as the
    // records file has them.
    let mut seen = BTreeMap::new();
    let mut shard_ids = Vec::new();
    for i in 0..4 {
        let run = run(batch(&[
            docs.to_str().unwrap(),
            "-o",
            shard_out(i).to_str().unwrap(),
            "--shard",
            &format!("{i}/4"),
        ]));
        assert!(run.status.success(), "{}", stderr(&run));
        let ids: BTreeSet<String> = by_id(&lines(&shard_out(i))).into_keys().collect();
        assert!(
            stderr(&run).contains(&format!(
                "{} in other shards (this is shard {i}/4)",
                12 - ids.len()
            )),
            "{}",
            stderr(&run)
        );
        for id in &ids {
            assert!(seen.insert(id.clone(), i).is_none(), "{id} in two shards");
        }
        shard_ids.push(ids);
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        reference.summaries.keys().collect::<Vec<_>>()
    );
    assert!(
        shard_ids.iter().filter(|s| !s.is_empty()).count() >= 2,
        "twelve ids should not all hash to one shard: {shard_ids:?}"
    );

    // The schedulers' environment picks the same records: given a copy of
    // shard I's output, the run finds every one of its records done and
    // summarizes nothing.
    for scheduler in ["kubernetes", "slurm"] {
        for (i, ids) in shard_ids.iter().enumerate() {
            let copy = dir.path().join(format!("{scheduler}-{i}.jsonl"));
            std::fs::copy(shard_out(i), &copy).unwrap();
            let mut cmd = batch(&[records.to_str().unwrap(), "-o", copy.to_str().unwrap()]);
            if scheduler == "kubernetes" {
                cmd.args(["--shard-count", "4"])
                    .env("JOB_COMPLETION_INDEX", i.to_string());
            } else {
                // An array numbered from 1 (`sbatch --array=1-4`).
                cmd.env("SLURM_ARRAY_TASK_ID", (i + 1).to_string())
                    .env("SLURM_ARRAY_TASK_MIN", "1")
                    .env("SLURM_ARRAY_TASK_COUNT", "4");
            }
            let run = run(cmd);
            assert!(run.status.success(), "{scheduler} {i}: {}", stderr(&run));
            let n = ids.len();
            assert!(
                stderr(&run).contains(&format!(
                    "0 done, {n} skipped, 0 failed, {} in other shards (this is shard {i}/4)",
                    12 - n
                )),
                "{scheduler} {i}: {}",
                stderr(&run)
            );
            assert_eq!(
                std::fs::read(&copy).unwrap(),
                std::fs::read(shard_out(i)).unwrap()
            );
        }
    }

    // The merge is the unsharded run, in the records' order.
    let merged = dir.path().join("merged.jsonl");
    let mut merge = Command::cargo_bin("abridge").unwrap();
    merge
        .args(["batch", "merge"])
        .args((0..4).map(shard_out))
        .arg("-o")
        .arg(&merged)
        .arg("--input")
        .arg(&records);
    let out = merge.assert().success().get_output().clone();
    assert!(
        stderr(&out).contains("12 records, 12 summarized, 0 failed, 0 duplicate ids, 0 missing"),
        "{}",
        stderr(&out)
    );
    let merged_lines = lines(&merged);
    assert_eq!(summaries(&merged_lines), reference.summaries);
    let order: Vec<String> = merged_lines.iter().map(id_of).collect();
    let expected: Vec<String> = short_documents().into_iter().map(|(id, _)| id).collect();
    assert_eq!(order, expected);

    // A shard's output left out: its records are listed as missing.
    let (absent, _) = shard_ids
        .iter()
        .enumerate()
        .find(|(_, s)| !s.is_empty())
        .unwrap();
    let mut partial = Command::cargo_bin("abridge").unwrap();
    partial
        .args(["batch", "merge"])
        .args((0..4).filter(|&i| i != absent).map(shard_out))
        .arg("-o")
        .arg(dir.path().join("partial.jsonl"))
        .arg("--input")
        .arg(&records);
    let out = partial.assert().code(SOME_FAILED).get_output().clone();
    let first_missing = shard_ids[absent].iter().next().unwrap();
    assert!(
        stderr(&out).contains(&format!("{} missing", shard_ids[absent].len()))
            && stderr(&out).contains(&format!(
                "missing ids (in the records, in no output): \"{first_missing}\""
            )),
        "{}",
        stderr(&out)
    );
}

/// Records with their own system prompt, instruction, length or format are
/// asked their own way (their prompts carry what they add), and a setting
/// that cannot be used is that record's error, naming its line.
#[test]
fn records_with_their_own_settings_are_asked_their_own_way() {
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = short_documents().swap_remove(0);
    let input = dir.path().join("records.jsonl");
    let records = [
        json!({"id": "plain", "text": text}),
        json!({"id": "system", "text": text,
               "system": "You are a careful editor who reads every word of a document before writing."}),
        json!({"id": "prompt", "text": text,
               "prompt": "List the decisions this text records, one per line, and nothing else."}),
        json!({"id": "short", "text": text, "length": "short"}),
        json!({"id": "bullets", "text": text, "format": "bullets"}),
        json!({"id": "bad", "text": text, "length": "huge"}),
    ];
    let jsonl: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&input, jsonl).unwrap();
    let out = dir.path().join("out.jsonl");
    let done = run(batch(&[
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    assert_eq!(done.status.code(), Some(SOME_FAILED), "{}", stderr(&done));
    let lines = by_id(&lines(&out));
    let prompt = |id: &str| lines[id]["prompt_tokens"].as_u64().unwrap();
    for id in ["system", "prompt", "short", "bullets"] {
        assert!(
            prompt(id) > prompt("plain"),
            "{id}: {} prompt tokens, plain {}",
            prompt(id),
            prompt("plain")
        );
        assert!(lines[id]["error"].is_null(), "{}", lines[id]);
    }
    let bad = lines["bad"]["error"].as_str().unwrap();
    assert!(bad.starts_with("line 6: ") && bad.contains("huge"), "{bad}");
}

#[test]
fn shard_and_output_mistakes_are_refused_before_the_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_documents(dir.path(), 12);
    let out = dir.path().join("out.jsonl");
    let refuse = |extra: &[&str], env: &[(&str, &str)], says: &str| {
        let mut cmd = Command::cargo_bin("abridge").unwrap();
        cmd.args(["batch", "-m", "no-such-model"])
            .arg(&records)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .envs(env.iter().copied());
        cmd.assert()
            .failure()
            .stderr(predicates::str::contains(says));
    };
    refuse(&["--shard", "4/4"], &[], "out of range for 4 shards");
    refuse(&["--shard", "x"], &[], "INDEX/COUNT");
    refuse(
        &["--parallel", "0"],
        &[],
        "invalid value '0' for '--parallel <N>'",
    );
    refuse(
        &[],
        &[("JOB_COMPLETION_INDEX", "1")],
        "give the shard count",
    );
    refuse(
        &["--shard-count", "4"],
        &[],
        "neither JOB_COMPLETION_INDEX nor",
    );
    // An output file with a damaged line before its last is not appended to.
    std::fs::write(&out, "{\"id\":\"a\"}\nnot json\n{\"id\":\"b\"}\n").unwrap();
    refuse(&[], &[], "line 2: not JSON");
}
