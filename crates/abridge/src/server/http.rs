//! What every route shares: errors as Ollama writes them, JSON bodies that
//! fail with those errors, and timestamps.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::Error;

/// An error answered as `{"error": "..."}` with a status, as Ollama does;
/// `extra` adds machine-readable fields (a prompt's token count).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub extra: Option<Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The JSON body, as sent and as streamed when an error comes after
    /// the headers.
    pub fn body(&self) -> Value {
        let mut body = json!({ "error": self.message });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (&self.extra, &mut body) {
            map.extend(extra.clone());
        }
        body
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            Error::OutOfMemory { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Error::EmptyText
            | Error::BinaryText { .. }
            | Error::Document(_)
            | Error::EmptyPrompt
            | Error::ContextTooLarge { .. }
            | Error::ContextTooSmall { .. }
            | Error::PromptTooLong { .. }
            | Error::ContextOverflow { .. }
            | Error::InvalidOption(_)
            | Error::Template(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A JSON request body whose every failure (too large, not JSON, wrong
/// types) is a 4xx with an Ollama-style error.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "the request body is larger than the server accepts (--max-body)".to_owned()
            } else {
                format!("cannot read the request body: {e}")
            };
            ApiError::new(status, message)
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
    }
}

/// Decodes standard base64 (with or without padding; whitespace ignored).
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now in RFC 3339 with nanoseconds, UTC, as Ollama writes `created_at`.
pub(crate) fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_nanos())
}

/// `2024-02-26T09:05:00.000000001Z` for a time since the epoch.
pub(crate) fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (y, m, d) = crate::bench::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_708_938_300, 0), "2024-02-26T09:05:00.000000000Z");
        assert_eq!(rfc3339(4_102_444_799, 0), "2099-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn errors_carry_their_figures() {
        let mut e = ApiError::bad_request("too long");
        e.extra = Some(json!({"prompt_tokens": 9000, "num_ctx": 2048}));
        assert_eq!(
            e.body(),
            json!({"error": "too long", "prompt_tokens": 9000, "num_ctx": 2048})
        );
        let e = ApiError::from(Error::EmptyPrompt);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
