//! The endpoints: Ollama's generation and model routes, OpenAI's chat
//! completions, abridge's `/api/summarize`, and `/metrics`.

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::generate::{Cancel, Event, Stage};
use crate::gguf::GgufFile;
use crate::model::{ContextWindow, Model};
use crate::registry::{self, Places};
use crate::summarize::{Length, OutputFormat, Summarizer};
use crate::tokenizer::TokenId;
use crate::tokenizer::template::{Message, Role};

use super::AppState;
use super::api::{
    self, ChatRequest, GenerateRequest, KeepAlive, NameRequest, OpenAiChatRequest, SummarizeRequest,
};
use super::http::{ApiError, JsonBody, base64_decode, rfc3339, rfc3339_now, unix_now};
use super::models::Lease;
use super::run::{self, Finished, Job, Piece, Pieces};

type Shared = State<Arc<AppState>>;

/// A response whose log line the job writes when it ends (it knows the
/// tokens); the request logger skips it.
#[derive(Clone, Copy)]
pub(crate) struct LoggedByJob;

/// What format a reply must take, from Ollama's `format` or OpenAI's
/// `response_format`.
#[derive(Clone)]
enum ReplyFormat {
    Free,
    /// Any JSON value.
    Json,
    /// A JSON object with these keys at least (a schema's `required`).
    Schema(Value),
}

impl ReplyFormat {
    fn from_ollama(format: Option<&Value>) -> Result<Self, ApiError> {
        match format {
            None | Some(Value::Null) => Ok(Self::Free),
            Some(Value::String(s)) if s.is_empty() => Ok(Self::Free),
            Some(Value::String(s)) if s == "json" => Ok(Self::Json),
            Some(schema @ Value::Object(_)) => Ok(Self::Schema(schema.clone())),
            Some(other) => Err(ApiError::bad_request(format!(
                "format must be \"json\" or a JSON schema object, got {other}"
            ))),
        }
    }

    /// The instruction appended to the last user message.
    fn directive(&self) -> Option<String> {
        match self {
            Self::Free => None,
            Self::Json => Some("Answer with one JSON value only, no other text.".into()),
            Self::Schema(schema) => Some(format!(
                "Answer with one JSON object only, no other text, matching this JSON schema: {schema}"
            )),
        }
    }

    /// The reply as JSON text, or why it is not what was asked for.
    fn check(&self, reply: &str) -> Result<String, String> {
        if matches!(self, Self::Free) {
            return Ok(reply.to_owned());
        }
        // Small models wrap JSON in prose or a code fence: the value is from
        // the first opening bracket to the last matching closing one.
        let start = reply.find(['{', '[']);
        let end = start.and_then(|s| {
            let close = if reply[s..].starts_with('{') {
                '}'
            } else {
                ']'
            };
            reply.rfind(close).filter(|&e| e > s)
        });
        let body = match (start, end) {
            (Some(s), Some(e)) => &reply[s..=e],
            _ => return Err(format!("the model's reply holds no JSON: {reply:?}")),
        };
        let value: Value = serde_json::from_str(body)
            .map_err(|e| format!("the model's reply is not valid JSON ({e}): {reply:?}"))?;
        if let Self::Schema(schema) = self {
            let required = schema.get("required").and_then(Value::as_array);
            for key in required.into_iter().flatten().filter_map(Value::as_str) {
                if value.get(key).is_none() {
                    return Err(format!(
                        "the model's reply lacks the required field {key:?}: {body}"
                    ));
                }
            }
        }
        Ok(body.to_owned())
    }
}

/// Renders a chat for `model`: special tokens are markup only where the
/// template writes them, never inside a message. A template that refuses a
/// system message gets it in front of the first user message instead.
fn chat_prompt(model: &Model, messages: &[Message]) -> Result<Vec<TokenId>, ApiError> {
    let template = model.template();
    let rendered = match template.render_marked(messages, true) {
        Ok(r) => r,
        Err(e) if messages.iter().any(|m| m.role == Role::System) => {
            let system: Vec<&str> = messages
                .iter()
                .filter(|m| m.role == Role::System)
                .map(|m| m.content.as_str())
                .collect();
            let mut folded: Vec<Message> = messages
                .iter()
                .filter(|m| m.role != Role::System)
                .cloned()
                .collect();
            match folded.iter_mut().find(|m| m.role == Role::User) {
                Some(user) => user.content = format!("{}\n\n{}", system.join("\n\n"), user.content),
                None => return Err(e.into()),
            }
            template.render_marked(&folded, true)?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(model.tokenizer().encode_rendered(&rendered)?)
}

fn with_directive(mut messages: Vec<Message>, format: &ReplyFormat) -> Vec<Message> {
    if let Some(directive) = format.directive()
        && let Some(last) = messages.iter_mut().rev().find(|m| m.role == Role::User)
    {
        last.content = format!("{}\n\n{directive}", last.content);
    }
    messages
}

/// Admits the request, loads its model and starts the job `build` makes.
async fn launch(
    state: &Arc<AppState>,
    model: &str,
    keep_alive: Option<KeepAlive>,
    build: impl FnOnce(Lease) -> Result<Job, ApiError> + Send + 'static,
) -> Result<Pieces, ApiError> {
    let ticket = state.slots.admit()?;
    let lease = state.models.lease(model, keep_alive).await?;
    // Rendering and tokenizing a prompt of many megabytes takes a while:
    // not on the threads that serve every other connection.
    let job = tokio::task::spawn_blocking(move || build(lease))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")))??;
    let slot = state.slots.run(ticket).await;
    Ok(run::start(
        job,
        slot,
        &state.jobs,
        &state.metrics,
        &state.log,
    ))
}

/// Every piece of a job, for a reply that is not streamed.
async fn collect(mut pieces: Pieces) -> Result<(String, Box<Finished>), ApiError> {
    let mut text = String::new();
    while let Some(piece) = pieces.next().await {
        match piece {
            Piece::Text(t) => text.push_str(&t),
            Piece::Done(f) => return Ok((text, f)),
            Piece::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the generation ended without a result",
    ))
}

/// A streamed body of lines that `next_line` makes from each piece until it
/// returns `None`; ends early when the client goes away (the job is then
/// cancelled).
fn stream_lines(
    mut pieces: Pieces,
    content_type: &'static str,
    mut next_line: impl FnMut(Piece) -> Option<String> + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        loop {
            // The client may leave while nothing is being sent (a long
            // prompt, a JSON reply held back until it is checked): watching
            // the body's end as well cancels the job then too.
            let piece = tokio::select! {
                piece = pieces.next() => piece,
                () = tx.closed() => None,
            };
            let Some(line) = piece.and_then(&mut next_line) else {
                break;
            };
            // An empty chunk would read as the end of a chunked body.
            if line.is_empty() {
                continue;
            }
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    let body = ReceiverStream::new(rx).map(|line| Ok::<_, Infallible>(Bytes::from(line)));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response.extensions_mut().insert(LoggedByJob);
    response
}

fn ndjson(value: &Value) -> String {
    format!("{value}\n")
}

/// Streams text pieces, or (for a reply that must be JSON) the checked reply
/// as one piece at the end.
fn ollama_stream(
    pieces: Pieces,
    format: ReplyFormat,
    line: impl Fn(&str, Option<&Finished>) -> Value + Send + 'static,
) -> Response {
    let mut held = String::new();
    stream_lines(pieces, "application/x-ndjson", move |piece| match piece {
        Piece::Text(t) if matches!(format, ReplyFormat::Free) => Some(ndjson(&line(&t, None))),
        Piece::Text(t) => {
            held.push_str(&t);
            Some(String::new())
        }
        Piece::Done(f) => match format.check(&held) {
            Ok(json) if !held.is_empty() || matches!(format, ReplyFormat::Free) => {
                let text = if matches!(format, ReplyFormat::Free) {
                    String::new()
                } else {
                    json
                };
                let mut out = String::new();
                if !text.is_empty() {
                    out.push_str(&ndjson(&line(&text, None)));
                }
                out.push_str(&ndjson(&line("", Some(&f))));
                Some(out)
            }
            Ok(_) => Some(ndjson(&json!({"error": "the model gave no reply"}))),
            Err(why) => Some(ndjson(&json!({ "error": why }))),
        },
        Piece::Failed(e) => Some(ndjson(&e.body())),
    })
}

fn done_fields(mut line: Value, finished: Option<&Finished>) -> Value {
    if let (Some(f), Value::Object(map)) = (finished, &mut line) {
        map.insert("done".into(), true.into());
        map.extend(f.ollama_fields());
    }
    line
}

/// Ollama's reply: streamed lines, or one object with the whole (checked)
/// text.
async fn respond(
    pieces: Pieces,
    format: ReplyFormat,
    stream: bool,
    line: impl Fn(&str, Option<&Finished>) -> Value + Send + 'static,
) -> Result<Response, ApiError> {
    if stream {
        return Ok(ollama_stream(pieces, format, line));
    }
    let (text, finished) = collect(pieces).await?;
    let text = format
        .check(&text)
        .map_err(|why| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, why))?;
    Ok(Json(line(&text, Some(&finished))).into_response())
}

/// `POST /api/chat`.
pub(crate) async fn chat(
    State(state): Shared,
    JsonBody(req): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let format = ReplyFormat::from_ollama(req.format.as_ref())?;
    let messages = with_directive(api::messages(&req.messages)?, &format);
    let options = req.options.generate_options()?;
    let request = req.options.clone();
    let pieces = launch(&state, &req.model, req.keep_alive, move |lease| {
        let prompt = chat_prompt(&lease.model, &messages)?;
        Job::new(lease, prompt, &request, options, arrived, "POST /api/chat")
    })
    .await?;
    let name = req.model.clone();
    let line = move |text: &str, finished: Option<&Finished>| {
        done_fields(
            json!({
                "model": name,
                "created_at": rfc3339_now(),
                "message": {"role": "assistant", "content": text},
                "done": false,
            }),
            finished,
        )
    };
    respond(pieces, format, req.stream.unwrap_or(true), line).await
}

/// `POST /api/generate`. With no prompt it only loads the model (or, with
/// `keep_alive: 0`, unloads it), as Ollama does.
pub(crate) async fn generate(
    State(state): Shared,
    JsonBody(req): JsonBody<GenerateRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let format = ReplyFormat::from_ollama(req.format.as_ref())?;
    if req.prompt.is_empty() {
        let reason = if req.keep_alive == Some(KeepAlive::For(std::time::Duration::ZERO)) {
            state.models.unload(&req.model)?;
            "unload"
        } else {
            drop(state.models.lease(&req.model, req.keep_alive).await?);
            "load"
        };
        return Ok(Json(json!({
            "model": req.model,
            "created_at": rfc3339_now(),
            "response": "",
            "done": true,
            "done_reason": reason,
        }))
        .into_response());
    }
    let options = req.options.generate_options()?;
    let request = req.options.clone();
    let (raw, text, system, wanted) = (
        req.raw,
        req.prompt.clone(),
        req.system.clone(),
        format.clone(),
    );
    let pieces = launch(&state, &req.model, req.keep_alive, move |lease| {
        let prompt = if raw {
            lease.model.tokenizer().encode_prompt(&text)?
        } else {
            let mut messages = Vec::new();
            if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
                messages.push(Message::new(Role::System, system));
            }
            messages.push(Message::new(Role::User, text));
            chat_prompt(&lease.model, &with_directive(messages, &wanted))?
        };
        Job::new(
            lease,
            prompt,
            &request,
            options,
            arrived,
            "POST /api/generate",
        )
    })
    .await?;
    let name = req.model.clone();
    let line = move |text: &str, finished: Option<&Finished>| {
        done_fields(
            json!({
                "model": name,
                "created_at": rfc3339_now(),
                "response": text,
                "done": false,
            }),
            finished,
        )
    };
    respond(pieces, format, req.stream.unwrap_or(true), line).await
}

/// `POST /v1/chat/completions`, OpenAI's chat API (streamed as server-sent
/// events).
pub(crate) async fn openai_chat(
    State(state): Shared,
    JsonBody(req): JsonBody<OpenAiChatRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let format = if req.wants_json() {
        ReplyFormat::Json
    } else {
        ReplyFormat::Free
    };
    let messages = with_directive(api::messages(&req.messages)?, &format);
    let request_options = req.options();
    let options = request_options.generate_options()?;
    let pieces = launch(&state, &req.model, None, move |lease| {
        let prompt = chat_prompt(&lease.model, &messages)?;
        Job::new(
            lease,
            prompt,
            &request_options,
            options,
            arrived,
            "POST /v1/chat/completions",
        )
    })
    .await?;
    let id = format!("chatcmpl-{}", state.jobs_started());
    let created = unix_now();
    let model = req.model.clone();
    if req.stream {
        let chunk = move |delta: Value, finish: Option<&str>| {
            let value = json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            format!("data: {value}\n\n")
        };
        let mut first = true;
        let mut held = String::new();
        return Ok(stream_lines(pieces, "text/event-stream", move |piece| {
            let mut out = String::new();
            if first {
                out.push_str(&chunk(json!({"role": "assistant", "content": ""}), None));
                first = false;
            }
            match piece {
                Piece::Text(t) if matches!(format, ReplyFormat::Free) => {
                    out.push_str(&chunk(json!({ "content": t }), None));
                }
                Piece::Text(t) => held.push_str(&t),
                Piece::Done(f) => {
                    if !matches!(format, ReplyFormat::Free) {
                        match format.check(&held) {
                            Ok(json) => out.push_str(&chunk(json!({ "content": json }), None)),
                            Err(why) => {
                                out.push_str(&format!(
                                    "data: {}\n\n",
                                    json!({"error": {"message": why}})
                                ));
                            }
                        }
                    }
                    out.push_str(&chunk(json!({}), Some(f.finish_reason())));
                    out.push_str("data: [DONE]\n\n");
                }
                Piece::Failed(e) => {
                    out.push_str(&format!(
                        "data: {}\n\n",
                        json!({"error": {"message": e.message}})
                    ));
                }
            }
            Some(out)
        }));
    }
    let (text, finished) = collect(pieces).await?;
    let text = format
        .check(&text)
        .map_err(|why| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, why))?;
    let prompt = finished.stats.prompt_tokens;
    let completion = finished.stats.generated_tokens;
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finished.finish_reason(),
        }],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }))
    .into_response())
}

/// The longest summary a request may ask for, in words: far beyond any
/// model's context, and small enough that the length arithmetic cannot
/// overflow.
const MAX_WORDS: u64 = 100_000;

/// `POST /api/summarize`: a summary of a text of any length, by map-reduce
/// when it is longer than the context window. Streams lines like
/// `/api/generate`'s, with `stage` lines while the parts are summarized.
pub(crate) async fn summarize(
    State(state): Shared,
    JsonBody(req): JsonBody<SummarizeRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let text = match req.document_base64.as_deref() {
        Some(b64) => {
            let bytes = base64_decode(b64)
                .ok_or_else(|| ApiError::bad_request("document_base64 is not valid base64"))?;
            // Reading a PDF is slow work: not on the connection threads.
            tokio::task::spawn_blocking(move || crate::input::extract(&bytes))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")))??
        }
        None => req.text.clone(),
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "text is empty: send the text to summarize",
        ));
    }
    let length = match &req.length {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "short" => Length::Short,
            "medium" => Length::Medium,
            "long" => Length::Long,
            other => {
                return Err(ApiError::bad_request(format!(
                    "length must be short, medium, long or a number of words, got {other:?}"
                )));
            }
        }),
        Some(Value::Number(n)) => match n.as_u64().filter(|n| (1..=MAX_WORDS).contains(n)) {
            Some(n) => Some(Length::Words(n as usize)),
            None => {
                return Err(ApiError::bad_request(format!(
                    "length in words must be from 1 to {MAX_WORDS}"
                )));
            }
        },
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "length must be short, medium, long or a number of words, got {other}"
            )));
        }
    };
    let format = match req.format.as_deref() {
        None | Some("" | "paragraph" | "prose") => OutputFormat::Paragraph,
        Some("bullets") => OutputFormat::Bullets,
        Some("markdown") => OutputFormat::Markdown,
        Some("json") => OutputFormat::Json,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be paragraph, bullets, markdown or json, got {other:?}"
            )));
        }
    };
    let sampling = req.options.generate_options()?.sampling;
    let max_tokens = req.options.max_tokens()?;
    let window = req
        .options
        .num_ctx
        .map(|n| {
            ContextWindow::new(n).ok_or_else(|| ApiError::bad_request("num_ctx must be at least 1"))
        })
        .transpose()?;
    let ticket = state.slots.admit()?;
    let lease = state.models.lease(&req.model, req.keep_alive).await?;
    let cancel = Cancel::new();
    let mut builder = Summarizer::builder(Arc::clone(&lease.model))
        .sampling(sampling)
        .format(format)
        .cancel(cancel.clone());
    if let Some(length) = length {
        builder = builder.length(length);
    }
    if let Some(n) = max_tokens {
        builder = builder.max_tokens(n);
    }
    if let Some(window) = window {
        builder = builder.context(window);
    }
    if let Some(system) = req.system.clone() {
        builder = builder.system(system);
    }
    if let Some(prompt) = req.prompt.clone() {
        builder = builder.instruction(prompt);
    }
    let summarizer = builder.build()?;
    let slot = state.slots.run(ticket).await;
    let (tx, rx) = mpsc::channel::<String>(64);
    let job_id = state.jobs.add(cancel.clone());
    let jobs = Arc::clone(&state.jobs);
    let guard = CancelOnDrop(cancel);
    let name = req.model.clone();
    let log = Arc::clone(&state.log);
    let metrics = Arc::clone(&state.metrics);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let line = |fields: Value| {
            let mut line = json!({"model": name, "created_at": rfc3339_now(), "done": false});
            if let (Value::Object(map), Value::Object(extra)) = (&mut line, fields) {
                map.extend(extra);
            }
            ndjson(&line)
        };
        let result = summarizer.summarize_with(&text, |event| {
            let out = match event {
                Event::Text(t) => line(json!({ "response": t })),
                Event::Stage {
                    stage,
                    index,
                    count,
                } => line(json!({
                    "stage": match stage { Stage::Part => "part", Stage::Combine => "combine" },
                    "index": index,
                    "count": count,
                })),
                Event::PromptProgress { .. } => return ControlFlow::Continue(()),
            };
            if tx.blocking_send(out).is_err() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        jobs.remove(job_id);
        let last = match result {
            Ok(summary) => {
                metrics.record_generation(&summary.stats.generation);
                let finished = Finished {
                    model: lease.name.clone(),
                    reason: summary.stop_reason,
                    stats: summary.stats.generation,
                    load_time: lease.load_time,
                    total: arrived.elapsed(),
                };
                log(format!(
                    "POST /api/summarize 200 {:.3}s model={} tokens_in={} tokens_out={} parts={}",
                    finished.total.as_secs_f64(),
                    finished.model,
                    finished.stats.prompt_tokens,
                    finished.stats.generated_tokens,
                    summary.stats.parts,
                ));
                let mut fields = finished.ollama_fields();
                fields.insert("response".into(), "".into());
                fields.insert("summary".into(), summary.text.into());
                fields.insert("parts".into(), summary.stats.parts.into());
                if let Some(json) = summary.json {
                    fields.insert("json".into(), json);
                }
                let mut done = Value::Object(fields);
                done["done"] = true.into();
                line(done)
            }
            Err(e) => {
                let e = ApiError::from(e);
                log(format!(
                    "POST /api/summarize {} {:.3}s model={} error: {}",
                    e.status.as_u16(),
                    arrived.elapsed().as_secs_f64(),
                    lease.name,
                    e.message
                ));
                ndjson(&e.body())
            }
        };
        let _ = tx.blocking_send(last);
    });
    if req.stream.unwrap_or(true) {
        let body = ReceiverStream::new(rx).map(move |line| {
            let _cancel_when_dropped = &guard;
            Ok::<_, Infallible>(Bytes::from(line))
        });
        let mut response = Response::new(Body::from_stream(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
        response.extensions_mut().insert(LoggedByJob);
        return Ok(response);
    }
    let mut rx = rx;
    let mut last = None;
    while let Some(line) = rx.recv().await {
        last = Some(line);
    }
    drop(guard);
    let value: Value = last
        .and_then(|l| serde_json::from_str(&l).ok())
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no summary"))?;
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error));
    }
    Ok(Json(value).into_response())
}

/// Cancels a job when the response that streams it is dropped.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Ollama's `details` of a model file.
fn details(path: &std::path::Path, arch: Option<&str>) -> Value {
    let gguf = GgufFile::open(path).ok();
    let arch = arch
        .map(str::to_owned)
        .or_else(|| {
            gguf.as_ref()
                .and_then(|g| g.architecture().ok().map(str::to_owned))
        })
        .unwrap_or_default();
    let file_type = gguf
        .as_ref()
        .and_then(|g| g.get("general.file_type"))
        .and_then(|v| v.as_u64())
        .and_then(crate::gguf::file_type_name)
        .unwrap_or_default();
    let size_label = gguf
        .as_ref()
        .and_then(|g| g.get("general.size_label"))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": size_label,
        "quantization_level": file_type,
    })
}

fn modified_at(path: &std::path::Path) -> String {
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    rfc3339(mtime.as_secs(), mtime.subsec_nanos())
}

/// `GET /api/tags`: the models on this machine.
pub(crate) async fn tags(State(state): Shared) -> Json<Value> {
    let listed = registry::list(state.models.catalogue(), &Places::from_env());
    let models: Vec<Value> = listed
        .iter()
        .filter_map(|l| {
            let found = l.found.as_ref()?;
            let digest = state
                .models
                .catalogue()
                .find(&l.name)
                .map(|e| e.sha256.clone())
                .unwrap_or_default();
            Some(json!({
                "name": l.name,
                "model": l.name,
                "modified_at": modified_at(&found.path),
                "size": l.size,
                "digest": digest,
                "details": details(&found.path, l.arch.as_deref()),
            }))
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `POST /api/show`: a model's details, template and metadata, read from
/// its file without loading it.
pub(crate) async fn show(
    State(state): Shared,
    JsonBody(req): JsonBody<NameRequest>,
) -> Result<Json<Value>, ApiError> {
    let (name, path) = state.models.locate(&req.model)?;
    let gguf = GgufFile::open(&path)?;
    let arch = gguf.architecture()?.to_owned();
    let mut info = serde_json::Map::new();
    for key in [
        "general.architecture".to_owned(),
        "general.name".to_owned(),
        "general.size_label".to_owned(),
        "general.file_type".to_owned(),
        format!("{arch}.context_length"),
        format!("{arch}.embedding_length"),
        format!("{arch}.block_count"),
        format!("{arch}.attention.head_count"),
        format!("{arch}.attention.head_count_kv"),
    ] {
        if let Some(v) = gguf.get(&key) {
            let value = v
                .as_str()
                .map(Value::from)
                .or_else(|| v.as_u64().map(Value::from))
                .unwrap_or(Value::Null);
            info.insert(key, value);
        }
    }
    let template = gguf
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    Ok(Json(json!({
        "license": "",
        "modelfile": format!("FROM {}\n", path.display()),
        "parameters": "",
        "template": template,
        "details": details(&path, Some(&arch)),
        "model_info": info,
        "capabilities": ["completion"],
        "modified_at": modified_at(&path),
        "name": name,
    })))
}

/// `GET /api/ps`: the models in memory.
pub(crate) async fn ps(State(state): Shared) -> Json<Value> {
    let now = Instant::now();
    let unix = std::time::SystemTime::now();
    let models: Vec<Value> = state
        .models
        .loaded()
        .into_iter()
        .map(|(name, expires, model)| {
            let expires_at = match expires {
                Some(t) => {
                    let at = unix + t.saturating_duration_since(now);
                    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    rfc3339(d.as_secs(), d.subsec_nanos())
                }
                // Ollama's "never" is the far future.
                None => "2318-01-01T00:00:00.000000000Z".to_owned(),
            };
            let info = model.info();
            let size_vram = if model.device().is_cpu() {
                0
            } else {
                info.file_size
            };
            json!({
                "name": name,
                "model": name,
                "size": info.file_size,
                "digest": "",
                "details": details(&info.path, Some(&info.architecture)),
                "expires_at": expires_at,
                "size_vram": size_vram,
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `GET /api/version`.
pub(crate) async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /v1/models`.
pub(crate) async fn openai_models(State(state): Shared) -> Json<Value> {
    let created = unix_now();
    let data: Vec<Value> = registry::list(state.models.catalogue(), &Places::from_env())
        .into_iter()
        .filter(|l| l.found.is_some())
        .map(
            |l| json!({"id": l.name, "object": "model", "created": created, "owned_by": "library"}),
        )
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `POST /api/pull`: downloads a catalogued model, streaming progress as
/// Ollama does (`status`, `digest`, `total`, `completed`).
pub(crate) async fn pull(
    State(state): Shared,
    JsonBody(req): JsonBody<NameRequest>,
) -> Result<Response, ApiError> {
    let bare = req.model.strip_suffix(":latest").unwrap_or(&req.model);
    let entry = state
        .models
        .catalogue()
        .find(bare)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "model \"{}\" is not in abridge's catalogue, so it cannot be pulled",
                    req.model
                ),
            )
        })?;
    let options = state.pulls.clone();
    let (tx, rx) = mpsc::channel::<String>(64);
    let digest = format!("sha256:{}", entry.sha256);
    let _ = tx
        .send(ndjson(&json!({"status": "pulling manifest"})))
        .await;
    tokio::task::spawn_blocking(move || {
        let mut last_sent = 0u64;
        let result = registry::pull::pull(&entry, &options, |event| {
            if let registry::pull::PullEvent::Progress(p) = event {
                // About a hundred lines for a whole download.
                if p.done == p.total || p.done.saturating_sub(last_sent) >= p.total / 100 {
                    last_sent = p.done;
                    let _ = tx.blocking_send(ndjson(&json!({
                        "status": format!("pulling {}", &entry.sha256[..12.min(entry.sha256.len())]),
                        "digest": digest,
                        "total": p.total,
                        "completed": p.done,
                    })));
                }
            }
        });
        let last = match result {
            Ok(_) => {
                let _ = tx.blocking_send(ndjson(&json!({"status": "verifying sha256 digest"})));
                json!({"status": "success"})
            }
            Err(e) => ApiError::from(e).body(),
        };
        let _ = tx.blocking_send(ndjson(&last));
    });
    if req.stream.unwrap_or(true) {
        let body = ReceiverStream::new(rx).map(|line| Ok::<_, Infallible>(Bytes::from(line)));
        let mut response = Response::new(Body::from_stream(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(response);
    }
    let mut rx = rx;
    let mut last = None;
    while let Some(line) = rx.recv().await {
        last = Some(line);
    }
    let value: Value = last
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or_else(|| json!({"error": "the pull ended without a result"}));
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error));
    }
    Ok(Json(value).into_response())
}

/// `DELETE /api/delete`: removes a catalogued model from abridge's
/// directory (never from Ollama's store or the Hugging Face cache).
pub(crate) async fn delete(
    State(state): Shared,
    JsonBody(req): JsonBody<NameRequest>,
) -> Result<StatusCode, ApiError> {
    let bare = req.model.strip_suffix(":latest").unwrap_or(&req.model);
    let entry = state.models.catalogue().find(bare).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model \"{}\" not found", req.model),
        )
    })?;
    state.models.unload(bare)?;
    registry::remove(entry, &Places::from_env()).map_err(|e| match e {
        crate::Error::ModelNotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        other => ApiError::from(other),
    })?;
    Ok(StatusCode::OK)
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): Shared) -> Response {
    let gauges = super::metrics::Gauges {
        running: state.slots.running(),
        queued: state.slots.waiting(),
        loaded_models: state.models.loaded().len(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    )
        .into_response()
}

/// `GET /`: the page to summarize from a browser.
pub(crate) async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page.html"),
    )
        .into_response()
}
