//! What the summarizer asks of the model beyond the text: the length and
//! form of the answer, and checking a structured (JSON) answer.

use crate::error::{Error, Result};

/// How long the summary should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Two or three sentences.
    Short,
    /// One paragraph.
    Medium,
    /// Several paragraphs.
    Long,
    /// About this many words.
    Words(usize),
}

impl Length {
    /// The words a summary of this length should have: what the prompt
    /// asks for and what generation aims at.
    ///
    /// ```
    /// assert_eq!(abridge::Length::Words(80).target_words(), 80);
    /// assert!(abridge::Length::Short.target_words() < abridge::Length::Medium.target_words());
    /// ```
    pub fn target_words(self) -> usize {
        match self {
            Length::Short => 50,
            Length::Medium => 120,
            Length::Long => 300,
            Length::Words(n) => n,
        }
    }

    pub(crate) fn directive(self) -> String {
        let n = self.target_words();
        match self {
            Length::Short => format!("Answer in two or three sentences, about {n} words."),
            Length::Medium => format!("Answer in one paragraph of about {n} words."),
            Length::Long => {
                format!(
                    "Answer in several paragraphs, about {n} words in all, covering every main point."
                )
            }
            Length::Words(n) => format!("Answer in about {n} words."),
        }
    }

    /// Tokens enough for a summary of this length, for a tokenizer that
    /// spends `tokens_per_word` on this kind of text: a quarter more than the
    /// target, and room to finish the last sentence.
    pub fn max_tokens(self, tokens_per_word: f64) -> usize {
        (self.target_words() as f64 * 1.25 * tokens_per_word).ceil() as usize + 48
    }
}

/// The form of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Prose, as the model writes it.
    #[default]
    Paragraph,
    /// A bulleted list.
    Bullets,
    /// Markdown with a heading and sections.
    Markdown,
    /// A JSON object `{"title", "summary", "key_points": [...]}`, validated.
    Json,
}

impl OutputFormat {
    pub(crate) fn directive(self) -> Option<&'static str> {
        match self {
            OutputFormat::Paragraph => None,
            OutputFormat::Bullets => Some(
                "Answer as a bulleted list of the main points, one per line, each starting with \"- \".",
            ),
            OutputFormat::Markdown => Some(
                "Answer in Markdown: a title as a heading, then the summary in short sections.",
            ),
            OutputFormat::Json => Some(
                "Answer with only a JSON object, no other text, with the keys \"title\" (a string), \"summary\" (a string) and \"key_points\" (a list of strings).",
            ),
        }
    }
}

/// Finds and checks the JSON object a model was asked for: the first `{` to
/// the last `}` of `text`, with `title`, `summary` and `key_points`.
pub fn parse_json_summary(text: &str) -> Result<serde_json::Value> {
    let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) else {
        return Err(Error::BadModelOutput(
            "the model's answer contains no JSON object".into(),
        ));
    };
    if end < start {
        return Err(Error::BadModelOutput(
            "the model's answer contains no JSON object".into(),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&text[start..=end])
        .map_err(|e| Error::BadModelOutput(format!("the model's JSON does not parse: {e}")))?;
    let string = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let summary = string("summary").ok_or_else(|| {
        Error::BadModelOutput("the model's JSON has no \"summary\" string".into())
    })?;
    let key_points: Vec<String> = match v.get("key_points") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| p.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(serde_json::json!({
        "title": string("title").unwrap_or_default(),
        "summary": summary,
        "key_points": key_points,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_summaries_are_found_and_checked() {
        let v = parse_json_summary(
            "Sure! {\"title\": \"T\", \"summary\": \"S\", \"key_points\": [\"a\", 2]} Done.",
        )
        .unwrap();
        assert_eq!(v["summary"], "S");
        assert_eq!(v["key_points"], serde_json::json!(["a", "2"]));
        assert!(parse_json_summary("no json here").is_err());
        assert!(parse_json_summary("{\"title\": \"T\"}").is_err());
        assert!(parse_json_summary("} {").is_err());
    }
}
