use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use watcher::cli::{Cli, Command};

fn main() -> ExitCode {
    // No transparent huge pages for watcher's memory: the first touch of a
    // fresh 2 MiB region (an allocator's new arena, a table that grew) zeroes
    // all of it inside one page fault, on whichever thread touched it — tens
    // of milliseconds on the deciding thread under a flood (measured).
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WATCHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "watcher: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(a) if a.daemon => watcher::cli::daemon::check_daemon(&a.status),
        Command::Check(a) if a.config.is_some() => {
            let path = a.config.unwrap_or_default();
            Ok(match watcher::cli::config::Config::load(&path) {
                Ok(_) => {
                    println!("ok    config: {} is valid", path.display());
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("FAIL  config: {e}");
                    std::process::ExitCode::from(1)
                }
            })
        }
        Command::Check(_) => watcher::cli::check::run(),
        Command::Trace(args) => watcher::cli::trace::run(args.settings()),
        Command::Top(args) => watcher::cli::top::run(args.settings()),
        Command::Run(args) => watcher::cli::daemon::run(
            args.config.clone(),
            args.kernel.load(),
            args.kernel.max_processes as usize,
        ),
        Command::Schema => {
            let schema = schemars::schema_for!(watcher::output::record::Record);
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Install(a) => watcher::cli::install::install(&a.root, a.binary),
        Command::Uninstall(a) => watcher::cli::install::uninstall(&a.root),
    }
}
