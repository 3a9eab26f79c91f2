//! `abridge models …` and finding models without a network, for real: pulls
//! over HTTP/1.1 from a small server on 127.0.0.1 that serves the SmolLM2 file
//! (and can cut a response off or fail), an Ollama store and a Hugging Face
//! cache laid out as those tools lay them out, and the real model files.
//!
//! Every command gets its environment through assert_cmd: abridge's model
//! directory, the Hugging Face cache, Ollama's store and the user config all
//! point into a temporary sandbox unless a test says otherwise.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

/// The repository and file the test server serves.
const REPO: &str = "test/repo";
const SERVED: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The name the model gets in abridge's directory in these tests.
const LOCAL: &str = "smollm2-test.gguf";
const NAME: &str = "smollm2:135m-test";
const TEXT: &str = "The city council met on Tuesday to discuss the new library. \
    After a long debate, members voted seven to two to fund the building, \
    which will open in the spring of next year with a reading room and a café.";

fn smollm2_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(abridge_tests::smollm2()).unwrap())
}

/// The shipped catalogue's SmolLM2 entry: the real size and sha256.
fn smollm2_entry() -> abridge::registry::ModelEntry {
    abridge::registry::Catalogue::shipped()
        .find("smollm2")
        .unwrap()
        .clone()
}

/// What the server does with the next request for the model file.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// The file (or the asked range of it).
    Full,
    /// Headers for the whole answer, then only this many body bytes, then close.
    CutAfter(usize),
    /// This many body bytes, then nothing until [`Server::release`], then the
    /// rest: a download caught mid-way for as long as a test needs.
    Hold(usize),
    /// This status and an empty body.
    Status(u16),
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

/// A tiny HTTP/1.1 server: `GET /{REPO}/resolve/main/{SERVED}` answers with
/// the SmolLM2 bytes (honouring `Range: bytes=N-` with 206), anything else 404.
/// Replies for the model file follow `plan`, then `Full`.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Gate>,
}

/// Where `Reply::Hold` answers wait: how many are holding, and whether the
/// test has let them go on.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Counts this answer as holding and blocks until released.
    fn hold(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }
}

impl Server {
    fn start(plan: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Mutex::new(VecDeque::from(plan)));
        let gate = Arc::new(Gate::default());
        let body = smollm2_bytes();
        {
            let (seen, gate) = (seen.clone(), gate.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let (seen, plan, gate) = (seen.clone(), plan.clone(), gate.clone());
                    std::thread::spawn(move || serve(stream, body, &seen, &plan, &gate));
                }
            });
        }
        Self { port, seen, gate }
    }

    /// Waits until an answer has sent its first bytes and holds.
    fn wait_for_hold(&self) {
        let state = self.gate.state.lock().unwrap();
        let (state, _) = self
            .gate
            .changed
            .wait_timeout_while(state, Duration::from_secs(30), |s| s.0 == 0)
            .unwrap();
        assert!(state.0 > 0, "no download started");
    }

    /// Lets held answers send the rest.
    fn release(&self) {
        self.gate.state.lock().unwrap().1 = true;
        self.gate.changed.notify_all();
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, file: &str) -> String {
        format!("{}/{REPO}/resolve/main/{file}", self.endpoint())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    body: &[u8],
    seen: &Mutex<Vec<Seen>>,
    plan: &Mutex<VecDeque<Reply>>,
    gate: &Gate,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_owned()),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
        authorization,
    });
    let status_only = |stream: &mut TcpStream, status: u16, reason: &str| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    if path != format!("/{REPO}/resolve/main/{SERVED}") {
        return status_only(&mut stream, 404, "Not Found");
    }
    let reply = plan.lock().unwrap().pop_front().unwrap_or(Reply::Full);
    let cut = match reply {
        Reply::Status(status) => {
            let reason = if status == 500 {
                "Internal Server Error"
            } else {
                "Error"
            };
            return status_only(&mut stream, status, reason);
        }
        Reply::Full | Reply::Hold(_) => None,
        Reply::CutAfter(n) => Some(n),
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .map(|n| n.parse::<usize>().unwrap());
    let head = match start {
        Some(s) if s >= body.len() => {
            return status_only(&mut stream, 416, "Range Not Satisfiable");
        }
        Some(s) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {s}-{}/{}\r\nConnection: close\r\n\r\n",
            body.len() - s,
            body.len() - 1,
            body.len()
        ),
        None => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
    };
    let rest = &body[start.unwrap_or(0)..];
    let send = &rest[..cut.unwrap_or(rest.len()).min(rest.len())];
    let (first, second) = match reply {
        Reply::Hold(n) => send.split_at(n.min(send.len())),
        _ => (send, &[][..]),
    };
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(first))
        .and_then(|()| stream.flush());
    if sent.is_ok() && matches!(reply, Reply::Hold(_)) {
        gate.hold();
        let _ = stream.write_all(second).and_then(|()| stream.flush());
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Temporary places for everything abridge looks at.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["models", "hf", "ollama", "config"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn models(&self) -> PathBuf {
        self.path("models")
    }

    /// The files in abridge's model directory.
    /// A refused pull leaves nothing in the model directory.
    fn assert_no_model_files(&self) {
        let files = self.model_files();
        assert!(files.is_empty(), "left behind: {files:?}");
    }

    fn model_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.models())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `abridge` with every model place inside the sandbox.
    fn abridge(&self) -> Command {
        let mut cmd = self.abridge_with_real_models();
        cmd.env("ABRIDGE_MODELS", self.models());
        cmd
    }

    /// `abridge` with abridge's real model directory, and the other places in
    /// the sandbox.
    fn abridge_with_real_models(&self) -> Command {
        Command::from_std(self.process())
    }

    /// A running `abridge models pull` of the test model, its stderr piped.
    fn spawn_pull(&self, server: &Server, catalogue: &Path) -> Child {
        self.process()
            .env("ABRIDGE_MODELS", self.models())
            .env("HF_ENDPOINT", server.endpoint())
            .args(["models", "pull", NAME, "--models-file"])
            .arg(catalogue)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The command under every test's `abridge`: places in the sandbox, no
    /// token, no proxy.
    fn process(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("abridge"));
        cmd.env("HF_HUB_CACHE", self.path("hf"))
            .env("OLLAMA_MODELS", self.path("ollama"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env_remove("HF_TOKEN")
            .env_remove("ABRIDGE_MODEL");
        for proxy in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
            cmd.env_remove(proxy);
        }
        cmd
    }

    /// A catalogue file naming the served file as `NAME`.
    fn catalogue(&self, sha256: &str, size: u64, served: &str) -> PathBuf {
        let path = self.path("catalogue.toml");
        std::fs::write(
            &path,
            format!(
                r#"# A test catalogue: the SmolLM2 file, served by the test's HTTP server.
[[model]]
name = "{NAME}"
aliases = ["smollm2-test"]
file = "{LOCAL}"
arch = "llama"
size = {size}
sha256 = "{sha256}"
context = 8192
description = "SmolLM2-135M-Instruct served on loopback"
huggingface = {{ repo = "{REPO}", file = "{served}", revision = "main" }}
"#
            ),
        )
        .unwrap();
        path
    }

    fn right_catalogue(&self) -> PathBuf {
        let e = smollm2_entry();
        self.catalogue(&e.sha256, e.size, SERVED)
    }

    fn pull(&self, server: &Server, catalogue: &Path) -> assert_cmd::assert::Assert {
        self.abridge()
            .env("HF_ENDPOINT", server.endpoint())
            .args(["models", "pull", NAME, "--models-file"])
            .arg(catalogue)
            .assert()
    }
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// The pulled file is the served file, byte for byte.
fn assert_pulled(sandbox: &Sandbox) {
    assert_eq!(sandbox.model_files(), [LOCAL]);
    let got = std::fs::read(sandbox.models().join(LOCAL)).unwrap();
    assert!(
        got == smollm2_bytes(),
        "the pulled file differs from the served one"
    );
}

#[test]
fn pull_downloads_verifies_and_moves_the_file_into_place() {
    let sandbox = Sandbox::new();
    let server = Server::start(vec![]);
    let catalogue = sandbox.right_catalogue();
    let out = sandbox
        .abridge()
        .env("HF_ENDPOINT", server.endpoint())
        .env("HF_TOKEN", "hf_test_token")
        .args(["models", "pull", NAME, "--models-file"])
        .arg(&catalogue)
        .assert()
        .success();
    assert!(
        stdout(&out).contains("size and sha256 verified"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&server.url(SERVED)),
        "{}",
        stderr(&out)
    );
    assert_pulled(&sandbox);
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, format!("/{REPO}/resolve/main/{SERVED}"));
    assert_eq!(seen[0].range, None);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer hf_test_token")
    );

    // A second pull finds the file and asks nothing.
    let again = sandbox.pull(&server, &catalogue).success();
    assert!(stdout(&again).contains("already at"), "{}", stdout(&again));
    assert_eq!(server.seen().len(), 1);

    // It resolves, by name and alias, to abridge's directory.
    let path = sandbox
        .abridge()
        .args(["models", "path", "smollm2-test", "--models-file"])
        .arg(&catalogue)
        .assert()
        .success();
    assert_eq!(
        stdout(&path).trim(),
        sandbox.models().join(LOCAL).display().to_string()
    );

    // `rm` deletes it.
    sandbox
        .abridge()
        .args(["models", "rm", NAME, "--models-file"])
        .arg(&catalogue)
        .assert()
        .success()
        .stdout(predicate::str::contains("removed"));
    assert!(sandbox.model_files().is_empty());
}

#[test]
fn a_pull_cut_off_halfway_resumes_with_a_range_request() {
    let sandbox = Sandbox::new();
    let half = smollm2_bytes().len() / 2;
    let server = Server::start(vec![Reply::CutAfter(half)]);
    sandbox.pull(&server, &sandbox.right_catalogue()).success();
    assert_pulled(&sandbox);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range, Some(format!("bytes={half}-")));
}

#[test]
fn an_interrupted_pull_is_resumed_by_the_next_run() {
    let sandbox = Sandbox::new();
    let half = smollm2_bytes().len() / 2;
    // The connection drops halfway, then the server fails: the run gives up
    // and keeps what it has.
    let server = Server::start(vec![Reply::CutAfter(half), Reply::Status(500)]);
    let catalogue = sandbox.right_catalogue();
    let failed = sandbox.pull(&server, &catalogue).failure();
    assert!(
        stderr(&failed).contains("HTTP 500") && stderr(&failed).contains(&server.url(SERVED)),
        "{}",
        stderr(&failed)
    );
    let partial = format!("{LOCAL}.partial");
    assert_eq!(sandbox.model_files(), std::slice::from_ref(&partial));
    assert_eq!(
        std::fs::metadata(sandbox.models().join(&partial))
            .unwrap()
            .len(),
        half as u64
    );

    // The next run asks only for the rest.
    let resumed = sandbox.pull(&server, &catalogue).success();
    assert!(
        stdout(&resumed).contains(&format!("resumed at byte {half}")),
        "{}",
        stdout(&resumed)
    );
    assert_pulled(&sandbox);
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[1].range, Some(format!("bytes={half}-")));
    assert_eq!(seen[2].range, Some(format!("bytes={half}-")));
}

/// Waits until `path` holds `len` bytes.
fn wait_for_size(path: &Path, len: u64) {
    let start = Instant::now();
    while std::fs::metadata(path).map_or(0, |m| m.len()) < len {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never reached {len} bytes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_pull_is_resumed_by_the_next_run() {
    let sandbox = Sandbox::new();
    let held = 3 << 20;
    let server = Server::start(vec![Reply::Hold(held)]);
    let catalogue = sandbox.right_catalogue();
    let mut first = sandbox.spawn_pull(&server, &catalogue);
    server.wait_for_hold();
    let partial = sandbox.models().join(format!("{LOCAL}.partial"));
    wait_for_size(&partial, held as u64);
    // SIGKILL: nothing of the pull's own runs, as when a machine goes down.
    first.kill().unwrap();
    assert!(!first.wait().unwrap().success());
    server.release();
    assert_eq!(
        std::fs::metadata(&partial).unwrap().len(),
        held as u64,
        "the partial file keeps what arrived"
    );

    // The lock the killed run held was released with it: the next run does
    // not wait, and asks only for the rest.
    let resumed = sandbox.pull(&server, &catalogue).success();
    assert!(
        stdout(&resumed).contains(&format!("resumed at byte {held}")),
        "{}",
        stdout(&resumed)
    );
    assert!(
        !stderr(&resumed).contains("waiting"),
        "{}",
        stderr(&resumed)
    );
    assert_pulled(&sandbox);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range, Some(format!("bytes={held}-")));
}

#[test]
fn a_second_pull_of_the_same_model_waits_for_the_first() {
    let sandbox = Sandbox::new();
    let server = Server::start(vec![Reply::Hold(1 << 20)]);
    let catalogue = sandbox.right_catalogue();
    let first = sandbox.spawn_pull(&server, &catalogue);
    server.wait_for_hold();
    let mut second = sandbox.spawn_pull(&server, &catalogue);
    // Read the second's stderr until it says it waits; a second pull that did
    // not wait would download on its own, finish and close stderr instead.
    let (lines, said_line) = std::sync::mpsc::channel();
    let stderr = second.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut said = String::new();
    while !said.contains("waiting") {
        match said_line.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => said.push_str(&(line + "\n")),
            Err(_) => break,
        }
    }
    let lock = sandbox.models().join(format!("{LOCAL}.lock"));
    assert!(
        said.contains(&format!(
            "waiting for another abridge to finish pulling {NAME} (it holds {})",
            lock.display()
        )),
        "{said}"
    );
    server.release();

    let first = first.wait_with_output().unwrap();
    let first_out = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first_out}");
    assert!(
        first_out.contains("size and sha256 verified"),
        "{first_out}"
    );
    let second = second.wait_with_output().unwrap();
    let second_out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{second_out}");
    assert!(second_out.contains("already at"), "{second_out}");
    // One download, one intact file, and no lock file left behind.
    assert_eq!(server.seen().len(), 1, "{:?}", server.seen());
    assert_pulled(&sandbox);
}

#[test]
fn a_pull_that_stops_making_progress_gives_up_and_keeps_its_bytes() {
    let sandbox = Sandbox::new();
    let half = smollm2_bytes().len() / 2;
    let mut plan = vec![Reply::CutAfter(half)];
    plan.extend([Reply::CutAfter(0); 3]);
    let server = Server::start(plan);
    let catalogue = sandbox.right_catalogue();
    let failed = sandbox.pull(&server, &catalogue).failure();
    let err = stderr(&failed);
    assert!(
        err.contains(&format!(
            "stopped at {half} of {} bytes",
            smollm2_bytes().len()
        )) && err.contains(&format!(
            "run `abridge models pull {NAME} --models-file {}` again to resume",
            catalogue.display()
        )),
        "{err}"
    );
    // One request, then the three retries that brought nothing.
    assert_eq!(server.seen().len(), 4);
    assert_eq!(sandbox.model_files(), [format!("{LOCAL}.partial")]);
    sandbox.pull(&server, &catalogue).success();
    assert_pulled(&sandbox);
}

#[test]
fn a_download_that_does_not_match_its_sha256_is_rejected_and_deleted() {
    let sandbox = Sandbox::new();
    let server = Server::start(vec![]);
    let real = smollm2_entry();
    let wrong = "0".repeat(64);
    let failed = sandbox
        .pull(&server, &sandbox.catalogue(&wrong, real.size, SERVED))
        .failure();
    let err = stderr(&failed);
    assert!(
        err.contains(&format!("has sha256 {}", real.sha256))
            && err.contains(&format!("expects {wrong}")),
        "{err}"
    );
    sandbox.assert_no_model_files();

    // A size that does not match is caught before anything is written.
    let failed = sandbox
        .pull(
            &server,
            &sandbox.catalogue(&real.sha256, real.size - 1, SERVED),
        )
        .failure();
    let err = stderr(&failed);
    assert!(
        err.contains(&format!("serves {} bytes", real.size))
            && err.contains(&format!("has {}", real.size - 1)),
        "{err}"
    );
    sandbox.assert_no_model_files();
}

#[test]
fn http_errors_name_the_url_and_the_status() {
    let sandbox = Sandbox::new();
    let server = Server::start(vec![Reply::Status(500)]);
    let real = smollm2_entry();
    let failed = sandbox
        .pull(
            &server,
            &sandbox.catalogue(&real.sha256, real.size, "missing.gguf"),
        )
        .failure();
    let err = stderr(&failed);
    assert!(
        err.contains(&format!(
            "GET {} failed: HTTP 404 Not Found",
            server.url("missing.gguf")
        )),
        "{err}"
    );
    sandbox.assert_no_model_files();

    let failed = sandbox.pull(&server, &sandbox.right_catalogue()).failure();
    let err = stderr(&failed);
    assert!(
        err.contains(&format!(
            "GET {} failed: HTTP 500 Internal Server Error",
            server.url(SERVED)
        )),
        "{err}"
    );
    sandbox.assert_no_model_files();
}

#[test]
fn summarize_pulls_only_when_asked() {
    let sandbox = Sandbox::new();
    let server = Server::start(vec![]);
    let catalogue = sandbox.right_catalogue();
    let summarize = |pull: bool| {
        let mut cmd = sandbox.abridge();
        cmd.env("HF_ENDPOINT", server.endpoint())
            .args([
                "summarize",
                "-m",
                NAME,
                "-n",
                "8",
                "-t",
                "2",
                "--models-file",
            ])
            .arg(&catalogue);
        if pull {
            cmd.arg("--pull");
        }
        cmd.arg("-").write_stdin(TEXT).assert()
    };
    let failed = summarize(false).failure();
    let err = stderr(&failed);
    assert!(
        err.contains(&format!(
            "abridge models pull {NAME} --models-file {}",
            catalogue.display()
        )),
        "{err}"
    );
    assert!(server.seen().is_empty(), "no --pull, no network");

    let ok = summarize(true).success();
    assert!(!stdout(&ok).trim().is_empty());
    assert_pulled(&sandbox);
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn a_missing_model_error_lists_every_place_and_the_pull_command() {
    let sandbox = Sandbox::new();
    let catalogue = sandbox.right_catalogue();
    let failed = sandbox
        .abridge()
        .args(["models", "path", NAME, "--models-file"])
        .arg(&catalogue)
        .assert()
        .failure();
    let err = stderr(&failed);
    for place in [
        sandbox.models().join(LOCAL),
        sandbox.path("hf").join("models--test--repo"),
        sandbox
            .path("ollama")
            .join("manifests/registry.ollama.ai/library/smollm2/135m-test"),
    ] {
        assert!(err.contains(&place.display().to_string()), "{err}");
    }
    assert!(
        err.contains(&format!(
            "abridge models pull {NAME} --models-file {}",
            catalogue.display()
        )),
        "{err}"
    );
}

/// Links (or copies, across file systems) the SmolLM2 file to `to`.
fn place_smollm2(to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let from = abridge_tests::smollm2();
    if std::fs::hard_link(&from, to).is_err() {
        std::fs::copy(&from, to).unwrap();
    }
}

/// An Ollama store as `ollama pull` leaves it: a manifest per tag, blobs named
/// by digest.
fn ollama_store(root: &Path, model: &str, tag: &str) -> PathBuf {
    let entry = smollm2_entry();
    let blob = root.join("blobs").join(format!("sha256-{}", entry.sha256));
    if !blob.exists() {
        place_smollm2(&blob);
    }
    let config = br#"{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"134.52M","file_type":"Q4_1","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_hex = "0".repeat(63) + "1";
    std::fs::write(
        root.join("blobs").join(format!("sha256-{config_hex}")),
        config,
    )
    .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": format!("sha256:{config_hex}"),
            "size": config.len(),
        },
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": format!("sha256:{}", entry.sha256),
                "size": entry.size,
            },
        ],
    });
    let path = root
        .join("manifests/registry.ollama.ai/library")
        .join(model)
        .join(tag);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    blob
}

#[test]
fn an_ollama_model_resolves_by_tag_and_summarizes() {
    let sandbox = Sandbox::new();
    let blob = ollama_store(&sandbox.path("ollama"), "smollm2", "135m-test");
    let path = sandbox
        .abridge()
        .args(["models", "path", NAME])
        .assert()
        .success();
    assert_eq!(stdout(&path).trim(), blob.display().to_string());

    let out = sandbox
        .abridge()
        .args(["summarize", "--model", NAME, "-n", "8", "-t", "2", "-"])
        .write_stdin(TEXT)
        .assert()
        .success();
    assert!(!stdout(&out).trim().is_empty(), "{}", stderr(&out));

    // Listed, with the architecture read from the file.
    let list = sandbox
        .abridge()
        .args(["models", "list", "--json"])
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&list.get_output().stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == NAME)
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(row["location"], "ollama");
    assert_eq!(row["arch"], "llama");
    assert_eq!(row["catalogued"], false);

    // A catalogued model is found in Ollama's store under its canonical tag,
    // and `rm` leaves Ollama's files alone.
    ollama_store(&sandbox.path("ollama"), "smollm2", "135m-instruct-q4_1");
    let path = sandbox
        .abridge()
        .args(["models", "path", "smollm2"])
        .assert()
        .success();
    assert_eq!(stdout(&path).trim(), blob.display().to_string());
    sandbox
        .abridge()
        .args(["models", "rm", "smollm2"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("the Ollama store"));
    assert!(blob.is_file());
}

#[test]
fn a_hugging_face_cache_resolves_with_no_network() {
    let sandbox = Sandbox::new();
    let entry = smollm2_entry();
    let commit = "8e7c3f6d2b1a09f8e7d6c5b4a3928170f6e5d4c3";
    let repo = sandbox.path("hf").join("models--test--repo");
    place_smollm2(&repo.join("blobs").join(&entry.sha256));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::os::unix::fs::symlink(
        Path::new("../../blobs").join(&entry.sha256),
        snapshot.join(SERVED),
    )
    .unwrap();
    let catalogue = sandbox.right_catalogue();
    let path = sandbox
        .abridge()
        .args(["models", "path", NAME, "--models-file"])
        .arg(&catalogue)
        .assert()
        .success();
    assert_eq!(
        stdout(&path).trim(),
        snapshot.join(SERVED).display().to_string()
    );

    // The cache is found through HF_HOME too (HF_HOME/hub: the sandbox's `hf`
    // reached as `hub`), and the file reads as a model.
    std::os::unix::fs::symlink(sandbox.path("hf"), sandbox.path("hub")).unwrap();
    let show = sandbox
        .abridge()
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", sandbox.dir.path())
        .args(["models", "show", NAME, "--json", "--models-file"])
        .arg(&catalogue)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&show.get_output().stdout).unwrap();
    assert_eq!(v["location"], "huggingface");
    assert_eq!(v["architecture"], "llama");
    assert!(sandbox.model_files().is_empty(), "nothing was downloaded");
}

#[test]
fn list_shows_the_real_models_present_and_where() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .abridge_with_real_models()
        .args(["models", "list"])
        .assert()
        .success();
    let text = stdout(&out);
    let smollm2 = abridge_tests::smollm2();
    let line = text
        .lines()
        .find(|l| l.starts_with("smollm2:135m-instruct-q4_1 "))
        .unwrap_or_else(|| panic!("{text}"));
    for part in [
        "93.8 MiB",
        "llama",
        "yes",
        "abridge",
        &smollm2.display().to_string(),
    ] {
        assert!(line.contains(part), "{line}");
    }
    assert!(text.contains("mistral:7b-instruct-v0.2-q4_K_M"), "{text}");

    let out = sandbox
        .abridge_with_real_models()
        .args(["models", "list", "--json"])
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "smollm2:135m-instruct-q4_1")
        .unwrap();
    assert_eq!(row["present"], true);
    assert_eq!(row["size"], 98_362_432);
    assert_eq!(row["path"], smollm2.display().to_string());
    let default = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["default"] == true);
    assert_eq!(default.unwrap()["name"], "mistral:7b-instruct-v0.2-q4_K_M");
}

#[test]
fn show_reads_the_real_file() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .abridge_with_real_models()
        .args(["models", "show", "smollm2"])
        .assert()
        .success();
    let text = stdout(&out);
    for line in [
        "name          smollm2:135m-instruct-q4_1",
        "architecture  llama",
        "parameters    134.5M (134515008)",
        "context       8192 tokens",
        "tokenizer     byte-level BPE (gpt2), 49152 tokens",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
    assert!(
        text.contains("quantization  Q4_1; tensors: Q4_1 ×210"),
        "{text}"
    );
    assert!(text.contains("chat template (first"), "{text}");
    assert!(text.contains("<|im_start|>"), "{text}");

    let out = sandbox
        .abridge_with_real_models()
        .args(["models", "show", "--json"])
        .arg(abridge_tests::smollm2())
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["location"], "path");
    assert_eq!(v["parameters"], 134_515_008);
    assert_eq!(v["file_type"], 3);
    assert_eq!(v["quantization"], "Q4_1");
    assert_eq!(v["context_length"], 8192);
    assert_eq!(v["tokenizer"], "gpt2");
}

#[test]
fn the_user_catalogue_extends_and_overrides_the_shipped_one() {
    let sandbox = Sandbox::new();
    let user = sandbox.path("config").join("abridge").join("models.toml");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    let e = smollm2_entry();
    std::fs::write(
        &user,
        format!(
            r#"default = "smollm2"

# Replaces the shipped entry of the same name.
[[model]]
name = "smollm2:135m-instruct-q4_1"
aliases = ["smollm2"]
file = "{LOCAL}"
arch = "llama"
size = {}
sha256 = "{}"
context = 8192
description = "overridden by the user"
"#,
            e.size, e.sha256
        ),
    )
    .unwrap();
    let out = sandbox
        .abridge()
        .args(["models", "list", "--json"])
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let smollm2: Vec<_> = rows
        .iter()
        .filter(|r| r["name"] == "smollm2:135m-instruct-q4_1")
        .collect();
    assert_eq!(smollm2.len(), 1, "{rows:?}");
    assert_eq!(smollm2[0]["description"], "overridden by the user");
    assert_eq!(smollm2[0]["default"], true);
    let path = sandbox
        .abridge()
        .args(["models", "path", "smollm2"])
        .assert()
        .failure();
    assert!(
        stderr(&path).contains(&sandbox.models().join(LOCAL).display().to_string()),
        "{}",
        stderr(&path)
    );

    // A malformed entry is an error that names the file and the line.
    std::fs::write(&user, "[[model]]\nname = \"x\"\nsize = \"big\"\n").unwrap();
    let failed = sandbox
        .abridge()
        .args(["models", "list"])
        .assert()
        .failure();
    let err = stderr(&failed);
    assert!(
        err.contains(&user.display().to_string()) && err.contains("line 3"),
        "{err}"
    );
    // The same through --models-file, on a command that loads a model.
    let failed = sandbox
        .abridge()
        .args(["summarize", "-m", "smollm2", "--models-file"])
        .arg(&user)
        .arg("-")
        .write_stdin(TEXT)
        .assert()
        .failure();
    let err = stderr(&failed);
    assert!(
        err.contains(&user.display().to_string()) && err.contains("line 3"),
        "{err}"
    );
}
