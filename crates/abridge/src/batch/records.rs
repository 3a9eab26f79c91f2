//! The documents of a batch: JSON Lines records, or the files of a directory.
//!
//! Reading never fails on a bad record: a line that is not a usable record
//! becomes a [`Record`] whose [`Source::Invalid`] says why, so the batch
//! writes its error and goes on with the others.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::input;
use crate::{Length, OutputFormat, Summarizer};

/// A record's identity: a string, or an integer written in JSON as a number.
///
/// Two ids are the same when their text is: the integer `7` and the string
/// `"7"` name one record (shards hash the text, too).
///
/// ```
/// use abridge::batch::RecordId;
///
/// assert_eq!(RecordId::from(7), RecordId::from("7"));
/// assert_eq!(RecordId::from(7).to_json(), serde_json::json!(7));
/// assert_eq!(RecordId::from("a/b.txt").to_json(), serde_json::json!("a/b.txt"));
/// ```
#[derive(Debug, Clone)]
pub struct RecordId {
    text: String,
    integer: bool,
}

impl RecordId {
    /// The id's text (an integer's decimal digits).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The id from a JSON value: a string, or an integer.
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(Self::from(s.as_str())),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(Self {
                text: n.to_string(),
                integer: true,
            }),
            _ => None,
        }
    }

    /// The id as JSON, in the form it was given.
    pub fn to_json(&self) -> Value {
        if self.integer {
            if let Ok(n) = self.text.parse::<i64>() {
                return n.into();
            }
            if let Ok(n) = self.text.parse::<u64>() {
                return n.into();
            }
        }
        Value::String(self.text.clone())
    }
}

impl PartialEq for RecordId {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for RecordId {}

impl std::hash::Hash for RecordId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl From<&str> for RecordId {
    fn from(s: &str) -> Self {
        Self {
            text: s.to_owned(),
            integer: false,
        }
    }
}

impl From<String> for RecordId {
    fn from(text: String) -> Self {
        Self {
            text,
            integer: false,
        }
    }
}

impl From<i64> for RecordId {
    fn from(n: i64) -> Self {
        Self {
            text: n.to_string(),
            integer: true,
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a record's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The text itself.
    Text(String),
    /// A document (text, Markdown, HTML or PDF, recognised by content),
    /// read when the record's turn comes.
    File(PathBuf),
    /// The record could not be read; why.
    Invalid(String),
}

/// A record's own settings, over the batch's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordOptions {
    /// The system prompt.
    pub system: Option<String>,
    /// The instruction placed before the text.
    pub prompt: Option<String>,
    /// How long the summary should be.
    pub length: Option<Length>,
    /// The form of the summary.
    pub format: Option<OutputFormat>,
}

impl RecordOptions {
    /// `base` with these settings applied (`base` itself when there are none).
    pub fn apply(&self, base: &Summarizer) -> Result<Summarizer> {
        if *self == Self::default() {
            return Ok(base.clone());
        }
        let mut builder = base.to_builder();
        if let Some(s) = &self.system {
            builder = builder.system(s.clone());
        }
        if let Some(p) = &self.prompt {
            builder = builder.instruction(p.clone());
        }
        if let Some(l) = self.length {
            builder = builder.length(l);
        }
        if let Some(f) = self.format {
            builder = builder.format(f);
        }
        builder.build()
    }
}

/// One document of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its identity in the output, the journal and the shards.
    pub id: RecordId,
    /// The line of the JSON Lines input it came from (1-based).
    pub line: Option<usize>,
    /// Its text, or where to find it.
    pub source: Source,
    /// Its own settings.
    pub options: RecordOptions,
}

impl Record {
    /// A record of `text`.
    pub fn text(id: impl Into<RecordId>, text: impl Into<String>) -> Self {
        Self::new(id.into(), Source::Text(text.into()))
    }

    /// A record of the document at `path`.
    pub fn file(id: impl Into<RecordId>, path: impl Into<PathBuf>) -> Self {
        Self::new(id.into(), Source::File(path.into()))
    }

    fn new(id: RecordId, source: Source) -> Self {
        Self {
            id,
            line: None,
            source,
            options: RecordOptions::default(),
        }
    }

    /// The text to summarize, checked ([`input::check`]); the error names
    /// the input line when the record has one.
    pub(super) fn load(&self) -> std::result::Result<Cow<'_, str>, String> {
        let text = match &self.source {
            Source::Text(t) => Ok(Cow::Borrowed(t.as_str())),
            Source::File(path) => input::read_file(path)
                .map(Cow::Owned)
                .map_err(|e| e.to_string()),
            Source::Invalid(why) => Err(why.clone()),
        };
        let checked = text.and_then(|t| match input::check(&t) {
            Ok(()) => Ok(t),
            Err(e) => Err(e.to_string()),
        });
        checked.map_err(|why| self.named(why))
    }

    /// `why` this record failed, with its input line when it has one.
    pub(super) fn named(&self, why: String) -> String {
        match self.line {
            Some(line) => format!("line {line}: {why}"),
            None => why,
        }
    }
}

/// Reads JSON Lines records: one object per line with `id` (a string or an
/// integer; `line-N` when absent), `text` or `path` (relative to `base`),
/// and optionally `system`, `prompt`, `length` (`"short"`, `"medium"`,
/// `"long"` or a number of words) and `format` (`"paragraph"`, `"bullets"`,
/// `"markdown"` or `"json"`). Other keys are ignored; blank lines are
/// skipped. A line that is not such a record, or whose id an earlier line
/// took, becomes an invalid record named after its line. Only a failure to
/// read `reader` is an error.
///
/// ```
/// use abridge::batch::{Source, read_jsonl};
///
/// let input = "{\"id\": 1, \"text\": \"Bees dance.\"}\n{\"text\": 5}\n";
/// let records = read_jsonl(input.as_bytes(), std::path::Path::new(".")).unwrap();
/// assert_eq!(records[0].source, Source::Text("Bees dance.".into()));
/// assert_eq!(records[1].id.as_str(), "line-2");
/// assert!(matches!(&records[1].source, Source::Invalid(why) if why.contains("`text`")));
/// ```
pub fn read_jsonl(mut reader: impl BufRead, base: &Path) -> std::io::Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut seen: HashMap<RecordId, usize> = HashMap::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(records);
        }
        line += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut record = parse_line(&buf, line, base);
        if let Some(&first) = seen.get(&record.id) {
            // A line's own fallback name taken by an earlier id is no fault
            // of the line; an id given twice is.
            if record.id != fallback_id(line) {
                record.source = Source::Invalid(format!(
                    "the id {} is already used on line {first}",
                    record.id.to_json()
                ));
            }
            record.id = (1..)
                .map(|k| match k {
                    1 => fallback_id(line),
                    k => RecordId::from(format!("line-{line}-{k}")),
                })
                .find(|id| !seen.contains_key(id))
                .expect("an unbounded sequence of distinct ids has one not yet used");
        }
        seen.insert(record.id.clone(), line);
        records.push(record);
    }
}

/// Reads a JSON Lines file of records ([`read_jsonl`]); `path`s in it are
/// relative to its directory.
pub fn read_jsonl_file(path: &Path) -> Result<Vec<Record>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    read_jsonl(std::io::BufReader::new(file), base).map_err(io)
}

/// The id of a record whose line gives none.
fn fallback_id(line: usize) -> RecordId {
    RecordId::from(format!("line-{line}"))
}

fn parse_line(bytes: &[u8], line: usize, base: &Path) -> Record {
    let fallback = || fallback_id(line);
    let invalid = |id: RecordId, why: String| Record {
        id,
        line: Some(line),
        source: Source::Invalid(why),
        options: RecordOptions::default(),
    };
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return invalid(fallback(), format!("not a JSON record: {e}")),
    };
    let Value::Object(fields) = value else {
        return invalid(fallback(), "not a JSON object".into());
    };
    let id = match fields.get("id") {
        None | Some(Value::Null) => fallback(),
        Some(v) => match RecordId::from_json(v) {
            Some(id) if !id.as_str().is_empty() => id,
            _ => {
                return invalid(
                    fallback(),
                    format!("the `id` must be a non-empty string or an integer, not {v}"),
                );
            }
        },
    };
    let string = |key: &str| -> std::result::Result<Option<String>, String> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("the `{key}` must be a string, not {v}")),
        }
    };
    let parsed = (|| {
        let source = match (string("text")?, string("path")?) {
            (Some(t), None) => Source::Text(t),
            (None, Some(p)) => Source::File(base.join(p)),
            (Some(_), Some(_)) => return Err("the record has both `text` and `path`".into()),
            (None, None) => return Err("the record has neither `text` nor `path`".into()),
        };
        let options = RecordOptions {
            system: string("system")?,
            prompt: string("prompt")?,
            length: fields
                .get("length")
                .map(parse_length)
                .transpose()?
                .flatten(),
            format: fields
                .get("format")
                .map(parse_format)
                .transpose()?
                .flatten(),
        };
        Ok((source, options))
    })();
    match parsed {
        Ok((source, options)) => Record {
            id,
            line: Some(line),
            source,
            options,
        },
        Err(why) => invalid(id, why),
    }
}

fn parse_length(v: &Value) -> std::result::Result<Option<Length>, String> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::String(s) if s == "short" => Length::Short,
        Value::String(s) if s == "medium" => Length::Medium,
        Value::String(s) if s == "long" => Length::Long,
        Value::Number(n) => match n.as_u64() {
            Some(words) if words > 0 => {
                Length::Words(usize::try_from(words).map_err(|_| "too many words".to_owned())?)
            }
            _ => return Err(format!("the `length` {n} is not a number of words")),
        },
        v => {
            return Err(format!(
                "the `length` must be \"short\", \"medium\", \"long\" or a number of words, not {v}"
            ));
        }
    }))
}

fn parse_format(v: &Value) -> std::result::Result<Option<OutputFormat>, String> {
    Ok(Some(match v.as_str() {
        _ if v.is_null() => return Ok(None),
        Some("paragraph") => OutputFormat::Paragraph,
        Some("bullets") => OutputFormat::Bullets,
        Some("markdown") => OutputFormat::Markdown,
        Some("json") => OutputFormat::Json,
        _ => {
            return Err(format!(
                "the `format` must be \"paragraph\", \"bullets\", \"markdown\" or \"json\", not {v}"
            ));
        }
    }))
}

/// Every file under `dir` as a record, its id the path relative to `dir`
/// with `/` between the parts; sorted by id. Files and directories whose
/// names start with a dot are skipped, and symbolic links to directories are
/// not followed (they could make a cycle). A file that cannot be read is
/// still a record: its error goes to the output with the others.
pub fn read_directory(dir: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        let entries = std::fs::read_dir(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let id = format!("{prefix}{name}");
            let file_type = entry.file_type().map_err(|source| Error::Io {
                path: entry.path(),
                source,
            })?;
            if file_type.is_dir() {
                pending.push((entry.path(), format!("{id}/")));
            } else if file_type.is_file() || (file_type.is_symlink() && entry.path().is_file()) {
                records.push(Record::file(id, entry.path()));
            }
        }
    }
    records.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Record> {
        read_jsonl(text.as_bytes(), Path::new("/data")).unwrap()
    }

    fn why(r: &Record) -> &str {
        match &r.source {
            Source::Invalid(why) => why,
            s => panic!("{} is valid: {s:?}", r.id),
        }
    }

    #[test]
    fn records_carry_their_settings_and_resolve_paths() {
        let r = read(concat!(
            r#"{"id": "a", "text": "Bees dance.", "system": "S", "prompt": "P", "length": 40, "format": "bullets"}"#,
            "\n",
            r#"{"id": 18446744073709551615, "path": "docs/b.pdf", "length": "short", "extra": [1]}"#,
            "\n\n   \n",
            r#"{"path": "/abs/c.txt"}"#,
        ));
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].id, RecordId::from("a"));
        assert_eq!(r[0].line, Some(1));
        assert_eq!(
            r[0].options,
            RecordOptions {
                system: Some("S".into()),
                prompt: Some("P".into()),
                length: Some(Length::Words(40)),
                format: Some(OutputFormat::Bullets),
            }
        );
        assert_eq!(
            r[1].id.to_json(),
            serde_json::json!(18446744073709551615u64)
        );
        assert_eq!(r[1].source, Source::File("/data/docs/b.pdf".into()));
        assert_eq!(r[1].options.length, Some(Length::Short));
        // Blank lines count: the last record is on line 5, and named after it.
        assert_eq!(r[2].id.as_str(), "line-5");
        assert_eq!(r[2].source, Source::File("/abs/c.txt".into()));
    }

    #[test]
    fn bad_lines_become_failing_records_named_after_their_line() {
        let r = read(concat!(
            "{not json\n",
            "[1, 2]\n",
            r#"{"id": 1.5, "text": "t"}"#,
            "\n",
            r#"{"id": "x"}"#,
            "\n",
            r#"{"id": "y", "text": "t", "path": "p"}"#,
            "\n",
            r#"{"id": "z", "text": "t", "length": "huge"}"#,
            "\n",
            r#"{"id": "w", "text": "t", "format": "poem"}"#,
            "\n",
            r#"{"id": "x", "text": "again"}"#,
            "\n",
            r#"{"id": "v", "text": ["t"]}"#,
            "\n",
            r#"{"id": "u", "text": "t", "length": 0}"#,
        ));
        let ids: Vec<&str> = r.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "line-1", "line-2", "line-3", "x", "y", "z", "w", "line-8", "v", "u"
            ]
        );
        for (record, says) in r.iter().zip([
            "not a JSON record",
            "not a JSON object",
            "non-empty string or an integer, not 1.5",
            "neither `text` nor `path`",
            "both `text` and `path`",
            "\"huge\"",
            "\"poem\"",
            "the id \"x\" is already used on line 4",
            "the `text` must be a string",
            "the `length` 0",
        ]) {
            assert!(why(record).contains(says), "{}: {}", record.id, why(record));
            let loaded = record.load().unwrap_err();
            let line = record.line.unwrap();
            assert!(loaded.starts_with(&format!("line {line}: ")), "{loaded}");
        }
    }

    #[test]
    fn ids_given_for_other_lines_never_make_two_records_share_one() {
        let r = read(concat!(
            r#"{"id": "a", "text": "t"}"#,
            "\n",
            r#"{"id": "a", "text": "t"}"#,
            "\n",
            r#"{"id": "line-2", "text": "t"}"#,
            "\n",
            r#"{"id": "line-5", "text": "t"}"#,
            "\n",
            r#"{"text": "t"}"#,
            "\n",
        ));
        let ids: Vec<&str> = r.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "line-2", "line-3", "line-5", "line-5-2"]);
        assert!(why(&r[1]).contains("the id \"a\" is already used on line 1"));
        assert!(why(&r[2]).contains("the id \"line-2\" is already used on line 2"));
        // The last line gave no id: it loses only its name, not its text.
        assert_eq!(r[4].source, Source::Text("t".into()));
    }

    #[test]
    fn empty_and_unreadable_texts_fail_when_loaded() {
        let r = read("{\"id\": 1, \"text\": \"  \\n\"}\n{\"id\": 2, \"path\": \"missing.txt\"}\n");
        assert_eq!(
            r[0].load().unwrap_err(),
            "line 1: the text is empty: there is nothing to summarize"
        );
        let err = r[1].load().unwrap_err();
        assert!(
            err.starts_with("line 2: cannot read /data/missing.txt:"),
            "{err}"
        );
    }

    #[test]
    fn a_directory_is_its_visible_files_sorted_by_relative_path() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, text) in [
            ("b.txt", "B"),
            ("a/z.md", "Z"),
            ("a/c/d.txt", "D"),
            (".hidden", "H"),
            (".git/config", "G"),
            ("a/.swap", "S"),
        ] {
            std::fs::create_dir_all(d.join(name).parent().unwrap()).unwrap();
            std::fs::write(d.join(name), text).unwrap();
        }
        let records = read_directory(d).unwrap();
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a/c/d.txt", "a/z.md", "b.txt"]);
        assert_eq!(records[0].load().unwrap(), "D");
        assert_eq!(records[0].line, None);
        let err = read_directory(&d.join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
