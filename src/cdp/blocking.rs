//! Resource blocking: which requests a page never sends, by resource type and by URL
//! pattern, and the CDP commands that set it up.
//!
//! Owns: [`Blocking`], [`ResourceType`] and their translation into `Fetch.enable`
//! patterns. Never: answers a paused request itself; the connection fails each request
//! paused on a blocking session as it arrives (`routing::Sessions::blocked_request`),
//! with no task in between.
//!
//! Two mechanisms, measured with `examples/blocking_cost.rs` (figures in
//! `docs/crawl-profile.md`):
//! - URL patterns go to `Network.setBlockedURLs`, which fails a request inside Chromium
//!   with no round trip: about half the browser CPU per page of `Fetch` blocking the
//!   same requests.
//! - a resource type goes to both: its usual file extensions as URL patterns (the cheap
//!   path, which catches most of its requests), and a `Fetch.enable` pattern naming the
//!   type, which pauses the rest (an image at `/img?id=3`) for cdpmux to fail. Together
//!   they cost what URL patterns alone cost, and miss nothing of the type.
//!
//! Counted once per blocked request, from `Network.loadingFailed` with
//! `blockedReason: "inspector"`, which both mechanisms produce.

use serde_json::{json, Value};

/// A kind of resource a page loads, as blocking names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ResourceType {
    /// Images (`<img>`, CSS backgrounds, favicons).
    Image,
    /// Audio and video (their `.vtt` text tracks by extension only: Chromium's `Fetch`
    /// refuses a `TextTrack` pattern).
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

    /// The usual file extensions of this type's URLs (none for `Other`).
    fn extensions(self) -> &'static [&'static str] {
        match self {
            ResourceType::Image => &[
                "png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico", "bmp",
            ],
            ResourceType::Media => &[
                "mp4", "webm", "ogg", "ogv", "mp3", "m4a", "wav", "m3u8", "vtt",
            ],
            ResourceType::Font => &["woff", "woff2", "ttf", "otf", "eot"],
            ResourceType::Stylesheet => &["css"],
            ResourceType::Script => &["js", "mjs"],
            ResourceType::Other => &[],
        }
    }

    /// CDP's `Network.ResourceType` names this type covers.
    fn cdp_names(self) -> &'static [&'static str] {
        match self {
            ResourceType::Image => &["Image"],
            // Chromium 156 answers `Fetch.enable` with "Unknown resource type in fetch
            // filter: 'TextTrack'", failing every page open: text tracks go by extension.
            ResourceType::Media => &["Media"],
            ResourceType::Font => &["Font"],
            ResourceType::Stylesheet => &["Stylesheet"],
            ResourceType::Script => &["Script"],
            ResourceType::Other => &["Other"],
        }
    }
}

impl std::str::FromStr for ResourceType {
    type Err = crate::error::Error;

    /// Parses `image(s)`, `media`, `font(s)`, `stylesheet(s)` (or `css`), `script(s)`
    /// (or `js`), `other`, in any case.
    fn from_str(s: &str) -> crate::error::Result<Self> {
        let t = match s.trim().to_ascii_lowercase().as_str() {
            "image" | "images" => ResourceType::Image,
            "media" => ResourceType::Media,
            "font" | "fonts" => ResourceType::Font,
            "stylesheet" | "stylesheets" | "css" => ResourceType::Stylesheet,
            "script" | "scripts" | "js" => ResourceType::Script,
            "other" => ResourceType::Other,
            _ => {
                return Err(crate::error::Error::new(
                    crate::error::ErrorKind::InvalidInput,
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
/// a page opens), per job with [`Job::block`](crate::job::Job::block), or directly with
/// [`Page::set_blocking`](super::Page::set_blocking). A blocked request fails in the
/// browser with `net::ERR_BLOCKED_BY_CLIENT` and never reaches the network; each is
/// counted in [`Counters::blocked_requests`](crate::metrics::Counters).
///
/// Blocking by type uses the page's `Fetch` domain: do not use `Fetch` yourself on a
/// page that blocks types; install an [`Interceptor`](super::Interceptor) instead, which
/// sees every request blocking lets through. Blocking by URL uses `Network.setBlockedURLs` and needs the
/// `Network` domain (on by default in [`PageOptions`](super::PageOptions)).
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

    /// Also blocks every request of `kind`. URLs ending in the type's usual file
    /// extensions (`.png`, `.jpg`... for images, with or without a query string) are
    /// blocked by URL, which is cheap; so is a navigation to such a URL.
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

    /// Also blocks every request whose whole URL matches `pattern`, where `*` matches any
    /// run of characters (`*.woff2`, `*://ads.example/*`), as `Network.setBlockedURLs`
    /// reads it: failed inside Chromium, the cheapest way to block.
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

    /// Every URL pattern `Network.setBlockedURLs` gets: the caller's, then the usual
    /// extensions of each blocked type, with and without a query string.
    fn all_url_patterns(&self) -> Vec<String> {
        let by_extension = self
            .types
            .iter()
            .flat_map(|t| t.extensions())
            .flat_map(|ext| [format!("*.{ext}"), format!("*.{ext}?*")]);
        self.url_patterns
            .iter()
            .cloned()
            .chain(by_extension)
            .collect()
    }

    /// The commands that make a page that blocks `was` (`None`: unknown) block exactly
    /// this: `Fetch.enable` with one pattern per blocked type (each paused request is then
    /// failed) or `Fetch.disable`, and `Network.setBlockedURLs`; each only if its part
    /// changed. With `intercepting`, the page's `Fetch` patterns belong to its
    /// interceptor (which pauses everything, see `intercept`): no `Fetch` command.
    pub(crate) fn commands(
        &self,
        was: Option<&Blocking>,
        intercepting: bool,
    ) -> Vec<(&'static str, Value)> {
        let mut commands = Vec::with_capacity(2);
        if !intercepting && was.is_none_or(|w| w.types != self.types) {
            commands.push(self.fetch_command());
        }
        let urls = self.all_url_patterns();
        if was.is_none_or(|w| w.all_url_patterns() != urls) {
            commands.push(("Network.setBlockedURLs", json!({ "urls": urls })));
        }
        commands
    }

    /// The `Fetch` command of this blocking alone (no interceptor): `Fetch.enable` with
    /// one pattern per blocked type, or `Fetch.disable`.
    pub(crate) fn fetch_command(&self) -> (&'static str, Value) {
        if self.types.is_empty() {
            return ("Fetch.disable", json!({}));
        }
        let patterns: Vec<Value> = self
            .cdp_type_names()
            .map(|name| json!({ "urlPattern": "*", "resourceType": name, "requestStage": "Request" }))
            .collect();
        ("Fetch.enable", json!({ "patterns": patterns }))
    }

    /// CDP's names of the blocked types (`Image`, `Font`...).
    pub(crate) fn cdp_type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.iter().flat_map(|t| t.cdp_names()).copied()
    }

    /// True when paused requests are this blocking's to fail.
    pub(crate) fn pauses(&self) -> bool {
        !self.types.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_go_to_fetch_urls_to_set_blocked_urls_and_only_what_changed_is_sent() {
        let none = Blocking::none();
        fn methods(c: &[(&'static str, Value)]) -> Vec<&'static str> {
            c.iter().map(|(m, _)| *m).collect()
        }
        assert_eq!(
            methods(&none.commands(None, false)),
            ["Fetch.disable", "Network.setBlockedURLs"]
        );
        assert!(none.commands(Some(&none), false).is_empty());
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
        let commands = b.commands(Some(&none), false);
        assert_eq!(
            methods(&commands),
            ["Fetch.enable", "Network.setBlockedURLs"]
        );
        let patterns = commands[0].1["patterns"].as_array().unwrap();
        let types: Vec<&str> = patterns
            .iter()
            .filter_map(|p| p["resourceType"].as_str())
            .collect();
        assert_eq!(types, ["Image", "Media"]);
        assert!(patterns
            .iter()
            .all(|p| p["requestStage"] == "Request" && p["urlPattern"] == "*"));
        assert_eq!(commands[1].1["urls"][0], "*.woff2");
        let only_urls = Blocking::none().url("*.css");
        assert_eq!(
            methods(&only_urls.commands(Some(&none), false)),
            ["Network.setBlockedURLs"]
        );
        assert!(!only_urls.pauses() && b.pauses());
    }

    #[test]
    fn an_intercepting_page_keeps_its_fetch_patterns() {
        let b = Blocking::none()
            .resource(ResourceType::Image)
            .url("*.woff2");
        let commands = b.commands(Some(&Blocking::none()), true);
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].0, "Network.setBlockedURLs");
        assert_eq!(b.fetch_command().0, "Fetch.enable");
        assert_eq!(Blocking::none().fetch_command().0, "Fetch.disable");
        assert_eq!(b.cdp_type_names().collect::<Vec<_>>(), ["Image"]);
    }

    #[test]
    fn a_type_is_also_blocked_by_its_extensions_with_and_without_a_query() {
        let css = Blocking::none()
            .url("*/ads/*")
            .resource(ResourceType::Stylesheet);
        let commands = css.commands(Some(&Blocking::none()), false);
        assert_eq!(
            commands[1].1["urls"],
            json!(["*/ads/*", "*.css", "*.css?*"])
        );
        assert_eq!(
            css.url_patterns(),
            ["*/ads/*"],
            "the caller's patterns, as given"
        );
        let other = Blocking::none().resource(ResourceType::Other);
        let commands = other.commands(Some(&Blocking::none()), false);
        assert_eq!(commands.len(), 1, "no extension for Other: only Fetch");
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
