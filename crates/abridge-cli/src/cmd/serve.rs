//! `abridge serve`: Ollama's HTTP API over abridge's models.

use std::process::ExitCode;

use abridge::registry::Catalogue;
use abridge::server::{self, KeepAlive, Server, ServerOptions};
use anyhow::{Context, Result, bail};

use super::model_options;
use crate::args::{ModelArgs, ServeArgs};

/// The first non-empty environment variable of `names`.
fn env_any(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let addr_text = args
        .addr
        .clone()
        .or_else(|| env_any(&["ABRIDGE_HOST", "OLLAMA_HOST"]))
        .unwrap_or_else(|| server::DEFAULT_ADDR.to_owned());
    let addr = server::parse_host(&addr_text)?;
    let keep_alive = match args
        .keep_alive
        .clone()
        .or_else(|| env_any(&["OLLAMA_KEEP_ALIVE"]))
    {
        Some(text) => KeepAlive::parse(&text)
            .with_context(|| format!("--keep-alive {text:?}: use 5m, 1h, 0 or -1"))?,
        None => KeepAlive::For(std::time::Duration::from_secs(300)),
    };
    if args.parallel == Some(0) {
        bail!("--parallel must be at least 1");
    }
    let model = ModelArgs {
        model: None,
        device: args.device.clone(),
        kernels: args.kernels.clone(),
        models_file: args.models_file.clone(),
    };
    let origins: Vec<String> = args
        .origins
        .clone()
        .or_else(|| env_any(&["OLLAMA_ORIGINS"]))
        .map(|list| {
            list.split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut options = ServerOptions::new()
        .addr(addr)
        .catalogue(Catalogue::load(args.models_file.as_deref())?)
        .model_options(model_options(&model, args.threads)?)
        .max_body(args.max_body_mib.saturating_mul(1 << 20))
        .keep_alive(keep_alive)
        .allow_paths(args.allow_paths)
        .origins(origins)
        .api_key(
            args.api_key
                .clone()
                .or_else(|| env_any(&["ABRIDGE_API_KEY"])),
        )
        .log(|line| eprintln!("{line}"));
    if let Some(n) = args.parallel {
        options = options.parallel(n);
    }
    if let Some(n) = args.queue {
        options = options.queue(n);
    }
    let server = Server::bind(options)?;
    let bound = server.local_addr();
    if !bound.ip().is_loopback() {
        eprintln!(
            "warning: listening on {bound}, which other machines can reach; anyone who can connect \
             can run models here{}",
            if args.api_key.is_some() || env_any(&["ABRIDGE_API_KEY"]).is_some() {
                ""
            } else {
                " (set --api-key to require a key)"
            }
        );
    }
    eprintln!("abridge serve: listening on http://{bound} (Ctrl-C stops)");
    server.run_until_signal()?;
    eprintln!("abridge serve: stopped");
    Ok(ExitCode::SUCCESS)
}
