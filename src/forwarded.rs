//! The real client IP behind load balancers: `[server] trusted_proxies`.
//!
//! A request's client IP is its TCP peer (or the address a PROXY protocol header gave for it),
//! unless that peer is a trusted proxy. Then the proxies' own record of the hops is read, right
//! to left, and the client is the right-most address that is not itself trusted:
//!
//! - `X-Forwarded-For` when present (every line of it, in order, as one list);
//! - otherwise `Forwarded` (RFC 7239), its `for=` parameters.
//!
//! `X-Forwarded-For` wins when both are present because it is what the load balancers keygate is
//! put behind (AWS ALB, GCP, nginx, HAProxy, Envoy) append by default; `Forwarded` is only read
//! when they do not.
//!
//! Only the entries right of the first untrusted one were written by proxies keygate trusts;
//! anything further left is the client's to invent. So the walk stops at the first untrusted
//! address (the client), and also at the first entry it cannot read (garbage, `unknown`, an
//! obfuscated `_node`, too many hops): then the client is the last address it could read, which
//! is a trusted proxy (or the peer). A client in front of a trusted proxy can therefore never
//! choose its IP: at worst it is counted as that proxy.
//!
//! Nothing here runs when no proxy is trusted: the client IP is then the peer, and no header is
//! read.

use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// At most this many hops are read; a longer chain stops the walk there (its right-most part
/// was read, so the answer is still one a trusted proxy vouched for).
const MAX_HOPS: usize = 32;

/// The networks whose requests carry a client IP keygate believes (`[server] trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Box<[IpNet]>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self {
            nets: nets.into_iter().map(|n| n.trunc()).collect(),
        }
    }

    /// Reads one `trusted_proxies` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or one address.
    pub fn parse_entry(entry: &str) -> Option<IpNet> {
        let entry = entry.trim();
        IpNet::from_str(entry)
            .ok()
            .or_else(|| IpAddr::from_str(entry).ok().map(IpNet::from))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy. An IPv4 client seen on an IPv6 socket
    /// (`::ffff:10.1.2.3`) is matched as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client IP of a request that came from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        let xff = headers.get_all(X_FORWARDED_FOR);
        if xff.iter().next().is_some() {
            let hops = xff
                .iter()
                .rev()
                .flat_map(|line| split_rev(line.to_str().ok()))
                .map(|entry| entry.and_then(parse_node));
            return self.walk(peer, hops);
        }
        let forwarded = headers.get_all(http::header::FORWARDED);
        let hops = forwarded
            .iter()
            .rev()
            .flat_map(|line| split_rev(line.to_str().ok()))
            .map(|element| element.and_then(forwarded_for));
        self.walk(peer, hops)
    }

    /// Right to left over the hops (`None`: unreadable), from the trusted `peer`.
    fn walk(&self, peer: IpAddr, hops: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut last = peer;
        for hop in hops.take(MAX_HOPS) {
            let Some(ip) = hop else {
                return last;
            };
            if !self.contains(ip) {
                return ip;
            }
            last = ip;
        }
        last
    }
}

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The comma-separated items of one header line, right to left; `None` for a line that is not
/// text (which ends the walk).
fn split_rev(line: Option<&str>) -> impl Iterator<Item = Option<&str>> {
    let items = line.map(|l| l.rsplit(',').map(Some));
    let unreadable = line.is_none().then_some(None);
    items.into_iter().flatten().chain(unreadable)
}

/// One node: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches(|c| c == ' ' || c == '\t');
    if let Ok(ip) = IpAddr::from_str(node) {
        return Some(ip.to_canonical());
    }
    let ip = match node.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
                return None;
            }
            IpAddr::V6(inside.parse().ok()?)
        }
        None => {
            let (host, port) = node.split_once(':')?;
            if !is_port(port) {
                return None;
            }
            IpAddr::V4(host.parse().ok()?)
        }
    };
    Some(ip.to_canonical())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok()
}

/// The node of one `Forwarded` element's `for=` parameter (`for=192.0.2.60;proto=http`,
/// `for="[2001:db8::1]:4711"`). No `for`, `unknown` and obfuscated nodes are unreadable.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value)
    })?;
    let value = value.trim();
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    parse_node(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter()
                .map(|n| TrustedProxies::parse_entry(n).expect("net"))
                .collect(),
        )
    }

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    const LB: &str = "10.0.0.5";

    fn client(t: &TrustedProxies, peer: &str, pairs: &[(&'static str, &[u8])]) -> IpAddr {
        t.client_ip(ip(peer), &headers(pairs))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t = trusted(&["10.0.0.0/8"]);
        let h: &[(&str, &[u8])] = &[("x-forwarded-for", b"1.1.1.1")];
        assert_eq!(client(&t, "203.0.113.9", h), ip("203.0.113.9"));
        // Nothing is trusted: no header is read at all.
        assert_eq!(client(&trusted(&[]), LB, h), ip(LB));
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.1"]);
        let xff = |v: &'static [u8]| client(&t, LB, &[("x-forwarded-for", v)]);
        assert_eq!(xff(b"198.51.100.7"), ip("198.51.100.7"));
        // A client's invented entries sit left of the one the proxy appended.
        assert_eq!(xff(b"6.6.6.6, 198.51.100.7"), ip("198.51.100.7"));
        // Trusted hops are walked past.
        assert_eq!(
            xff(b"6.6.6.6, 198.51.100.7, 10.1.1.1,192.168.1.1"),
            ip("198.51.100.7")
        );
        // Ports and brackets.
        assert_eq!(xff(b"198.51.100.7:5555"), ip("198.51.100.7"));
        assert_eq!(xff(b"[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(xff(b" 2001:db8::2 "), ip("2001:db8::2"));
        // Every hop trusted: the left-most one.
        assert_eq!(xff(b"10.9.9.9, 10.1.1.1"), ip("10.9.9.9"));
    }

    #[test]
    fn several_lines_are_one_list() {
        let t = trusted(&["10.0.0.0/8"]);
        let h: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"6.6.6.6"),
            ("x-forwarded-for", b"198.51.100.7, 10.0.0.9"),
        ];
        assert_eq!(client(&t, LB, h), ip("198.51.100.7"));
        let h: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"198.51.100.7"),
            ("x-forwarded-for", b"10.0.0.9"),
        ];
        assert_eq!(client(&t, LB, h), ip("198.51.100.7"));
    }

    #[test]
    fn an_unreadable_entry_stops_the_walk_at_the_last_good_address() {
        let t = trusted(&["10.0.0.0/8"]);
        let xff = |v: &'static [u8]| client(&t, LB, &[("x-forwarded-for", v)]);
        for garbage in [
            &b"1.2.3.4, nonsense"[..],
            b"1.2.3.4, ",
            b"1.2.3.4,,",
            b"1.2.3.4, 999.1.1.1",
            b"1.2.3.4, 1.2.3.4:99999",
            b"1.2.3.4, [::1",
            b"1.2.3.4, unknown",
            b"1.2.3.4, \xff\xfe",
        ] {
            assert_eq!(xff(garbage), ip(LB), "{garbage:?}");
        }
        assert_eq!(xff(b"1.2.3.4, junk, 10.0.0.7"), ip("10.0.0.7"));
    }

    #[test]
    fn a_long_chain_is_read_only_so_far() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut chain = String::from("6.6.6.6");
        for _ in 0..100 {
            chain.push_str(", 10.0.0.1");
        }
        let h = headers(&[]);
        let mut h2 = h.clone();
        h2.insert("x-forwarded-for", HeaderValue::from_str(&chain).expect("v"));
        assert_eq!(t.client_ip(ip(LB), &h2), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_is_read_only_without_x_forwarded_for() {
        let t = trusted(&["10.0.0.0/8"]);
        let fwd = |v: &'static [u8]| client(&t, LB, &[("forwarded", v)]);
        assert_eq!(
            fwd(b"for=6.6.6.6, for=198.51.100.7;proto=https"),
            ip("198.51.100.7")
        );
        assert_eq!(fwd(b"For=\"[2001:db8::1]:4711\""), ip("2001:db8::1"));
        assert_eq!(
            fwd(b"proto=https;for=198.51.100.7;by=10.0.0.1"),
            ip("198.51.100.7")
        );
        assert_eq!(fwd(b"for=198.51.100.7, for=unknown"), ip(LB));
        assert_eq!(fwd(b"for=198.51.100.7, for=_hidden"), ip(LB));
        assert_eq!(fwd(b"for=198.51.100.7, proto=http"), ip(LB));
        let both: &[(&str, &[u8])] = &[
            ("forwarded", b"for=198.51.100.7"),
            ("x-forwarded-for", b"203.0.113.1"),
        ];
        assert_eq!(client(&t, LB, both), ip("203.0.113.1"));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks() {
        let t = trusted(&["10.0.0.0/8"]);
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        assert!(!t.contains(ip("::ffff:11.1.2.3")));
        let h: &[(&str, &[u8])] = &[("x-forwarded-for", b"::ffff:10.0.0.1, 198.51.100.7")];
        assert_eq!(client(&t, "::ffff:10.0.0.5", h), ip("198.51.100.7"));
    }

    #[test]
    fn entries_are_cidrs_or_addresses() {
        assert!(TrustedProxies::parse_entry("10.0.0.0/8").is_some());
        assert!(TrustedProxies::parse_entry("fd00::/8").is_some());
        assert!(TrustedProxies::parse_entry("127.0.0.2").is_some());
        assert!(TrustedProxies::parse_entry("::1").is_some());
        assert!(TrustedProxies::parse_entry("10.0.0.0/33").is_none());
        assert!(TrustedProxies::parse_entry("localhost").is_none());
        // Host bits are dropped: 10.1.2.3/8 is 10.0.0.0/8.
        assert!(trusted(&["10.1.2.3/8"]).contains(ip("10.200.0.1")));
    }
}
