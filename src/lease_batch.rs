//! [`LeaseBatch`]: a lease's pipelined batch, the counterpart of a page's
//! [`Batch`](crate::cdp::Batch) for a holder on another thread.
//!
//! Owns: encoding the commands in the holder's thread, sending them to the page's shard
//! in one message (the shard queues them all in one turn, so the writer sends them in
//! one flush, with no round trip between them), and decoding the replies in order.
//! Never: touches the page; the shard only moves frames.

use chromiumoxide_types::Command;

use crate::cdp::encode_params;
use crate::cdp::protocol::{MethodName, Reply};
use crate::cdp::{BatchResults, Slot};
use crate::error::{shutdown_error, Result};
use crate::shard::msg::LeaseOp;

/// Where a batch's one message goes: the lease's shard (a `Lease`).
pub(crate) trait OpSink {
    /// Sends `op` to the shard that holds the page.
    fn send(&self, op: LeaseOp);
}

/// Commands to send back to back on a leased page; see [`Lease::batch`](crate::Lease::batch).
///
/// ```no_run
/// # async fn demo(lease: &cdpmux::Lease) -> cdpmux::Result<()> {
/// use cdpmux::js_protocol::runtime::EvaluateParams;
/// let mut batch = lease.batch();
/// let a = batch.push(EvaluateParams::new("1+1"));
/// let b = batch.push_raw("Runtime.evaluate", serde_json::json!({"expression": "2+2"}));
/// let results = batch.run().await;
/// assert_eq!(results.get(a)?.result.value, Some(serde_json::json!(2)));
/// assert_eq!(results.get(b)?["result"]["value"], 4);
/// # Ok(()) }
/// ```
#[must_use = "a batch does nothing until `run` is awaited"]
pub struct LeaseBatch<'l> {
    lease: &'l dyn OpSink,
    calls: Vec<(MethodName, Result<Box<serde_json::value::RawValue>>)>,
}

impl<'l> LeaseBatch<'l> {
    pub(crate) fn new(lease: &'l dyn OpSink) -> Self {
        LeaseBatch {
            lease,
            calls: Vec::new(),
        }
    }

    /// Adds a typed command; its result will be in the returned slot.
    pub fn push<C: Command>(&mut self, cmd: C) -> Slot<C::Response> {
        let method = cmd.identifier();
        let params = encode_params(&method, &cmd);
        self.calls.push((method, params));
        Slot::new(self.calls.len() - 1)
    }

    /// Adds a raw command; its `result` JSON will be in the returned slot.
    pub fn push_raw(
        &mut self,
        method: impl Into<MethodName>,
        params: serde_json::Value,
    ) -> Slot<serde_json::Value> {
        let method = method.into();
        let params = encode_params(&method, &params);
        self.calls.push((method, params));
        Slot::new(self.calls.len() - 1)
    }

    /// Commands added so far.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Sends every command in one message and waits for all the replies, in order. A
    /// command that could not be encoded is not sent and fails alone.
    ///
    /// Cancel-safe: dropping the future stops waiting; the commands, once sent, still
    /// run on the page.
    pub async fn run(self) -> BatchResults {
        let mut methods = Vec::with_capacity(self.calls.len());
        let mut waits = Vec::with_capacity(self.calls.len());
        let mut calls = Vec::with_capacity(self.calls.len());
        for (method, params) in self.calls {
            methods.push(method.clone());
            match params {
                Ok(params) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    calls.push((method, params, tx));
                    waits.push(Ok(rx));
                }
                Err(e) => waits.push(Err(e)),
            }
        }
        if !calls.is_empty() {
            self.lease.send(LeaseOp::Batch { calls });
        }
        let mut replies: Vec<Result<Reply>> = Vec::with_capacity(waits.len());
        for wait in waits {
            replies.push(match wait {
                Ok(rx) => rx.await.unwrap_or_else(|_| Err(shutdown_error())),
                Err(e) => Err(e),
            });
        }
        BatchResults::new(replies, methods)
    }
}
