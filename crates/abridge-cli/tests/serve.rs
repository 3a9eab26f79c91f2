//! `abridge serve`, for real: the binary listening on 127.0.0.1, SmolLM2
//! loaded from the cache, and requests over TCP as HTTP/1.1 clients send
//! them (a small client here, so a test can drop a connection mid-stream
//! or send a body of any size), plus Ollama's and OpenAI's own Python
//! clients from PyPI, unmodified.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MODEL: &str = "smollm2";

/// A running `abridge serve`, stopped when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Served {
    fn start(extra: &[&str]) -> Self {
        let smollm2 = abridge_tests::smollm2();
        let mut child = Command::new(assert_cmd::cargo::cargo_bin!("abridge"))
            .args(["serve", "--addr", "127.0.0.1:0", "--threads", "1"])
            .args(extra)
            .env("ABRIDGE_MODELS", smollm2.parent().unwrap())
            .env_remove("OLLAMA_HOST")
            .env_remove("ABRIDGE_HOST")
            .env_remove("ABRIDGE_API_KEY")
            .env_remove("OLLAMA_ORIGINS")
            .env("OLLAMA_MODELS", "/nonexistent-ollama-store")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("abridge serve starts");
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = log
            .recv_timeout(Duration::from_secs(60))
            .expect("abridge serve says where it listens");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { child, addr, log }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The log lines written so far.
    fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// A gauge from `/metrics`.
    fn gauge(&self, name: &str) -> f64 {
        let (status, body) = request(self.addr, "GET", "/metrics", &[]);
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body.
    let _ = stream.write_all(body);
    stream
}

/// Reads a response's status and headers; the reader is left at the body.
fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    (status, headers)
}

/// The body of a chunked or plain response, as it arrives: `on_piece` gets
/// each chunk and may stop reading by returning false.
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    mut on_piece: impl FnMut(&str) -> bool,
) {
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if !chunked {
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let mut body = Vec::new();
        // A server may keep the connection open after the body it sized.
        match length {
            Some(n) => {
                body.resize(n, 0);
                reader.read_exact(&mut body).unwrap();
            }
            None => {
                reader.read_to_end(&mut body).unwrap();
            }
        }
        on_piece(&String::from_utf8_lossy(&body));
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            return;
        }
        let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
        if size == 0 {
            return;
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        if !on_piece(std::str::from_utf8(&chunk[..size]).unwrap()) {
            return;
        }
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut reader = BufReader::new(connect(addr, method, path, body));
    let (status, headers) = read_head(&mut reader);
    let mut out = String::new();
    read_body(&mut reader, &headers, |p| {
        out.push_str(p);
        true
    });
    (status, out)
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = request(addr, "POST", path, body.to_string().as_bytes());
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

/// Every NDJSON line of a streamed response.
fn post_stream(addr: SocketAddr, path: &str, body: &Value) -> (u16, Vec<Value>) {
    let (status, text) = request(addr, "POST", path, body.to_string().as_bytes());
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (status, lines)
}

fn streamed_text(lines: &[Value]) -> String {
    lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect()
}

fn chat(question: &str, stream: bool, num_predict: u32) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "stream": stream,
        "options": {"num_predict": num_predict},
    })
}

const QUESTIONS: [&str; 8] = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Why is the sky blue?",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is water made of?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in the solar system?",
];

#[test]
fn ollama_chat_and_generate_stream_and_answer_whole() {
    let server = Served::start(&[]);
    let (status, body) = request(server.addr, "GET", "/api/version", &[]);
    assert_eq!(status, 200);
    assert!(body.contains(env!("CARGO_PKG_VERSION")), "{body}");

    let (status, whole) = post(server.addr, "/api/chat", &chat(QUESTIONS[0], false, 32));
    assert_eq!(status, 200, "{whole}");
    let answer = whole["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{whole}");
    assert_eq!(whole["done"], true);
    assert_eq!(whole["message"]["role"], "assistant");
    for field in [
        "total_duration",
        "prompt_eval_count",
        "eval_count",
        "eval_duration",
    ] {
        assert!(
            whole[field].as_u64().is_some_and(|v| v > 0),
            "{field}: {whole}"
        );
    }

    // Streamed, the same greedy answer arrives in pieces, then the counts.
    let (status, lines) = post_stream(server.addr, "/api/chat", &chat(QUESTIONS[0], true, 32));
    assert_eq!(status, 200);
    assert!(lines.len() > 3, "{lines:?}");
    assert_eq!(streamed_text(&lines), answer);
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["eval_count"], whole["eval_count"]);
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));

    let (status, generated) = post(
        server.addr,
        "/api/generate",
        &json!({"model": MODEL, "prompt": QUESTIONS[0], "stream": false, "options": {"num_predict": 32}}),
    );
    assert_eq!(status, 200, "{generated}");
    assert_eq!(generated["response"].as_str(), Some(answer));
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.starts_with("POST /api/chat 200 ") && l.contains("model=smollm2"))
    );
}

#[test]
fn prompts_beyond_num_ctx_are_refused_with_figures_or_summarized_in_parts() {
    let server = Served::start(&[]);
    let article = abridge_tests::seed_article();
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": format!("Summarize this article.\n\n{article}")}],
        "stream": false,
        "options": {"num_ctx": 1024},
    });
    let (status, refused) = post(server.addr, "/api/chat", &body);
    assert_eq!(status, 400, "{refused}");
    let tokens = refused["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > 3000, "{refused}");
    assert_eq!(refused["num_ctx"], 1024);
    assert!(
        refused["error"].as_str().unwrap().contains("never cuts"),
        "{refused}"
    );

    let (status, lines) = post_stream(
        server.addr,
        "/api/summarize",
        &json!({"model": MODEL, "text": article, "length": "short", "options": {"num_ctx": 2048}}),
    );
    assert_eq!(status, 200);
    let parts: Vec<&Value> = lines.iter().filter(|l| l["stage"] == "part").collect();
    assert!(parts.len() >= 2, "a map-reduce summary in parts: {lines:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{last}");
    let summary = last["summary"].as_str().unwrap();
    assert!(summary.split_whitespace().count() >= 10, "{summary}");
    assert!(
        summary.contains("Azure") || summary.contains("OpenAI"),
        "{summary}"
    );
}

#[test]
fn eight_concurrent_streams_on_two_slots_match_their_sequential_answers() {
    let server = Served::start(&["--parallel", "2", "--queue", "6"]);
    let sequential: Vec<String> = QUESTIONS
        .iter()
        .map(|q| {
            let (status, v) = post(server.addr, "/api/chat", &chat(q, false, 24));
            assert_eq!(status, 200, "{v}");
            v["message"]["content"].as_str().unwrap().to_owned()
        })
        .collect();

    let addr = server.addr;
    let clients: Vec<_> = QUESTIONS
        .iter()
        .map(|q| {
            let body = chat(q, true, 24);
            std::thread::spawn(move || post_stream(addr, "/api/chat", &body))
        })
        .collect();
    // All eight admitted (two running, six queued): the ninth is refused.
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.gauge("abridge_requests_running") + server.gauge("abridge_queue_depth") < 8.0 {
        assert!(
            Instant::now() < deadline,
            "the eight requests were never all admitted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ninth = BufReader::new(connect(
        addr,
        "POST",
        "/api/chat",
        chat(QUESTIONS[0], true, 24).to_string().as_bytes(),
    ));
    let (status, headers) = read_head(&mut ninth);
    assert_eq!(status, 503);
    assert!(
        headers.iter().any(|(k, _)| k == "retry-after"),
        "{headers:?}"
    );

    for (i, client) in clients.into_iter().enumerate() {
        let (status, lines) = client.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(lines.last().unwrap()["done"], true, "{lines:?}");
        assert_eq!(streamed_text(&lines), sequential[i], "question {i}");
    }
}

/// A streamed chat that runs far longer than any test waits for, read up
/// to its body.
fn long_story(addr: SocketAddr) -> (BufReader<TcpStream>, Vec<(String, String)>) {
    let body = chat(
        "Write a long story about a dragon who learns to bake bread.",
        true,
        2000,
    );
    let mut reader = BufReader::new(connect(
        addr,
        "POST",
        "/api/chat",
        body.to_string().as_bytes(),
    ));
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 200);
    (reader, headers)
}

#[test]
fn a_client_that_disconnects_frees_its_slot() {
    let server = Served::start(&["--parallel", "1", "--queue", "1"]);
    let (mut reader, headers) = long_story(server.addr);
    let mut pieces = 0;
    read_body(&mut reader, &headers, |_| {
        pieces += 1;
        pieces < 3
    });
    assert_eq!(server.gauge("abridge_requests_running"), 1.0);
    drop(reader);

    let deadline = Instant::now() + Duration::from_secs(30);
    while server.gauge("abridge_requests_running") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the slot was not freed after the client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, next) = post(server.addr, "/api/chat", &chat(QUESTIONS[3], false, 16));
    assert_eq!(status, 200, "{next}");

    let lines = server.log_lines();
    assert!(
        lines.iter().any(|l| l.contains("stop=cancelled")),
        "the first generation was cancelled: {lines:?}"
    );

    // A JSON reply is held back until it is checked, so nothing is written
    // while it runs: leaving must still cancel it.
    let mut body = chat(
        "Describe a dragon as a JSON object with many fields.",
        true,
        2000,
    );
    body["format"] = json!("json");
    let mut reader = BufReader::new(connect(
        server.addr,
        "POST",
        "/api/chat",
        body.to_string().as_bytes(),
    ));
    assert_eq!(read_head(&mut reader).0, 200);
    assert_eq!(server.gauge("abridge_requests_running"), 1.0);
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.gauge("abridge_requests_running") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "a held-back JSON reply kept its slot after the client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("stop=cancelled")) {
        assert!(
            Instant::now() < deadline,
            "the JSON request was not cancelled: {lines:?}"
        );
        lines.extend(server.log_lines());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_requests_get_ollama_errors_and_the_server_keeps_serving() {
    let server = Served::start(&["--max-body-mib", "1"]);
    let addr = server.addr;
    let error = |status: u16, body: &str| {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{status}: {body}"
        );
        v["error"].as_str().unwrap().to_owned()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"model\": ".to_vec(), 400, "invalid request"),
        ("empty body", Vec::new(), 400, "empty"),
        (
            "wrong type",
            json!({"model": MODEL, "messages": "hello"}).to_string().into_bytes(),
            400,
            "invalid request",
        ),
        (
            "wrong option type",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "options": {"temperature": "hot"}})
                .to_string()
                .into_bytes(),
            400,
            "\"hot\"",
        ),
        (
            "unknown model",
            chat_for("no-such-model:7b").to_string().into_bytes(),
            404,
            "not found",
        ),
        (
            "a path as model name",
            chat_for(abridge_tests::smollm2().to_str().unwrap()).to_string().into_bytes(),
            400,
            "file path",
        ),
        (
            "/etc/passwd as model name",
            chat_for("/etc/passwd").to_string().into_bytes(),
            400,
            "file path",
        ),
        (
            "empty message list",
            json!({"model": MODEL, "messages": []}).to_string().into_bytes(),
            400,
            "messages is empty",
        ),
        (
            "a body over the limit",
            {
                let mut big = b"{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":\"".to_vec();
                big.resize(100 << 20, b'a');
                big
            },
            413,
            "larger than",
        ),
    ];
    for (what, body, expected, says) in cases {
        let (status, text) = request(addr, "POST", "/api/chat", &body);
        assert_eq!(status, expected, "{what}: {text}");
        let message = error(status, &text);
        assert!(message.contains(says), "{what}: {message}");
    }
    let (status, text) = request(addr, "GET", "/no/such/endpoint", &[]);
    assert_eq!(status, 404);
    error(status, &text);
    let (status, _) = post(addr, "/api/chat", &chat(QUESTIONS[0], false, 8));
    assert_eq!(status, 200, "the server still serves");
}

fn chat_for(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

#[test]
fn browser_origins_and_the_api_key_are_checked() {
    let server = Served::start(&["--api-key", "s3cret"]);
    let get = |headers: &str| {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        write!(
            stream,
            "GET /api/tags HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        read_head(&mut reader)
    };
    assert_eq!(get("").0, 401);
    assert_eq!(get("Authorization: Bearer wrong\r\n").0, 401);
    let (status, headers) =
        get("Authorization: Bearer s3cret\r\nOrigin: http://localhost:3000\r\n");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "access-control-allow-origin" && v == "http://localhost:3000"),
        "{headers:?}"
    );
    assert_eq!(
        get("Authorization: Bearer s3cret\r\nOrigin: https://evil.example\r\n").0,
        403
    );
    // A page on another name that resolves here (DNS rebinding) is refused.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET /api/tags HTTP/1.1\r\nHost: rebound.example:11434\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_head(&mut BufReader::new(stream)).0, 403);
    // The page itself needs no key; it is served from the binary.
    let (status, page) = request(server.addr, "GET", "/", &[]);
    assert_eq!(status, 200);
    assert!(page.contains("/api/summarize"), "{page}");
}

#[test]
fn sigint_cancels_running_generations_and_exits_cleanly() {
    let mut server = Served::start(&[]);
    let (mut reader, headers) = long_story(server.addr);
    let mut first = true;
    let mut text = String::new();
    read_body(&mut reader, &headers, |piece| {
        if first {
            first = false;
            let pid = server.child.id().to_string();
            assert!(
                Command::new("kill")
                    .args(["-INT", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        text.push_str(piece);
        true
    });
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["done"], true,
        "the stream ends with its counts: {text}"
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The Python interpreter with the `ollama` and `openai` packages, which
/// `scripts/python-clients` installs.
fn client_python() -> PathBuf {
    let python = std::env::var_os("ABRIDGE_CLIENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| abridge::registry::models_dir().join("../client-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-clients (scripts/test does) to install Ollama's and OpenAI's Python clients",
        python.display()
    );
    python
}

#[test]
fn official_ollama_and_openai_python_clients_work_unmodified() {
    let python = client_python();
    let server = Served::start(&[]);
    let script = abridge_tests::root().join("tests/clients/official_clients.py");
    let output = Command::new(python)
        .arg(script)
        .arg(server.url())
        .arg(MODEL)
        .arg(abridge_tests::fixture("seed-request.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("all client checks passed"), "{stdout}");
}

/// A WebDriver command to ChromeDriver; its `value`.
fn webdriver(driver: SocketAddr, method: &str, path: &str, body: &Value) -> Value {
    let payload = if method == "POST" {
        body.to_string().into_bytes()
    } else {
        Vec::new()
    };
    let (status, text) = request(driver, method, path, &payload);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(status, 200, "{method} {path}: {v}");
    v["value"].clone()
}

/// ChromeDriver on a free loopback port, stopped when dropped.
struct Driver(Child, SocketAddr);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_chromedriver() -> Driver {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: run scripts/browser-deps (scripts/test does) to install Debian's chromium and chromium-driver"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver(child, addr)
}

#[test]
fn the_page_streams_a_summary_in_a_real_browser() {
    let server = Served::start(&[]);
    let driver = start_chromedriver();
    let profile = tempfile::tempdir().unwrap();
    // Chromium's background connections are refused on a closed network:
    // they are turned off, as is the sandbox (tests run as root).
    let session = webdriver(
        driver.1,
        "POST",
        "/session",
        &json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--window-size=1000,1600",
                     "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", profile.path().display())],
        }}}}),
    );
    let id = session["sessionId"].as_str().unwrap().to_owned();
    let at = |rest: &str| format!("/session/{id}{rest}");
    let script = |code: &str, args: Value| {
        webdriver(
            driver.1,
            "POST",
            &at("/execute/sync"),
            &json!({"script": code, "args": args}),
        )
    };
    webdriver(
        driver.1,
        "POST",
        &at("/url"),
        &json!({"url": server.url() + "/"}),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while script(
        "return document.querySelectorAll('#model option').length",
        json!([]),
    ) == 0
    {
        assert!(
            Instant::now() < deadline,
            "the page never listed the models"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The article goes in as a paste does: the text area's value, then an
    // input event.
    script(
        "const t = document.getElementById('text'); t.value = arguments[0]; \
         t.dispatchEvent(new Event('input')); \
         const m = document.getElementById('model'); \
         for (const o of m.options) { if (o.value.startsWith('smollm2')) m.value = o.value; } \
         document.getElementById('length').value = 'short';",
        json!([abridge_tests::seed_article()]),
    );
    let button = webdriver(
        driver.1,
        "POST",
        &at("/element"),
        &json!({"using": "css selector", "value": "#go"}),
    );
    let element = button
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    webdriver(
        driver.1,
        "POST",
        &at(&format!("/element/{element}/click")),
        &json!({}),
    );

    // Text must appear while the summary is still running (streamed), and
    // the page then reports the speed.
    let state = || {
        script(
            "return [document.getElementById('summary').textContent, \
             document.getElementById('go').disabled, \
             document.getElementById('status').textContent]",
            json!([]),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut streamed = false;
    let (summary, status) = loop {
        let s = state();
        let (text, running, status) = (
            s[0].as_str().unwrap().to_owned(),
            s[1].as_bool().unwrap(),
            s[2].as_str().unwrap().to_owned(),
        );
        streamed |= running && !text.is_empty();
        if !running && !text.is_empty() {
            break (text, status);
        }
        assert!(
            !status.contains("rror"),
            "the page shows an error: {status}"
        );
        assert!(
            Instant::now() < deadline,
            "no summary after 10 minutes: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(streamed, "the summary appeared only at the end");
    assert!(summary.split_whitespace().count() >= 10, "{summary}");
    assert!(status.contains("tokens/s"), "{status}");

    let png = webdriver(driver.1, "GET", &at("/screenshot"), &json!({}));
    let dir = abridge_tests::root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("serve-page.png");
    let mut decode = Command::new("base64")
        .args(["--decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    decode
        .stdin
        .take()
        .unwrap()
        .write_all(png.as_str().unwrap().as_bytes())
        .unwrap();
    let out = decode.wait_with_output().unwrap();
    assert!(out.stdout.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(&path, &out.stdout).unwrap();
    let _ = request(driver.1, "DELETE", &at(""), &[]);
}
