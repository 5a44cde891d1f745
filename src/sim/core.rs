//! The simulated browser's state machine: targets, sessions, contexts and connections.
//!
//! Pure: no sockets, no timers, no threads, no clock. Every input (a text frame from a
//! connection, a timer that fired with the time it fired, a fault injected by the test)
//! returns an [`Output`]: the frames to send to which connection, and the timers to
//! start. The IO shell (`server.rs`) does the sending and the waiting. Must never panic
//! on any input.
//!
//! This file owns the state and routes each input; the handlers live by concept in
//! `targets.rs` (browser-level commands), `page.rs` (session commands) and `faults.rs`
//! (crashes and injected garbage).

mod faults;
mod page;
mod targets;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Delay, SimConfig, SimStats};
use faults::CRASH_STATUS;

/// Identifies one client WebSocket.
pub(crate) type ConnId = u64;

/// One WebSocket frame to send.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// Something to do later, on the same state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A navigation of `target` finishes loading, unless `generation` is stale.
    Load { target: String, generation: u64 },
    /// `Page.crash` takes effect.
    Crash { target: String },
}

/// What the shell must do after an input.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Frames in send order.
    pub frames: Vec<(ConnId, Frame)>,
    /// Timers to start once the frames are sent.
    pub timers: Vec<(Duration, Timer)>,
    /// How long to hold the frames back (the configured reply delay).
    pub delay: Duration,
}

impl Output {
    fn text(&mut self, conn: ConnId, value: &Value) {
        self.frames.push((conn, Frame::Text(value.to_string())));
    }
}

/// CDP error codes used by Chromium.
const SERVER_ERROR: i64 = -32000;
const SESSION_NOT_FOUND: i64 = -32001;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    id: Option<u64>,
    method: Option<String>,
    #[serde(default)]
    params: Value,
    session_id: Option<String>,
}

/// A command parsed far enough to route it.
#[derive(Debug)]
struct Command {
    id: u64,
    method: String,
    params: Value,
}

struct Target {
    /// Creation order, for stable listings.
    seq: u64,
    context: String,
    url: String,
    title: String,
    crashed: bool,
    /// Bumped by every navigation, stop and crash, so a stale load timer does nothing.
    generation: u64,
    /// The navigation in flight: url and loader id.
    pending: Option<(String, String)>,
    loader: String,
    sessions: Vec<String>,
}

struct Session {
    conn: ConnId,
    target: String,
    page: bool,
    runtime: bool,
    inspector: bool,
    lifecycle: bool,
    /// `Network.enable`d: a navigation reports its document's request and response.
    network: bool,
    /// The id of the evaluate that hung the renderer.
    hung: Option<u64>,
    /// Commands that arrived while the renderer was hung, in order.
    queued: VecDeque<Command>,
    /// Ids of commands swallowed by a crash; answered with "Target crashed" on revival.
    stuck: Vec<u64>,
}

#[derive(Default)]
struct Conn {
    discover: bool,
    sessions: Vec<String>,
}

/// The whole simulated browser.
pub(crate) struct Core {
    rng: fastrand::Rng,
    started: Instant,
    load_time: Duration,
    crash_delay: Duration,
    reply_delay: Delay,
    black_hole: Option<String>,
    /// Calls to this method are answered with a malformed reply.
    mangle: Option<String>,
    default_context: String,
    contexts: Vec<String>,
    /// Cookies by browser context, as `Storage.setCookies` left them (the simulated
    /// pages neither set nor send cookies).
    cookies: BTreeMap<String, Vec<Value>>,
    targets: BTreeMap<String, Target>,
    sessions: BTreeMap<String, Session>,
    conns: BTreeMap<ConnId, Conn>,
    next_target_seq: u64,
    commands: u64,
    malformed: u64,
    black_holed: u64,
}

impl Core {
    /// A browser with no targets, started at `now` (event timestamps count from it).
    pub(crate) fn new(config: &SimConfig, now: Instant) -> Core {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let default_context = hex32(&mut rng);
        Core {
            rng,
            started: now,
            load_time: config.load_time,
            crash_delay: config.crash_delay,
            reply_delay: config.reply_delay,
            black_hole: None,
            mangle: None,
            default_context,
            contexts: Vec::new(),
            cookies: BTreeMap::new(),
            targets: BTreeMap::new(),
            sessions: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_target_seq: 0,
            commands: 0,
            malformed: 0,
            black_holed: 0,
        }
    }

    /// A fresh id in the browser's format; also used for the browser id in the URL.
    pub(crate) fn new_uuid(&mut self) -> String {
        let v = self.rng.u128(..);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            v >> 96,
            (v >> 80) & 0xffff,
            (v >> 64) & 0xffff,
            (v >> 48) & 0xffff,
            v & 0xffff_ffff_ffff
        )
    }

    pub(crate) fn connect(&mut self, conn: ConnId) {
        self.conns.insert(conn, Conn::default());
    }

    /// A client went away: its sessions go with it, its targets stay (as in Chrome).
    pub(crate) fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for sid in c.sessions {
            self.forget_session(&sid);
        }
    }

    pub(crate) fn set_reply_delay(&mut self, delay: Delay) {
        self.reply_delay = delay;
    }

    pub(crate) fn set_black_hole(&mut self, method: Option<String>) {
        self.black_hole = method;
    }

    pub(crate) fn set_mangle(&mut self, method: Option<String>) {
        self.mangle = method;
    }

    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            targets: self.targets.len(),
            crashed_targets: self.targets.values().filter(|t| t.crashed).count(),
            sessions: self.sessions.len(),
            connections: self.conns.len(),
            commands: self.commands,
            contexts: self.contexts.len(),
            malformed: self.malformed,
            black_holed: self.black_holed,
        }
    }

    /// Target ids in creation order.
    pub(crate) fn target_ids(&self) -> Vec<String> {
        let mut ids: Vec<(&u64, &String)> = self.targets.iter().map(|(k, t)| (&t.seq, k)).collect();
        ids.sort();
        ids.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// `GET /json/list`: the page targets, as Chrome's HTTP endpoint lists them.
    pub(crate) fn json_list(&self) -> Value {
        let list: Vec<Value> = self
            .target_ids()
            .iter()
            .filter_map(|id| {
                let t = self.targets.get(id)?;
                Some(json!({"id": id, "type": "page", "title": t.title, "url": t.url}))
            })
            .collect();
        Value::Array(list)
    }

    /// A received binary frame: Chrome ignores it.
    pub(crate) fn on_binary(&mut self) {
        self.malformed += 1;
    }

    /// One text frame from `conn`.
    pub(crate) fn on_text(&mut self, conn: ConnId, text: &str) -> Output {
        let mut out = Output::default();
        let Ok(msg) = serde_json::from_str::<Incoming>(text) else {
            self.malformed += 1;
            return out;
        };
        let Some(id) = msg.id else {
            self.malformed += 1;
            return out;
        };
        self.commands += 1;
        out.delay = self.draw_delay();
        let Some(method) = msg.method else {
            let err = error_frame(
                id,
                INVALID_REQUEST,
                "Message must have string 'method' property",
                msg.session_id.as_deref(),
            );
            out.text(conn, &err);
            return out;
        };
        if self.black_hole.as_deref() == Some(method.as_str()) {
            self.black_holed += 1;
            return out;
        }
        if self.mangle.as_deref() == Some(method.as_str()) {
            // The reply names the call, but its error has the wrong shape.
            let mut reply = json!({"id": id, "error": {"code": "x", "message": 7}});
            if let Some(sid) = msg.session_id {
                reply["sessionId"] = Value::String(sid);
            }
            out.text(conn, &reply);
            return out;
        }
        let cmd = Command {
            id,
            method,
            params: msg.params,
        };
        match msg.session_id {
            None => self.browser_command(conn, cmd, None, &mut out),
            Some(sid) => match self.sessions.get(&sid) {
                Some(s) if s.conn == conn => self.session_command(&sid, cmd, &mut out),
                _ => out.text(
                    conn,
                    &error_frame(
                        id,
                        SESSION_NOT_FOUND,
                        "Session with given id not found.",
                        Some(&sid),
                    ),
                ),
            },
        }
        out
    }

    /// A timer started by an earlier [`Output`] fired at `now`.
    pub(crate) fn on_timer(&mut self, timer: Timer, now: Instant) -> Output {
        let mut out = Output::default();
        match timer {
            Timer::Load { target, generation } => {
                self.finish_load(&target, generation, now, &mut out)
            }
            Timer::Crash { target } => self.crash(&target, CRASH_STATUS, &mut out),
        }
        out
    }

    fn draw_delay(&mut self) -> Duration {
        match self.reply_delay {
            Delay::None => Duration::ZERO,
            Delay::Fixed(d) => d,
            Delay::Uniform(lo, hi) if hi <= lo => lo,
            Delay::Uniform(lo, hi) => {
                let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
                lo + Duration::from_nanos(self.rng.u64(0..=span))
            }
        }
    }

    /// Seconds since the browser started, as CDP event timestamps carry them.
    fn timestamp(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.started).as_secs_f64()
    }
}

/// 32 uppercase hex digits, Chromium's format for target, session and context ids.
fn hex32(rng: &mut fastrand::Rng) -> String {
    format!("{:032X}", rng.u128(..))
}

fn result_frame(id: u64, result: Value, session: Option<&str>) -> Value {
    match session {
        Some(s) => json!({"id": id, "result": result, "sessionId": s}),
        None => json!({"id": id, "result": result}),
    }
}

fn error_frame(id: u64, code: i64, message: &str, session: Option<&str>) -> Value {
    let error = json!({"code": code, "message": message});
    match session {
        Some(s) => json!({"id": id, "error": error, "sessionId": s}),
        None => json!({"id": id, "error": error}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arbitrary frames, including well-formed commands with hostile params, never panic.
    #[test]
    fn survives_garbage() {
        let mut now = Instant::now();
        let mut core = Core::new(&SimConfig::default(), now);
        core.connect(1);
        let create_target = |core: &mut Core, id: u64| {
            core.on_text(
                1,
                &format!(r#"{{"id":{id},"method":"Target.createTarget","params":{{}}}}"#),
            );
        };
        create_target(&mut core, 1);
        let tid = core.target_ids()[0].clone();
        let out = core.on_text(
            1,
            &format!(r#"{{"id":2,"method":"Target.attachToTarget","params":{{"targetId":"{tid}","flatten":true}}}}"#),
        );
        assert_eq!(out.frames.len(), 2);
        let sid = core.sessions.keys().next().unwrap().clone();
        let mut rng = fastrand::Rng::with_seed(1);
        let methods = [
            "Page.navigate",
            "Page.reload",
            "Page.crash",
            "Runtime.evaluate",
            "Runtime.terminateExecution",
            "Target.closeTarget",
            "Target.detachFromTarget",
            "Target.disposeBrowserContext",
            "Target.createTarget",
            "Inspector.enable",
        ];
        let params = [
            "null",
            "7",
            "[]",
            r#"{"url":5}"#,
            r#"{"expression":"while(true){}"}"#,
            r#"{"targetId":null}"#,
        ];
        for i in 0..5_000u64 {
            let method = methods[rng.usize(..methods.len())];
            let param = params[rng.usize(..params.len())];
            let session = if rng.bool() {
                format!(r#","sessionId":"{sid}""#)
            } else {
                String::new()
            };
            let frame = format!(
                r#"{{"id":{},"method":"{method}","params":{param}{session}}}"#,
                i + 10
            );
            let out = core.on_text(1, &frame);
            for (after, timer) in out.timers {
                now += after;
                core.on_timer(timer, now);
            }
            let cut = rng.usize(..=frame.len());
            if frame.is_char_boundary(cut) {
                core.on_text(1, &frame[..cut]);
            }
        }
        core.kill_target(&tid);
        core.malformed_frames(20);
        core.unknown_events(3);
        core.disconnect(1);
        assert_eq!(core.stats().sessions, 0);
    }
}
