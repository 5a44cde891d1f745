//! `cdpmux`: crawl with pooled headless Chromium sessions (`cdpmux crawl`), and measure
//! what pooling saves against a fresh page per job (`cdpmux bench`).
//!
//! Exit codes (the table is in `docs/cli.md` and `--help`): 0 every page ok, 1 some pages
//! failed or an error stopped the command, 2 bad usage, 3 no page succeeded (no browser,
//! or the pool broke), 130 interrupted (SIGINT), 143 terminated (SIGTERM).
//!
//! SIGINT and SIGTERM are handled from the start of a crawl, before any browser exists
//! (see `stop`).
//!
//! This binary is its own crate so that users of the `cdpmux` library never compile its
//! dependencies (clap, indicatif).

mod args;
mod bench;
mod browser;
mod content;
mod crawl;
mod frontier;
mod metrics_http;
mod probe;
mod record;
mod robots;
mod stats;
mod stop;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::browser::Fatal;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Crawl(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Fatal::failed(format!("could not start a runtime: {e}")))
            .and_then(|rt| {
                rt.block_on(async {
                    let stop = stop::Stop::install()?;
                    crawl::run(*args, stop).await
                })
            }),
        Command::Bench(args) => bench::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("cdpmux: {fatal}");
            ExitCode::from(u8::try_from(fatal.code).unwrap_or(1))
        }
    }
}
