//! What a connection is set up with ([`ConnectionConfig`]) and what it reports about
//! itself ([`ConnectionStats`]): plain data, read by the connection and its socket tasks.

use std::time::Duration;

use super::batching::FlushPolicy;

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Deadline of one command unless the page sets its own. Default 30 s.
    pub command_timeout: Duration,
    /// Deadline of the WebSocket handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Most frames the writer sends before one flush. Default 1024.
    pub max_frames_per_flush: usize,
    /// Largest incoming message (and WebSocket frame) accepted. Default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`](Self::DEFAULT_MAX_MESSAGE_SIZE), 256 MiB.
    ///
    /// Why a limit, and why this one:
    /// - A page decides how big some replies are (its title, its DOM, a screenshot of
    ///   it), and one socket carries the replies of many sessions. Without a limit one
    ///   hostile page could make this process hold any amount of memory.
    /// - Chromium sends each CDP message as one WebSocket frame, so the frame limit is
    ///   the message limit. tungstenite checks a frame's length from its header, before
    ///   reading its payload: a message over the limit costs no memory here.
    /// - It cannot skip that payload and read on, though: the socket is lost. Every call
    ///   on it fails with [`ConnectionClosed`](crate::error::ErrorKind::ConnectionClosed),
    ///   whose message says "over the N MiB limit"; a pool reconnects, and jobs with
    ///   [`Job::retries`](crate::job::Job::retries) run again on a fresh page. Only the page
    ///   that sent the message fails for good (with retries, until they run out).
    /// - Below the limit a message is held once as it is read and once more when a
    ///   caller decodes it, so a socket may hold about twice the limit for a moment.
    ///   256 MiB leaves room for full-page screenshots and big DOM snapshots; lower it
    ///   if no job of yours reads anything that large.
    pub max_message_size: usize,
    /// When the writer flushes. Default [`FlushPolicy::SelfClocking`].
    pub flush_policy: FlushPolicy,
}

impl ConnectionConfig {
    /// The default [`max_message_size`](Self::max_message_size): 256 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 << 20;
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            command_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_frames_per_flush: 1024,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            flush_policy: FlushPolicy::SelfClocking,
        }
    }
}

/// Counters of one connection since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Socket flushes; `frames_out / flushes` is the mean number of frames per flush.
    pub flushes: u64,
    /// Most frames sent in one flush.
    pub max_frames_per_flush: u64,
    /// Flushes the writer held back for more frames ([`FlushPolicy::Adaptive`]).
    pub held_flushes: u64,
    /// Frames that were not valid CDP (bad JSON, wrong shape, binary).
    pub malformed_frames: u64,
    /// Replies to ids nobody waits for (unknown, or given up on after a deadline).
    pub unknown_replies: u64,
    /// Events for sessions this connection does not know.
    pub unroutable_events: u64,
    /// Events received in all.
    pub events: u64,
    /// Calls waiting for a reply right now.
    pub pending_calls: u64,
}
