//! Faults: renderer crashes and revivals, and the garbage frames and unknown events a
//! test injects.
//!
//! A crashed target keeps its sessions attached and swallows their commands (they are
//! answered "Target crashed" only when a reload or navigation revives it), as Chrome
//! does. Injected frames go to every connection; they must never change the state.

use serde_json::json;

use super::{error_frame, Command, Core, Frame, Output, SERVER_ERROR};

/// `Target.targetCrashed` fields for a `Page.crash` (a renderer CHECK failure) and for an
/// external kill (SIGKILL).
pub(super) const CRASH_STATUS: (&str, i64) = ("crashed", 5);
const KILL_STATUS: (&str, i64) = ("killed", 9);

impl Core {
    /// Fault injection: kill the renderer of `target` now.
    pub(crate) fn kill_target(&mut self, target: &str) -> Output {
        let mut out = Output::default();
        self.crash(target, KILL_STATUS, &mut out);
        out
    }

    /// Fault injection: `n` frames a client must survive, to every connection.
    pub(crate) fn malformed_frames(&mut self, n: usize) -> Output {
        let mut out = Output::default();
        for &conn in self.conns.keys() {
            for i in 0..n {
                let frame = match i % 10 {
                    0 => Frame::Text("{not json".into()),
                    1 => Frame::Binary(vec![0x00, 0xff, 0x13, 0x37]),
                    2 => Frame::Text(format!(r#"{{"id":{},"result":{{}}}}"#, 9_000_000_000u64 + i as u64)),
                    3 => Frame::Text(r#"{"id":"seven","result":[]}"#.into()),
                    4 => Frame::Text(r#"{"method":42,"params":"nope"}"#.into()),
                    5 => Frame::Text(format!(
                        r#"{{"id":{},"error":{{"code":"x","message":7}}}}"#,
                        9_100_000_000u64 + i as u64
                    )),
                    6 => Frame::Text("[]".into()),
                    7 => Frame::Text(String::new()),
                    8 => Frame::Text(
                        r#"{"method":"Target.targetCreated","params":{"targetInfo":7}}"#.into(),
                    ),
                    _ => Frame::Text(
                        r#"{"method":"Runtime.consoleAPICalled","params":{},"sessionId":"0000NOSUCHSESSION0000"}"#
                            .into(),
                    ),
                };
                out.frames.push((conn, frame));
            }
        }
        out
    }

    /// Fault injection: `n` events with made-up methods, browser-level to every connection
    /// and on every session.
    pub(crate) fn unknown_events(&mut self, n: usize) -> Output {
        let mut out = Output::default();
        for &conn in self.conns.keys() {
            for i in 0..n {
                let ev = json!({"method": format!("SimUnknown.browserEvent{}", i % 4), "params": {"seq": i}});
                out.text(conn, &ev);
            }
        }
        for (sid, s) in &self.sessions {
            for i in 0..n {
                let ev = json!({
                    "method": format!("SimUnknown.sessionEvent{}", i % 4),
                    "params": {"seq": i, "nested": {"a": [1, 2, 3]}},
                    "sessionId": sid,
                });
                out.text(s.conn, &ev);
            }
        }
        out
    }

    /// The renderer of `tid` dies: sessions stay attached, every call on them hangs.
    pub(super) fn crash(&mut self, tid: &str, (status, code): (&str, i64), out: &mut Output) {
        let Some(t) = self.targets.get_mut(tid) else {
            return;
        };
        if t.crashed {
            return;
        }
        t.crashed = true;
        t.generation += 1;
        t.pending = None;
        for sid in &t.sessions {
            let Some(s) = self.sessions.get_mut(sid) else {
                continue;
            };
            // A hung renderer's backlog now waits for the revival like any stuck call.
            s.stuck.extend(s.hung.take());
            s.stuck.extend(s.queued.drain(..).map(|c| c.id));
            if s.inspector {
                let ev =
                    json!({"method": "Inspector.targetCrashed", "params": {}, "sessionId": sid});
                out.text(s.conn, &ev);
            }
        }
        let ev = json!({"method": "Target.targetCrashed", "params": {"targetId": tid, "status": status, "errorCode": code}});
        self.to_discovering(&ev, out);
    }

    /// `Page.reload`/`Page.navigate` on a crashed target: fail what was stuck, run the
    /// command, then announce the new renderer.
    pub(super) fn revive(&mut self, tid: &str, sid: &str, cmd: Command, out: &mut Output) {
        let sessions = match self.targets.get_mut(tid) {
            Some(t) => {
                t.crashed = false;
                t.sessions.clone()
            }
            None => return,
        };
        for other in &sessions {
            if let Some(s) = self.sessions.get_mut(other) {
                for id in s.stuck.drain(..) {
                    let err = error_frame(id, SERVER_ERROR, "Target crashed", Some(other));
                    out.frames.push((s.conn, Frame::Text(err.to_string())));
                }
            }
        }
        self.run_session_command(sid, cmd, out);
        for other in &sessions {
            if let Some(s) = self.sessions.get(other).filter(|s| s.inspector) {
                let ev = json!({"method": "Inspector.targetReloadedAfterCrash", "params": {}, "sessionId": other});
                out.text(s.conn, &ev);
            }
        }
    }
}
