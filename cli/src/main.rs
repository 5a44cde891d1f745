//! `cdpmux`: crawl with pooled headless Chromium sessions (`cdpmux crawl`), and measure
//! what pooling saves against a fresh page per job (`cdpmux bench`).
//!
//! Exit codes: 0 done (a crawl whose pages failed is still done: the failures are in its
//! output), 1 failed, 2 bad usage, 3 no browser could be started or reached, 130
//! interrupted (Ctrl-C; the pages finished so far are written and summarized).
//!
//! This binary is its own crate so that users of the `cdpmux` library never compile its
//! dependencies (clap, indicatif).

mod args;
mod bench;
mod browser;
mod crawl;
mod frontier;
mod metrics_http;
mod probe;
mod record;
mod stats;

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
            .and_then(|rt| rt.block_on(crawl::run(args))),
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
