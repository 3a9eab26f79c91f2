//! `abridge models`: list, show, pull, remove and locate models.

use std::io::Write;
use std::process::ExitCode;

use abridge::registry::pull::{self, PullEvent, PullOptions, Pulled};
use abridge::registry::{self, Catalogue, ModelEntry};
use anyhow::{Context, Result};
use indicatif::ProgressBar;

use crate::args::{ModelsArgs, ModelsCommand};
use crate::output::progress_bar;

pub fn run(args: ModelsArgs) -> Result<ExitCode> {
    let catalogue = Catalogue::load(args.models_file.as_deref())?;
    let places = registry::Places::from_env();
    let entry = |name: &str| {
        catalogue.find(name).with_context(|| {
            let names: Vec<&str> = catalogue.models.iter().map(|m| m.name.as_str()).collect();
            format!(
                "`{name}` is not in the catalogue (known models: {})",
                names.join(", ")
            )
        })
    };
    match args.command {
        ModelsCommand::List { json } => models_list(&catalogue, &places, json)?,
        ModelsCommand::Show { name, json } => models_show(&catalogue, &places, &name, json)?,
        ModelsCommand::Pull { name, quiet } => {
            let entry = entry(&name)?;
            let pulled = pull_entry(entry, quiet)?;
            if pulled.already_present {
                println!("{} is already at {}", entry.name, pulled.path.display());
            } else {
                let resumed = if pulled.resumed_from > 0 {
                    format!(", resumed at byte {}", pulled.resumed_from)
                } else {
                    String::new()
                };
                println!(
                    "{} is ready at {} ({} downloaded{resumed}; size and sha256 verified)",
                    entry.name,
                    pulled.path.display(),
                    registry::human_bytes(pulled.downloaded)
                );
            }
        }
        ModelsCommand::Rm { name } => {
            for path in registry::remove(entry(&name)?, &places)? {
                println!("removed {}", path.display());
            }
        }
        ModelsCommand::Path { name } => {
            let found = registry::locate(&name, &catalogue, &places)?;
            println!("{}", found.path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Downloads `entry`, with a progress bar unless `quiet`.
pub fn pull_entry(entry: &ModelEntry, quiet: bool) -> Result<Pulled> {
    let options = PullOptions::from_env();
    if !quiet && let Some(hf) = &entry.huggingface {
        eprintln!(
            "pulling {} ({}) from {}",
            entry.name,
            registry::human_bytes(entry.size),
            pull::url(&options.endpoint, hf)
        );
    }
    let bar = pull_bar(quiet);
    let pulled = pull::pull(entry, &options, report_pull(&entry.name, bar.as_ref()));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    Ok(pulled?)
}

/// The progress bar of a download, unless `quiet`.
pub fn pull_bar(quiet: bool) -> Option<ProgressBar> {
    progress_bar(
        "{bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        quiet,
    )
}

/// Shows a pull's events on stderr: bytes on the bar, and a wait for another
/// pull of the same model, said even when quiet since it can last as long as
/// a whole download.
pub fn report_pull<'a>(name: &'a str, bar: Option<&'a ProgressBar>) -> impl FnMut(PullEvent) + 'a {
    move |event| match event {
        PullEvent::Waiting { lock } => {
            let say = || {
                eprintln!(
                    "waiting for another abridge to finish pulling {name} (it holds {})",
                    lock.display()
                );
            };
            match bar {
                Some(bar) => bar.suspend(say),
                None => say(),
            }
        }
        PullEvent::Progress(p) => {
            if let Some(bar) = bar {
                bar.set_length(p.total);
                bar.set_position(p.done);
            }
        }
    }
}

fn models_list(catalogue: &Catalogue, places: &registry::Places, json: bool) -> Result<()> {
    let listed = registry::list(catalogue, places);
    let mut out = std::io::stdout().lock();
    if json {
        let default = catalogue.find(&catalogue.default).map(|d| d.name.as_str());
        let mut rows = Vec::with_capacity(listed.len());
        for l in &listed {
            let mut row = serde_json::to_value(l)?;
            row["default"] = (Some(l.name.as_str()) == default).into();
            rows.push(row);
        }
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    let width = listed
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:>9}  {:8}  {:7}  WHERE",
        "NAME", "SIZE", "ARCH", "PRESENT"
    )?;
    for l in &listed {
        let place = match &l.found {
            Some(f) => format!("{:11}  {}", f.location.short(), f.path.display()),
            None => "-".into(),
        };
        writeln!(
            out,
            "{:width$}  {:>9}  {:8}  {:7}  {place}",
            l.name,
            registry::human_bytes(l.size),
            l.arch.as_deref().unwrap_or("?"),
            if l.found.is_some() { "yes" } else { "no" },
        )?;
    }
    Ok(())
}

fn models_show(
    catalogue: &Catalogue,
    places: &registry::Places,
    name: &str,
    json: bool,
) -> Result<()> {
    let found = registry::locate(name, catalogue, places)?;
    let d = abridge::gguf::inspect(&found.path)?;
    let entry = catalogue.find(name);
    let mix: Vec<String> = d
        .tensor_types
        .iter()
        .map(|t| {
            format!(
                "{} ×{} ({})",
                t.kind,
                t.tensors,
                registry::human_bytes(t.bytes)
            )
        })
        .collect();
    let template_lines: Vec<&str> = d
        .chat_template
        .as_deref()
        .map(|t| t.lines().collect())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(&d)?;
        value["name"] = entry.map_or(name, |e| e.name.as_str()).into();
        value["location"] = found.location.short().into();
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let parameters = match d.parameters {
        p if p >= 1_000_000_000 => format!("{:.2}B", p as f64 / 1e9),
        p if p >= 1_000_000 => format!("{:.1}M", p as f64 / 1e6),
        p => format!("{:.1}K", p as f64 / 1e3),
    };
    writeln!(
        out,
        "name          {}",
        entry.map_or(name, |e| e.name.as_str())
    )?;
    if let Some(e) = entry {
        writeln!(out, "description   {}", e.description)?;
    }
    writeln!(
        out,
        "path          {} ({})",
        d.path.display(),
        found.location
    )?;
    writeln!(
        out,
        "file size     {} ({} bytes)",
        registry::human_bytes(d.file_size),
        d.file_size
    )?;
    writeln!(out, "architecture  {}", d.architecture)?;
    if let Some(n) = &d.name {
        writeln!(out, "general.name  {n}")?;
    }
    writeln!(out, "parameters    {parameters} ({})", d.parameters)?;
    writeln!(
        out,
        "quantization  {}; tensors: {}",
        d.quantization.as_deref().unwrap_or("unknown"),
        mix.join(", ")
    )?;
    match d.context_length {
        Some(c) => writeln!(out, "context       {c} tokens")?,
        None => writeln!(out, "context       unknown")?,
    }
    writeln!(
        out,
        "tokenizer     {}{}",
        d.tokenizer_kind().as_deref().unwrap_or("unknown"),
        d.vocabulary
            .map(|v| format!(", {v} tokens"))
            .unwrap_or_default()
    )?;
    if template_lines.is_empty() {
        writeln!(out, "chat template none in the file")?;
    } else {
        const SHOWN: usize = 6;
        let shown = template_lines.len().min(SHOWN);
        writeln!(
            out,
            "chat template (first {shown} of {} lines)",
            template_lines.len()
        )?;
        for line in &template_lines[..shown] {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}
