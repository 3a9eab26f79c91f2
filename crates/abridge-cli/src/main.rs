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
