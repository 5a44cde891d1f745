//! cdpmux pools and multiplexes Chrome DevTools Protocol (CDP) sessions for
//! high-throughput crawlers: pages are opened once and reused, many sessions share a few
//! WebSockets, and requests queue fairly when every page is busy.
//!
//! A [`Pool`] runs one shard per core: an OS thread with a single-threaded tokio
//! runtime that owns its browser sockets and pages, with no locks shared between shards.
//! Requests go to a shard by affinity key (or to the less loaded one); a saturated shard
//! lends its movable requests to idle ones.
//!
//! ```no_run
//! use std::time::Duration;
//! use cdpmux::browser::Launch;
//! use cdpmux::{Affinity, Job, Pool, Priority};
//!
//! # async fn demo() -> cdpmux::Result<()> {
//! let pool = Pool::builder()
//!     .launch(Launch::new())      // or .endpoint("ws://127.0.0.1:9222/devtools/browser/...")
//!     .sessions_per_shard(8)
//!     .build()
//!     .await?;
//!
//! let url = "https://example.com/".to_owned();
//! let job = Job::new()
//!     .affinity(Affinity::from_url(&url)?)
//!     .priority(Priority::High)
//!     .timeout(Duration::from_secs(30));
//! // The closure runs on the shard that owns the page: no thread hop per command.
//! let title = pool
//!     .run(job, async move |page| {
//!         page.goto(&url).await?;
//!         page.title().await
//!     })
//!     .await?;
//!
//! // A lease is usable from any thread or runtime; the page returns on drop.
//! let lease = pool.acquire(Job::new()).await?;
//! let two = lease.evaluate_value("1+1").await?;
//! drop(lease);
//!
//! println!("{title} {two}\n{}", pool.metrics().await);
//! pool.shutdown(Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Fair**: strict priority between classes, FIFO within a class, aging so a `Low`
//!   request is never starved; a full queue answers [`ErrorKind::QueueFull`] at once.
//! - **Cancel safe**: [`Pool::run`] and [`Pool::acquire`] may be dropped at any point; a
//!   queued request leaves the queue, a running job is stopped on its shard, a page is
//!   never leaked or given to two callers.
//! - **Nothing hangs**: every wait has its own timer-enforced deadline; a crashed page or
//!   a lost socket fails its pending calls at once ([`Error::is_crash`]).
//! - **Recovery**: crashed pages are replaced, lost sockets reconnect, launched browsers
//!   are relaunched, a failing browser is skipped. [`Error::is_retryable`] says which
//!   failures are worth another try; a [`RetryPolicy`] retries `run` jobs with backoff.
//! - **Graceful end**: [`Pool::drain`] finishes what is queued and running before it
//!   shuts down; [`Pool::idle`] waits for a quiet pool.
//!
//! Modules: [`browser`] (launch or connect to Chromium), [`cdp`] (the page session and
//! its options, batches, events), [`metrics`] (what a [`Snapshot`] holds), and `sim`
//! (feature `sim`: a simulated browser for your own tests). The README and `docs/` in the
//! repository explain the guarantees and measurements in full.

// Under loom, crate-private protocol types become reachable through `loom_api`.
#![cfg_attr(cdpmux_loom, allow(private_interfaces, private_bounds, missing_docs))]

mod affinity;
mod autoscale;
pub mod browser;
pub mod cdp;
mod config;
mod error;
mod fleet;
mod handoff;
mod hooks;
pub mod identity;
mod idle;
mod job;
mod lease;
mod lease_batch;
mod live_config;
pub mod metrics;
mod mutant;
mod politeness;
mod pool;
mod queue;
mod recycle;
mod remote;
mod resources;
mod retry;
mod router;
mod scaler;
mod shard;
#[cfg(feature = "sim")]
pub mod sim;
mod steal;
#[allow(dead_code, unused_imports)]
pub(crate) mod sync;

pub use autoscale::{Autoscale, ScaleReason};
#[doc(inline)]
pub use cdp::{Blocking, GotoOptions, Navigation, Page, ResourceType, WaitUntil};
pub use cdp::{EventBuffer, EventOverflow, Events, TypedEvents};
pub use config::{Config, Isolation, Reset};
pub use error::{Error, ErrorKind, Result, TimeoutKind};
pub use job::{Affinity, AffinityMode, Job, Priority};
pub use lease::Lease;
pub use lease_batch::LeaseBatch;
#[doc(inline)]
pub use metrics::Snapshot;
pub use politeness::Politeness;
pub use pool::{Pool, PoolBuilder};
pub use recycle::Recycle;
pub use retry::{RetryCause, RetryPolicy};
pub use router::shard_for;
/// The shard running the caller's job, if any: for tests and tracing, not a stable API.
#[doc(hidden)]
pub use shard::current_shard;

/// Typed CDP commands and events (from `spider_chromiumoxide_cdp`), for
/// [`Page::execute`](cdp::Page::execute).
#[cfg(not(cdpmux_loom))]
pub use chromiumoxide_cdp::cdp::{browser_protocol, js_protocol};
/// The trait every typed CDP command implements.
pub use chromiumoxide_types::Command;

/// The README's Rust examples, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// What the loom models in `loom-tests/` drive: the real protocol steps and the facade's
/// stand-ins. Re-exports only; exists under `--cfg cdpmux_loom` alone.
#[cfg(cdpmux_loom)]
#[doc(hidden)]
pub mod loom_api {
    pub use crate::handoff::{Handoff, Join, Line, Outcome, Successor};
    pub use crate::live_config::publish_config;
    pub use crate::mutant::{seed, seeded, Mutant, Seeded};
    pub use crate::pool::{announce_shutdown, send_request};
    pub use crate::router::{LoadGauges, LoadGuard};
    pub use crate::shard::msg::{
        close_inbox, grant_lease, return_session, Grant, GrantTx, Msg, Request, Work,
    };
    pub use crate::steal::Overflow;
    pub use crate::sync::{mpsc, oneshot, LiveCell, Notify};

    /// The lease an `acquire` caller makes of the grant its channel brought.
    pub fn lease(grant: Grant) -> crate::Lease {
        crate::Lease::new(grant)
    }

    /// A `run` job as `Pool::run` makes it (its closure does nothing), and the receiver
    /// its caller waits on.
    pub fn run_job() -> (Work, oneshot::Receiver<crate::Result<()>>) {
        crate::pool::run_work(async |_: &crate::cdp::Page| Ok(()))
    }
}
