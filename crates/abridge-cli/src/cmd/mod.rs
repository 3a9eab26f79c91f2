//! One module per subcommand, and what they share: finding and loading the
//! model, reading a document.

use std::io::Read;
use std::path::Path;

use abridge::registry::{self, Catalogue};
use abridge::{Model, ModelOptions};
use anyhow::{Context, Result, bail};

use crate::args::ModelArgs;

pub mod bench;
pub mod eval;
pub mod models;
pub mod summarize;
pub mod synth;
pub mod tokenize;

/// Exit status after Ctrl-C, as shells report a SIGINT death.
pub const INTERRUPTED: u8 = 130;

/// The model a command uses (`--model`, else `requested`, else the library's
/// default) and the model itself.
pub fn load_model(args: &ModelArgs, requested: Option<&str>) -> Result<(String, Model)> {
    let catalogue = Catalogue::load(args.models_file.as_deref())?;
    let name = registry::model_name(args.model.as_deref().or(requested), &catalogue);
    let mut options = ModelOptions::new();
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        options = options.threads(t);
    }
    let model = registry::load(&name, &catalogue, options)?;
    Ok((name, model))
}

/// The text of a file or of standard input (`None` or `-`): plain text, HTML
/// or PDF, recognised by content.
pub fn read_document(file: Option<&Path>) -> Result<String> {
    let bytes = match file {
        Some(p) if p != Path::new("-") => {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        _ => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            bytes
        }
    };
    Ok(abridge::input::extract(&bytes)?)
}
