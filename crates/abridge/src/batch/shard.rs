//! Splitting a batch across machines: which records belong to which worker.
//!
//! A record belongs to shard `hash(id) % count`, where `hash` is 64-bit
//! FNV-1a over the id's UTF-8 bytes. Membership depends on the id alone, so
//! adding, removing or reordering records never moves the others to another
//! shard, and a worker that restarts finds the same records it had.

use std::fmt;

use super::RecordId;
use crate::error::{Error, Result};

/// One worker's part of a batch: shard `index` of `count`.
///
/// ```
/// use abridge::batch::{RecordId, Shard};
///
/// let shards: Vec<Shard> = (0..4).map(|i| format!("{i}/4").parse().unwrap()).collect();
/// let id = RecordId::from("reports/2024/q3.pdf");
/// assert_eq!(shards.iter().filter(|s| s.contains(&id)).count(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

impl Shard {
    /// This worker's shard, below [`count`](Self::count).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// How many shards the batch is split into (at least 1).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Shard `index` of `count`; an index not below the count, or a count of
    /// zero, is an error.
    pub fn new(index: u64, count: u64) -> Result<Self> {
        if count == 0 {
            return Err(Error::InvalidOption(
                "the shard count must be at least 1".into(),
            ));
        }
        if index >= count {
            return Err(Error::InvalidOption(format!(
                "shard index {index} is out of range for {count} shards (indices run from 0 to {})",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }

    /// Whether the record with this id belongs to this shard.
    pub fn contains(&self, id: &RecordId) -> bool {
        fnv1a(id.as_str().as_bytes()) % self.count == self.index
    }

    /// The shard a scheduler gave this process through its environment, or
    /// `None` when it gave none.
    ///
    /// Kubernetes Indexed Jobs set `JOB_COMPLETION_INDEX`, but not the number
    /// of completions, so `count` must be given with it. Slurm job arrays set
    /// `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_MIN` (the index is the task id
    /// less it; 0 when unset) and `SLURM_ARRAY_TASK_COUNT` (used when `count`
    /// is `None`). A `count` with no index in the environment is an error: the
    /// caller asked for sharding that cannot happen.
    pub fn from_env(count: Option<u64>) -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok(), count)
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>, count: Option<u64>) -> Result<Option<Self>> {
        let number = |name: &str| -> Result<Option<u64>> {
            var(name)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        Error::InvalidOption(format!(
                            "{name}={v:?} is not a shard index or count (a whole number from 0)"
                        ))
                    })
                })
                .transpose()
        };
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = count.ok_or_else(|| {
                Error::InvalidOption(format!(
                    "JOB_COMPLETION_INDEX={index} (a Kubernetes Indexed Job) says which shard this is, \
                     but not how many there are: give the shard count (the Job's completions)"
                ))
            })?;
            return Self::new(index, count).map(Some);
        }
        if let Some(task) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = task.checked_sub(min).ok_or_else(|| {
                Error::InvalidOption(format!(
                    "SLURM_ARRAY_TASK_ID={task} is below SLURM_ARRAY_TASK_MIN={min}"
                ))
            })?;
            let count = match count {
                Some(c) => c,
                None => number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                    Error::InvalidOption(format!(
                        "SLURM_ARRAY_TASK_ID={task} says which shard this is, but \
                         SLURM_ARRAY_TASK_COUNT is not set: give the shard count"
                    ))
                })?,
            };
            return Self::new(index, count).map(Some);
        }
        match count {
            Some(c) => Err(Error::InvalidOption(format!(
                "a shard count ({c}) needs a shard index: neither JOB_COMPLETION_INDEX nor \
                 SLURM_ARRAY_TASK_ID is set; give the shard as I/N instead"
            ))),
            None => Ok(None),
        }
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;

    /// Parses `I/N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidOption(format!(
                "shard {s:?} is not INDEX/COUNT (e.g. 0/4, the first of four)"
            ))
        };
        let (index, count) = s.split_once('/').ok_or_else(bad)?;
        let index = index.trim().parse().map_err(|_| bad())?;
        let count = count.trim().parse().map_err(|_| bad())?;
        Self::new(index, count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// 64-bit FNV-1a. Shard membership is part of the batch's contract (shard
/// outputs written by one version are resumed and merged by another, on
/// other machines), so this is written out here rather than borrowed from a
/// hasher whose output may change: it must never change.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_never_changes() {
        // The reference values of the FNV specification.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        // And what they mean for ids: an integer id hashes as its digits.
        let shard_of = |id: &RecordId| {
            (0..4)
                .find(|&i| Shard::new(i, 4).unwrap().contains(id))
                .unwrap()
        };
        assert_eq!(shard_of(&RecordId::from("a")), 0xaf63_dc4c_8601_ec8c % 4);
        assert_eq!(shard_of(&RecordId::from(7)), fnv1a(b"7") % 4);
    }

    /// Where ids go, pinned: a worker of any version must take the same
    /// records, or a resumed or re-sharded batch would skip or redo some.
    #[test]
    fn ids_stay_in_the_shards_they_were_given() {
        for (id, of_4, of_7) in [
            (RecordId::from("doc-01.txt"), 1, 4),
            (RecordId::from("doc-02.txt"), 0, 5),
            (RecordId::from("reports/q3.pdf"), 1, 5),
            (RecordId::from(17), 1, 4),
            (RecordId::from("memo"), 3, 6),
            (RecordId::from("line-12"), 1, 6),
        ] {
            for (count, index) in [(4, of_4), (7, of_7)] {
                let holders: Vec<u64> = (0..count)
                    .filter(|&i| Shard::new(i, count).unwrap().contains(&id))
                    .collect();
                assert_eq!(holders, [index], "{id} of {count}");
            }
        }
    }

    #[test]
    fn shards_parse_and_refuse_what_cannot_be_a_shard() {
        let s: Shard = "2/4".parse().unwrap();
        assert_eq!((s.index(), s.count()), (2, 4));
        assert_eq!(s.to_string(), "2/4");
        for (bad, says) in [
            ("4/4", "out of range"),
            ("0/0", "at least 1"),
            ("1", "INDEX/COUNT"),
            ("-1/4", "INDEX/COUNT"),
            ("a/b", "INDEX/COUNT"),
        ] {
            let err = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn schedulers_give_the_shard_through_the_environment() {
        assert_eq!(Shard::from_vars(env(&[]), None).unwrap(), None);
        let k8s = Shard::from_vars(env(&[("JOB_COMPLETION_INDEX", "3")]), Some(4)).unwrap();
        assert_eq!(k8s, Some(Shard { index: 3, count: 4 }));
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "5"),
        ];
        let s = Shard::from_vars(env(&slurm), None).unwrap();
        assert_eq!(s, Some(Shard { index: 2, count: 5 }));
        // An explicit count wins over the array's.
        let s = Shard::from_vars(env(&slurm), Some(3)).unwrap();
        assert_eq!(s, Some(Shard { index: 2, count: 3 }));
        let s = Shard::from_vars(
            env(&[
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(s, Some(Shard { index: 1, count: 2 }));
    }

    #[test]
    fn environment_errors_name_the_variable_and_the_fix() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Vars, Option<u64>, &str); 6] = [
            (
                &[("JOB_COMPLETION_INDEX", "1")],
                None,
                "give the shard count",
            ),
            (&[("JOB_COMPLETION_INDEX", "4")], Some(4), "out of range"),
            (
                &[("JOB_COMPLETION_INDEX", "x")],
                Some(4),
                "JOB_COMPLETION_INDEX=\"x\"",
            ),
            (
                &[("SLURM_ARRAY_TASK_ID", "1")],
                None,
                "SLURM_ARRAY_TASK_COUNT is not set",
            ),
            (
                &[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "2")],
                Some(4),
                "below SLURM_ARRAY_TASK_MIN",
            ),
            (
                &[],
                Some(4),
                "neither JOB_COMPLETION_INDEX nor SLURM_ARRAY_TASK_ID",
            ),
        ];
        for (vars, count, says) in cases {
            let err = Shard::from_vars(env(vars), count).unwrap_err().to_string();
            assert!(err.contains(says), "{vars:?}: {err}");
        }
    }
}
