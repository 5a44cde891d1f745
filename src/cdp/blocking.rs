//! Resource blocking: which requests a page never sends, by resource type and by URL
//! pattern, and the CDP commands that set it up.
//!
//! Owns: [`Blocking`], [`ResourceType`] and their translation into `Fetch.enable`
//! patterns. Never: answers a paused request itself; the connection fails each request
//! paused on a blocking session as it arrives (`routing::Sessions::blocked_request`),
//! with no task in between.
//!
//! Why `Fetch` and not `Network.setBlockedURLs`: only `Fetch` patterns can name a
//! resource type, and both cost Chromium about the same per page (measured, see
//! `docs/crawl-profile.md`). A request that matches no pattern is never paused, so
//! pages pay only for what they block.

use serde_json::{json, Value};

/// A kind of resource a page loads, as blocking names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ResourceType {
    /// Images (`<img>`, CSS backgrounds, favicons).
    Image,
    /// Audio and video, and their text tracks.
    Media,
    /// Web fonts.
    Font,
    /// Stylesheets.
    Stylesheet,
    /// Scripts (blocking them changes what the page shows: content built by scripts is
    /// never built).
    Script,
    /// What Chromium files under `Other` (beacons, some prefetches).
    Other,
}

impl ResourceType {
    /// Every type, in declaration order.
    pub const ALL: [ResourceType; 6] = [
        ResourceType::Image,
        ResourceType::Media,
        ResourceType::Font,
        ResourceType::Stylesheet,
        ResourceType::Script,
        ResourceType::Other,
    ];

    /// CDP's `Network.ResourceType` names this type covers.
    fn cdp_names(self) -> &'static [&'static str] {
        match self {
            ResourceType::Image => &["Image"],
            ResourceType::Media => &["Media", "TextTrack"],
            ResourceType::Font => &["Font"],
            ResourceType::Stylesheet => &["Stylesheet"],
            ResourceType::Script => &["Script"],
            ResourceType::Other => &["Other"],
        }
    }
}

impl std::str::FromStr for ResourceType {
    type Err = crate::Error;

    /// Parses `image(s)`, `media`, `font(s)`, `stylesheet(s)` (or `css`), `script(s)`
    /// (or `js`), `other`, in any case.
    fn from_str(s: &str) -> crate::Result<Self> {
        let t = match s.trim().to_ascii_lowercase().as_str() {
            "image" | "images" => ResourceType::Image,
            "media" => ResourceType::Media,
            "font" | "fonts" => ResourceType::Font,
            "stylesheet" | "stylesheets" | "css" => ResourceType::Stylesheet,
            "script" | "scripts" | "js" => ResourceType::Script,
            "other" => ResourceType::Other,
            _ => {
                return Err(crate::Error::new(
                    crate::ErrorKind::InvalidInput,
                    format!(
                        "unknown resource type {s:?}: use images, media, fonts, stylesheets, \
                         scripts or other"
                    ),
                ))
            }
        };
        Ok(t)
    }
}

/// What a page does not load: requests of some resource types, and requests whose URL
/// matches a pattern. The page's own document is never blocked by type.
///
/// Set per pool with [`PageOptions::block`](super::PageOptions::block) (set up once when
/// a page opens), per job with [`Job::block`](crate::Job::block), or directly with
/// [`Page::set_blocking`](super::Page::set_blocking). A blocked request fails in the
/// browser with `net::ERR_BLOCKED_BY_CLIENT` and never reaches the network; each is
/// counted in [`Counters::blocked_requests`](crate::metrics::Counters).
///
/// Blocking uses the page's `Fetch` domain: do not use `Fetch` yourself on a page that
/// blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocking {
    types: Vec<ResourceType>,
    url_patterns: Vec<String>,
}

impl Blocking {
    /// Blocks nothing.
    pub fn none() -> Self {
        Blocking::default()
    }

    /// Also blocks every request of `kind`.
    pub fn resource(mut self, kind: ResourceType) -> Self {
        if !self.types.contains(&kind) {
            self.types.push(kind);
            self.types.sort();
        }
        self
    }

    /// Also blocks every request of each of `kinds`.
    pub fn resources(self, kinds: impl IntoIterator<Item = ResourceType>) -> Self {
        kinds.into_iter().fold(self, Blocking::resource)
    }

    /// Also blocks every request whose URL matches `pattern`: `*` matches any run of
    /// characters, `?` one character, as in CDP's `Fetch.RequestPattern.urlPattern`
    /// (`*.woff2`, `*://ads.example/*`).
    pub fn url(mut self, pattern: impl Into<String>) -> Self {
        let pattern = pattern.into();
        if !self.url_patterns.contains(&pattern) {
            self.url_patterns.push(pattern);
        }
        self
    }

    /// True when nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.url_patterns.is_empty()
    }

    /// The blocked resource types, sorted.
    pub fn resource_types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The blocked URL patterns, in the order added.
    pub fn url_patterns(&self) -> &[String] {
        &self.url_patterns
    }

    /// The command that makes a page block exactly this: `Fetch.enable` with one pattern
    /// per blocked type and URL pattern (each paused request is then failed), or
    /// `Fetch.disable` when nothing is blocked.
    pub(crate) fn command(&self) -> (&'static str, Value) {
        if self.is_empty() {
            return ("Fetch.disable", json!({}));
        }
        let by_type = self.types.iter().flat_map(|t| t.cdp_names()).map(
            |name| json!({ "urlPattern": "*", "resourceType": name, "requestStage": "Request" }),
        );
        let by_url = self
            .url_patterns
            .iter()
            .map(|p| json!({ "urlPattern": p, "requestStage": "Request" }));
        let patterns: Vec<Value> = by_type.chain(by_url).collect();
        ("Fetch.enable", json!({ "patterns": patterns }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_patterns_become_fetch_patterns_and_nothing_disables_fetch() {
        assert_eq!(Blocking::none().command().0, "Fetch.disable");
        let b = Blocking::none()
            .resources([
                ResourceType::Media,
                ResourceType::Image,
                ResourceType::Image,
            ])
            .url("*.woff2");
        assert_eq!(
            b.resource_types(),
            [ResourceType::Image, ResourceType::Media]
        );
        let (method, params) = b.command();
        assert_eq!(method, "Fetch.enable");
        let patterns = params["patterns"].as_array().unwrap();
        let types: Vec<&str> = patterns
            .iter()
            .filter_map(|p| p["resourceType"].as_str())
            .collect();
        assert_eq!(types, ["Image", "Media", "TextTrack"]);
        assert!(patterns
            .iter()
            .all(|p| p["requestStage"] == "Request" && p["urlPattern"].is_string()));
        assert_eq!(patterns.last().unwrap()["urlPattern"], "*.woff2");
    }

    #[test]
    fn resource_types_parse_from_the_cli_spellings() {
        let parsed: Vec<ResourceType> = "images,fonts,media,stylesheets,scripts,other"
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        use ResourceType::*;
        assert_eq!(parsed, [Image, Font, Media, Stylesheet, Script, Other]);
        assert_eq!("CSS".parse::<ResourceType>().unwrap(), Stylesheet);
        assert!("pictures".parse::<ResourceType>().is_err());
    }
}
