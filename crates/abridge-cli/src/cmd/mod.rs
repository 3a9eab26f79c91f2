//! One module per subcommand, and what they share: finding, pulling and
//! loading the model, the summarizer the summary flags ask for, reading a
//! document.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use abridge::input::SavedRequest;
use abridge::registry::pull::PullOptions;
use abridge::registry::{self, Catalogue};
use abridge::{Cancel, ContextWindow, Kernels, Length, Model, ModelOptions, Summarizer};
use anyhow::{Context, Result, bail};

use crate::args::{ModelArgs, SummaryArgs};

pub mod batch;
pub mod bench;
pub mod eval;
pub mod models;
pub mod parity;
pub mod serve;
pub mod summarize;
pub mod synth;
pub mod tokenize;

/// Exit status after Ctrl-C, as shells report a SIGINT death.
pub const INTERRUPTED: u8 = 130;

/// The model a command uses (`--model`, else `requested`, else the library's
/// default) and the model itself.
pub fn load_model(
    args: &ModelArgs,
    threads: Option<usize>,
    requested: Option<&str>,
) -> Result<(String, Model)> {
    let catalogue = Catalogue::load(args.models_file.as_deref())?;
    let name = registry::model_name(args.model.as_deref().or(requested), &catalogue);
    let options = model_options(args, threads)?;
    let model = registry::load(&name, &catalogue, options)?;
    Ok((name, model))
}

/// How models are loaded: `--threads`, and `--device` and `--kernels` or
/// their environment variables.
pub fn model_options(args: &ModelArgs, threads: Option<usize>) -> Result<ModelOptions> {
    let mut options = ModelOptions::new();
    if let Some(t) = threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        options = options.threads(t);
    }
    // The flag, else the environment, else the CPU (a GPU only when asked
    // for: `auto` picks one when this build and machine have it).
    if let Some((device, source)) = flag_or_env(&args.device, "--device", "ABRIDGE_DEVICE") {
        options = options.device_by_name(&device).context(source)?;
    }
    if let Some((kernels, source)) = flag_or_env(&args.kernels, "--kernels", "ABRIDGE_KERNELS") {
        options = options.kernels(Kernels::by_name(&kernels).context(source)?);
    }
    Ok(options)
}

/// A setting from its flag, else from a non-empty environment variable, with
/// where it came from (for error messages).
fn flag_or_env(flag: &Option<String>, name: &str, var: &str) -> Option<(String, String)> {
    match flag {
        Some(v) => Some((v.clone(), format!("{name} {v}"))),
        None => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (v.clone(), format!("{var}={v}"))),
    }
}

/// The text of a file or of standard input (`None` or `-`): plain text, HTML
/// or PDF, recognised by content.
pub fn read_document(file: Option<&Path>) -> Result<String> {
    if let Some(p) = file.filter(|p| *p != Path::new("-")) {
        return Ok(abridge::input::read_file(p)?);
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    Ok(abridge::input::extract(&bytes)?)
}

/// `--pull`: downloads the model when it is catalogued and is nowhere on
/// this machine.
pub fn pull_missing(args: &ModelArgs, requested: Option<&str>, quiet: bool) -> Result<()> {
    let catalogue = Catalogue::load(args.models_file.as_deref())?;
    let name = registry::model_name(args.model.as_deref().or(requested), &catalogue);
    let bar = models::pull_bar(quiet);
    let pulled = registry::pull_if_missing(
        &name,
        &catalogue,
        &PullOptions::from_env(),
        models::report_pull(&name, bar.as_ref()),
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(p) = pulled? {
        eprintln!("pulled {name} into {}", p.path.display());
    }
    Ok(())
}

/// The summarizer the summary flags ask for; a saved request supplies the
/// system prompt and instruction the flags do not.
pub fn summarizer(
    args: &SummaryArgs,
    request: Option<&SavedRequest>,
    model: Arc<Model>,
    cancel: Cancel,
) -> Result<Summarizer> {
    let mut builder = Summarizer::builder(model)
        .sampling(args.sampling.options())
        .loop_guard(!args.no_loop_guard)
        .format(args.format.into())
        .strategy(args.strategy.into())
        .cancel(cancel);
    if let Some(words) = args.words {
        builder = builder.length(Length::Words(words));
    } else if let Some(length) = args.length {
        builder = builder.length(length.into());
    }
    if let Some(n) = args.max_tokens {
        builder = builder.max_tokens(n);
    }
    if let Some(system) = args.system.clone().or_else(|| request?.system.clone()) {
        builder = builder.system(system);
    }
    let instruction = args
        .prompt
        .clone()
        .or_else(|| request.map(|r| r.question.clone()));
    if let Some(instruction) = instruction {
        builder = builder.instruction(instruction);
    }
    if let Some(c) = args.ctx_size {
        let window = ContextWindow::new(c).context("--ctx-size must be at least 1")?;
        builder = builder.context(window);
    }
    Ok(builder.build()?)
}
