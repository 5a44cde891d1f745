//! Page content a crawl keeps besides its JSON line: the rendered HTML (`--save-html`) and
//! a screenshot (`--screenshot`), each a file in a directory the user named.
//!
//! File names are derived from the URL and can never leave that directory: only ASCII
//! letters, digits, `-`, `_` and `.` survive, a name never starts with `.`, and a hash of
//! the whole URL keeps two URLs that clean up alike apart. Runs off the shard threads (in
//! the page's own task, after its job).

use std::io;
use std::path::{Path, PathBuf};

/// Longest readable part of a file name, before the hash and extension.
const STEM_MAX: usize = 80;

/// The file name for `url`'s content with extension `ext` (no dot): the URL's host, path
/// and query with every other character turned into `_`, then a 64-bit hash of the URL.
pub fn file_name(url: &str, ext: &str) -> String {
    let readable = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('#')
        .next()
        .unwrap_or_default();
    let mut stem = String::with_capacity(STEM_MAX);
    for c in readable.chars() {
        if stem.len() >= STEM_MAX {
            break;
        }
        let keep = c.is_ascii_alphanumeric() || c == '-' || c == '.';
        let c = if keep { c } else { '_' };
        // `..` and runs of `_` say nothing: squeeze them.
        if (c == '_' || c == '.') && stem.ends_with(c) {
            continue;
        }
        stem.push(c);
    }
    let stem = stem.trim_matches(['.', '_']);
    let stem = if stem.is_empty() { "page" } else { stem };
    format!("{stem}-{:016x}.{ext}", fnv1a(url.as_bytes()))
}

/// Writes `bytes` as `dir/<file_name(url, ext)>` and returns the path.
pub async fn save(dir: &Path, url: &str, ext: &str, bytes: Vec<u8>) -> io::Result<PathBuf> {
    let path = dir.join(file_name(url, ext));
    tokio::fs::write(&path, bytes).await.map_err(|e| {
        io::Error::new(e.kind(), format!("could not write {}: {e}", path.display()))
    })?;
    Ok(path)
}

/// Creates `dir` (and its parents) if missing; an error names the option.
pub fn prepare_dir(dir: &Path, option: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "{option} {}: cannot create the directory: {e}",
            dir.display()
        )
    })?;
    if !dir.is_dir() {
        return Err(format!("{option} {}: not a directory", dir.display()));
    }
    Ok(())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Truncates `html` to at most `max` bytes, on a character boundary; true if it cut.
pub fn cap_html(html: &mut String, max: usize) -> bool {
    if html.len() <= max {
        return false;
    }
    let mut end = max;
    while !html.is_char_boundary(end) {
        end -= 1;
    }
    html.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_and_distinct() {
        let a = file_name("http://127.0.0.1:8080/p/3?x=1", "png");
        assert!(
            a.starts_with("127.0.0.1_8080_p_3_x_1-") && a.ends_with(".png"),
            "{a}"
        );
        assert_ne!(a, file_name("http://127.0.0.1:8080/p/3?x=2", "png"));
        assert_ne!(
            file_name("http://a.test/a/b", "html"),
            file_name("http://a.test/a_b", "html")
        );
        assert!(file_name("about:blank", "png").starts_with("about_blank-"));
        assert!(file_name("http://", "png").starts_with("page-"));
    }

    proptest::proptest! {
        #[test]
        fn no_url_names_a_file_outside_the_directory(url in "\\PC{0,200}") {
            let name = file_name(&url, "png");
            proptest::prop_assert!(!name.contains('/') && !name.contains('\\'));
            proptest::prop_assert!(!name.starts_with('.'));
            proptest::prop_assert!(!name.contains(".."));
            proptest::prop_assert!(name.len() <= STEM_MAX + 21);
            let path = Path::new("/out").join(&name);
            proptest::prop_assert_eq!(path.parent(), Some(Path::new("/out")));
        }
    }

    #[test]
    fn traversal_attempts_stay_inside() {
        for url in [
            "http://a.test/../../etc/passwd",
            "file:///../../root/.ssh/id_rsa",
            "..",
            "http://a.test/%2e%2e/%2e%2e/x",
        ] {
            let name = file_name(url, "html");
            assert!(!name.contains("..") && !name.contains('/'), "{url}: {name}");
        }
    }

    #[test]
    fn html_is_capped_on_a_char_boundary() {
        let mut s = "aé".repeat(10); // 3 bytes per pair
        assert!(cap_html(&mut s, 4));
        assert_eq!(s, "aéa");
        let mut short = "abc".to_owned();
        assert!(!cap_html(&mut short, 3));
    }
}
