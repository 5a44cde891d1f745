//! cdpmux: pools and multiplexes Chrome DevTools Protocol sessions for crawlers.

pub mod browser;
pub mod cdp;
mod config;
mod error;
mod job;
pub mod metrics;
mod pool;
mod queue;
mod router;
mod shard;
#[cfg(feature = "sim")]
pub mod sim;
mod steal;
#[allow(dead_code, unused_imports)]
pub(crate) mod sync;

pub use cdp::Page;
pub use config::Config;
pub use error::{Error, ErrorKind, Result, TimeoutKind};
pub use job::{Affinity, AffinityMode, Job, Priority};
pub use metrics::Snapshot;
pub use pool::{Lease, Pool, PoolBuilder};
pub use router::shard_for;

/// Typed CDP commands and events (from `spider_chromiumoxide_cdp`), for
/// [`Page::execute`](cdp::Page::execute).
pub use chromiumoxide_cdp::cdp::{browser_protocol, js_protocol};
/// The trait every typed CDP command implements.
pub use chromiumoxide_types::Command;
