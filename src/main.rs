//! The `meridian-pipeline` command line: parse, dispatch, map errors to exit
//! codes. Each command's arguments live in `cli::args`, its body in
//! `cli::commands`, what it prints in `cli::report`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::args::{Cli, Command};
use cli::commands;
use meridian_pipeline::harness::alloc_count::CountingAlloc;

/// Counts allocations so `run` can report them per stage; in steady state
/// there are none, so the counting costs nothing.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line naming the problem, not clap's usage block: clap's
            // first paragraph, folded onto one line.
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", first.join(" "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Process(args)) => commands::process(&args),
        Some(Command::Gen(args)) => commands::generate(&args),
        Some(Command::Run(args)) => commands::run(&args),
        Some(Command::Serve(args)) => commands::serve(&args),
        Some(Command::Sink(args)) => commands::sink(&args),
        None => commands::run_default(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(cli::CliError::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
