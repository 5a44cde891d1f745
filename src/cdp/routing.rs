//! Where an incoming event goes, and which events end a session: the session registry of
//! one connection and the rules read from CHROMIUM-FACTS.md.
//!
//! Owns: the sessions a connection knows (by slot and by CDP `sessionId`), whether each is
//! alive, its event waits, the decision of which sessions an event kills and why, and
//! what becomes of a request paused on a session: failed by its resource blocking, handed
//! to its interceptor, or continued.
//! Never: does I/O, touches the pending-call table or answers a call; it takes data in
//! and returns decisions, and the connection acts on them.

use std::collections::HashMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use smallvec::SmallVec;

use super::events::EventWaiters;
use super::protocol::SessionSlot;
use super::proxy_auth::ProxyAuth;
use crate::error::{Error, ErrorKind, Result};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::Arc;

/// One flat session on a connection.
pub(crate) struct SessionState {
    pub(crate) session_id: Rc<str>,
    target_id: Rc<str>,
    /// Set once the session is known dead; every later call fails with it at once.
    pub(crate) dead: Option<Error>,
    /// Cleared when the session dies, before any of its calls hears of it.
    alive: Option<Arc<AtomicBool>>,
    pub(crate) waiters: EventWaiters,
    /// What becomes of a request paused on this session.
    pub(crate) pausing: Pausing,
}

/// Where a request paused for a page's interceptor goes: called with the event's params.
pub(crate) type PausedSink = Rc<dyn Fn(&str)>;

/// The rules for a request paused on one session (`Fetch.requestPaused`).
#[derive(Default)]
pub(crate) struct Pausing {
    /// CDP names of the resource types the page blocks: a paused request of one is failed
    /// (`BlockedByClient`), before any interceptor sees it.
    pub(crate) blocked_types: SmallVec<[&'static str; 4]>,
    /// The page's interceptor: every other paused request goes to it, with the event's
    /// params.
    pub(crate) interceptor: Option<PausedSink>,
    /// cdpmux owns the page's `Fetch` domain (it blocks types, or intercepts or did, or
    /// answers a proxy): a paused request nobody takes is continued, never left paused.
    pub(crate) owned: bool,
    /// The page's proxy credentials: `Fetch.authRequired` goes to them (see
    /// [`ProxyAuth::answer`]); a paused request is decided like any other above.
    pub(crate) proxy_auth: Option<ProxyAuth>,
}

impl SessionState {
    /// Marks the session dead (keeping the first reason): clears `alive` first, then
    /// fails its event waiters. True when it was alive until now.
    pub(crate) fn die(&mut self, why: &Error) -> bool {
        if let Some(alive) = &self.alive {
            alive.store(false, Ordering::Release);
        }
        self.waiters.fail_all(why);
        let newly = self.dead.is_none();
        self.dead.get_or_insert_with(|| why.clone());
        newly
    }

    /// Has `alive` cleared when this session dies (at once if it is dead already).
    pub(crate) fn watch(&mut self, alive: Arc<AtomicBool>) {
        if self.dead.is_some() {
            alive.store(false, Ordering::Release);
        }
        self.alive = Some(alive);
    }
}

/// The sessions of one connection. Invariant: `by_session_id` maps exactly the
/// `sessionId`s of the sessions in `by_slot`.
#[derive(Default)]
pub(crate) struct Sessions {
    by_slot: HashMap<SessionSlot, SessionState>,
    by_session_id: HashMap<Rc<str>, SessionSlot>,
    next_slot: SessionSlot,
}

/// Where an event goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EventRoute {
    /// To the browser-level waits (the event carries no `sessionId`).
    Browser,
    /// To a known session.
    Session(SessionSlot),
    /// Nowhere: the `sessionId` is not one of ours (counted, then dropped).
    Unroutable,
}

/// A request paused on a page, or one its resource blocking stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Paused, of a type the page blocks: fail it (`BlockedByClient`).
    Fail(String),
    /// Paused, and the page's interceptor decides.
    Intercept,
    /// Paused on a page whose `Fetch` is cdpmux's, with nobody to decide: continue it.
    Continue(String),
    /// Failed by the page's blocking (`Network.setBlockedURLs`, or a `Fetch` pattern
    /// through `Fetch.failRequest`): count it. Each blocked request is reported this way
    /// once.
    Failed,
}

/// What an event means for the sessions of the connection.
#[derive(Debug)]
pub(crate) enum Ending {
    /// Nothing ends.
    Nothing,
    /// It should end sessions, but its params are not what CDP sends (counted).
    Malformed,
    /// These sessions are dead, for this reason.
    Sessions(SmallVec<[SessionSlot; 2]>, Error),
}

impl Sessions {
    /// Registers a flat session attached to `target_id`.
    pub(crate) fn add(&mut self, session_id: &str, target_id: &str) -> SessionSlot {
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1);
        let session_id: Rc<str> = session_id.into();
        self.by_session_id.insert(session_id.clone(), slot);
        self.by_slot.insert(
            slot,
            SessionState {
                session_id,
                target_id: target_id.into(),
                dead: None,
                alive: None,
                waiters: EventWaiters::default(),
                pausing: Pausing::default(),
            },
        );
        slot
    }

    /// Forgets a session.
    pub(crate) fn remove(&mut self, slot: SessionSlot) {
        if let Some(s) = self.by_slot.remove(&slot) {
            self.by_session_id.remove(&s.session_id);
        }
    }

    pub(crate) fn get_mut(&mut self, slot: SessionSlot) -> Option<&mut SessionState> {
        self.by_slot.get_mut(&slot)
    }

    pub(crate) fn all_mut(&mut self) -> impl Iterator<Item = &mut SessionState> {
        self.by_slot.values_mut()
    }

    /// Why a call or wait on `slot` cannot go ahead: the session is dead or gone.
    pub(crate) fn refusal(&self, slot: SessionSlot) -> Option<Error> {
        match self.by_slot.get(&slot) {
            Some(s) => s.dead.clone(),
            None => Some(Error::new(ErrorKind::SessionCrashed, "the page is closed")),
        }
    }

    /// The `sessionId` a call to `method` on `slot` carries, or why it cannot be sent.
    pub(crate) fn session_id(&self, slot: SessionSlot, method: &str) -> Result<Rc<str>> {
        match self.by_slot.get(&slot) {
            Some(s) => match &s.dead {
                Some(err) => Err(err.clone()),
                None => Ok(s.session_id.clone()),
            },
            None => Err(Error::new(
                ErrorKind::SessionCrashed,
                format!("{method}: the page is closed"),
            )),
        }
    }

    /// Where an event carrying `session_id` goes.
    pub(crate) fn route(&self, session_id: Option<&str>) -> EventRoute {
        match session_id {
            None => EventRoute::Browser,
            Some(sid) => match self.by_session_id.get(sid) {
                Some(slot) => EventRoute::Session(*slot),
                None => EventRoute::Unroutable,
            },
        }
    }

    /// What the event `method` with `params`, arrived on `at`, means for resource
    /// blocking: a request paused on a session whose blocking fails what it pauses, or a
    /// request the blocking failed (to count).
    pub(crate) fn blocked(
        &self,
        at: Option<SessionSlot>,
        method: &str,
        params: &str,
    ) -> Option<Blocked> {
        #[derive(Deserialize)]
        struct Paused<'a> {
            #[serde(rename = "requestId")]
            request_id: String,
            #[serde(rename = "resourceType", borrow, default)]
            resource_type: &'a str,
        }
        #[derive(Deserialize)]
        struct Failed<'a> {
            #[serde(rename = "blockedReason", borrow, default)]
            blocked_reason: Option<&'a str>,
        }
        match method {
            "Fetch.requestPaused" => {
                let rules = &at
                    .and_then(|slot| self.by_slot.get(&slot))
                    .filter(|s| s.dead.is_none())?
                    .pausing;
                if !rules.owned && rules.blocked_types.is_empty() && rules.interceptor.is_none() {
                    return None; // the caller's own `Fetch`
                }
                let paused: Paused = serde_json::from_str(params).ok()?;
                Some(if rules.blocked_types.contains(&paused.resource_type) {
                    Blocked::Fail(paused.request_id)
                } else if rules.interceptor.is_some() {
                    Blocked::Intercept
                } else if rules.owned {
                    Blocked::Continue(paused.request_id)
                } else {
                    // Blocking alone pauses only what it blocks: a type it does not name
                    // is a caller's pattern.
                    return None;
                })
            }
            // `inspector`: blocked by the DevTools client, that is by us.
            "Network.loadingFailed" if at.is_some() && params.contains("\"inspector\"") => {
                let failed: Failed = serde_json::from_str(params).ok()?;
                (failed.blocked_reason == Some("inspector")).then_some(Blocked::Failed)
            }
            _ => None,
        }
    }

    /// What a page with proxy credentials sends back for the event `method` with `params`
    /// arrived on `at`: a `Fetch.authRequired` answered (see [`ProxyAuth::answer`]); its
    /// paused requests are [`blocked`](Self::blocked)'s.
    pub(crate) fn proxy_answer(
        &mut self,
        at: Option<SessionSlot>,
        method: &str,
        params: &str,
    ) -> Option<(&'static str, serde_json::Value)> {
        if method != "Fetch.authRequired" {
            return None;
        }
        let s = self.by_slot.get_mut(&at?)?;
        if s.dead.is_some() {
            return None;
        }
        s.pausing.proxy_auth.as_mut()?.answer(params)
    }

    /// Which sessions the event `method` with `params` (raw JSON, empty when absent)
    /// ends, received on `at` (`None`: browser-level). Per CHROMIUM-FACTS.md, calls
    /// pending on a crashed page are never answered, so the connection fails them.
    pub(crate) fn ending(&self, at: Option<SessionSlot>, method: &str, params: &str) -> Ending {
        match at {
            Some(slot) => session_event_ending(slot, method, params),
            None => self.browser_event_ending(method, params),
        }
    }

    /// Browser-level events about targets and sessions that end a session.
    fn browser_event_ending(&self, method: &str, params: &str) -> Ending {
        #[derive(Deserialize)]
        struct TargetEvent {
            #[serde(rename = "targetId")]
            target_id: Option<String>,
            #[serde(rename = "sessionId")]
            session_id: Option<String>,
        }
        let (kind_of_end, by_target) = match method {
            "Target.targetCrashed" => ("crashed (Target.targetCrashed)", true),
            "Target.targetDestroyed" => ("was closed (Target.targetDestroyed)", true),
            "Target.detachedFromTarget" => ("was detached (Target.detachedFromTarget)", false),
            _ => return Ending::Nothing,
        };
        let Some(ev) = parse::<TargetEvent>(params) else {
            return Ending::Malformed;
        };
        let slots: SmallVec<[SessionSlot; 2]> = if by_target {
            let Some(target) = ev.target_id else {
                return Ending::Nothing;
            };
            self.by_slot
                .iter()
                .filter(|(_, s)| *s.target_id == *target)
                .map(|(slot, _)| *slot)
                .collect()
        } else {
            let Some(sid) = ev.session_id else {
                return Ending::Nothing;
            };
            self.by_session_id
                .get(sid.as_str())
                .copied()
                .into_iter()
                .collect()
        };
        let why = Error::new(ErrorKind::SessionCrashed, format!("the page {kind_of_end}"));
        Ending::Sessions(slots, why)
    }
}

/// Session-level events that mean the session is gone.
fn session_event_ending(slot: SessionSlot, method: &str, params: &str) -> Ending {
    let why = match method {
        "Inspector.targetCrashed" => Error::new(
            ErrorKind::SessionCrashed,
            "the page's renderer crashed (Inspector.targetCrashed)",
        ),
        "Inspector.detached" => {
            #[derive(Deserialize)]
            struct Detached {
                #[serde(default)]
                reason: String,
            }
            let reason = parse::<Detached>(params)
                .map(|d| d.reason)
                .unwrap_or_default();
            Error::new(
                ErrorKind::SessionCrashed,
                format!("the page was detached (Inspector.detached: {reason})"),
            )
        }
        _ => return Ending::Nothing,
    };
    Ending::Sessions(SmallVec::from_elem(slot, 1), why)
}

fn parse<T: DeserializeOwned>(json: &str) -> Option<T> {
    serde_json::from_str(if json.is_empty() { "{}" } else { json }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pages: slot `a` is session S1 on target T1, slot `b` session S2 on T2.
    fn two() -> (Sessions, SessionSlot, SessionSlot) {
        let mut s = Sessions::default();
        let a = s.add("S1", "T1");
        let b = s.add("S2", "T2");
        (s, a, b)
    }

    fn ended(e: Ending) -> (Vec<SessionSlot>, String) {
        match e {
            Ending::Sessions(slots, why) => {
                assert_eq!(why.kind(), ErrorKind::SessionCrashed);
                (slots.into_vec(), why.message().to_owned())
            }
            other => panic!("nothing ended: {other:?}"),
        }
    }

    #[test]
    fn events_go_to_their_session_or_the_browser() {
        let (mut s, a, b) = two();
        assert_eq!(s.route(None), EventRoute::Browser);
        assert_eq!(s.route(Some("S1")), EventRoute::Session(a));
        assert_eq!(s.route(Some("S2")), EventRoute::Session(b));
        assert_eq!(s.route(Some("S9")), EventRoute::Unroutable);
        s.remove(a);
        assert_eq!(
            s.route(Some("S1")),
            EventRoute::Unroutable,
            "a removed session"
        );
    }

    #[test]
    fn a_crash_on_the_session_ends_that_session() {
        let (s, a, _) = two();
        let (slots, why) = ended(s.ending(Some(a), "Inspector.targetCrashed", ""));
        assert_eq!(slots, [a]);
        assert!(why.contains("Inspector.targetCrashed"), "{why}");
        let (slots, why) = ended(s.ending(Some(a), "Inspector.detached", r#"{"reason":"gone"}"#));
        assert_eq!(slots, [a]);
        assert!(why.contains("gone"), "{why}");
        let (slots, _) = ended(s.ending(Some(a), "Inspector.detached", "not json"));
        assert_eq!(
            slots,
            [a],
            "a detach ends the session even without a reason"
        );
    }

    #[test]
    fn target_events_end_every_session_on_the_target() {
        let (mut s, a, b) = two();
        let a2 = s.add("S3", "T1");
        for method in ["Target.targetCrashed", "Target.targetDestroyed"] {
            let (mut slots, why) = ended(s.ending(None, method, r#"{"targetId":"T1"}"#));
            slots.sort();
            assert_eq!(slots, [a, a2], "{method}");
            assert!(why.contains(method), "{why}");
        }
        let (slots, _) = ended(s.ending(None, "Target.targetCrashed", r#"{"targetId":"T2"}"#));
        assert_eq!(slots, [b]);
        let (slots, _) = ended(s.ending(None, "Target.targetCrashed", r#"{"targetId":"T9"}"#));
        assert!(slots.is_empty(), "an unknown target ends nothing");
    }

    #[test]
    fn a_detach_ends_the_session_it_names() {
        let (s, _, b) = two();
        let (slots, why) = ended(s.ending(
            None,
            "Target.detachedFromTarget",
            r#"{"sessionId":"S2","targetId":"T2"}"#,
        ));
        assert_eq!(slots, [b]);
        assert!(why.contains("Target.detachedFromTarget"), "{why}");
    }

    #[test]
    fn other_events_and_incomplete_ones_end_nothing() {
        let (s, a, _) = two();
        for (at, method, params) in [
            (Some(a), "Page.loadEventFired", "{}"),
            (Some(a), "Target.targetCrashed", r#"{"targetId":"T1"}"#),
            (None, "Inspector.targetCrashed", ""),
            (None, "Target.targetCreated", r#"{"targetInfo":{}}"#),
            (None, "Target.targetCrashed", "{}"),
            (None, "Target.detachedFromTarget", r#"{"targetId":"T1"}"#),
        ] {
            assert!(
                matches!(s.ending(at, method, params), Ending::Nothing),
                "{method} {params}"
            );
        }
    }

    #[test]
    fn only_a_blocking_session_fails_what_it_pauses_and_url_blocks_are_counted() {
        let (mut s, a, b) = two();
        let paused = r#"{"requestId":"interception-job-1.0","resourceType":"Image"}"#;
        assert_eq!(s.blocked(Some(a), "Fetch.requestPaused", paused), None);
        s.get_mut(a).unwrap().pausing.blocked_types.push("Image");
        assert_eq!(
            s.blocked(Some(a), "Fetch.requestPaused", paused),
            Some(Blocked::Fail("interception-job-1.0".into()))
        );
        assert_eq!(s.blocked(Some(b), "Fetch.requestPaused", paused), None);
        assert_eq!(s.blocked(None, "Fetch.requestPaused", paused), None);
        assert_eq!(
            s.blocked(Some(a), "Network.requestWillBeSent", paused),
            None
        );
        assert_eq!(s.blocked(Some(a), "Fetch.requestPaused", "{}"), None);
        let by_url = r#"{"requestId":"7","errorText":"net::ERR_BLOCKED_BY_CLIENT","canceled":false,"blockedReason":"inspector"}"#;
        assert_eq!(
            s.blocked(Some(b), "Network.loadingFailed", by_url),
            Some(Blocked::Failed)
        );
        let other = r#"{"requestId":"7","errorText":"net::ERR_FAILED","blockedReason":"mixed-content","x":"inspector"}"#;
        assert_eq!(s.blocked(Some(b), "Network.loadingFailed", other), None);
    }

    #[test]
    fn blocking_fails_its_types_first_the_interceptor_takes_the_rest_strays_go_on() {
        let (mut s, a, _) = two();
        let image = r#"{"requestId":"R1","resourceType":"Image"}"#;
        let document = r#"{"requestId":"R2","resourceType":"Document"}"#;
        let p = "Fetch.requestPaused";
        s.get_mut(a).unwrap().pausing.blocked_types.push("Image");
        assert_eq!(
            s.blocked(Some(a), p, document),
            None,
            "blocking alone never pauses other types: a pattern of the caller's"
        );
        s.get_mut(a).unwrap().pausing.interceptor = Some(Rc::new(|_: &str| {}));
        s.get_mut(a).unwrap().pausing.owned = true;
        assert_eq!(
            s.blocked(Some(a), p, image),
            Some(Blocked::Fail("R1".into()))
        );
        assert_eq!(s.blocked(Some(a), p, document), Some(Blocked::Intercept));
        s.get_mut(a).unwrap().pausing.interceptor = None;
        assert_eq!(
            s.blocked(Some(a), p, document),
            Some(Blocked::Continue("R2".into())),
            "paused while the patterns change, with nobody to decide"
        );
        s.get_mut(a)
            .unwrap()
            .die(&Error::new(ErrorKind::SessionCrashed, "gone"));
        assert_eq!(s.blocked(Some(a), p, document), None, "a dead page");
    }

    #[test]
    fn a_proxy_page_fails_blocked_types_intercepts_the_rest_and_answers_only_challenges() {
        use super::super::proxy_auth::{ProxyAuth, ProxyCredentials};
        let (mut s, a, _) = two();
        let image = r#"{"requestId":"R1","resourceType":"Image"}"#;
        let document = r#"{"requestId":"R2","resourceType":"Document"}"#;
        let challenge = r#"{"requestId":"R2","request":{},"authChallenge":{"source":"Proxy","origin":"o","scheme":"basic","realm":"r"}}"#;
        let p = "Fetch.requestPaused";
        let rules = &mut s.get_mut(a).unwrap().pausing;
        rules.proxy_auth = Some(ProxyAuth::new(ProxyCredentials::new("u", "p")));
        rules.owned = true;
        rules.blocked_types.push("Image");
        assert_eq!(
            s.blocked(Some(a), p, document),
            Some(Blocked::Continue("R2".into())),
            "no interceptor: continued, once"
        );
        assert_eq!(s.proxy_answer(Some(a), p, document), None);
        s.get_mut(a).unwrap().pausing.interceptor = Some(Rc::new(|_: &str| {}));
        assert_eq!(
            s.blocked(Some(a), p, image),
            Some(Blocked::Fail("R1".into()))
        );
        assert_eq!(s.blocked(Some(a), p, document), Some(Blocked::Intercept));
        assert_eq!(s.blocked(Some(a), "Fetch.authRequired", challenge), None);
        let (method, answer) = s
            .proxy_answer(Some(a), "Fetch.authRequired", challenge)
            .unwrap();
        assert_eq!(method, "Fetch.continueWithAuth");
        assert_eq!(
            answer["authChallengeResponse"]["response"],
            "ProvideCredentials"
        );
    }

    #[test]
    fn a_target_event_with_bad_params_is_malformed() {
        let (s, _, _) = two();
        assert!(matches!(
            s.ending(None, "Target.targetCrashed", r#"{"targetId":5}"#),
            Ending::Malformed
        ));
    }

    #[test]
    fn a_session_refuses_calls_once_dead_or_removed() {
        let (mut s, a, b) = two();
        assert_eq!(&*s.session_id(a, "X.y").unwrap(), "S1");
        assert!(s.refusal(a).is_none());
        let alive = Arc::new(AtomicBool::new(true));
        s.get_mut(a).unwrap().watch(alive.clone());
        let first = Error::new(ErrorKind::SessionCrashed, "first");
        assert!(s.get_mut(a).unwrap().die(&first));
        assert!(
            !alive.load(Ordering::Acquire),
            "the watcher hears of the death"
        );
        assert!(!s
            .get_mut(a)
            .unwrap()
            .die(&Error::new(ErrorKind::SessionCrashed, "second")));
        assert_eq!(s.session_id(a, "X.y").unwrap_err().message(), "first");
        assert_eq!(s.refusal(a).unwrap().message(), "first");
        s.remove(b);
        assert!(s.session_id(b, "X.y").is_err());
        assert!(s.refusal(b).is_some());

        let late = Arc::new(AtomicBool::new(true));
        s.get_mut(a).unwrap().watch(late.clone());
        assert!(
            !late.load(Ordering::Acquire),
            "watching a dead session clears at once"
        );
    }
}
