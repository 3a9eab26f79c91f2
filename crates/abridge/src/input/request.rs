//! Saved requests from summarizing clients, so they can be replayed offline.
//!
//! The format is JSON with `history` (URL-encoded text), `model` (an Ollama
//! tag) and `systemText` (the system prompt). `history` holds the question, a
//! blank line, the article and, when the request was answered, a blank line
//! and the answer. Ollama's Mistral replies begin with a space, so the answer
//! is what follows the last blank line that is followed by a space.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// A replayable summarization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRequest {
    /// The instruction (`What is this article about?`).
    pub question: String,
    /// The text to summarize.
    pub article: String,
    /// The answer the original run gave, when the file records one.
    pub answer: Option<String>,
    /// The model tag the request named.
    pub model: Option<String>,
    /// The system prompt.
    pub system: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    history: String,
    model: Option<String>,
    #[serde(rename = "systemText")]
    system_text: Option<String>,
}

impl SavedRequest {
    /// Reads a saved request file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses a saved request.
    pub fn parse(json: &str) -> Result<Self> {
        let raw: Raw = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("not a saved request: {e}")))?;
        let history = urlencoding::decode(&raw.history)
            .map_err(|e| Error::Config(format!("`history` is not valid URL-encoded UTF-8: {e}")))?
            .replace("\r\n", "\n");
        let (question, rest) = history.split_once("\n\n").ok_or_else(|| {
            Error::Config("`history` has no blank line between the question and the text".into())
        })?;
        let (article, answer) = match rest.rfind("\n\n ") {
            Some(at) => (&rest[..at], Some(rest[at + 2..].trim().to_owned())),
            None => (rest, None),
        };
        let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        Ok(Self {
            question: question.trim().to_owned(),
            article: article.trim().to_owned(),
            answer: non_empty(answer),
            model: non_empty(raw.model),
            system: non_empty(raw.system_text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_question_article_and_answer() {
        let json = r#"{"history":"Q%3F%0A%0ALine%201%0A%0A%20Icon%0A%0AEnd.%0A%0A%20The%20answer.","model":"m:tag","systemText":"Be brief"}"#;
        let r = SavedRequest::parse(json).unwrap();
        assert_eq!(r.question, "Q?");
        assert_eq!(r.article, "Line 1\n\n Icon\n\nEnd.");
        assert_eq!(r.answer.as_deref(), Some("The answer."));
        assert_eq!(r.model.as_deref(), Some("m:tag"));
        assert_eq!(r.system.as_deref(), Some("Be brief"));
    }

    #[test]
    fn unanswered_request_keeps_the_whole_article() {
        let r = SavedRequest::parse(r#"{"history":"Q%0A%0AText%20only."}"#).unwrap();
        assert_eq!(r.article, "Text only.");
        assert_eq!(r.answer, None);
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert!(SavedRequest::parse("{}").is_err());
        assert!(SavedRequest::parse(r#"{"history":"no blank line"}"#).is_err());
        assert!(SavedRequest::parse("not json").is_err());
    }
}
