//! The crawl frontier: which URLs are still to visit, at what depth, and which were
//! already taken. Pure data, no I/O: the crawl loop asks it what to do next.

use std::collections::{HashSet, VecDeque};

use url::Url;

/// Schemes a crawl visits; anything else in the input is reported as invalid input.
const SCHEMES: [&str; 3] = ["http", "https", "file"];

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
    seen: HashSet<String>,
    max_depth: u32,
    budget: Option<u64>,
    taken: u64,
}

impl Frontier {
    /// A frontier that follows links up to `max_depth` hops and takes at most `budget`
    /// URLs (queued or invalid).
    pub fn new(max_depth: u32, budget: Option<u64>) -> Self {
        Frontier {
            queue: VecDeque::new(),
            seen: HashSet::new(),
            max_depth,
            budget,
            taken: 0,
        }
    }

    /// Offers an input URL (depth 0).
    pub fn offer_seed(&mut self, raw: &str) -> Offer {
        if self.spent() {
            return Offer::OverBudget;
        }
        match normalize(raw) {
            Ok(url) => self.admit(url, 0),
            Err(why) => {
                self.taken += 1;
                Offer::Invalid(why)
            }
        }
    }

    /// Offers the links found on `parent` (visited at `depth`): those on the same host,
    /// not yet seen, while `depth + 1` is within the limit. Returns how many were queued.
    pub fn offer_links(&mut self, parent: &str, depth: u32, links: &[String]) -> usize {
        if depth >= self.max_depth {
            return 0;
        }
        let Ok(parent) = Url::parse(parent) else {
            return 0;
        };
        let mut queued = 0;
        for link in links {
            let Ok(url) = normalize(link) else { continue };
            let same_host = Url::parse(&url).is_ok_and(|u| u.host_str() == parent.host_str());
            if same_host && self.admit(url, depth + 1) == Offer::Queued {
                queued += 1;
            }
        }
        queued
    }

    fn admit(&mut self, url: String, depth: u32) -> Offer {
        if self.spent() {
            return Offer::OverBudget;
        }
        if !self.seen.insert(url.clone()) {
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
        self.budget.is_some_and(|b| self.taken >= b)
    }

    /// Drops every waiting URL (on interrupt).
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// True when `depth` is below the link-following limit: its page's links are wanted.
    pub fn follows_from(&self, depth: u32) -> bool {
        depth < self.max_depth
    }
}

/// The URL as it is visited and deduplicated: parsed, fragment dropped, scheme checked.
pub fn normalize(raw: &str) -> Result<String, String> {
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
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_normalized_and_deduplicated() {
        let mut f = Frontier::new(0, None);
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
        let mut f = Frontier::new(1, None);
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
        let mut f = Frontier::new(5, Some(3));
        assert_eq!(f.offer_seed("http://a.test/0"), Offer::Queued);
        assert!(matches!(f.offer_seed("nope"), Offer::Invalid(_)));
        let links = ["http://a.test/1", "http://a.test/2"].map(String::from);
        assert_eq!(f.offer_links("http://a.test/0", 0, &links), 1);
        assert!(f.spent());
        assert_eq!(f.offer_seed("http://a.test/3"), Offer::OverBudget);
        assert_eq!(f.len(), 2);
    }
}
