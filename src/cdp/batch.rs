//! Pipelined batches: several commands on one page sent back to back, in one flush,
//! with no round trip between them; results come back in order, one per command.
//!
//! Owns: encoding a batch's commands up front and keeping their results in order.
//! Never: knows [`Page`](super::Page); it builds on the connection's raw calls by
//! session, and the page hands it its session and deadline.

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

use chromiumoxide_types::Command;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::connection::Connection;
use super::protocol::{MethodName, Reply, SessionSlot};
use crate::error::{Error, ErrorKind, Result};

/// A batch being built; see [`Page::batch`](super::Page::batch).
#[must_use = "a batch does nothing until `run` is awaited"]
pub struct Batch<'p> {
    conn: &'p Connection,
    session: SessionSlot,
    /// The page's command deadline, read when the batch runs.
    command_timeout: &'p Cell<Duration>,
    calls: Vec<(MethodName, Result<Box<RawValue>>)>,
}

/// Where one command's result will be in [`BatchResults`]; typed by its response.
#[derive(Debug)]
pub struct Slot<T> {
    index: usize,
    _response: PhantomData<fn() -> T>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Slot<T> {}

impl<T> Slot<T> {
    /// The slot of the `index`th command of a batch.
    pub(crate) fn new(index: usize) -> Self {
        Slot {
            index,
            _response: PhantomData,
        }
    }

    /// Position of the command in the batch.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl<'p> Batch<'p> {
    /// A batch on `session` of `conn`, each command within `command_timeout` as it is
    /// when the batch runs.
    pub(crate) fn new(
        conn: &'p Connection,
        session: SessionSlot,
        command_timeout: &'p Cell<Duration>,
    ) -> Self {
        Batch {
            conn,
            session,
            command_timeout,
            calls: Vec::new(),
        }
    }

    /// Adds a typed command; its typed response is read back with the returned slot.
    pub fn push<C: Command>(&mut self, cmd: C) -> Slot<C::Response> {
        self.add(cmd.identifier(), &cmd)
    }

    /// Adds a raw command; its `result` is read back as JSON.
    pub fn push_raw(
        &mut self,
        method: impl Into<MethodName>,
        params: serde_json::Value,
    ) -> Slot<serde_json::Value> {
        self.add(method.into(), &params)
    }

    /// Encodes the parameters now; an encoding failure becomes this command's result.
    fn add<T, P: serde::Serialize>(&mut self, method: MethodName, params: &P) -> Slot<T> {
        let params = encode_params(&method, params);
        self.calls.push((method, params));
        Slot::new(self.calls.len() - 1)
    }

    /// Commands in the batch.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Sends every command back to back, then waits for all replies, each within the
    /// page's command deadline. One failing command does not lose the others' results.
    pub async fn run(self) -> BatchResults {
        let timeout = self.command_timeout.get();
        let (shared, session) = (&self.conn.shared, Some(self.session));
        let mut methods = Vec::with_capacity(self.calls.len());
        // Queue all before awaiting any: the writer then sends them in one flush.
        let in_flight: Vec<_> = self
            .calls
            .into_iter()
            .map(|(method, params)| {
                methods.push(method.clone());
                params.and_then(|p| shared.start_call(session, method, &*p))
            })
            .collect();
        let waits = in_flight.into_iter().map(|call| async move {
            match call {
                Ok(call) => call.finish(timeout, true).await,
                Err(e) => Err(e),
            }
        });
        BatchResults {
            replies: futures_util::future::join_all(waits).await,
            methods,
        }
    }
}

/// The results of a batch, in the order the commands were added.
pub struct BatchResults {
    replies: Vec<Result<Reply>>,
    methods: Vec<MethodName>,
}

/// Encodes a command's parameters for a batch (a page's or a lease's): a failure is
/// kept as that command's result.
pub(crate) fn encode_params<P: serde::Serialize + ?Sized>(
    method: &MethodName,
    params: &P,
) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(params).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("could not encode {method}"),
        )
        .with_source(e)
    })
}

impl BatchResults {
    /// The replies of a batch's commands, in order, with their methods.
    pub(crate) fn new(replies: Vec<Result<Reply>>, methods: Vec<MethodName>) -> Self {
        BatchResults { replies, methods }
    }

    /// The typed result of the command at `slot`.
    pub fn get<T: DeserializeOwned>(&self, slot: Slot<T>) -> Result<T> {
        match self.replies.get(slot.index) {
            Some(Ok(reply)) => reply.decode(&self.methods[slot.index]),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                "this slot belongs to another batch",
            )),
        }
    }

    /// The raw JSON `result` of command `index`, or its error.
    pub fn raw(&self, index: usize) -> Result<&str> {
        match self.replies.get(index) {
            Some(Ok(reply)) => Ok(reply.json()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the batch has {} commands, not {}",
                    self.replies.len(),
                    index + 1
                ),
            )),
        }
    }

    /// Number of results (= commands).
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// How many commands failed.
    pub fn failures(&self) -> usize {
        self.replies.iter().filter(|r| r.is_err()).count()
    }
}

impl std::fmt::Debug for BatchResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchResults")
            .field("len", &self.replies.len())
            .field("failures", &self.failures())
            .finish()
    }
}
