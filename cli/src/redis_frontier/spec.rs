//! `--frontier redis://HOST:PORT/NAME`: where a shared frontier lives and what it is
//! called. Pure parsing, no connection.

/// A shared frontier's address: the Redis server and the crawl's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontierSpec {
    /// The server, as the client crate takes it: `redis://[user:pass@]host:port`.
    pub server: String,
    /// The crawl's name: every key of the crawl starts with `cdpmux:NAME:`.
    pub name: String,
}

impl FrontierSpec {
    /// The prefix of every key of this crawl.
    pub fn prefix(&self) -> String {
        format!("cdpmux:{}", self.name)
    }

    /// Parses `redis://[user:pass@]host[:port]/NAME`. The path is the crawl's name, not a
    /// database number: one Redis database holds any number of crawls, told apart by name.
    pub fn parse(s: &str) -> Result<FrontierSpec, String> {
        let Some(rest) = s.strip_prefix("redis://") else {
            return Err(format!(
                "{s:?} is not a frontier: give redis://HOST:PORT/NAME (e.g. \
                 redis://127.0.0.1:6379/my-crawl)"
            ));
        };
        let Some((authority, name)) = rest.split_once('/') else {
            return Err(format!(
                "{s:?} names no crawl: add /NAME after the server (redis://{rest}/my-crawl)"
            ));
        };
        if authority.is_empty() || authority.ends_with('@') {
            return Err(format!("{s:?} names no Redis server before /{name}"));
        }
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(format!(
                "bad crawl name {name:?} in {s:?}: use 1 to 64 ASCII letters, digits, '-', \
                 '_' or '.'"
            ));
        }
        Ok(FrontierSpec {
            server: format!("redis://{authority}"),
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_the_crawl_name() {
        let spec = FrontierSpec::parse("redis://127.0.0.1:6379/news-2026").unwrap();
        assert_eq!(spec.server, "redis://127.0.0.1:6379");
        assert_eq!(spec.name, "news-2026");
        assert_eq!(spec.prefix(), "cdpmux:news-2026");
        let auth = FrontierSpec::parse("redis://:secret@redis.internal/c").unwrap();
        assert_eq!(auth.server, "redis://:secret@redis.internal");
    }

    #[test]
    fn bad_addresses_say_what_to_write() {
        for bad in [
            "127.0.0.1:6379/x",
            "http://h/x",
            "redis://h",
            "redis://h/",
            "redis:///x",
            "redis://h/a/b",
            "redis://h/a b",
            "redis://u@/x",
        ] {
            let e = FrontierSpec::parse(bad).unwrap_err();
            assert!(e.contains(bad) || e.contains("name"), "{bad}: {e}");
        }
    }
}
