//! Joining the outputs of a batch's shards (or of several runs) into one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::journal::scan;
use super::{Record, RecordId};
use crate::error::{Error, Result};

/// The joined output: one line per id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The lines, as the inputs wrote them, without their newlines: in the
    /// records' order when they are given, else in order of first appearance
    /// (ids the records do not have come last).
    pub lines: Vec<String>,
    /// What the inputs held.
    pub report: MergeReport,
}

/// What a merge found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Ids with a summary.
    pub summarized: usize,
    /// Ids with only errors.
    pub failed: usize,
    /// Ids with more than one line, in the order of the lines.
    pub duplicates: Vec<RecordId>,
    /// Records (when given) that no input has a line for, in their order.
    pub missing: Vec<RecordId>,
    /// Ids of lines that match no record (when records are given).
    pub unexpected: Vec<RecordId>,
    /// Inputs whose torn last line (see [`Journal`](super::Journal)) was
    /// left out.
    pub torn: Vec<PathBuf>,
}

/// Joins batch output files. Each id keeps one line: its first summary, or
/// when it has none, its last error (so a later retry's line wins over an
/// earlier error, and an error never replaces a summary). With `records`
/// (the batch's input), the records no input has a line for are listed as
/// missing.
pub fn merge(inputs: &[impl AsRef<Path>], records: Option<&[Record]>) -> Result<Merged> {
    let mut report = MergeReport::default();
    // For each id: its line, whether that line is an error, and how many it had.
    let mut kept: HashMap<RecordId, (String, bool, usize)> = HashMap::new();
    let mut order = Vec::new();
    for input in inputs {
        let path = input.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let scan = scan(path, &bytes)?;
        if scan.end < bytes.len() {
            report.torn.push(path.to_path_buf());
        }
        for line in scan.lines {
            match kept.get_mut(&line.id) {
                None => {
                    order.push(line.id.clone());
                    kept.insert(line.id, (line.text.to_owned(), line.failed, 1));
                }
                Some((text, failed, count)) => {
                    *count += 1;
                    if *failed {
                        *text = line.text.to_owned();
                        *failed = line.failed;
                    }
                }
            }
        }
    }
    if let Some(records) = records {
        let mut ordered = Vec::with_capacity(order.len());
        for r in records {
            if kept.contains_key(&r.id) {
                ordered.push(r.id.clone());
            } else {
                report.missing.push(r.id.clone());
            }
        }
        let known: std::collections::HashSet<&RecordId> = records.iter().map(|r| &r.id).collect();
        report.unexpected = order
            .iter()
            .filter(|id| !known.contains(id))
            .cloned()
            .collect();
        ordered.extend(report.unexpected.iter().cloned());
        order = ordered;
    }
    let mut lines = Vec::with_capacity(order.len());
    for id in order {
        let Some((text, failed, count)) = kept.remove(&id) else {
            continue;
        };
        if failed {
            report.failed += 1;
        } else {
            report.summarized += 1;
        }
        if count > 1 {
            report.duplicates.push(id);
        }
        lines.push(text);
    }
    Ok(Merged { lines, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_id_summaries_win_and_missing_ids_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let a = write(
            "a.jsonl",
            "{\"id\":\"x\",\"summary\":null,\"error\":\"first\"}\n\
             {\"id\":\"y\",\"summary\":\"Y\",\"error\":null}\n\
             {\"id\":\"odd\",\"summary\":\"O\",\"error\":null}\n",
        );
        let b = write(
            "b.jsonl",
            "{\"id\":\"x\",\"summary\":\"X\",\"error\":null}\n\
             {\"id\":\"y\",\"summary\":null,\"error\":\"late\"}\n\
             {\"id\":\"z\",\"summary\":null,\"error\":\"e1\"}\n\
             {\"id\":\"z\",\"summary\":null,\"error\":\"e2\"}\n\
             {\"id\":\"w\",\"summ",
        );
        let records: Vec<Record> = ["z", "y", "x", "gone", "w"]
            .into_iter()
            .map(|id| Record::text(id, "t"))
            .collect();
        let m = merge(&[&a, &b], Some(&records)).unwrap();
        assert_eq!(
            m.lines,
            [
                "{\"id\":\"z\",\"summary\":null,\"error\":\"e2\"}",
                "{\"id\":\"y\",\"summary\":\"Y\",\"error\":null}",
                "{\"id\":\"x\",\"summary\":\"X\",\"error\":null}",
                "{\"id\":\"odd\",\"summary\":\"O\",\"error\":null}",
            ]
        );
        let ids = |v: &[RecordId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(m.report.summarized, 3);
        assert_eq!(m.report.failed, 1);
        assert_eq!(ids(&m.report.duplicates), ["z", "y", "x"]);
        assert_eq!(ids(&m.report.missing), ["gone", "w"]);
        assert_eq!(ids(&m.report.unexpected), ["odd"]);
        assert_eq!(m.report.torn, std::slice::from_ref(&b));

        // Without the records: in order of first appearance, nothing missing.
        let m = merge(&[&b, &a], None).unwrap();
        assert_eq!(ids(&m.report.missing), Vec::<String>::new());
        assert!(m.lines[0].contains("\"X\""));
        assert_eq!(m.lines.len(), 4);
    }
}
