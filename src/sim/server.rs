//! The IO shell of the simulated browser: the accept loop, the HTTP endpoint, one task per
//! WebSocket, timers and control messages.
//!
//! Runs on the sim's own thread inside a `LocalSet`; all state is `Rc`/`RefCell` owned by
//! that thread. Never holds a `RefCell` borrow across an `.await`. The decisions are in
//! `core.rs`; this file only moves frames and waits.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{spawn_local, LocalSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::core::{ConnId, Core, Frame, Output, Timer};
use super::{Control, ControlMsg, ControlReply};

/// Most frames written to one socket before a flush.
const MAX_BATCH: usize = 1024;
/// Largest HTTP request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// A client must send its request head within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The sim thread's body: serves until the control channel closes, then drops every task
/// (and with them every socket).
pub(super) fn run(
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    core: Core,
    ws_url: String,
    control: mpsc::UnboundedReceiver<ControlMsg>,
) {
    let local = LocalSet::new();
    local.block_on(&runtime, serve(listener, core, ws_url, control));
    drop(local);
}

struct ConnHandle {
    tx: mpsc::UnboundedSender<Frame>,
    /// Dropping or firing it ends the connection's task without a close frame.
    _kill: oneshot::Sender<()>,
}

struct Shell {
    core: RefCell<Core>,
    conns: RefCell<BTreeMap<ConnId, ConnHandle>>,
    next_conn: Cell<ConnId>,
    ws_url: String,
    ws_path: String,
}

async fn serve(
    listener: std::net::TcpListener,
    core: Core,
    ws_url: String,
    mut control: mpsc::UnboundedReceiver<ControlMsg>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cdpmux-sim: cannot register listener: {e}");
            return;
        }
    };
    let ws_path = ws_url
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
        .unwrap_or_default();
    let shell = Rc::new(Shell {
        core: RefCell::new(core),
        conns: RefCell::new(BTreeMap::new()),
        next_conn: Cell::new(0),
        ws_url,
        ws_path,
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    spawn_local(handle_socket(shell.clone(), stream));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::debug!("cdpmux-sim: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            msg = control.recv() => match msg {
                Some((c, reply)) => {
                    let _ = reply.send(shell.control(c));
                }
                None => break,
            },
        }
    }
}

impl Shell {
    fn control(self: &Rc<Self>, control: Control) -> ControlReply {
        let out = match control {
            Control::CrashTarget(t) => self.core.borrow_mut().kill_target(&t),
            Control::DropConnections => {
                // Dropping a handle's kill sender ends that connection's task, which drops
                // the socket; forget the connections now so stats agree at once.
                let conns = std::mem::take(&mut *self.conns.borrow_mut());
                let mut core = self.core.borrow_mut();
                for id in conns.keys() {
                    core.disconnect(*id);
                }
                return ControlReply::Done;
            }
            Control::SetReplyDelay(d) => {
                self.core.borrow_mut().set_reply_delay(d);
                return ControlReply::Done;
            }
            Control::BlackHole(m) => {
                self.core.borrow_mut().set_black_hole(m);
                return ControlReply::Done;
            }
            Control::Mangle(m) => {
                self.core.borrow_mut().set_mangle(m);
                return ControlReply::Done;
            }
            Control::SendMalformed(n) => self.core.borrow_mut().malformed_frames(n),
            Control::SendUnknownEvents(n) => self.core.borrow_mut().unknown_events(n),
            Control::Stats => return ControlReply::Stats(self.core.borrow().stats()),
            Control::TargetIds => return ControlReply::TargetIds(self.core.borrow().target_ids()),
        };
        self.dispatch(out);
        ControlReply::Done
    }

    /// Sends an output's frames (after its delay) and then starts its timers.
    fn dispatch(self: &Rc<Self>, out: Output) {
        if out.delay.is_zero() {
            self.send(out.frames);
            self.start_timers(out.timers);
        } else {
            let me = self.clone();
            spawn_local(async move {
                tokio::time::sleep(out.delay).await;
                me.send(out.frames);
                me.start_timers(out.timers);
            });
        }
    }

    fn send(&self, frames: Vec<(ConnId, Frame)>) {
        if frames.is_empty() {
            return;
        }
        let conns = self.conns.borrow();
        for (conn, frame) in frames {
            if let Some(h) = conns.get(&conn) {
                let _ = h.tx.send(frame);
            }
        }
    }

    fn start_timers(self: &Rc<Self>, timers: Vec<(Duration, Timer)>) {
        for (after, timer) in timers {
            let me = self.clone();
            spawn_local(async move {
                tokio::time::sleep(after).await;
                let out = me.core.borrow_mut().on_timer(timer, Instant::now());
                me.dispatch(out);
            });
        }
    }
}

async fn handle_socket(shell: Rc<Shell>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(Ok((head, leftover))) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await
    else {
        return;
    };
    let request = Request::parse(&head);
    let path = request.path.split('?').next().unwrap_or_default();
    if request.websocket_key.is_some() && path == shell.ws_path {
        let key = request.websocket_key.unwrap_or_default();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, None).await;
        serve_websocket(shell, ws).await;
        return;
    }
    let (status, body) = match (request.method.as_str(), path) {
        ("GET", "/json/version") => {
            let version = json!({
                "Browser": "cdpmux-sim/1",
                "Protocol-Version": "1.3",
                "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/1.0 cdpmux-sim/1",
                "V8-Version": "0.0-sim",
                "WebKit-Version": "537.36 (@cdpmux-sim)",
                "webSocketDebuggerUrl": shell.ws_url,
            });
            ("200 OK", version.to_string())
        }
        ("GET", "/json" | "/json/list") => ("200 OK", shell.core.borrow().json_list().to_string()),
        _ => ("404 Not Found", "Unknown command".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=UTF-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads up to the end of the request head; returns the head and any bytes after it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = scan_from + pos + 4;
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// The parts of an HTTP request head the sim looks at.
struct Request {
    method: String,
    path: String,
    websocket_key: Option<String>,
}

impl Request {
    fn parse(head: &[u8]) -> Request {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split_whitespace();
        let method = first.next().unwrap_or_default().to_owned();
        let path = first.next().unwrap_or_default().to_owned();
        let mut upgrade = false;
        let mut websocket_key = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.trim().eq_ignore_ascii_case("upgrade") {
                upgrade = value.eq_ignore_ascii_case("websocket");
            } else if name.trim().eq_ignore_ascii_case("sec-websocket-key") {
                websocket_key = Some(value.to_owned());
            }
        }
        Request {
            method,
            path,
            websocket_key: websocket_key.filter(|_| upgrade),
        }
    }
}

/// One client WebSocket: a reader that feeds the core and a writer that drains the
/// connection's queue, flushing once per batch.
async fn serve_websocket(shell: Rc<Shell>, ws: WebSocketStream<TcpStream>) {
    let id = shell.next_conn.get();
    shell.next_conn.set(id + 1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (kill, killed) = oneshot::channel::<()>();
    shell
        .conns
        .borrow_mut()
        .insert(id, ConnHandle { tx, _kill: kill });
    shell.core.borrow_mut().connect(id);
    let (mut sink, mut stream) = ws.split();

    let reader = async {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Text(text)) => {
                    let out = shell.core.borrow_mut().on_text(id, text.as_str());
                    shell.dispatch(out);
                }
                Ok(Message::Binary(_)) => shell.core.borrow_mut().on_binary(),
                // Pings are answered by tungstenite; a close is answered and ends the stream.
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    let writer = async {
        while let Some(first) = rx.recv().await {
            if sink.feed(message(first)).await.is_err() {
                return;
            }
            for _ in 1..MAX_BATCH {
                let Ok(next) = rx.try_recv() else {
                    break;
                };
                if sink.feed(message(next)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        _ = killed => {}
    }
    shell.conns.borrow_mut().remove(&id);
    shell.core.borrow_mut().disconnect(id);
}

fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(s) => Message::text(s),
        Frame::Binary(b) => Message::binary(b),
    }
}
