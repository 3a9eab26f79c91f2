//! The requests of Ollama's and OpenAI's HTTP APIs as they arrive, and how
//! their options become ours.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::generate::{GenerateOptions, SamplingOptions};
use crate::tokenizer::template::{Message, Role};

use super::http::ApiError;

/// `options` of an Ollama request. Unknown options are ignored, as Ollama
/// does; so is `num_thread`, since every request runs on the threads the
/// loaded model owns (`--threads`).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Options {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<usize>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    /// Ollama's: -1 generates until the model stops or the context is full.
    pub num_predict: Option<i64>,
    pub num_ctx: Option<usize>,
    pub stop: Option<Vec<String>>,
}

impl Options {
    /// Our generation options: abridge's deterministic defaults, with what
    /// the request sets.
    pub fn generate_options(&self) -> Result<GenerateOptions, ApiError> {
        let mut s = SamplingOptions::default();
        let set = |slot: &mut f32, v: Option<f32>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut s.temperature, self.temperature);
        set(&mut s.top_p, self.top_p);
        set(&mut s.min_p, self.min_p);
        set(&mut s.repeat_penalty, self.repeat_penalty);
        set(&mut s.presence_penalty, self.presence_penalty);
        set(&mut s.frequency_penalty, self.frequency_penalty);
        if let Some(k) = self.top_k {
            s.top_k = k;
        }
        if let Some(n) = self.repeat_last_n {
            s.repeat_last_n = n;
        }
        // Ollama's -1 asks for a random seed; any other value is the seed.
        if let Some(seed) = self.seed.filter(|&s| s >= 0) {
            s.seed = seed as u64;
        } else if self.seed.is_some() {
            s.seed = random_seed();
        }
        s.validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(GenerateOptions {
            stop: self.stop.clone().unwrap_or_default(),
            sampling: s,
            ..GenerateOptions::default()
        })
    }

    /// Most tokens to generate, when the request limits them.
    pub fn max_tokens(&self) -> Result<Option<usize>, ApiError> {
        match self.num_predict {
            None | Some(-1) | Some(-2) => Ok(None),
            Some(n) if n > 0 => Ok(Some(n as usize)),
            Some(n) => Err(ApiError::bad_request(format!(
                "num_predict must be positive, or -1 for no limit; got {n}"
            ))),
        }
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// How long a model stays loaded after a request (`keep_alive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// This long (zero: unloaded as soon as it is idle).
    For(Duration),
    /// Until the server stops.
    Forever,
}

impl KeepAlive {
    /// Reads a keep-alive as Ollama writes it: `"5m"`, `"1h30m"`, `"0"`, a
    /// number of seconds, or a negative value for ever.
    ///
    /// ```
    /// use abridge::server::KeepAlive;
    /// use std::time::Duration;
    /// assert_eq!(KeepAlive::parse("1h30m"), Some(KeepAlive::For(Duration::from_secs(5400))));
    /// assert_eq!(KeepAlive::parse("-1"), Some(KeepAlive::Forever));
    /// assert_eq!(KeepAlive::parse("soon"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Self> {
        parse_go_duration(text)
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let parsed = match &value {
            Value::Number(n) => n.as_f64().map(seconds_or_forever),
            Value::String(s) => parse_go_duration(s),
            _ => None,
        };
        parsed.ok_or_else(|| {
            serde::de::Error::custom(format!(
                "keep_alive must be a duration such as \"5m\" or a number of seconds, got {value}"
            ))
        })
    }
}

fn seconds_or_forever(s: f64) -> KeepAlive {
    if s < 0.0 {
        KeepAlive::Forever
    } else {
        KeepAlive::For(Duration::from_secs_f64(s.min(1e9)))
    }
}

/// Go's `time.ParseDuration` subset that clients send: a bare number is
/// seconds; otherwise numbers with `h`, `m`, `s` or `ms`, concatenated.
fn parse_go_duration(text: &str) -> Option<KeepAlive> {
    let text = text.trim();
    if let Ok(n) = text.parse::<f64>() {
        return Some(seconds_or_forever(n));
    }
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&e| e > 0)?;
        let number: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit..];
    }
    Some(if negative {
        KeepAlive::Forever
    } else {
        seconds_or_forever(total)
    })
}

/// A chat turn as clients send it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

/// A message's content: a string (Ollama), or OpenAI's list of parts of
/// which the text ones are read.
#[derive(Debug, Default)]
pub(crate) struct Content(pub String);

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Parts(Vec<Part>),
            Null(()),
        }
        #[derive(Deserialize)]
        struct Part {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            text: String,
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Text(s) => Content(s),
            Raw::Parts(parts) => Content(
                parts
                    .into_iter()
                    .filter(|p| p.kind == "text")
                    .map(|p| p.text)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Raw::Null(()) => Content::default(),
        })
    }
}

/// Our messages from the wire's, refusing roles we cannot prompt with.
pub(crate) fn messages(wire: &[WireMessage]) -> Result<Vec<Message>, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::bad_request(
            "messages is empty: send at least one message",
        ));
    }
    wire.iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unsupported message role {other:?}: use system, user or assistant"
                    )));
                }
            };
            Ok(Message::new(role, m.content.0.clone()))
        })
        .collect()
}

/// `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<WireMessage>,
    pub stream: Option<bool>,
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Options,
    pub keep_alive: Option<KeepAlive>,
}

/// `POST /api/generate`.
#[derive(Debug, Deserialize)]
pub(crate) struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub system: Option<String>,
    #[serde(default)]
    pub raw: bool,
    pub stream: Option<bool>,
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Options,
    pub keep_alive: Option<KeepAlive>,
}

/// `POST /api/summarize`: abridge's own, for texts of any length.
#[derive(Debug, Deserialize)]
pub(crate) struct SummarizeRequest {
    pub model: String,
    #[serde(default)]
    pub text: String,
    /// A file's bytes in base64 (text, HTML or PDF, told apart by content),
    /// instead of `text`.
    pub document_base64: Option<String>,
    /// `short`, `medium`, `long`, or a number of words.
    pub length: Option<Value>,
    /// `paragraph`, `bullets`, `markdown` or `json`.
    pub format: Option<String>,
    pub system: Option<String>,
    pub prompt: Option<String>,
    pub stream: Option<bool>,
    #[serde(default)]
    pub options: Options,
    pub keep_alive: Option<KeepAlive>,
}

/// `POST /api/show`, `DELETE /api/delete`, `POST /api/pull`.
#[derive(Debug, Deserialize)]
pub(crate) struct NameRequest {
    #[serde(alias = "name")]
    pub model: String,
    pub stream: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub(crate) struct OpenAiChatRequest {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<WireMessage>,
    #[serde(default)]
    pub stream: bool,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub stop: Option<StopList>,
    pub response_format: Option<Value>,
}

/// OpenAI's `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StopList {
    One(String),
    Many(Vec<String>),
}

impl OpenAiChatRequest {
    /// The same request in Ollama's terms.
    pub fn options(&self) -> Options {
        Options {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            num_predict: self
                .max_completion_tokens
                .or(self.max_tokens)
                .map(|n| n as i64),
            stop: self.stop.as_ref().map(|s| match s {
                StopList::One(s) => vec![s.clone()],
                StopList::Many(v) => v.clone(),
            }),
            ..Options::default()
        }
    }

    /// Whether the request asks for a JSON object.
    pub fn wants_json(&self) -> bool {
        self.response_format
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "json_object" || t == "json_schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_reads_what_ollama_clients_send() {
        let parse = |json: &str| serde_json::from_str::<KeepAlive>(json).ok();
        let secs = |s: u64| Some(KeepAlive::For(Duration::from_secs(s)));
        assert_eq!(parse("\"5m\""), secs(300));
        assert_eq!(parse("\"1h30m\""), secs(5400));
        assert_eq!(parse("\"0\""), secs(0));
        assert_eq!(parse("0"), secs(0));
        assert_eq!(parse("120"), secs(120));
        assert_eq!(parse("\"-1\""), Some(KeepAlive::Forever));
        assert_eq!(parse("-1"), Some(KeepAlive::Forever));
        assert_eq!(parse("\"-5m\""), Some(KeepAlive::Forever));
        assert_eq!(
            parse("\"500ms\""),
            Some(KeepAlive::For(Duration::from_millis(500)))
        );
        assert_eq!(parse("\"soon\""), None);
        assert_eq!(parse("\"5x\""), None);
        assert_eq!(parse("\"m\""), None);
        assert_eq!(parse("true"), None);
    }

    #[test]
    fn content_is_a_string_or_openai_parts() {
        let m: WireMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{}},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.content.0, "a\nb");
        let m: WireMessage = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(m.content.0, "hi");
        assert!(serde_json::from_str::<WireMessage>(r#"{"role":"user","content":5}"#).is_err());
    }

    #[test]
    fn options_map_to_sampling_and_refuse_bad_values() {
        let o: Options =
            serde_json::from_str(r#"{"temperature":0.5,"top_k":7,"seed":3,"stop":["\n\n"]}"#)
                .unwrap();
        let g = o.generate_options().unwrap();
        assert_eq!(g.sampling.temperature, 0.5);
        assert_eq!(g.sampling.top_k, 7);
        assert_eq!(g.sampling.seed, 3);
        assert_eq!(g.stop, vec!["\n\n".to_owned()]);
        let bad: Options = serde_json::from_str(r#"{"top_p":3}"#).unwrap();
        assert!(bad.generate_options().is_err());
        let bad: Options = serde_json::from_str(r#"{"num_predict":0}"#).unwrap();
        assert!(bad.max_tokens().is_err());
        assert!(serde_json::from_str::<Options>(r#"{"temperature":"hot"}"#).is_err());
    }

    #[test]
    fn messages_refuse_unknown_roles_and_empty_lists() {
        assert!(messages(&[]).is_err());
        let tool: WireMessage = serde_json::from_str(r#"{"role":"tool","content":"x"}"#).unwrap();
        assert!(messages(&[tool]).is_err());
    }
}
