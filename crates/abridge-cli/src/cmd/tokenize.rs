//! `abridge tokenize`: a text's tokens as a model sees them.

use std::io::Write;
use std::process::ExitCode;

use abridge::Summarizer;
use anyhow::Result;

use super::{load_model, read_document};
use crate::args::TokenizeArgs;

pub fn run(args: TokenizeArgs) -> Result<ExitCode> {
    let text = read_document(args.file.as_deref())?;
    let (_, model) = load_model(&args.model, args.threads, None)?;
    let ids = if args.prompt {
        Summarizer::builder(model).build()?.prompt_tokens(&text)?
    } else {
        model.tokenizer().encode(&text)?
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = serde_json::json!({ "count": ids.len(), "ids": ids });
        writeln!(out, "{value}")?;
    } else {
        writeln!(out, "{}", ids.len())?;
        if args.ids {
            for id in ids {
                writeln!(out, "{id}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
