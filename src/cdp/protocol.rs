//! CDP wire format without I/O: encoding calls, classifying incoming frames, and the
//! table of calls waiting for their reply.
//!
//! Everything here is plain data and functions, so it is unit-tested and fuzzed without
//! sockets. An incoming frame is parsed once, into borrowed pieces; the `result` or
//! `params` payload stays as raw JSON (a byte range of the frame) until the one caller
//! who asked for it decodes it into its own type.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, ErrorKind};

/// The text of one frame as it came off the socket; cheap to clone (reference counted).
pub(crate) type FrameText = tokio_tungstenite::tungstenite::Utf8Bytes;

/// A method name: borrowed for typed commands, owned for raw calls.
pub type MethodName = Cow<'static, str>;

/// Encodes one call as a CDP frame: `{"id":..,"method":..,"sessionId":..,"params":..}`.
///
/// `params` is written straight into the frame; no intermediate `serde_json::Value`.
pub fn encode_call<P: Serialize + ?Sized>(
    id: u64,
    session_id: Option<&str>,
    method: &str,
    params: &P,
) -> Result<String, Error> {
    #[derive(Serialize)]
    struct Call<'a, P: ?Sized> {
        id: u64,
        method: &'a str,
        #[serde(rename = "sessionId", skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
        params: &'a P,
    }
    serde_json::to_string(&Call {
        id,
        method,
        session_id,
        params,
    })
    .map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("could not encode the parameters of {method}"),
        )
        .with_source(e)
    })
}

/// The `error` member of a CDP reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CdpError {
    /// JSON-RPC style code (`-32000` server error, `-32001` session not found, ...).
    pub code: i64,
    /// The browser's message.
    pub message: String,
}

/// An incoming frame, classified. Borrowed from the frame text.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The reply to call `id`.
    Reply {
        /// The call this answers.
        id: u64,
        /// The session the call was made on, if any.
        session_id: Option<Cow<'a, str>>,
        /// The `result` payload's byte range in the frame, or the CDP error.
        outcome: Result<Range<usize>, CdpError>,
    },
    /// An event, from a session or from the browser itself.
    Event {
        /// Its method, e.g. `Page.loadEventFired`.
        method: Cow<'a, str>,
        /// The session it belongs to; `None` for browser-level events.
        session_id: Option<Cow<'a, str>>,
        /// The `params` payload's byte range in the frame (empty when absent).
        params: Range<usize>,
    },
}

/// Why a frame could not be classified.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not JSON, or JSON of the wrong shape.
    Malformed(String),
    /// Valid JSON that is neither a reply (an `id`) nor an event (a `method`).
    Unrecognised,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Malformed(why) => write!(f, "malformed CDP frame: {why}"),
            FrameError::Unrecognised => f.write_str("CDP frame has neither an id nor a method"),
        }
    }
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(rename = "sessionId", borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    error: Option<CdpError>,
}

/// Classifies one text frame. Never panics, whatever the input.
pub fn classify(text: &str) -> Result<Frame<'_>, FrameError> {
    let raw: RawFrame<'_> =
        serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let span = |v: &RawValue| {
        // `v` borrows from `text`, so its offset is its address minus the frame's.
        let start = v.get().as_ptr() as usize - text.as_ptr() as usize;
        start..start + v.get().len()
    };
    match (raw.id, raw.method) {
        (Some(id), _) => {
            let outcome = match (raw.error, raw.result) {
                (Some(err), _) => Err(err),
                (None, Some(result)) => Ok(span(result)),
                (None, None) => {
                    return Err(FrameError::Malformed(format!(
                        "reply {id} has neither result nor error"
                    )))
                }
            };
            Ok(Frame::Reply {
                id,
                session_id: raw.session_id,
                outcome,
            })
        }
        (None, Some(method)) => Ok(Frame::Event {
            method,
            session_id: raw.session_id,
            params: raw.params.map(span).unwrap_or(0..0),
        }),
        (None, None) => Err(FrameError::Unrecognised),
    }
}

/// The call a frame that [`classify`] refused still names: its `id`, when that is a
/// number and the frame is a JSON object whatever its other members hold (an `error`
/// of the wrong shape, neither `result` nor `error`). The connection fails that call at
/// once rather than leaving it to its deadline. Never panics, whatever the input.
pub fn reply_id(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: u64,
    }
    serde_json::from_str::<IdOnly>(text).ok().map(|f| f.id)
}

/// A successful reply: the frame it came in and where its `result` is.
#[derive(Clone)]
pub(crate) struct Reply {
    frame: FrameText,
    result: Range<usize>,
}

impl Reply {
    pub(crate) fn new(frame: FrameText, result: Range<usize>) -> Self {
        Reply { frame, result }
    }

    /// The raw JSON of `result`.
    pub(crate) fn json(&self) -> &str {
        &self.frame[self.result.clone()]
    }

    /// Decodes `result` into the caller's type.
    pub(crate) fn decode<T: DeserializeOwned>(&self, method: &str) -> Result<T, Error> {
        serde_json::from_str(self.json()).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("could not decode the reply to {method}"),
            )
            .with_source(e)
        })
    }
}

/// A CDP event: its method and raw `params`, decoded on demand.
#[derive(Clone)]
pub struct Event {
    frame: FrameText,
    method: Box<str>,
    params: Range<usize>,
}

impl Event {
    /// Builds an event from a frame known to hold one, with `params` a range of it.
    pub(crate) fn new(frame: FrameText, method: &str, params: Range<usize>) -> Self {
        Event {
            method: method.into(),
            frame,
            params,
        }
    }

    /// The event's method, e.g. `Page.loadEventFired`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The raw JSON of `params` (`"{}"` when the event had none).
    pub fn params_json(&self) -> &str {
        if self.params.is_empty() {
            "{}"
        } else {
            &self.frame[self.params.clone()]
        }
    }

    /// Decodes `params` into `T` (a typed event from `spider_chromiumoxide_cdp`, or
    /// `serde_json::Value`).
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(self.params_json()).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("could not decode the params of {}", self.method()),
            )
            .with_source(e)
        })
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("method", &self.method())
            .field("params", &self.params_json())
            .finish()
    }
}

/// A session's index on its connection; `None` in the table means browser-level.
pub(crate) type SessionSlot = u32;

/// One call waiting for its reply.
#[derive(Debug)]
pub(crate) struct PendingCall<T> {
    pub(crate) session: Option<SessionSlot>,
    pub(crate) method: MethodName,
    /// Who to tell; `None` for fire-and-forget calls whose reply is dropped.
    pub(crate) waiter: Option<T>,
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<rustc_hash::FxHasher>>;

/// Calls sent and not yet answered, by id. Generic over the completion handle so the
/// bookkeeping is testable without channels.
///
/// Invariant: an id is in the table from the moment its frame is queued until exactly
/// one of `complete`, `cancel`, `drain_session` or `drain_all` takes it out.
#[derive(Debug)]
pub(crate) struct PendingTable<T> {
    next_id: u64,
    calls: IdMap<PendingCall<T>>,
}

impl<T> Default for PendingTable<T> {
    fn default() -> Self {
        PendingTable {
            next_id: 1,
            calls: IdMap::default(),
        }
    }
}

impl<T> PendingTable<T> {
    /// The id the next `insert` takes.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Reserves a fresh id for a call about to be sent.
    pub(crate) fn insert(
        &mut self,
        session: Option<SessionSlot>,
        method: MethodName,
        waiter: Option<T>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.calls.insert(
            id,
            PendingCall {
                session,
                method,
                waiter,
            },
        );
        id
    }

    /// Takes the call a reply answers; `None` for unknown (or already cancelled) ids.
    pub(crate) fn complete(&mut self, id: u64) -> Option<PendingCall<T>> {
        self.calls.remove(&id)
    }

    /// Forgets a call whose caller gave up (deadline passed or future dropped).
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        self.calls.remove(&id).is_some()
    }

    /// Takes every call pending on `session`.
    pub(crate) fn drain_session(&mut self, session: SessionSlot) -> Vec<PendingCall<T>> {
        let ids: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.session == Some(session))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.calls.remove(&id))
            .collect()
    }

    /// The calls pending, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &PendingCall<T>)> {
        self.calls.iter().map(|(id, c)| (*id, c))
    }

    /// Takes every pending call.
    pub(crate) fn drain_all(&mut self) -> Vec<PendingCall<T>> {
        self.calls.drain().map(|(_, c)| c).collect()
    }

    /// How many calls are waiting.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_reply_still_names_its_call() {
        for text in [
            r#"{"id":7,"error":{"code":"x","message":7}}"#,
            r#"{"id":7}"#,
            r#"{"sessionId":"S","id":7,"error":"nope"}"#,
        ] {
            assert!(classify(text).is_err(), "{text}");
            assert_eq!(reply_id(text), Some(7), "{text}");
        }
        for text in [
            "{not json",
            r#"{"id":"seven"}"#,
            "[]",
            "",
            r#"{"method":"A.b"}"#,
        ] {
            assert_eq!(reply_id(text), None, "{text}");
        }
    }

    #[test]
    fn encodes_a_session_call() {
        let f = encode_call(
            7,
            Some("S1"),
            "Runtime.evaluate",
            &serde_json::json!({"expression": "1+1"}),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["sessionId"], "S1");
        assert_eq!(v["method"], "Runtime.evaluate");
        assert_eq!(v["params"]["expression"], "1+1");
        let browser_level = encode_call(8, None, "Browser.getVersion", &()).unwrap();
        assert!(!browser_level.contains("sessionId"));
    }

    #[test]
    fn classifies_a_reply_and_keeps_the_result_raw() {
        let text = r#"{"id":3,"result":{"result":{"type":"number","value":2}},"sessionId":"AB"}"#;
        match classify(text).unwrap() {
            Frame::Reply {
                id,
                session_id,
                outcome,
            } => {
                assert_eq!(id, 3);
                assert_eq!(session_id.as_deref(), Some("AB"));
                let r = outcome.unwrap();
                assert_eq!(&text[r], r#"{"result":{"type":"number","value":2}}"#);
            }
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn classifies_an_error_reply() {
        let text = r#"{"id":4,"error":{"code":-32601,"message":"'Foo.bar' wasn't found"}}"#;
        let Frame::Reply { outcome, .. } = classify(text).unwrap() else {
            panic!("not a reply")
        };
        assert_eq!(
            outcome.unwrap_err(),
            CdpError {
                code: -32601,
                message: "'Foo.bar' wasn't found".into()
            }
        );
    }

    #[test]
    fn classifies_events_with_and_without_params() {
        let text = r#"{"method":"Page.loadEventFired","params":{"timestamp":1.5},"sessionId":"S"}"#;
        let Frame::Event {
            method,
            session_id,
            params,
        } = classify(text).unwrap()
        else {
            panic!("not an event")
        };
        assert_eq!(method, "Page.loadEventFired");
        assert_eq!(session_id.as_deref(), Some("S"));
        assert_eq!(&text[params], r#"{"timestamp":1.5}"#);

        let Frame::Event { params, .. } = classify(r#"{"method":"X.y"}"#).unwrap() else {
            panic!("not an event")
        };
        assert!(params.is_empty());
    }

    #[test]
    fn event_exposes_method_and_params() {
        let text: FrameText =
            r#"{"method":"Target.targetCrashed","params":{"targetId":"T1"}}"#.into();
        let Frame::Event { method, params, .. } = classify(&text).unwrap() else {
            panic!("not an event")
        };
        let ev = Event::new(text.clone(), &method, params);
        assert_eq!(ev.method(), "Target.targetCrashed");
        let p: serde_json::Value = ev.params().unwrap();
        assert_eq!(p["targetId"], "T1");
    }

    #[test]
    fn rejects_bad_frames_without_panicking() {
        for bad in [
            "",
            "{",
            "[1,2]",
            "null",
            r#"{"id":"x"}"#,
            r#"{"id":-1,"result":{}}"#,
            r#"{"id":1}"#,
            r#"{"method":5}"#,
            r#"{"id":1,"error":{"code":"x"}}"#,
        ] {
            assert!(
                matches!(classify(bad), Err(FrameError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(classify("{}"), Err(FrameError::Unrecognised));
        assert_eq!(classify(r#"{"params":{}}"#), Err(FrameError::Unrecognised));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let Frame::Event { method, .. } = classify(r#"{"method":"A.\u0062"}"#).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(method, "A.b");
    }

    #[test]
    fn pending_table_tracks_each_call_once() {
        let mut t = PendingTable::<u32>::default();
        let a = t.insert(Some(1), "A.a".into(), Some(10));
        let b = t.insert(Some(2), "B.b".into(), Some(20));
        let c = t.insert(Some(1), "C.c".into(), None);
        let d = t.insert(None, "D.d".into(), Some(40));
        assert_eq!(t.len(), 4);
        assert_ne!(a, b);
        assert_eq!(t.complete(b).unwrap().waiter, Some(20));
        assert!(t.complete(b).is_none(), "a reply is consumed once");
        let mut drained: Vec<_> = t.drain_session(1).into_iter().map(|c| c.method).collect();
        drained.sort();
        assert_eq!(drained, ["A.a", "C.c"]);
        assert!(!t.cancel(c));
        assert!(t.cancel(d));
        assert_eq!(t.len(), 0);
        t.insert(None, "E.e".into(), Some(50));
        assert_eq!(t.drain_all().len(), 1);
        assert_eq!(t.len(), 0);
    }
}
