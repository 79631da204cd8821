//! Thin shell: parse the command line, run one command, map the outcome to an exit code.
//! Each command lives in `commands/`; the library does the work.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use commands::{write_stdout, EXIT_USAGE};

fn main() -> ExitCode {
    // Before parsing, so that a command line clap refuses still answers in JSON.
    commands::set_json_errors(
        std::env::args_os()
            .skip(1)
            .take_while(|a| a != "--")
            .any(|a| a == "--json"),
    );
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            // clap printed the full message; the JSON object carries its first line.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad command line");
            return commands::json_error(EXIT_USAGE, first.trim_start_matches("error: "));
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => commands::failed(commands::error_text(&e)),
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
            // Into a buffer: `generate` panics when its writer fails (a full disk, /dev/full).
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "portdoctor", &mut out);
            write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "serve")]
        Command::Serve(args) => commands::serve::run(&args),
        #[cfg(feature = "serve")]
        Command::Service(args) => commands::service::run(&args),
        Command::Man { command } => {
            let mut page = Cli::command();
            let mut name = String::from("portdoctor");
            for word in &command {
                let Some(sub) = page.find_subcommand(word) else {
                    return Ok(commands::usage(format!(
                        "no command {:?}; try `portdoctor man` for the list",
                        command.join(" ")
                    )));
                };
                name = format!("{name}-{word}");
                page = sub.clone();
            }
            if !command.is_empty() {
                // Leak is fine: one short-lived page per process, and clap wants 'static.
                let full: &'static str = Box::leak(name.into_boxed_str());
                page = page.name(full);
            }
            let mut out = Vec::new();
            clap_mangen::Man::new(page).render(&mut out)?;
            write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
