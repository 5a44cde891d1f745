//! The connection's side of requests paused on its pages (`Fetch.requestPaused`): it
//! carries out what [`routing`](crate::cdp::routing) decided (fail, continue, or hand to
//! the page's interceptor), counts what blocking failed, and keeps each session's
//! [`Pausing`] rules, proxy credentials included.
//! Never: decides anything itself (the rules are `routing`'s and `proxy_auth`'s) or waits
//! for a reply: a paused request is answered as its event arrives.

use super::Shared;
use crate::cdp::protocol::SessionSlot;
use crate::cdp::routing::{Blocked, Pausing};

impl Shared {
    /// Fails a request the page's blocking paused or continues one nobody takes
    /// (without waiting for the reply), hands one to the page's interceptor, or counts
    /// one the blocking failed. `params` are the event's.
    pub(super) fn blocked(&self, session: Option<SessionSlot>, blocked: Blocked, params: &str) {
        match blocked {
            Blocked::Fail(request_id) => {
                let params = serde_json::json!({
                    "requestId": request_id,
                    "errorReason": "BlockedByClient",
                });
                let _ = self.enqueue(session, "Fetch.failRequest".into(), &params, None);
            }
            Blocked::Continue(request_id) => {
                let params = serde_json::json!({ "requestId": request_id });
                let _ = self.enqueue(session, "Fetch.continueRequest".into(), &params, None);
            }
            Blocked::Intercept => {
                let interceptor = session.and_then(|slot| {
                    let mut st = self.state.borrow_mut();
                    st.sessions.get_mut(slot)?.pausing.interceptor.clone()
                });
                if let Some(interceptor) = interceptor {
                    interceptor(params);
                }
            }
            Blocked::Failed => {
                if let Some(m) = &*self.metrics.borrow() {
                    m.blocked_request();
                }
            }
        }
    }

    /// Counts a paused request whose interceptor missed its deadline.
    pub(crate) fn note_intercept_timeout(&self) {
        if let Some(m) = &*self.metrics.borrow() {
            m.intercept_timed_out();
        }
    }

    /// Changes what becomes of a request paused on `session` (see [`Pausing`]).
    pub(crate) fn set_pausing(&self, session: SessionSlot, change: impl FnOnce(&mut Pausing)) {
        if let Some(s) = self.state.borrow_mut().sessions.get_mut(session) {
            change(&mut s.pausing);
        }
    }

    /// Whether `session` answers proxy challenges.
    pub(crate) fn has_proxy_auth(&self, session: SessionSlot) -> bool {
        let mut st = self.state.borrow_mut();
        st.sessions
            .get_mut(session)
            .is_some_and(|s| s.pausing.proxy_auth.is_some())
    }
}
