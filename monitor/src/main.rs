//! The `egress-monitor` binary: parse flags, read the configuration, run the agent.

use std::process::ExitCode;

use clap::Parser as _;
use monitor::{
    cli::{Cli, Command},
    config::Config,
    http::web_config,
    persist::baseline,
    runtime as app,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colour only for a person at a terminal: journald and OpenWrt's logread would show the
    // escape sequences as they are. NO_COLOR (no-color.org) turns it off there too.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(cli.log_filter()))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match &cli.command {
        Some(Command::Baseline { action }) => {
            return match Config::load_without_lan(cli.config.as_deref(), &cli.overrides()) {
                Ok(config) => report(baseline::run(&config, &action.request())),
                Err(e) => config_error(e),
            };
        }
        Some(Command::Detach) => {
            return match Config::load(cli.config.as_deref(), &cli.overrides()) {
                Ok(config) => report(app::detach(&config)),
                Err(e) => config_error(e),
            };
        }
        None => {}
    }
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(config) => config,
        Err(e) => return config_error(e),
    };
    // A broken web configuration is a configuration error: the endpoint never opens without it.
    let web = match cli
        .web_config_file
        .as_deref()
        .map(web_config::load)
        .transpose()
    {
        Ok(web) => web,
        Err(e) => return config_error(e),
    };
    if cli.check_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let web = cli.web_config_file.clone().zip(web);
    match app::run(config, cli.config.clone(), cli.overrides(), web) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress-monitor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command's outcome: its text on stdout, or its error on stderr and exit 1.
fn report<E: std::fmt::Display>(outcome: Result<String, E>) -> ExitCode {
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egress-monitor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A configuration error: exit 2.
fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("egress-monitor: {e}");
    ExitCode::from(2)
}
