//! Proxy credentials of a page: the proxy's `407` challenges answered through the
//! `Fetch` domain (its paused requests are the page's routing's: failed if blocked,
//! given to its interceptor, else continued as they were).
//!
//! Owns: [`ProxyCredentials`], the `Fetch.enable` that turns the answering on, and the
//! pure decision of what to send back for a `Fetch.authRequired` on such a page
//! ([`ProxyAuth::answer`]). Never: sends anything itself; the connection sends the
//! answer as the event arrives, with no task in between, so a page never waits on
//! cdpmux for longer than one frame.
//!
//! Chromium answers auth challenges only for requests its `Fetch` patterns pause
//! ("Can't specify empty patterns with handleAuth set"; a pattern matching nothing makes
//! the `407` reach the page), so every request of the page is paused and continued.

use std::collections::VecDeque;
use std::fmt;

use serde::Deserialize;
use serde_json::{json, Value};

/// A user name and password for a proxy. Its `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyCredentials {
    username: String,
    password: String,
}

impl ProxyCredentials {
    /// Credentials `username` / `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        ProxyCredentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCredentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The `Fetch.enable` parameters of a page that answers proxy challenges: every request
/// paused at the request stage, challenges reported.
pub(crate) fn fetch_enable_params() -> Value {
    json!({ "handleAuthRequests": true, "patterns": [{ "urlPattern": "*" }] })
}

/// How many challenged requests a page remembers having answered: a second challenge
/// for one of them means the credentials were refused, and it is cancelled rather than
/// answered again forever.
const REMEMBERED: usize = 64;

/// A page's proxy credentials and the requests it answered a challenge for.
pub(crate) struct ProxyAuth {
    credentials: ProxyCredentials,
    answered: VecDeque<String>,
}

impl ProxyAuth {
    pub(crate) fn new(credentials: ProxyCredentials) -> Self {
        ProxyAuth {
            credentials,
            answered: VecDeque::new(),
        }
    }

    /// What to send for a `Fetch.authRequired` with `params` (raw JSON) on this page:
    /// a proxy's challenge answered with the credentials (once per request: a repeated
    /// challenge is cancelled); a site's own challenge left to the browser's default.
    /// `None` for params that are not a challenge. (A paused request is decided by the
    /// page's routing, with its blocking and interceptor: by default continued.)
    pub(crate) fn answer(&mut self, params: &str) -> Option<(&'static str, Value)> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Challenged {
            request_id: String,
            auth_challenge: Challenge,
        }
        #[derive(Deserialize)]
        struct Challenge {
            #[serde(default)]
            source: String,
        }
        let c: Challenged = serde_json::from_str(params).ok()?;
        let repeated = self.answered.contains(&c.request_id);
        let response = match (c.auth_challenge.source.as_str(), repeated) {
            ("Proxy", false) => json!({
                "response": "ProvideCredentials",
                "username": self.credentials.username,
                "password": self.credentials.password,
            }),
            ("Proxy", true) => json!({ "response": "CancelAuth" }),
            _ => json!({ "response": "Default" }),
        };
        if !repeated && c.auth_challenge.source == "Proxy" {
            if self.answered.len() == REMEMBERED {
                self.answered.pop_front();
            }
            self.answered.push_back(c.request_id.clone());
        }
        Some((
            "Fetch.continueWithAuth",
            json!({ "requestId": c.request_id, "authChallengeResponse": response }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(id: &str, source: &str) -> String {
        json!({ "requestId": id, "request": { "url": "http://a.test/" },
                "authChallenge": { "source": source, "origin": "http://p:1", "scheme": "basic", "realm": "r" } })
        .to_string()
    }

    #[test]
    fn a_proxy_challenge_gets_the_credentials_once() {
        let mut auth = ProxyAuth::new(ProxyCredentials::new("u", "p"));
        let (m, p) = auth.answer(&challenge("r1", "Proxy")).unwrap();
        assert_eq!(m, "Fetch.continueWithAuth");
        assert_eq!(
            p["authChallengeResponse"],
            json!({ "response": "ProvideCredentials", "username": "u", "password": "p" })
        );
        let (_, again) = auth.answer(&challenge("r1", "Proxy")).unwrap();
        assert_eq!(
            again["authChallengeResponse"]["response"], "CancelAuth",
            "refused credentials are not sent forever"
        );
        let (_, site) = auth.answer(&challenge("r2", "Server")).unwrap();
        assert_eq!(site["authChallengeResponse"]["response"], "Default");
        assert!(auth.answer(r#"{"requestId":"r3","request":{}}"#).is_none());
        assert!(auth.answer("not json").is_none());
    }

    #[test]
    fn the_memory_of_answered_requests_is_bounded() {
        let mut auth = ProxyAuth::new(ProxyCredentials::new("u", "p"));
        for i in 0..(REMEMBERED + 10) {
            auth.answer(&challenge(&format!("r{i}"), "Proxy"));
        }
        assert_eq!(auth.answered.len(), REMEMBERED);
        assert!(format!("{:?}", ProxyCredentials::new("u", "secret")).contains("<hidden>"));
    }
}
