//! The crawl frontier: which URLs are still to visit, at what depth, which were already
//! taken, and which links may be followed at all. Pure data, no I/O: the crawl loop asks
//! it what to do next.
//!
//! Bounded: at most [`Limits::max_queued`] URLs wait, at most
//! [`Limits::links_per_page`] links are taken from one page, and the seen set keeps a
//! 64-bit fingerprint per URL, not the URL. What is dropped is counted in [`Dropped`].
//! Never follows a `file:` link, whatever the scope.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;

use url::Url;

/// Schemes a crawl visits; anything else in the input is reported as invalid input.
const SCHEMES: [&str; 3] = ["http", "https", "file"];

/// Default for [`Limits::max_queued`]: about 10 MB of waiting URLs.
pub const DEFAULT_MAX_QUEUED: usize = 100_000;
/// Default for [`Limits::links_per_page`].
pub const DEFAULT_LINKS_PER_PAGE: usize = 1_000;

/// Which links found on a page are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Follow {
    /// Same scheme, host and port as the page (the web's origin).
    #[default]
    SameOrigin,
    /// Same host as the page, any scheme (http or https) and port.
    SameHost,
    /// Any http or https link.
    Any,
}

impl Follow {
    /// True when a link from `page` to `link` is within this scope. `file:` links never
    /// are: a crawled page must not make the browser read local files.
    pub fn allows(self, page: &Url, link: &Url) -> bool {
        if link.scheme() == "file" {
            return false;
        }
        match self {
            // An opaque origin (file:, data:) equals nothing, not even itself.
            Follow::SameOrigin => link.origin().is_tuple() && link.origin() == page.origin(),
            Follow::SameHost => link.host().is_some() && link.host() == page.host(),
            Follow::Any => true,
        }
    }
}

/// How far and how wide a crawl goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hops from an input URL whose links are still followed.
    pub max_depth: u32,
    /// Most URLs taken in all (queued or invalid); `None`: no limit.
    pub budget: Option<u64>,
    /// Which links are followed.
    pub follow: Follow,
    /// Most followed links waiting at once; more are dropped (input URLs are read only
    /// as fast as the crawl goes, so they are never dropped).
    pub max_queued: usize,
    /// Most links queued from one page; the rest of that page's links are dropped.
    pub links_per_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 0,
            budget: None,
            follow: Follow::SameOrigin,
            max_queued: DEFAULT_MAX_QUEUED,
            links_per_page: DEFAULT_LINKS_PER_PAGE,
        }
    }
}

/// Links found on pages and not queued, by reason (links already seen are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Outside the `--follow` scope, `file:` or not a crawlable URL.
    pub outside: u64,
    /// Past the per-page cap.
    pub over_page_cap: u64,
    /// The queue was full.
    pub queue_full: u64,
}

/// What became of a URL offered to the frontier.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued for a visit.
    Queued,
    /// Already seen (after dropping the fragment): skipped.
    Duplicate,
    /// Not a URL a browser can crawl; the string says why. Counts against the budget,
    /// since it gets its own output line.
    Invalid(String),
    /// The page budget is spent: nothing more is taken.
    OverBudget,
}

/// URLs to visit, breadth first, each at most once.
#[derive(Debug)]
pub struct Frontier {
    queue: VecDeque<(String, u32)>,
    /// Fingerprints of every URL taken. A 64-bit collision (odds about n²/2⁶⁵) would skip
    /// one URL; that is the price of not keeping every URL of a long crawl in memory.
    seen: HashSet<u64>,
    fingerprint: RandomState,
    limits: Limits,
    taken: u64,
    links_queued: u64,
    dropped: Dropped,
}

impl Frontier {
    /// An empty frontier within `limits`.
    pub fn new(limits: Limits) -> Self {
        Frontier {
            queue: VecDeque::new(),
            seen: HashSet::new(),
            fingerprint: RandomState::new(),
            limits,
            taken: 0,
            links_queued: 0,
            dropped: Dropped::default(),
        }
    }

    /// Offers an input URL (depth 0).
    pub fn offer_seed(&mut self, raw: &str) -> Offer {
        if self.spent() {
            return Offer::OverBudget;
        }
        match normalize(raw) {
            Ok(url) => self.admit(url.into(), 0),
            Err(why) => {
                self.taken += 1;
                Offer::Invalid(why)
            }
        }
    }

    /// Offers the links found on `parent` (visited at `depth`): those within the follow
    /// scope, not yet seen, while `depth + 1` is within the limit, up to the per-page and
    /// queue caps. Returns how many were queued.
    pub fn offer_links(&mut self, parent: &str, depth: u32, links: &[String]) -> usize {
        if !self.follows_from(depth) {
            return 0;
        }
        let Ok(parent) = Url::parse(parent) else {
            return 0;
        };
        let mut queued = 0;
        for (i, link) in links.iter().enumerate() {
            if queued >= self.limits.links_per_page {
                self.dropped.over_page_cap += (links.len() - i) as u64;
                break;
            }
            let url = match normalize(link) {
                Ok(url) if self.limits.follow.allows(&parent, &url) => url,
                _ => {
                    self.dropped.outside += 1;
                    continue;
                }
            };
            if self.queue.len() >= self.limits.max_queued {
                if !self.seen.contains(&self.fingerprint.hash_one(url.as_str())) {
                    self.dropped.queue_full += 1;
                }
                continue;
            }
            if self.admit(url.into(), depth + 1) == Offer::Queued {
                queued += 1;
            }
        }
        self.links_queued += queued as u64;
        queued
    }

    fn admit(&mut self, url: String, depth: u32) -> Offer {
        if self.spent() {
            return Offer::OverBudget;
        }
        if !self.seen.insert(self.fingerprint.hash_one(url.as_str())) {
            return Offer::Duplicate;
        }
        self.taken += 1;
        self.queue.push_back((url, depth));
        Offer::Queued
    }

    /// The next URL to visit and its depth.
    pub fn pop(&mut self) -> Option<(String, u32)> {
        self.queue.pop_front()
    }

    /// URLs waiting for a visit.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no URL is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True once the budget is used up.
    pub fn spent(&self) -> bool {
        self.limits.budget.is_some_and(|b| self.taken >= b)
    }

    /// Drops every waiting URL (on interrupt).
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// True when `depth` is below the link-following limit: its page's links are wanted.
    pub fn follows_from(&self, depth: u32) -> bool {
        depth < self.limits.max_depth
    }

    /// Links queued from pages so far.
    pub fn links_queued(&self) -> u64 {
        self.links_queued
    }

    /// Links dropped so far, by reason.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }
}

/// The links of `parent` a crawl may follow under `follow`, normalized, each once, in
/// page order; the others are counted in `dropped.outside`. For a frontier that decides
/// "new or seen" elsewhere (the shared one); the per-page cap is applied where that
/// is decided, since links already seen do not use a page's share.
pub fn in_scope(
    follow: Follow,
    parent: &str,
    links: &[String],
    dropped: &mut Dropped,
) -> Vec<String> {
    let Ok(parent) = Url::parse(parent) else {
        return Vec::new();
    };
    let mut on_page = HashSet::new();
    let mut kept = Vec::new();
    for link in links {
        match normalize(link) {
            Ok(url) if follow.allows(&parent, &url) => {
                let url = String::from(url);
                if on_page.insert(url.clone()) {
                    kept.push(url);
                }
            }
            _ => dropped.outside += 1,
        }
    }
    kept
}

/// The URL as it is visited and deduplicated: parsed, fragment dropped, scheme checked.
pub fn normalize(raw: &str) -> Result<Url, String> {
    let raw = raw.trim();
    let mut url = Url::parse(raw).map_err(|e| format!("bad URL {raw:?}: {e}"))?;
    if !SCHEMES.contains(&url.scheme()) {
        return Err(format!(
            "unsupported scheme {:?} in {raw:?}: only http, https and file URLs are crawled",
            url.scheme()
        ));
    }
    if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL {raw:?} has no host"));
    }
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(max_depth: u32) -> Limits {
        Limits {
            max_depth,
            ..Limits::default()
        }
    }

    fn strings(links: &[&str]) -> Vec<String> {
        links.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn seeds_are_normalized_and_deduplicated() {
        let mut f = Frontier::new(Limits::default());
        assert_eq!(f.offer_seed("http://a.test/x#top"), Offer::Queued);
        assert_eq!(f.offer_seed("  http://a.test/x  "), Offer::Duplicate);
        assert_eq!(f.offer_seed("http://A.test/x#other"), Offer::Duplicate);
        assert!(matches!(f.offer_seed("not a url"), Offer::Invalid(_)));
        assert!(
            matches!(f.offer_seed("ftp://a.test/f"), Offer::Invalid(m) if m.contains("scheme"))
        );
        assert!(matches!(f.offer_seed("http://"), Offer::Invalid(_)));
        assert!(matches!(f.offer_seed(""), Offer::Invalid(_)));
        assert_eq!(f.pop(), Some(("http://a.test/x".to_owned(), 0)));
        assert_eq!(f.pop(), None);
    }

    #[test]
    fn links_stay_on_the_host_and_within_the_depth() {
        let mut f = Frontier::new(depth(1));
        assert_eq!(f.offer_seed("http://a.test/"), Offer::Queued);
        let links = [
            "http://a.test/1",
            "http://a.test/1#frag",
            "http://b.test/2",
            "mailto:x@a.test",
            "javascript:void(0)",
            "http://a.test/",
        ]
        .map(String::from);
        assert_eq!(f.offer_links("http://a.test/", 0, &links), 1);
        assert!(f.follows_from(0));
        assert!(!f.follows_from(1));
        assert_eq!(
            f.offer_links("http://a.test/1", 1, &["http://a.test/9".into()]),
            0
        );
        let order: Vec<_> = std::iter::from_fn(|| f.pop()).collect();
        assert_eq!(
            order,
            [
                ("http://a.test/".to_owned(), 0),
                ("http://a.test/1".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn the_budget_counts_invalid_lines_too() {
        let mut f = Frontier::new(Limits {
            budget: Some(3),
            ..depth(5)
        });
        assert_eq!(f.offer_seed("http://a.test/0"), Offer::Queued);
        assert!(matches!(f.offer_seed("nope"), Offer::Invalid(_)));
        let links = ["http://a.test/1", "http://a.test/2"].map(String::from);
        assert_eq!(f.offer_links("http://a.test/0", 0, &links), 1);
        assert!(f.spent());
        assert_eq!(f.offer_seed("http://a.test/3"), Offer::OverBudget);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn links_stay_in_the_origin_by_default() {
        let mut f = Frontier::new(depth(1));
        let links = strings(&[
            "http://a.test:8080/other-port",
            "https://a.test/other-scheme",
            "http://a.test:80/default-port",
            "http://sub.a.test/other-host",
        ]);
        assert_eq!(f.offer_links("http://a.test/", 0, &links), 1);
        assert_eq!(f.pop(), Some(("http://a.test/default-port".to_owned(), 1)));
        assert_eq!(f.dropped().outside, 3);
    }

    #[test]
    fn the_scope_can_be_widened() {
        let links = strings(&[
            "http://a.test:8080/other-port",
            "https://a.test/other-scheme",
            "http://b.test/other-host",
        ]);
        let mut host = Frontier::new(Limits {
            follow: Follow::SameHost,
            ..depth(1)
        });
        assert_eq!(host.offer_links("http://a.test/", 0, &links), 2);
        let mut any = Frontier::new(Limits {
            follow: Follow::Any,
            ..depth(1)
        });
        assert_eq!(any.offer_links("http://a.test/", 0, &links), 3);
    }

    #[test]
    fn file_links_are_never_followed() {
        let links = strings(&[
            "file://127.0.0.1/etc/passwd",
            "file:///etc/passwd",
            "file://localhost/etc/shadow",
        ]);
        for follow in [Follow::SameOrigin, Follow::SameHost, Follow::Any] {
            for parent in [
                "http://127.0.0.1/",
                "file://127.0.0.1/index.html",
                "file:///tmp/a.html",
            ] {
                let mut f = Frontier::new(Limits { follow, ..depth(3) });
                assert_eq!(
                    f.offer_links(parent, 0, &links),
                    0,
                    "{follow:?} from {parent}"
                );
                assert!(f.is_empty());
            }
        }
        // A file: page shares its origin with nothing, so by default nothing is followed
        // from it.
        let mut f = Frontier::new(depth(1));
        assert_eq!(
            f.offer_links("file:///tmp/a.html", 0, &strings(&["file:///tmp/b.html"])),
            0
        );
        // Seeds may still be files: the user asked for them.
        assert_eq!(f.offer_seed("file:///tmp/a.html"), Offer::Queued);
    }

    #[test]
    fn links_in_scope_are_normalized_once_each() {
        let mut dropped = Dropped::default();
        let links = strings(&[
            "http://a.test/1#x",
            "http://a.test/1",
            "http://b.test/2",
            "file:///etc/passwd",
            "/relative",
            "http://a.test/3",
        ]);
        let kept = in_scope(Follow::SameOrigin, "http://a.test/", &links, &mut dropped);
        assert_eq!(kept, ["http://a.test/1", "http://a.test/3"]);
        assert_eq!(dropped.outside, 3);
        assert!(in_scope(Follow::Any, "not a url", &links, &mut dropped).is_empty());
    }

    #[test]
    fn a_page_gives_at_most_its_share_of_links() {
        let mut f = Frontier::new(Limits {
            links_per_page: 3,
            ..depth(1)
        });
        let links: Vec<String> = (0..10).map(|i| format!("http://a.test/{i}")).collect();
        assert_eq!(f.offer_links("http://a.test/", 0, &links), 3);
        assert_eq!(f.dropped().over_page_cap, 7);
        assert_eq!(f.links_queued(), 3);
        // Links already seen do not use the page's share.
        let again: Vec<String> = (0..5).map(|i| format!("http://a.test/{i}")).collect();
        assert_eq!(f.offer_links("http://a.test/x", 0, &again), 2);
        assert_eq!(f.dropped().over_page_cap, 7);
    }

    #[test]
    fn the_queue_is_bounded_and_drops_are_counted() {
        let mut f = Frontier::new(Limits {
            max_queued: 4,
            ..depth(2)
        });
        let links: Vec<String> = (0..10).map(|i| format!("http://a.test/{i}")).collect();
        assert_eq!(f.offer_links("http://a.test/", 0, &links), 4);
        assert_eq!(f.len(), 4);
        assert_eq!(f.dropped().queue_full, 6);
        // A dropped link was not marked seen: once there is room it can be queued.
        assert_eq!(f.pop(), Some(("http://a.test/0".to_owned(), 1)));
        assert_eq!(f.offer_links("http://a.test/1", 1, &links[4..5]), 1);
        // Seeds are not links: the input is read only as fast as the crawl goes.
        assert_eq!(f.offer_seed("http://a.test/seed"), Offer::Queued);
        assert_eq!(f.len(), 5);
    }
}
