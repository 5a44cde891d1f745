//! Which node of a distributed crawl visits which site: rendezvous (highest random
//! weight) hashing of sites over the live nodes. Pure: no I/O, no clock.
//!
//! A site is the URL's authority, `host:port` (the port written out even when it is the
//! scheme's default), so two servers on one host are two sites, as their origins are.
//! Every node computes the owner of a site from the same inputs (the live node names and
//! the site) with the same fixed hash, never a per-process random one, so nodes on
//! different machines and builds agree.
//!
//! Invariant: each site has exactly one owner among the live nodes, and a site's owner
//! changes only when the owner leaves or a joining node outbids it: when a node joins, the
//! sites it wins (about 1/(n+1) of them) move to it and no other site moves; when a node
//! leaves, only its sites move, spread over the others.

use url::Url;

/// The site of a URL: `host:port` for http(s), `file` for `file:` URLs (which have no
/// host), `-` for a URL that does not parse (such URLs never reach the queue).
pub fn site_of(url: &str) -> String {
    let Ok(url) = Url::parse(url) else {
        return "-".to_owned();
    };
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) if !host.is_empty() => {
            format!("{}:{port}", host.to_ascii_lowercase())
        }
        (Some(host), None) if !host.is_empty() => host.to_ascii_lowercase(),
        _ => url.scheme().to_owned(),
    }
}

/// The weight of `node` for `site`: FNV-1a over both (with a separator no name holds),
/// then a 64-bit finalizer so that close names get unrelated weights.
fn weight(node: &str, site: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0u8]).chain(site.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The node that owns `site` among `nodes` (none when `nodes` is empty). Ties, with odds
/// of 2⁻⁶⁴, go to the smaller name, so every node still agrees.
pub fn owner<'a>(site: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes
        .iter()
        .map(|n| (weight(n, site), std::cmp::Reverse(n.as_str())))
        .max()
        .map(|(_, std::cmp::Reverse(n))| n)
}

/// The sites among `sites` that `me` owns, given the live `nodes`. `me` counts as live
/// even when missing from `nodes` (its own heartbeat may not be seen yet).
pub fn owned_by(me: &str, nodes: &[String], sites: &[String]) -> Vec<String> {
    let mut live = nodes.to_vec();
    if !live.iter().any(|n| n == me) {
        live.push(me.to_owned());
    }
    sites
        .iter()
        .filter(|site| owner(site, &live) == Some(me))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn sites(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("site{i}.test:80")).collect()
    }

    #[test]
    fn a_site_is_host_and_port() {
        assert_eq!(site_of("http://A.test/x"), "a.test:80");
        assert_eq!(site_of("https://a.test/x"), "a.test:443");
        assert_eq!(site_of("http://127.0.0.1:8080/p/1"), "127.0.0.1:8080");
        assert_eq!(site_of("file:///tmp/a.html"), "file");
        assert_eq!(site_of("not a url"), "-");
    }

    #[test]
    fn every_site_has_one_owner_and_every_node_agrees() {
        let nodes = names(3);
        let all = sites(300);
        let mut owned: Vec<String> = nodes
            .iter()
            .flat_map(|me| owned_by(me, &nodes, &all))
            .collect();
        owned.sort();
        let mut expected = all.clone();
        expected.sort();
        assert_eq!(owned, expected, "each site owned once");
        // The order nodes are listed in does not matter.
        let reversed: Vec<String> = nodes.iter().rev().cloned().collect();
        for site in &all {
            assert_eq!(owner(site, &nodes), owner(site, &reversed));
        }
        // Each node gets a fair share: 100 expected, far from 0 or 300.
        for me in &nodes {
            let n = owned_by(me, &nodes, &all).len();
            assert!((60..=140).contains(&n), "{me} owns {n} of 300");
        }
    }

    #[test]
    fn a_joining_node_takes_about_its_share_and_nothing_else_moves() {
        let all = sites(1000);
        let before = names(3);
        let after = names(4);
        let mut moved = 0;
        for site in &all {
            let (was, is) = (owner(site, &before), owner(site, &after));
            if was != is {
                assert_eq!(is, Some("node-3"), "{site} moved between old nodes");
                moved += 1;
            }
        }
        // About 1/4 of 1000.
        assert!((180..=320).contains(&moved), "{moved} of 1000 moved");
    }

    #[test]
    fn a_leaving_node_hands_over_only_its_own_sites() {
        let all = sites(1000);
        let before = names(3);
        let after: Vec<String> = before.iter().filter(|n| *n != "node-1").cloned().collect();
        for site in &all {
            let was = owner(site, &before);
            if was != Some("node-1") {
                assert_eq!(
                    owner(site, &after),
                    was,
                    "{site} moved though its node stayed"
                );
            }
        }
        assert_eq!(owner("x", &[]), None);
    }

    #[test]
    fn the_hash_is_fixed_across_processes() {
        // Nodes on other machines must compute the same weights: pinned values.
        assert_eq!(weight("node-0", "a.test:80"), 0xb3f5_4a4c_03c6_45c5);
        assert_ne!(weight("node-0", "a.test:80"), weight("node-1", "a.test:80"));
        assert_ne!(weight("ab", "c"), weight("a", "bc"), "the separator counts");
    }
}
