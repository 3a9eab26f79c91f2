//! The output file, which is also the batch's memory of what is done.
//!
//! One JSON object per line and per finished record. A line is appended in
//! one write, then synced to disk before the next record's: a crash can
//! cut only the last line, and opening the file again cuts that line off, so
//! its record is done again. Every other line names a record that needs no
//! more work.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::RecordId;
use crate::Summary;
use crate::error::{Error, Result};

/// What became of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its summary.
    Summarized(Summary),
    /// Why it has none, naming the cause (and the input line, for a record
    /// from JSON Lines).
    Failed(String),
}

/// What an output file records for an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A line with its summary.
    Summarized,
    /// Only lines with an error.
    Failed,
}

/// The line written for a record: `id`, `summary`, `model`, the fields
/// [`Summary`] serializes (token counts, timings, `stop_reason` …) and
/// `error: null`; or, for a failure, `id`, `summary: null`, `model` and
/// `error` with the message.
///
/// ```
/// use abridge::batch::{Outcome, RecordId, output_line};
///
/// let line = output_line(&RecordId::from(3), "smollm2", &Outcome::Failed("the text is empty".into()))?;
/// assert_eq!(line, r#"{"id":3,"summary":null,"model":"smollm2","error":"the text is empty"}"#);
/// # Ok::<(), abridge::Error>(())
/// ```
pub fn output_line(id: &RecordId, model: &str, outcome: &Outcome) -> Result<String> {
    let mut line = Map::new();
    line.insert("id".into(), id.to_json());
    match outcome {
        Outcome::Summarized(summary) => {
            let Value::Object(fields) = serde_json::to_value(summary)
                .map_err(|e| Error::InvalidOption(format!("cannot serialize a summary: {e}")))?
            else {
                return Err(Error::InvalidOption(
                    "a summary did not serialize as an object".into(),
                ));
            };
            line.insert(
                "summary".into(),
                fields.get("summary").cloned().unwrap_or(Value::Null),
            );
            line.insert("model".into(), model.into());
            for (key, value) in fields {
                if key != "summary" {
                    line.insert(key, value);
                }
            }
            line.insert("error".into(), Value::Null);
        }
        Outcome::Failed(why) => {
            line.insert("summary".into(), Value::Null);
            line.insert("model".into(), model.into());
            line.insert("error".into(), why.as_str().into());
        }
    }
    Ok(Value::Object(line).to_string())
}

/// An output file open for appending, with what it already holds.
///
/// The file is locked while the journal is open: a second batch given the
/// same output file is refused rather than allowed to interleave its lines.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    status: HashMap<RecordId, Status>,
    torn_bytes: u64,
}

impl Journal {
    /// Opens `path`, creating it when it does not exist, and reads what it
    /// holds. A last line that is not complete (no newline at its end, or not
    /// a JSON object with an `id`) is what a crash leaves: it is cut off, and
    /// [`torn_bytes`](Self::torn_bytes) says how much was cut. Such a line
    /// anywhere else is an error: the file is not a batch's output, or it was
    /// edited, and appending to it would bury the damage.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let write_error = |source| Error::Write {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(write_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(write_error(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another process is writing it (a batch with the same output file?)",
                )));
            }
            Err(TryLockError::Error(e)) => return Err(write_error(e)),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let scan = scan(&path, &bytes)?;
        let torn_bytes = (bytes.len() - scan.end) as u64;
        if torn_bytes > 0 {
            file.set_len(scan.end as u64).map_err(write_error)?;
            file.sync_data().map_err(write_error)?;
        }
        let mut status = HashMap::new();
        for line in scan.lines {
            settle(&mut status, line.id, line.failed);
        }
        Ok(Self {
            file,
            path,
            status,
            torn_bytes,
        })
    }

    /// The output file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of a torn last line cut off when the file was opened.
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    /// What the file records for `id`, if anything.
    pub fn status(&self, id: &RecordId) -> Option<Status> {
        self.status.get(id).copied()
    }

    /// Appends the line for a finished record ([`output_line`]) in one
    /// write, and syncs it to disk before returning.
    pub fn append(&mut self, id: &RecordId, model: &str, outcome: &Outcome) -> Result<()> {
        let mut line = output_line(id, model, outcome)?.into_bytes();
        line.push(b'\n');
        let write_error = |source| Error::Write {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line).map_err(write_error)?;
        self.file.sync_data().map_err(write_error)?;
        settle(
            &mut self.status,
            id.clone(),
            matches!(outcome, Outcome::Failed(_)),
        );
        Ok(())
    }
}

/// Counts one more line for `id`: a summary anywhere settles the record; an
/// error is settled only until a later run retries it.
fn settle(status: &mut HashMap<RecordId, Status>, id: RecordId, failed: bool) {
    let s = status.entry(id).or_insert(Status::Failed);
    if !failed {
        *s = Status::Summarized;
    }
}

/// One complete line of an output file.
pub(super) struct Line<'a> {
    pub id: RecordId,
    pub failed: bool,
    pub text: &'a str,
}

/// The complete lines of an output file, and where they end: anything after
/// `end` is a torn last line.
pub(super) struct Scan<'a> {
    pub lines: Vec<Line<'a>>,
    pub end: usize,
}

pub(super) fn scan<'a>(path: &Path, bytes: &'a [u8]) -> Result<Scan<'a>> {
    let mut lines = Vec::new();
    let mut end = 0;
    let mut number = 0;
    while let Some(len) = bytes[end..].iter().position(|&b| b == b'\n') {
        number += 1;
        let next = end + len + 1;
        let raw = &bytes[end..end + len];
        if !raw.iter().all(u8::is_ascii_whitespace) {
            match parse(raw) {
                Ok(line) => lines.push(line),
                Err(_) if next == bytes.len() => break,
                Err(reason) => {
                    return Err(Error::BatchOutput {
                        path: path.to_path_buf(),
                        line: number,
                        reason,
                    });
                }
            }
        }
        end = next;
    }
    Ok(Scan { lines, end })
}

fn parse(raw: &[u8]) -> std::result::Result<Line<'_>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_owned())?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let id = value
        .get("id")
        .and_then(RecordId::from_json)
        .ok_or_else(|| "not an object with an `id`".to_owned())?;
    let failed = value.get("error").is_some_and(|e| !e.is_null());
    Ok(Line { id, failed, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(why: &str) -> Outcome {
        Outcome::Failed(why.into())
    }

    #[test]
    fn lines_are_appended_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.torn_bytes(), 0);
        j.append(&RecordId::from("a"), "m", &failed("boom"))
            .unwrap();
        j.append(&RecordId::from(2), "m", &failed("bang")).unwrap();
        assert_eq!(j.status(&RecordId::from("a")), Some(Status::Failed));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":\"a\",\"summary\":null,\"model\":\"m\",\"error\":\"boom\"}\n\
             {\"id\":2,\"summary\":null,\"model\":\"m\",\"error\":\"bang\"}\n"
        );
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.status(&RecordId::from("2")), Some(Status::Failed));
        assert_eq!(j.status(&RecordId::from("b")), None);
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let _first = Journal::open(&path).unwrap();
        let err = Journal::open(&path).unwrap_err().to_string();
        assert!(err.contains("another process is writing it"), "{err}");
    }

    #[test]
    fn a_summary_settles_a_record_that_failed_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"summary\":null,\"error\":\"x\"}\n\
             {\"id\":\"a\",\"summary\":\"S\",\"error\":null}\n\
             {\"id\":\"b\",\"summary\":\"S\",\"error\":null}\n\
             {\"id\":\"b\",\"summary\":null,\"error\":\"later\"}\n\
             {\"id\":\"c\",\"summary\":\"S\"}\n",
        )
        .unwrap();
        let j = Journal::open(&path).unwrap();
        for id in ["a", "b", "c"] {
            assert_eq!(
                j.status(&RecordId::from(id)),
                Some(Status::Summarized),
                "{id}"
            );
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let good = "{\"id\":\"a\",\"summary\":\"S\",\"error\":null}\n";
        let cases = [
            // Cut mid-line, as a killed write leaves it.
            "{\"id\":\"b\",\"summ",
            // Complete JSON, but the newline never made it.
            "{\"id\":\"b\",\"summary\":\"S\",\"error\":null}",
            // A newline, but the line is not an output line.
            "{\"id\":\"b\",\"summary\":\"S\",\"err\n",
            "\u{0}\u{0}\u{0}\n",
        ];
        for torn in cases {
            std::fs::write(&path, format!("{good}{torn}")).unwrap();
            let mut j = Journal::open(&path).unwrap();
            assert_eq!(j.torn_bytes(), torn.len() as u64, "{torn:?}");
            assert_eq!(j.status(&RecordId::from("b")), None);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
            j.append(&RecordId::from("b"), "m", &failed("x")).unwrap();
            drop(j);
            let j = Journal::open(&path).unwrap();
            assert_eq!(j.torn_bytes(), 0);
            assert_eq!(j.status(&RecordId::from("b")), Some(Status::Failed));
        }
    }

    #[test]
    fn a_bad_line_before_the_last_is_an_error_and_nothing_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let text = "{\"id\":\"a\"}\n\nnot json\n{\"id\":\"b\"}\n";
        std::fs::write(&path, text).unwrap();
        let err = Journal::open(&path).unwrap_err().to_string();
        assert!(err.contains("line 3: not JSON"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
