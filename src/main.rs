//! Thin shell: parse the command line, run one command, map the outcome to an exit code.
//! Each command lives in `commands/`; the library does the work.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use commands::{write_stdout, EXIT_COLLECT, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portdoctor: error: {e:#}");
            ExitCode::from(EXIT_COLLECT)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => commands::check::run(&args),
        Command::Tune(args) => commands::tune::run(&args),
        #[cfg(feature = "top")]
        Command::Top(args) => commands::top::run(&args),
        Command::Capacity(args) => commands::capacity::run(&args),
        Command::Lab(args) => commands::lab::run(&args),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "portdoctor", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "serve")]
        Command::Serve(args) => commands::serve::run(&args),
        Command::Man { command } => {
            let root = Cli::command();
            let page = match command.as_deref() {
                None => root,
                Some(name) => {
                    let Some(sub) = root.find_subcommand(name) else {
                        eprintln!("portdoctor: error: no command {name:?}; try `portdoctor man` for the list");
                        return Ok(ExitCode::from(EXIT_USAGE));
                    };
                    // Leak is fine: one short-lived page per process, and clap wants 'static.
                    let full: &'static str =
                        Box::leak(format!("portdoctor-{name}").into_boxed_str());
                    sub.clone().name(full)
                }
            };
            let mut out = Vec::new();
            clap_mangen::Man::new(page).render(&mut out)?;
            write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
