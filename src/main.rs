//! sockscope: every network connection, with the process behind it.
//!
//! Parses the command line, sets up logging, and hands over: the user's
//! files are read first (a bad one exits 2 before anything is attached),
//! then startup loads and attaches the probes and the reader runs until a
//! stop signal. The stages live in the library (src/lib.rs).
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use sockscope::cli::Cli;
use sockscope::probes::ObjectStorage;
use sockscope::reader::{self, Signals};
use sockscope::settings::Settings;
use sockscope::startup::{self, Inputs};

fn main() -> ExitCode {
    // Bad arguments exit with code 2 here, before anything is attached.
    let cli = Cli::parse();
    if cli.man {
        return match sockscope::cli::write_man_page(&mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sockscope: writing the manual page: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let settings = Settings::from(&cli);
    if cli.check {
        return check(&settings);
    }

    // Everything the user gave us is checked before anything is attached.
    let inputs = match Inputs::read(&settings) {
        Ok(inputs) => inputs,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    match sense(&settings, inputs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check`: 0 with full coverage, 1 with the reason otherwise.
fn check(settings: &Settings) -> ExitCode {
    let result = startup::prepare_host(&settings.host).and_then(|()| {
        let mut storage = ObjectStorage::new();
        startup::check(&mut storage, settings)
    });
    match result {
        Ok(None) => {
            println!("sockscope --check: full coverage");
            ExitCode::SUCCESS
        }
        Ok(Some(gaps)) => {
            println!("sockscope --check: partial coverage: {gaps}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("sockscope --check: cannot load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prepares the host, loads and attaches the probes, runs until stopped.
fn sense(settings: &Settings, inputs: Inputs) -> Result<()> {
    startup::prepare_host(&settings.host)?;
    let signals = Signals::register()?;
    let mut storage = ObjectStorage::new();
    let started = startup::start(&mut storage, settings, inputs)?;
    reader::run(settings, started, &signals)
}
