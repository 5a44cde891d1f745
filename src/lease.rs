//! [`Lease`]: a pooled session held by the caller, and the way it goes back.
//!
//! A lease is usable from any thread or runtime; its commands run on the shard that owns
//! the page. It wraps the [`Grant`] its shard sent, and dropping it drops the grant, which
//! returns the session (see `shard::msg`): straight to the next `acquire` caller in the
//! line when the shard allows it, else to the shard. It also ends the event streams it
//! opened, before the session goes: none outlives the lease. Never: touches the page
//! itself (it is `!Send` and lives on its shard); everything goes by message.

use std::fmt;
use std::time::Duration;

use crate::cdp::protocol::{MethodName, Reply};
use crate::cdp::{evaluated_value, EvaluateByValue, EVALUATE};
use crate::cdp::{EventBuffer, EventOverflow, Events, Feed, TypedEvents};
use crate::cdp::{GotoOptions, Navigation};
use crate::error::shutdown_error;
use crate::error::{Error, ErrorKind, Result};
use crate::lease_batch::{LeaseBatch, OpSink};
use crate::shard::msg::{Grant, LeaseOp, Msg};
use crate::sync::{Arc, SegQueue};
use chromiumoxide_types::{Command, MethodType};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A session held by the caller, usable from any thread or runtime. Its commands run on
/// the shard that owns the page. Dropping it returns the session (also during a panic).
///
/// When other `acquire` callers are waiting for the shard's sessions, dropping a lease
/// usually hands its session straight to the first of them, in the dropping thread,
/// without a trip through the shard (see [`Config::lease_handoff`](crate::config::Config)). The
/// order in which waiters are served is the same either way: class first, then arrival.
///
/// A job's [`max_hold`](crate::Job::max_hold) (or its [`timeout`](crate::Job::timeout))
/// bounds how long the lease may be held: past it the shard takes the page back (stops
/// it, as for a job past its deadline), the lease's event streams end, and every later
/// call fails with `Timeout(Job)`.
pub struct Lease {
    grant: Grant,
    command_timeout: Option<Duration>,
    /// The streams this lease opened: ended when it goes.
    feeds: SegQueue<Arc<Feed>>,
}

impl Lease {
    /// The lease a shard granted.
    pub(crate) fn new(grant: Grant) -> Self {
        Lease {
            grant,
            command_timeout: None,
            feeds: SegQueue::new(),
        }
    }

    /// The shard that owns the session.
    pub fn shard(&self) -> usize {
        self.grant.shard
    }

    /// Sets the deadline of each later command sent through this lease.
    pub fn set_command_timeout(&mut self, timeout: Duration) {
        self.command_timeout = Some(timeout);
    }

    /// Sends `op` to the session's shard and waits for what it answers on `rx`.
    async fn op<T>(&self, op: LeaseOp, rx: tokio::sync::oneshot::Receiver<Result<T>>) -> Result<T> {
        self.send(op);
        rx.await.unwrap_or_else(|_| Err(shutdown_error()))
    }

    /// Sends `op` to the session's shard; if the shard is gone, `op` hears so.
    pub(crate) fn send(&self, op: LeaseOp) {
        let Some(link) = self.grant.link() else {
            op.fail(shutdown_error());
            return;
        };
        let msg = Msg::LeaseOp {
            lease: self.grant.lease,
            op,
            timeout: self.command_timeout,
        };
        if let Err(refused) = link.inbox.send(msg) {
            if let Msg::LeaseOp { op, .. } = refused.0 {
                op.fail(shutdown_error());
            }
        }
    }

    /// Streams every event of `method` on the leased page from now on; see
    /// [`Page::events`](crate::Page::events). It is registered before any command sent
    /// after this call (the shard handles the lease's messages in order), buffers up to
    /// 1024 unread events, and ends when the lease is dropped or taken back.
    pub fn events(&self, method: &str) -> Events {
        self.open_events(method, EventBuffer::default())
    }

    /// [`events`](Self::events) with its own buffer size and overflow policy. Fails
    /// (`InvalidInput`) on a buffer of zero events.
    pub fn events_with(&self, method: &str, buffer: EventBuffer) -> Result<Events> {
        buffer.check()?;
        Ok(self.open_events(method, buffer))
    }

    /// Streams every event of type `T` (from `spider_chromiumoxide_cdp`) on the leased
    /// page, decoded; see [`Page::events_of`](crate::Page::events_of).
    pub fn events_of<T: MethodType + DeserializeOwned>(&self) -> TypedEvents<T> {
        TypedEvents::new(self.events(&T::method_id()))
    }

    /// Starts listening for one event of `method`: registered before any command sent
    /// after this call; then [`Events::wait`] for it.
    pub fn wait_for_event(&self, method: &str) -> Events {
        self.open_events(method, EventBuffer::new(1, EventOverflow::DropNewest))
    }

    fn open_events(&self, method: &str, buffer: EventBuffer) -> Events {
        let feed = Feed::new(buffer);
        self.feeds.push(feed.clone());
        let method_name: MethodName = method.to_owned().into();
        self.send(LeaseOp::Events {
            method: method_name,
            feed: feed.clone(),
        });
        Events::new(feed, method)
    }

    /// Starts a pipelined batch of commands on the leased page; see
    /// [`Page::batch`](crate::Page::batch). Parameters are encoded and replies decoded
    /// in the holder's thread.
    pub fn batch(&self) -> LeaseBatch<'_> {
        LeaseBatch::new(self)
    }

    /// The page's `document.title`.
    pub async fn title(&self) -> Result<String> {
        match self.evaluate_value("document.title").await? {
            serde_json::Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        }
    }

    /// The page's CDP target id (asked of its shard).
    pub async fn target_id(&self) -> Result<String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.op(LeaseOp::TargetId { reply }, rx).await
    }

    /// Runs `method` with `params` on the leased page. The parameters are encoded and
    /// the reply decoded here, in the holder's thread: the shard only moves frames.
    async fn command<P: Serialize + ?Sized>(
        &self,
        method: MethodName,
        params: &P,
    ) -> Result<Reply> {
        let params = serde_json::value::to_raw_value(params).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("could not encode {method}"),
            )
            .with_source(e)
        })?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.op(
            LeaseOp::Call {
                method,
                params,
                reply,
            },
            rx,
        )
        .await
    }

    /// Runs a typed command on the leased page.
    pub async fn execute<C: Command>(&self, cmd: C) -> Result<C::Response> {
        let method = cmd.identifier();
        self.command(method.clone(), &cmd).await?.decode(&method)
    }

    /// Runs a raw command on the leased page.
    pub async fn call(
        &self,
        method: impl Into<String>,
        params: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let method: MethodName = method.into().into();
        self.command(method.clone(), &params).await?.decode(&method)
    }

    /// Navigates and waits for this navigation's `load`; see
    /// [`Page::goto`](crate::cdp::Page::goto).
    pub async fn goto(&self, url: &str) -> Result<Navigation> {
        self.goto_with(url, &GotoOptions::default()).await
    }

    /// Navigates and waits for `options`' condition; see
    /// [`Page::goto_with`](crate::cdp::Page::goto_with). Runs on the page's shard.
    ///
    /// Cancel-safe: dropping the future stops waiting for the answer; the navigation
    /// itself goes on on the shard and ends there.
    pub async fn goto_with(&self, url: &str, options: &GotoOptions) -> Result<Navigation> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let url = url.to_owned();
        let options = options.clone();
        self.op(
            LeaseOp::Goto {
                url,
                options,
                reply,
            },
            rx,
        )
        .await
    }

    /// Evaluates an expression and returns its value; see
    /// [`Page::evaluate_value`](crate::cdp::Page::evaluate_value).
    pub async fn evaluate_value(&self, expression: &str) -> Result<serde_json::Value> {
        let reply = self
            .command(EVALUATE.into(), &EvaluateByValue::new(expression))
            .await?;
        evaluated_value(expression, &reply)
    }

    /// Returns the session now (the same as dropping the lease).
    pub fn release(self) {}
}

impl OpSink for Lease {
    fn send(&self, op: LeaseOp) {
        Lease::send(self, op);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Before the grant goes (fields drop after this): the next holder, who may get
        // the page straight from this thread, never shares a stream with this one.
        while let Some(feed) = self.feeds.pop() {
            feed.abandon();
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("shard", &self.grant.shard)
            .field("id", &self.grant.lease)
            .finish()
    }
}
