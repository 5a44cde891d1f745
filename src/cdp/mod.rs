//! The CDP transport: one WebSocket per browser, flat page sessions multiplexed over it.
//!
//! `protocol` is pure (ids, the pending-call table, frame classification) and does no
//! I/O; [`Connection`] is the thin async shell around one socket; [`Page`] is one flat
//! session on it. All three are `!Send`: they live on the thread (and in the tokio
//! `LocalSet`) that created them, which is what lets them share state without locks.

// Public only for the fuzz targets and property tests (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod protocol;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod protocol;

mod batch;
mod connection;
mod session;

pub use batch::{Batch, BatchResults, Slot};
pub use connection::{Connection, ConnectionConfig, ConnectionStats};
pub use protocol::Event;
pub(crate) use session::{evaluated_value, EvaluateByValue, EVALUATE};
pub use session::{EventWaiter, Page, PageOptions};
