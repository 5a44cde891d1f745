//! `crawl --robots`: each origin's robots.txt, fetched once, decides which of its pages
//! are crawled, and its `Crawl-delay` becomes its host's politeness interval.
//!
//! The file is fetched through the pool, like a page: the browser's network stack,
//! proxy, TLS and user agent, with no second HTTP client to keep in step, and the fetch
//! itself waits its host's turn. Parsing is `texting_robots`: a maintained robots.txt
//! parser tested against Google's and other crawlers' cases, which reads `Crawl-delay`
//! (Google's `robotstxt` port does not) and matches `*`/`$` patterns and the longest
//! rule as RFC 9309 says; writing our own would be the bug farm the RFC describes.
//!
//! What a response means (RFC 9309, 2.3.1): a 2xx body is parsed; a 4xx means no rules;
//! a 5xx means "crawl nothing" for now. A fetch that fails outright (the host is
//! unreachable) allows everything, so each page reports its own error instead of
//! vanishing silently. The user agent matched is [`AGENT`].
//!
//! Concurrency: the first page of an origin fetches; later ones wait for that fetch
//! (one `OnceCell` per origin). The map's lock is held only to find the cell, never
//! across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdpmux::{Affinity, Job, Politeness, Pool};
use texting_robots::Robot;
use tokio::sync::OnceCell;

/// The product token matched against `User-agent:` lines.
pub const AGENT: &str = "cdpmux";

/// Script reading a fetched robots.txt back from the page (Chromium shows a text file
/// as one `<pre>`; `textContent` is its bytes as text, unrendered).
const READ_BODY: &str = "document.body ? document.body.textContent : ''";

/// What one origin's robots.txt says.
enum Rules {
    /// No usable file: everything may be crawled.
    AllowAll,
    /// The server failed (5xx): nothing may be crawled.
    DisallowAll,
    /// The parsed file.
    Parsed(Box<Robot>),
}

impl Rules {
    /// The rules a fetch gives: `(status, body)`, or `None` when it failed.
    fn from_fetch(fetched: Option<(Option<u16>, String)>) -> Rules {
        match fetched {
            Some((status, body)) => match status.unwrap_or(200) {
                200..=299 => Robot::new(AGENT, body.as_bytes())
                    .map_or(Rules::AllowAll, |r| Rules::Parsed(Box::new(r))),
                500..=599 => Rules::DisallowAll,
                _ => Rules::AllowAll,
            },
            None => Rules::AllowAll,
        }
    }

    fn allows(&self, url: &str) -> bool {
        match self {
            Rules::AllowAll => true,
            Rules::DisallowAll => false,
            Rules::Parsed(robot) => robot.allowed(url),
        }
    }

    /// The file's `Crawl-delay` for [`AGENT`], if it gives a usable one.
    fn crawl_delay(&self) -> Option<Duration> {
        match self {
            Rules::Parsed(robot) => robot
                .delay
                .and_then(|s| Duration::try_from_secs_f32(s).ok())
                .filter(|d| !d.is_zero()),
            _ => None,
        }
    }
}

/// The robots.txt of every origin seen so far.
pub struct Robots {
    /// Each host's politeness before robots.txt (--per-host, --host-delay).
    base: Politeness,
    /// Deadline of one robots.txt fetch.
    timeout: Duration,
    origins: Mutex<HashMap<String, Arc<OnceCell<Rules>>>>,
}

impl Robots {
    /// Robots.txt handling for a crawl whose hosts get `base` politeness; each fetch
    /// has `timeout`.
    pub fn new(base: Politeness, timeout: Duration) -> Self {
        Robots {
            base,
            timeout,
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `url` may be crawled. The first call for an origin fetches its
    /// robots.txt (and sets its host's Crawl-delay in `pool`); calls for the same origin
    /// meanwhile wait for that fetch. URLs that are not http(s) are always allowed.
    ///
    /// Cancel safety: dropping the future while it fetches leaves the origin unfetched;
    /// the next call fetches again.
    pub async fn allows(&self, pool: &Pool, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url) else {
            return true; // the page's own error says what is wrong with it
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return true;
        }
        let Some(host) = parsed.host_str().map(str::to_ascii_lowercase) else {
            return true;
        };
        let origin = parsed.origin().ascii_serialization();
        let cell = {
            let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
            origins.entry(origin.clone()).or_default().clone()
        };
        let rules = cell.get_or_init(|| self.fetch(pool, &origin, &host)).await;
        rules.allows(url)
    }

    /// Fetches `origin`'s robots.txt through the pool and applies its Crawl-delay to
    /// `host`.
    async fn fetch(&self, pool: &Pool, origin: &str, host: &str) -> Rules {
        let robots_url = format!("{origin}/robots.txt");
        let job = Job::new()
            .affinity(Affinity::soft(host))
            .timeout(self.timeout);
        let fetched = pool
            .run(job, async move |page| {
                let nav = page.goto(&robots_url).await?;
                let body = page.evaluate_value(READ_BODY).await?;
                Ok((nav.status, body.as_str().unwrap_or_default().to_owned()))
            })
            .await;
        let rules = Rules::from_fetch(fetched.ok());
        if let Some(delay) = rules.crawl_delay() {
            let rule = self.base.interval(delay.max(self.base.interval));
            if let Err(e) = pool.set_politeness(host, rule) {
                eprintln!("cdpmux: could not apply {host}'s Crawl-delay: {e}");
            }
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> Rules {
        Rules::from_fetch(Some((Some(200), body.to_owned())))
    }

    #[test]
    fn disallow_applies_to_our_agent_and_to_star() {
        let rules = parsed("User-agent: *\nDisallow: /private\n\nUser-agent: other\nDisallow: /\n");
        assert!(rules.allows("http://a.test/public"));
        assert!(!rules.allows("http://a.test/private/page"));
        let ours = parsed("User-agent: cdpmux\nDisallow: /p/3\n\nUser-agent: *\nDisallow: /\n");
        assert!(ours.allows("http://a.test/p/1"));
        assert!(!ours.allows("http://a.test/p/3"));
    }

    #[test]
    fn crawl_delay_is_read_for_our_agent() {
        let rules = parsed("User-agent: *\nCrawl-delay: 1.5\nDisallow:\n");
        assert_eq!(rules.crawl_delay(), Some(Duration::from_millis(1500)));
        assert_eq!(parsed("User-agent: *\nDisallow:\n").crawl_delay(), None);
    }

    #[test]
    fn statuses_and_failures_follow_the_rfc() {
        let missing = Rules::from_fetch(Some((Some(404), "not found".to_owned())));
        assert!(missing.allows("http://a.test/x"));
        let broken = Rules::from_fetch(Some((Some(503), String::new())));
        assert!(!broken.allows("http://a.test/x"));
        let unreachable = Rules::from_fetch(None);
        assert!(unreachable.allows("http://a.test/x"));
    }
}
