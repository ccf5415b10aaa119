//! `secure-channel`: SPIFFE mutual TLS for services that cannot link the crate, and the chores
//! around SVIDs and policies.
//!
//! Exit codes: 0 success (allowed, valid); 1 denied, invalid or failed (a bad file, a refused
//! SVID, a proxy that cannot start); 2 usage (an unknown flag, a flag's value that cannot be
//! parsed). Results go to stdout (`--json` where a script reads them), logs to stderr.

#![forbid(unsafe_code)]

mod cli;
mod devca;
mod failure;
mod policy;
mod proxy;
mod svid;
mod text;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc instead of the system allocator: the proxies allocate per request on both hops
/// (see BENCHMARKS.md, the proxy against nginx).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level());
    let result = match cli.command {
        Command::Svid(command) => svid::run(command),
        Command::Policy(command) => policy::run(command),
        Command::DevCa(command) => devca::run(command),
        Command::Proxy(command) => proxy::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: info for the crate and this tool).
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
