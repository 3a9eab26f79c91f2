//! The `abridge` command: argument parsing and printing over the `abridge`
//! library. Each subcommand lives in `cmd/`, its arguments in `args.rs`.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod cmd;
mod output;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    pin_kernel_threads(cli.command.threads());
    let models_file = cli.command.models_file().map(ToOwned::to_owned);
    let result = match cli.command {
        Command::Summarize(args) => cmd::summarize::run(*args),
        Command::Batch(args) => cmd::batch::run(*args),
        Command::Tokenize(args) => cmd::tokenize::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Parity(args) => cmd::parity::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Synth(args) => cmd::synth::run(args),
        Command::Models(args) => cmd::models::run(args),
        Command::Serve(args) => cmd::serve::run(args),
    };
    result.unwrap_or_else(|e| {
        output::print_error(&e, models_file.as_deref());
        ExitCode::FAILURE
    })
}

/// candle's kernels ask how many threads to use on every call; without
/// `RAYON_NUM_THREADS` that means parsing `/proc/cpuinfo` each time (5% of
/// generation time on a small model), and it should match the model's pool.
fn pin_kernel_threads(threads: Option<usize>) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() && threads.is_none() {
        return;
    }
    let n = threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1);
    // SAFETY: called at the start of main, before any other thread exists.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
}
