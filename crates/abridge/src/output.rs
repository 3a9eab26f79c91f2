//! Writing results: a file appears under its name complete, or not at all.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A file written under a temporary name beside its destination and renamed
/// into place by [`commit`](Self::commit).
///
/// Until then the destination is untouched: a file already there keeps its
/// old content. Dropped without a commit (an error, a cancelled summary, a
/// panic), it removes its temporary file. The temporary file lives in the
/// destination's directory because a rename is atomic only within one file
/// system; it is named `.NAME.PID-N.tmp`, so it is hidden and says which
/// process wrote it. A destination that exists takes its permissions with it:
/// rewriting a private file does not make it readable to others.
///
/// ```
/// use std::io::Write;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("summary.txt");
/// let mut out = abridge::output::AtomicFile::create(&path)?;
/// out.write_all(b"The council funded the library.\n")?;
/// assert!(!path.exists(), "nothing under the name before the commit");
/// out.commit()?;
/// assert_eq!(std::fs::read_to_string(&path)?, "The council funded the library.\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AtomicFile {
    /// `None` once committed.
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file for `dest`. Fails when `dest` names no file
    /// or is a directory, or when its directory cannot be written: before any
    /// work whose result would have nowhere to go.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        // Two writers of one destination in one process get distinct names.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let dest = dest.as_ref().to_path_buf();
        let write_error = |source| Error::Write {
            path: dest.clone(),
            source,
        };
        let Some(name) = dest.file_name() else {
            return Err(Error::InvalidOption(format!(
                "{} does not name a file",
                dest.display()
            )));
        };
        let existing = std::fs::metadata(&dest).ok();
        if existing.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(write_error(io::ErrorKind::IsADirectory.into()));
        }
        let temp = dest.with_file_name(format!(
            ".{}.{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(write_error)?;
        // From here on, a failure removes the temporary file.
        let out = Self {
            file: Some(file),
            temp,
            dest,
        };
        if let (Some(meta), Some(file)) = (existing, &out.file) {
            file.set_permissions(meta.permissions())
                .map_err(|source| Error::Write {
                    path: out.dest.clone(),
                    source,
                })?;
        }
        Ok(out)
    }

    /// The file this one will become.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Writes what was written to disk and renames the temporary file to the
    /// destination, replacing what was there.
    pub fn commit(mut self) -> Result<()> {
        let write_error = |source| Error::Write {
            path: self.dest.clone(),
            source,
        };
        if let Some(file) = &self.file {
            file.sync_all().map_err(write_error)?;
        }
        std::fs::rename(&self.temp, &self.dest).map_err(write_error)?;
        self.file = None;
        // The rename itself is durable only once the directory is written.
        let dir = match self.dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the file was already committed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file);
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_uncommitted_file_leaves_the_old_content_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        std::fs::write(&path, "old").unwrap();
        let mut out = AtomicFile::create(&path).unwrap();
        out.write_all(b"new").unwrap();
        assert_eq!(
            names(dir.path()).len(),
            2,
            "the temporary file is beside it"
        );
        drop(out);
        assert_eq!(names(dir.path()), ["out.txt"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    }

    #[cfg(unix)]
    #[test]
    fn a_commit_replaces_the_file_and_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut out = AtomicFile::create(&path).unwrap();
        let mut second = AtomicFile::create(&path).unwrap();
        out.write_all(b"new").unwrap();
        second.write_all(b"other").unwrap();
        drop(second);
        out.commit().unwrap();
        assert_eq!(names(dir.path()), ["out.txt"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_directory_or_a_missing_directory_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let err = AtomicFile::create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");
        let missing = dir.path().join("no/such/dir/out.txt");
        let err = AtomicFile::create(&missing).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(names(dir.path()).is_empty());
    }
}
