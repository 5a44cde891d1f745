//! The WebSocket itself: the handshake, the writer task and the reader task of one
//! connection, and the wake-ups between them and the connection's handles.
//!
//! Owns: moving frames between the socket and the connection, coalescing queued frames
//! into one flush per wake-up (held a little longer under load when the connection's
//! [`FlushPolicy`](super::batching::FlushPolicy) says so), and noticing that the socket
//! closed or broke.
//! Never: looks inside a frame or at the connection's state; it only asks the
//! connection, through [`Wire`], for frames to send and hands it what arrives.

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::batching::AdaptiveWindow;
use super::protocol::FrameText;
use crate::error::{Error, ErrorKind, Result, TimeoutKind};
use crate::remote::{default_config, redact, Dial};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the IO tasks need from the connection they serve.
pub(crate) trait Wire {
    /// True while frames wait to be sent.
    fn has_outgoing(&self) -> bool;
    /// How many frames wait to be sent.
    fn outgoing_len(&self) -> usize;
    /// The longest the writer may hold a flush for more frames (zero: never).
    fn max_hold(&self) -> Duration;
    /// Moves the frames of the next flush (at most the flush limit) into `batch`.
    fn take_outgoing(&self, batch: &mut Vec<Message>);
    /// The writer held a flush for more frames (adaptive batching).
    fn held(&self);
    /// `frames` frames went out in one flush.
    fn flushed(&self, frames: u64);
    /// A text frame arrived.
    fn received(&self, text: FrameText);
    /// A binary frame arrived (CDP frames are text: counted as malformed).
    fn received_binary(&self);
    /// The socket is gone, for this reason.
    fn lost(&self, why: Error);
}

/// Wake-ups between the handles and the IO tasks. Kept apart from the connection's state
/// so the tasks can hold it without keeping the connection alive.
#[derive(Default)]
pub(crate) struct Signals {
    /// Frames were queued, or the connection is closing.
    pub(crate) wake_writer: Notify,
    stop_reader: Notify,
    /// A direct call with an earlier deadline than any before, or the end.
    pub(crate) deadline_moved: Notify,
    /// Set once the connection is closing: the writer sends what is queued and stops.
    pub(crate) closing: Cell<bool>,
}

impl Signals {
    /// The connection's last handle is gone: the writer sends what is queued and stops,
    /// and so do the reader and the deadline task.
    pub(crate) fn last_handle_gone(&self) {
        self.closing.set(true);
        self.wake_writer.notify_one();
        self.deadline_moved.notify_one();
    }
}

/// Opens the WebSocket `dial` names (`ws://`, or `wss://` over TLS), with its extra
/// headers, within `connect_timeout`, accepting messages and frames up to
/// `max_message_size` bytes (the reasons are on
/// [`ConnectionConfig::max_message_size`](super::ConnectionConfig::max_message_size)).
pub(crate) async fn handshake(
    dial: &Dial,
    connect_timeout: Duration,
    max_message_size: usize,
) -> Result<Ws> {
    let shown = redact(&dial.url);
    let bad = |why: &str| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("bad DevTools URL {shown:?}: {why}"),
        )
    };
    let url = url::Url::parse(&dial.url)
        .map_err(|e| bad("expected ws://host:port/devtools/browser/<id>").with_source(e))?;
    let connector = match url.scheme() {
        "ws" => Connector::Plain,
        "wss" => Connector::Rustls(dial.tls.clone().unwrap_or_else(default_config)),
        _ => return Err(bad("only ws:// and wss:// are supported")),
    };
    let mut request = dial
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| bad("not a WebSocket URL").with_source(e))?;
    for (name, value) in &dial.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| bad("a header name is not valid").with_source(e))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| bad("a header value is not valid").with_source(e))?;
        request.headers_mut().append(name, value);
    }
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));
    let handshake = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(connector),
    );
    let (ws, _) = tokio::time::timeout(connect_timeout, handshake)
        .await
        .map_err(|_| {
            Error::timeout(
                TimeoutKind::Launch,
                format!("connecting to {shown}"),
                connect_timeout,
            )
        })?
        .map_err(|e| {
            Error::new(
                ErrorKind::BrowserUnavailable,
                format!("could not connect to the browser at {shown}; is it running?"),
            )
            .with_source(e)
        })?;
    Ok(ws)
}

/// Spawns the writer and reader tasks of `ws` for `wire` on the current `LocalSet`.
pub(crate) fn spawn<W: Wire + 'static>(ws: Ws, wire: Weak<W>, signals: Rc<Signals>) {
    let (sink, stream) = ws.split();
    tokio::task::spawn_local(write_loop(wire.clone(), signals.clone(), sink));
    tokio::task::spawn_local(read_loop(wire, signals, stream));
}

async fn write_loop<W: Wire>(
    weak: Weak<W>,
    signals: Rc<Signals>,
    mut sink: SplitSink<Ws, Message>,
) {
    let mut batch: Vec<Message> = Vec::new();
    let mut window = AdaptiveWindow::default();
    'wake: loop {
        signals.wake_writer.notified().await;
        loop {
            let Some(wire) = weak.upgrade() else {
                break 'wake;
            };
            if signals.closing.get() && !wire.has_outgoing() {
                break 'wake;
            }
            let max_hold = wire.max_hold();
            if let Some(hold) = window.plan(wire.outgoing_len(), max_hold) {
                // Yield rather than sleep: the shard's jobs and the reader run in between,
                // and a hold may be far shorter than a timer tick.
                let before = wire.outgoing_len();
                let until = std::time::Instant::now() + hold.within;
                while wire.outgoing_len() < hold.frames
                    && !signals.closing.get()
                    && std::time::Instant::now() < until
                {
                    tokio::task::yield_now().await;
                }
                window.held(before, wire.outgoing_len(), max_hold);
                wire.held();
            }
            wire.take_outgoing(&mut batch);
            if batch.is_empty() {
                continue 'wake;
            }
            let n = batch.len() as u64;
            let mut written = Ok(());
            for frame in batch.drain(..) {
                written = sink.feed(frame).await;
                if written.is_err() {
                    break;
                }
            }
            if written.is_ok() {
                written = sink.flush().await;
            }
            if let Err(e) = written {
                batch.clear();
                wire.lost(
                    Error::new(ErrorKind::ConnectionClosed, "the browser connection broke")
                        .with_source(e),
                );
                break 'wake;
            }
            window.flushed(n as usize);
            wire.flushed(n);
        }
    }
    let _ = sink.close().await;
    signals.stop_reader.notify_one();
}

async fn read_loop<W: Wire>(weak: Weak<W>, signals: Rc<Signals>, mut stream: SplitStream<Ws>) {
    let stop = signals.stop_reader.notified();
    tokio::pin!(stop);
    let why = loop {
        let msg = tokio::select! {
            biased;
            msg = stream.next() => msg,
            _ = &mut stop => break Error::new(ErrorKind::ConnectionClosed, "the connection was closed"),
        };
        let Some(wire) = weak.upgrade() else {
            break Error::new(ErrorKind::ConnectionClosed, "the connection was dropped");
        };
        match msg {
            Some(Ok(Message::Text(text))) => wire.received(text),
            Some(Ok(Message::Binary(_))) => {
                wire.received_binary();
                tracing::warn!("dropped a binary frame: CDP frames are text");
            }
            Some(Ok(Message::Close(frame))) => {
                break Error::new(
                    ErrorKind::ConnectionClosed,
                    format!("the browser closed the connection ({frame:?})"),
                )
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                break too_long(size, max_size)
            }
            Some(Err(e)) => {
                break Error::new(ErrorKind::ConnectionClosed, "the browser connection broke")
                    .with_source(e)
            }
            None => {
                break Error::new(
                    ErrorKind::ConnectionClosed,
                    "the browser closed the connection",
                )
            }
        }
    };
    if let Some(wire) = weak.upgrade() {
        wire.lost(why);
    }
    signals.closing.set(true);
    signals.wake_writer.notify_one();
}

/// Why the socket closed when the browser sent a message over the limit: tungstenite
/// refuses it from its header and cannot read on past it.
fn too_long(size: usize, max_size: usize) -> Error {
    const MIB: f64 = (1 << 20) as f64;
    Error::new(
        ErrorKind::ConnectionClosed,
        format!(
            "the browser sent a message of {:.1} MiB, a reply over the {:.0} MiB limit \
             (ConnectionConfig::max_message_size; a page returned too much?): the socket \
             closed, every call on it failed, and jobs with retries run again on a fresh page",
            size as f64 / MIB,
            max_size as f64 / MIB,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_message_is_named_with_its_limit() {
        let e = too_long(300 << 20, 256 << 20);
        assert_eq!(e.kind(), ErrorKind::ConnectionClosed);
        assert!(e.is_crash(), "retried on a fresh page");
        assert!(e.message().contains("300.0 MiB"), "{e}");
        assert!(e.message().contains("over the 256 MiB limit"), "{e}");
    }
}
