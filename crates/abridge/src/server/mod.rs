//! `abridge serve`: Ollama's HTTP API (and OpenAI's chat completions) over
//! abridge's models, so the clients people already use summarize through
//! abridge.
//!
//! Models load on first use and are shared by every request naming them;
//! each request has its own key/value cache; at most `parallel` generate at
//! once and `queue` more wait, beyond which a request gets 503 with
//! `Retry-After`. A prompt longer than the context window is refused with
//! its token count (400), never cut; `POST /api/summarize` summarizes a text
//! of any length by map-reduce. A client that disconnects cancels its
//! generation within one token step.
//!
//! ```no_run
//! use abridge::server::{Server, ServerOptions};
//!
//! let server = Server::bind(ServerOptions::new().parallel(2))?;
//! eprintln!("listening on http://{}", server.local_addr());
//! server.run_until_signal()?;
//! # Ok::<(), abridge::Error>(())
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::error::{Error, Result};
use crate::model::ModelOptions;
use crate::registry::Catalogue;
use crate::registry::pull::PullOptions;

mod api;
mod http;
mod metrics;
mod models;
mod routes;
mod run;
mod slots;

pub use api::KeepAlive;
use http::ApiError;
use run::{Jobs, Log};

/// Ollama's port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:11434";

/// Reads an address as Ollama reads `OLLAMA_HOST`: an optional `http://` or
/// `https://`, a host (default 127.0.0.1, including for `:port`), and a
/// port (default 11434). Host names are resolved.
///
/// ```
/// use abridge::server::parse_host;
/// assert_eq!(parse_host("").unwrap().to_string(), "127.0.0.1:11434");
/// assert_eq!(parse_host("0.0.0.0").unwrap().to_string(), "0.0.0.0:11434");
/// assert_eq!(parse_host(":8080").unwrap().to_string(), "127.0.0.1:8080");
/// assert_eq!(parse_host("http://[::1]:9000/").unwrap().to_string(), "[::1]:9000");
/// assert!(parse_host("127.0.0.1:notaport").is_err());
/// ```
pub fn parse_host(text: &str) -> Result<SocketAddr> {
    let text = text.trim();
    let bad = |why: String| Error::InvalidOption(format!("address {text:?}: {why}"));
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(text);
    let rest = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [".into()))?;
        (host, after.strip_prefix(':'))
    } else if rest.matches(':').count() > 1 {
        (rest, None)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| bad(format!("{p:?} is not a port")))?,
        None => 11434,
    };
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("the host name resolves to no address".into()))
}

/// How the server runs; [`ServerOptions::new`] gives Ollama's address, one
/// slot per two cores, and Ollama's five-minute keep-alive.
#[derive(Clone)]
pub struct ServerOptions {
    addr: SocketAddr,
    parallel: usize,
    queue: usize,
    max_body: usize,
    catalogue: Option<Catalogue>,
    model: ModelOptions,
    keep_alive: KeepAlive,
    allow_paths: bool,
    origins: Vec<String>,
    api_key: Option<String>,
    log: Log,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("addr", &self.addr)
            .field("parallel", &self.parallel)
            .field("queue", &self.queue)
            .field("max_body", &self.max_body)
            .field("keep_alive", &self.keep_alive)
            .field("allow_paths", &self.allow_paths)
            .field("origins", &self.origins)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let parallel = (cores / 2).max(1);
        Self {
            addr: DEFAULT_ADDR.parse().expect("a valid constant address"),
            parallel,
            queue: 16 * parallel,
            max_body: 64 << 20,
            catalogue: None,
            model: ModelOptions::new(),
            keep_alive: KeepAlive::For(Duration::from_secs(300)),
            allow_paths: false,
            origins: Vec::new(),
            api_key: None,
            log: Arc::new(|_| {}),
        }
    }
}

impl ServerOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The address to listen on (port 0: any free port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Generations that run at once (at least 1).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// Requests that may wait for a slot; beyond them, 503.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Largest request body accepted, in bytes (413 beyond).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The model catalogue (default: the shipped one and the user's).
    pub fn catalogue(mut self, catalogue: Catalogue) -> Self {
        self.catalogue = Some(catalogue);
        self
    }

    /// How models are loaded: threads, device, kernels.
    pub fn model_options(mut self, options: ModelOptions) -> Self {
        self.model = options;
        self
    }

    /// How long a model stays loaded after its last request when the
    /// request does not say (`keep_alive`).
    pub fn keep_alive(mut self, keep_alive: KeepAlive) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Whether a request may name a model by file path.
    pub fn allow_paths(mut self, on: bool) -> Self {
        self.allow_paths = on;
        self
    }

    /// Browser origins allowed besides local pages (`chrome-extension://*`,
    /// `https://example.com`), as `OLLAMA_ORIGINS` lists them.
    pub fn origins(mut self, origins: Vec<String>) -> Self {
        self.origins = origins;
        self
    }

    /// Requires `Authorization: Bearer <key>` on every API request.
    pub fn api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// Where the server's log lines go (one per request).
    pub fn log(mut self, log: impl Fn(String) + Send + Sync + 'static) -> Self {
        self.log = Arc::new(log);
        self
    }
}

/// What every request handler shares.
pub(crate) struct AppState {
    models: Arc<models::Models>,
    slots: slots::Slots,
    jobs: Arc<Jobs>,
    metrics: Arc<metrics::Metrics>,
    log: Log,
    pulls: PullOptions,
    origins: Vec<String>,
    api_key: Option<String>,
    /// Listening on loopback only: requests must name a local host.
    loopback: bool,
    ids: AtomicU64,
}

impl AppState {
    /// A number for a response id, new for each call.
    fn jobs_started(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::SeqCst)
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    max_body: usize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the address now, so that a busy port is an error before
    /// anything else runs and [`local_addr`](Self::local_addr) is known.
    pub fn bind(options: ServerOptions) -> Result<Self> {
        let catalogue = match options.catalogue {
            Some(c) => c,
            None => Catalogue::load(None)?,
        };
        let listener = std::net::TcpListener::bind(options.addr).map_err(|source| Error::Bind {
            addr: options.addr.to_string(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| Error::Bind {
                addr: options.addr.to_string(),
                source,
            })?;
        let state = AppState {
            models: Arc::new(models::Models::new(
                catalogue,
                options.model,
                options.allow_paths,
                options.keep_alive,
            )),
            slots: slots::Slots::new(options.parallel, options.queue),
            jobs: Arc::new(Jobs::default()),
            metrics: Arc::new(metrics::Metrics::default()),
            log: options.log,
            pulls: PullOptions::from_env(),
            origins: options.origins,
            api_key: options.api_key,
            loopback: options.addr.ip().is_loopback(),
            ids: AtomicU64::new(1),
        };
        Ok(Self {
            listener,
            state: Arc::new(state),
            max_body: options.max_body,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes; then stops accepting, cancels
    /// the generations still running (each ends its response with what it
    /// produced) and returns once every response is finished.
    pub fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("abridge-http")
            .enable_all()
            .build()
            .map_err(|e| Error::InvalidOption(format!("cannot start the server's threads: {e}")))?;
        let addr = self.local_addr().to_string();
        let served = runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(self.listener).map_err(|source| Error::Bind {
                    addr: addr.clone(),
                    source,
                })?;
            let state = self.state;
            let reaper = {
                let models = Arc::clone(&state.models);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        models.reap();
                    }
                })
            };
            let jobs = Arc::clone(&state.jobs);
            let app = router(Arc::clone(&state), self.max_body);
            let stopping = async move {
                shutdown.await;
                jobs.cancel_all();
            };
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopping)
                .await;
            reaper.abort();
            served.map_err(|source| Error::Bind { addr, source })
        });
        // A download still running on a worker thread is not waited for.
        runtime.shutdown_timeout(Duration::from_secs(5));
        served
    }

    /// Serves until SIGINT (Ctrl-C) or SIGTERM.
    pub fn run_until_signal(self) -> Result<()> {
        self.run_until(async {
            let interrupt = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = interrupt => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = interrupt.await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = interrupt.await;
            }
        })
    }
}

fn router(state: Arc<AppState>, max_body: usize) -> Router {
    Router::new()
        .route("/", get(routes::page).head(routes::page))
        .route("/api/version", get(routes::version))
        .route("/api/tags", get(routes::tags))
        .route("/api/ps", get(routes::ps))
        .route("/api/show", post(routes::show))
        .route("/api/pull", post(routes::pull))
        .route("/api/delete", delete(routes::delete))
        .route("/api/chat", post(routes::chat))
        .route("/api/generate", post(routes::generate))
        .route("/api/summarize", post(routes::summarize))
        .route("/v1/chat/completions", post(routes::openai_chat))
        .route("/v1/models", get(routes::openai_models))
        .route("/metrics", get(routes::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .with_state(state)
}

/// CORS as Ollama does it, the API key, the status counters and the log
/// line of requests that start no generation.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // A web page whose name is made to resolve to 127.0.0.1 (DNS
    // rebinding) reads responses as same-origin; its Host header still
    // carries its own name.
    if state.loopback && !local_host(request.headers()) {
        let e = ApiError::new(
            StatusCode::FORBIDDEN,
            "the Host header names no local address; this server listens on loopback only",
        );
        return finish(&state, &method, &path, start, e.into_response(), None);
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed_origin = match &origin {
        None => None,
        Some(o) => match o
            .to_str()
            .ok()
            .filter(|o| origin_allowed(o, &state.origins))
        {
            Some(_) => Some(o.clone()),
            None => {
                let e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this origin may not use the server (allow it with --origins or OLLAMA_ORIGINS)",
                );
                return finish(&state, &method, &path, start, e.into_response(), None);
            }
        },
    };
    if method == Method::OPTIONS && allowed_origin.is_some() {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS, HEAD"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "Authorization, Content-Type, User-Agent, Accept, X-Requested-With",
            ),
        );
        return finish(&state, &method, &path, start, response, allowed_origin);
    }
    if let Some(key) = &state.api_key
        && path != "/"
        && !bearer_matches(request.headers(), key)
    {
        let e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key (Authorization: Bearer …)",
        );
        return finish(
            &state,
            &method,
            &path,
            start,
            e.into_response(),
            allowed_origin,
        );
    }
    let response = next.run(request).await;
    finish(&state, &method, &path, start, response, allowed_origin)
}

fn finish(
    state: &AppState,
    method: &Method,
    path: &str,
    start: Instant,
    mut response: Response,
    origin: Option<HeaderValue>,
) -> Response {
    let status = response.status();
    state.metrics.record_status(status.as_u16());
    if let Some(origin) = origin {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    if response.extensions().get::<routes::LoggedByJob>().is_none() {
        (state.log)(format!(
            "{method} {path} {} {:.3}s",
            status.as_u16(),
            start.elapsed().as_secs_f64()
        ));
    }
    response
}

/// Whether the Host header (if any) is `localhost` or a loopback address,
/// with any port.
fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn bearer_matches(headers: &HeaderMap, key: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compared in full whatever the first difference, so the time taken
    // tells nothing about the key.
    given.len() == key.len()
        && given
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Ollama's default origins (local pages and desktop app schemes) and the
/// extra patterns; `*` in a pattern matches any run of characters.
fn origin_allowed(origin: &str, extra: &[String]) -> bool {
    const LOCAL: [&str; 14] = [
        "http://localhost",
        "https://localhost",
        "http://localhost:*",
        "https://localhost:*",
        "http://127.0.0.1",
        "https://127.0.0.1",
        "http://127.0.0.1:*",
        "https://127.0.0.1:*",
        "http://0.0.0.0",
        "http://0.0.0.0:*",
        "app://*",
        "file://*",
        "tauri://*",
        "vscode-webview://*",
    ];
    LOCAL
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .any(|pattern| wildcard(pattern.trim(), origin))
}

fn wildcard(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| wildcard(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_origins_are_allowed_and_others_only_when_listed() {
        assert!(origin_allowed("http://localhost:3000", &[]));
        assert!(origin_allowed("http://127.0.0.1", &[]));
        assert!(origin_allowed("vscode-webview://abc", &[]));
        assert!(!origin_allowed("https://evil.example", &[]));
        assert!(!origin_allowed("http://localhost.evil.example", &[]));
        assert!(!origin_allowed("chrome-extension://abcdef", &[]));
        let extensions = vec!["chrome-extension://*".to_owned()];
        assert!(origin_allowed("chrome-extension://abcdef", &extensions));
        assert!(origin_allowed("https://evil.example", &["*".to_owned()]));
    }

    #[test]
    fn only_local_host_names_reach_a_loopback_server() {
        let with = |host: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(host));
            local_host(&h)
        };
        assert!(local_host(&HeaderMap::new()));
        for ok in [
            "localhost",
            "LOCALHOST:11434",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:11434",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:11434",
            "localhost.evil.example",
            "10.0.0.1:11434",
        ] {
            assert!(!with(bad), "{bad}");
        }
    }

    #[test]
    fn the_api_key_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "k3y"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer k3y"),
        );
        assert!(bearer_matches(&h, "k3y"));
        assert!(!bearer_matches(&h, "k3"));
        assert!(!bearer_matches(&h, "k3yy"));
    }
}
