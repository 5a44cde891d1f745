//! Identity per key: how the browser context of one affinity key looks to the sites it
//! visits under [`Isolation::ContextPerKey`](crate::Isolation::ContextPerKey): its
//! proxy (and the proxy's credentials), user agent, extra headers, locale and time zone
//! ([`ContextOptions`]), and its cookies ([`Cookie`], exported and imported through the
//! [`Pool`](crate::Pool)).
//!
//! Owns: the public option types, their validation, and the CDP commands that give a
//! context and each of its pages that identity. Never: holds a connection or runs a
//! command itself; the shard's lifecycle sends what this module builds, and the page
//! answers proxy challenges (`cdp::proxy_auth`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::cdp::ProxyCredentials;
use crate::error::{Error, ErrorKind, Result};

/// What a key's browser context looks like to the sites it visits. Set per key with
/// [`Pool::set_context_options`](crate::Pool::set_context_options) or for every key with
/// [`PoolBuilder::context_options`](crate::PoolBuilder::context_options); used only under
/// [`Isolation::ContextPerKey`](crate::Isolation::ContextPerKey).
///
/// The proxy belongs to the browser context and is fixed when the context is created;
/// the rest is set on each page as it opens in that context. Options set for a key that
/// has a context already apply to the contexts and pages opened after.
///
/// ```
/// use cdpmux::identity::{ContextOptions, Proxy};
/// let opts = ContextOptions::new()
///     .proxy(Proxy::new("http://proxy.example:3128").credentials("user", "secret"))
///     .user_agent("MyCrawler/1.0")
///     .header("X-Tenant", "a")
///     .locale("de-DE")
///     .timezone("Europe/Berlin");
/// assert!(opts.validate().is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ContextOptions {
    /// The proxy every request of the context goes through; `None`: the browser's own.
    pub proxy: Option<Proxy>,
    /// The `User-Agent` header and `navigator.userAgent`.
    pub user_agent: Option<String>,
    /// Headers added to every request of every page of the context.
    pub extra_headers: Vec<(String, String)>,
    /// The ICU locale (`de-DE`): `Intl`, `navigator.language`, and, unless an
    /// `Accept-Language` header is given, the `Accept-Language` header too.
    pub locale: Option<String>,
    /// The IANA time zone (`Europe/Berlin`) the page's clock reports.
    pub timezone: Option<String>,
}

/// A proxy for one browser context: its server, what bypasses it, and its credentials.
#[derive(Clone, Default, PartialEq)]
pub struct Proxy {
    server: String,
    bypass: Option<String>,
    credentials: Option<ProxyCredentials>,
}

impl Proxy {
    /// A proxy server as Chromium's `--proxy-server` reads it: `http://host:port`,
    /// `socks5://host:port`, or `host:port`.
    pub fn new(server: impl Into<String>) -> Self {
        Proxy {
            server: server.into(),
            ..Proxy::default()
        }
    }

    /// Hosts that bypass the proxy, as `--proxy-bypass-list` reads them
    /// (`*.internal;10.0.0.0/8`). Chromium never proxies loopback addresses unless the
    /// list says `<-loopback>`.
    pub fn bypass(mut self, list: impl Into<String>) -> Self {
        self.bypass = Some(list.into());
        self
    }

    /// The user name and password the proxy asks for (HTTP `407`), answered by the page
    /// through `Fetch.authRequired`. Every request of a page with proxy credentials is
    /// paused and continued by cdpmux (one round trip each), so set them only for a
    /// proxy that asks.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(ProxyCredentials::new(username, password));
        self
    }

    /// The proxy server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The bypass list, if any.
    pub fn bypass_list(&self) -> Option<&str> {
        self.bypass.as_deref()
    }

    /// The credentials, if any.
    pub fn proxy_credentials(&self) -> Option<&ProxyCredentials> {
        self.credentials.as_ref()
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("server", &self.server)
            .field("bypass", &self.bypass)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl ContextOptions {
    /// No proxy, no overrides: what a context has by default.
    pub fn new() -> Self {
        ContextOptions::default()
    }

    /// Sends the context's requests through `proxy`.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Overrides the user agent.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Adds a header to every request (a later value for the same name replaces it).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.extra_headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.extra_headers.push((name, value.into()));
        self
    }

    /// Overrides the locale.
    pub fn locale(mut self, locale: impl Into<String>) -> Self {
        self.locale = Some(locale.into());
        self
    }

    /// Overrides the time zone.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = Some(timezone.into());
        self
    }

    /// Checks what can be checked without a browser; the error names the field. (The
    /// browser checks the rest, a time zone's name for one, when a page opens.)
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidInput, msg));
        if let Some(p) = &self.proxy {
            if p.server.trim().is_empty() || p.server.contains(char::is_whitespace) {
                return bad(format!(
                    "proxy server {:?} must be like http://host:port, with no spaces",
                    p.server
                ));
            }
            if let Some(c) = &p.credentials {
                if c.username().is_empty() {
                    return bad("proxy credentials need a user name".into());
                }
            }
        }
        for (name, value) in &self.extra_headers {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return bad(format!("header name {name:?} is not a valid HTTP token"));
            }
            if value.contains(['\r', '\n']) {
                return bad(format!(
                    "header {name:?}: its value may not contain CR or LF"
                ));
            }
        }
        for (field, v) in [
            ("user_agent", &self.user_agent),
            ("locale", &self.locale),
            ("timezone", &self.timezone),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return bad(format!(
                    "{field} must not be empty (leave it unset instead)"
                ));
            }
        }
        Ok(())
    }

    /// `Target.createBrowserContext`'s parameters for a context with these options.
    pub(crate) fn create_context_params(&self) -> Value {
        let mut params = json!({});
        if let Some(p) = &self.proxy {
            params["proxyServer"] = p.server.as_str().into();
            if let Some(bypass) = &p.bypass {
                params["proxyBypassList"] = bypass.as_str().into();
            }
        }
        params
    }

    /// The proxy's credentials, if it has any.
    pub(crate) fn credentials(&self) -> Option<&ProxyCredentials> {
        self.proxy.as_ref().and_then(|p| p.credentials.as_ref())
    }

    /// The commands that give one page of the context these options (none for the
    /// defaults), in the order they must run.
    pub(crate) fn page_commands(&self) -> Vec<(&'static str, Value)> {
        let mut commands = Vec::new();
        let has_accept_language = self
            .extra_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("accept-language"));
        let mut headers: serde_json::Map<String, Value> = self
            .extra_headers
            .iter()
            .map(|(n, v)| (n.clone(), v.as_str().into()))
            .collect();
        if let Some(ua) = &self.user_agent {
            let mut params = json!({ "userAgent": ua });
            if let (Some(locale), false) = (&self.locale, has_accept_language) {
                params["acceptLanguage"] = locale.as_str().into();
            }
            commands.push(("Emulation.setUserAgentOverride", params));
        } else if let (Some(locale), false) = (&self.locale, has_accept_language) {
            // Without a user agent to override, the header carries the locale.
            headers.insert("Accept-Language".into(), locale.as_str().into());
        }
        if !headers.is_empty() {
            commands.push(("Network.enable", json!({})));
            commands.push(("Network.setExtraHTTPHeaders", json!({ "headers": headers })));
        }
        if let Some(locale) = &self.locale {
            commands.push(("Emulation.setLocaleOverride", json!({ "locale": locale })));
        }
        if let Some(tz) = &self.timezone {
            commands.push(("Emulation.setTimezoneOverride", json!({ "timezoneId": tz })));
        }
        commands
    }
}

/// One browser cookie, as [`Pool::export_cookies`](crate::Pool::export_cookies) returns
/// it and [`Pool::import_cookies`](crate::Pool::import_cookies) takes it. Serializable,
/// so a crawl can keep a key's logged-in session in a file between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Cookie {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The domain it is sent to (`.example.com` includes subdomains).
    pub domain: String,
    /// The path it is sent under.
    #[serde(default = "root_path")]
    pub path: String,
    /// When it expires, in seconds since the Unix epoch; `None`: a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<f64>,
    /// Hidden from scripts.
    #[serde(default)]
    pub http_only: bool,
    /// Sent over HTTPS only.
    #[serde(default)]
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
}

fn root_path() -> String {
    "/".to_owned()
}

impl Cookie {
    /// A session cookie `name=value` for `domain`, path `/`.
    pub fn new(
        name: impl Into<String>,
        value: impl Into<String>,
        domain: impl Into<String>,
    ) -> Self {
        Cookie {
            name: name.into(),
            value: value.into(),
            domain: domain.into(),
            path: root_path(),
            expires: None,
            http_only: false,
            secure: false,
            same_site: None,
        }
    }

    /// Reads the cookies of a `Storage.getCookies` reply.
    pub(crate) fn from_reply(reply: &Value) -> Result<Vec<Cookie>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            name: String,
            value: String,
            domain: String,
            path: String,
            #[serde(default)]
            expires: f64,
            #[serde(default)]
            session: bool,
            #[serde(default)]
            http_only: bool,
            #[serde(default)]
            secure: bool,
            #[serde(default)]
            same_site: Option<String>,
        }
        #[derive(Deserialize)]
        struct Reply {
            cookies: Vec<Raw>,
        }
        let reply: Reply = serde_json::from_value(reply.clone()).map_err(|e| {
            Error::new(ErrorKind::Protocol, "bad Storage.getCookies reply").with_source(e)
        })?;
        Ok(reply
            .cookies
            .into_iter()
            .map(|r| Cookie {
                expires: (!r.session && r.expires > 0.0).then_some(r.expires),
                name: r.name,
                value: r.value,
                domain: r.domain,
                path: r.path,
                http_only: r.http_only,
                secure: r.secure,
                same_site: r.same_site,
            })
            .collect())
    }

    /// `Storage.setCookies`'s parameters putting `cookies` into context `context`.
    pub(crate) fn set_params(cookies: &[Cookie], context: &str) -> Value {
        json!({ "cookies": cookies, "browserContextId": context })
    }

    /// Checks a cookie the browser would refuse (with a less helpful message).
    pub(crate) fn validate(&self) -> Result<()> {
        if self.name.is_empty() && self.value.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a cookie needs a name or a value",
            ));
        }
        if self.domain.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("cookie {:?} needs a domain", self.name),
            ));
        }
        Ok(())
    }
}

/// Merges the cookies of several contexts of one key: one per (name, domain, path), the
/// first seen kept.
pub(crate) fn merge_cookies(parts: impl IntoIterator<Item = Vec<Cookie>>) -> Vec<Cookie> {
    let mut merged: Vec<Cookie> = Vec::new();
    for c in parts.into_iter().flatten() {
        let same = |m: &Cookie| m.name == c.name && m.domain == c.domain && m.path == c.path;
        if !merged.iter().any(same) {
            merged.push(c);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_the_context_params_and_page_commands() {
        let opts = ContextOptions::new()
            .proxy(Proxy::new("http://127.0.0.1:3128").bypass("<-loopback>"))
            .user_agent("UA/1")
            .header("X-A", "1")
            .header("x-a", "2")
            .locale("de-DE")
            .timezone("Europe/Berlin");
        opts.validate().unwrap();
        assert_eq!(
            opts.create_context_params(),
            json!({ "proxyServer": "http://127.0.0.1:3128", "proxyBypassList": "<-loopback>" })
        );
        let commands = opts.page_commands();
        let methods: Vec<&str> = commands.iter().map(|(m, _)| *m).collect();
        assert_eq!(
            methods,
            [
                "Emulation.setUserAgentOverride",
                "Network.enable",
                "Network.setExtraHTTPHeaders",
                "Emulation.setLocaleOverride",
                "Emulation.setTimezoneOverride"
            ]
        );
        assert_eq!(commands[0].1["acceptLanguage"], "de-DE");
        assert_eq!(
            commands[2].1["headers"],
            json!({ "x-a": "2" }),
            "a later value replaces"
        );
        assert!(ContextOptions::new().page_commands().is_empty());
        assert_eq!(ContextOptions::new().create_context_params(), json!({}));
    }

    #[test]
    fn a_locale_without_a_user_agent_goes_into_accept_language() {
        let commands = ContextOptions::new().locale("fr-FR").page_commands();
        assert_eq!(commands[1].1["headers"]["Accept-Language"], "fr-FR");
        let own = ContextOptions::new()
            .locale("fr-FR")
            .header("Accept-Language", "en")
            .page_commands();
        assert_eq!(own[1].1["headers"], json!({ "Accept-Language": "en" }));
    }

    #[test]
    fn bad_options_are_named() {
        let cases = [
            (ContextOptions::new().proxy(Proxy::new("")), "proxy server"),
            (
                ContextOptions::new().proxy(Proxy::new("http://a b")),
                "proxy server",
            ),
            (
                ContextOptions::new().proxy(Proxy::new("http://p:1").credentials("", "x")),
                "user name",
            ),
            (ContextOptions::new().header("Bad Name", "v"), "header name"),
            (ContextOptions::new().header("X", "a\r\nB: c"), "CR or LF"),
            (ContextOptions::new().timezone(" "), "timezone"),
        ];
        for (opts, what) in cases {
            let err = opts.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.message().contains(what), "{err}");
        }
    }

    #[test]
    fn cookies_round_trip_through_the_browser_shapes_and_json() {
        let reply = json!({ "cookies": [
            { "name": "sid", "value": "1", "domain": "a.test", "path": "/", "expires": -1,
              "size": 4, "httpOnly": true, "secure": false, "session": true, "sameSite": "Lax" },
            { "name": "keep", "value": "2", "domain": ".a.test", "path": "/x",
              "expires": 2000000000.5, "size": 5, "httpOnly": false, "secure": true,
              "session": false }
        ]});
        let cookies = Cookie::from_reply(&reply).unwrap();
        assert_eq!(cookies[0].expires, None);
        assert!(cookies[0].http_only);
        assert_eq!(cookies[0].same_site.as_deref(), Some("Lax"));
        assert_eq!(cookies[1].expires, Some(2000000000.5));
        let text = serde_json::to_string(&cookies).unwrap();
        let back: Vec<Cookie> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cookies);
        let params = Cookie::set_params(&cookies, "CTX");
        assert_eq!(params["browserContextId"], "CTX");
        assert_eq!(params["cookies"][0]["httpOnly"], true);
        assert!(params["cookies"][0].get("expires").is_none());
        assert!(Cookie::new("", "", "a.test").validate().is_err());
        assert!(Cookie::new("a", "b", "").validate().is_err());
    }

    #[test]
    fn merging_keeps_one_cookie_per_name_domain_and_path() {
        let a = Cookie::new("s", "1", "a.test");
        let b = Cookie::new("s", "2", "a.test");
        let c = Cookie::new("s", "3", "b.test");
        let merged = merge_cookies([vec![a.clone()], vec![b, c.clone()]]);
        assert_eq!(merged, [a, c]);
    }
}
