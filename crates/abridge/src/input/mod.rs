//! Checking and decoding the text to summarize.

use crate::error::{Error, Result};

pub mod document;
pub mod request;

pub use document::{Format, detect, extract, html_text};
pub use request::SavedRequest;

/// The text of the document at `path`: plain text, HTML or PDF, recognised
/// by content ([`extract`]).
pub fn read_file(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    extract(&bytes)
}

/// Decodes `bytes` as UTF-8 text, dropping a leading byte-order mark.
///
/// Text that is not UTF-8 is an error naming the offset of the first bad
/// byte, rather than a lossy guess that would silently feed the model garbage.
///
/// ```
/// assert_eq!(abridge::input::decode(b"\xEF\xBB\xBFhi").unwrap(), "hi");
/// let err = abridge::input::decode(b"ok \xFF").unwrap_err();
/// assert!(err.to_string().contains("byte offset 3"));
/// ```
pub fn decode(bytes: &[u8]) -> Result<String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(Error::NotUtf8 {
            offset: e.valid_up_to(),
        }),
    }
}

/// Checks that `text` has something to summarize and is not binary data.
///
/// ```
/// assert!(abridge::input::check(" \n\t").is_err());
/// assert!(abridge::input::check("A sentence.").is_ok());
/// ```
pub fn check(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::EmptyText);
    }
    if let Some(at) = text.find('\0') {
        return Err(Error::BinaryText { offset: at });
    }
    Ok(())
}
