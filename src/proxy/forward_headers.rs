//! The forwarding headers keygate sets on every forwarded request: `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Real-IP`, `X-Request-Id`, and (only when a trusted proxy sent one)
//! `Forwarded`.
//!
//! - From a peer that is not a trusted proxy: `X-Forwarded-For` is the peer alone,
//!   `X-Forwarded-Proto` is how keygate was reached, and every client-sent `X-Forwarded-*` and
//!   `Forwarded` is dropped (see `strip`).
//! - From a trusted proxy: `X-Forwarded-For` is the chain it sent, as received, with the peer
//!   appended; its `X-Forwarded-Proto` (`http` or `https`) is kept, since it saw the client's
//!   connection; its `Forwarded` gets this hop appended (`for=<peer>;proto=<proto>`).
//! - `X-Real-IP` is the client IP (see [`crate::forwarded`]), `X-Request-Id` the request's id.
//!
//! Header names are static strings, so pingora keeps them without a copy; the common case (an
//! untrusted peer) formats the peer's address once, on the stack.

use std::io::Write as _;
use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;

pub(super) const X_FORWARDED_FOR: &str = crate::forwarded::X_FORWARDED_FOR;
pub(super) const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub(super) const X_REAL_IP: &str = "x-real-ip";
pub(super) const X_REQUEST_ID: &str = "x-request-id";
const FORWARDED: &str = "forwarded";

/// What keygate knows about one request's hop.
pub(super) struct Hop<'a> {
    /// The TCP peer (or the PROXY protocol's source address).
    pub(super) peer: Option<IpAddr>,
    /// The peer is a trusted proxy.
    pub(super) trusted: bool,
    pub(super) client_ip: Option<IpAddr>,
    /// The client reached keygate over TLS.
    pub(super) tls: bool,
    pub(super) request_id: Option<&'a HeaderValue>,
}

/// The values to set, read from the request as the client sent it: taken before `strip` runs.
pub(super) struct Forwarding {
    xff: Option<HeaderValue>,
    real_ip: Option<HeaderValue>,
    proto: HeaderValue,
    forwarded: Option<HeaderValue>,
}

impl Forwarding {
    pub(super) fn read(received: &HeaderMap, hop: &Hop<'_>) -> Forwarding {
        let own_proto = if hop.tls { "https" } else { "http" };
        let peer = hop.peer.map(ip_value);
        let real_ip = match hop.client_ip {
            Some(client) if Some(client) == hop.peer => peer.clone(),
            Some(client) => Some(ip_value(client)),
            None => None,
        };
        if !hop.trusted {
            return Forwarding {
                xff: peer,
                real_ip,
                proto: HeaderValue::from_static(own_proto),
                forwarded: None,
            };
        }
        let proto = match received.get(X_FORWARDED_PROTO).map(HeaderValue::as_bytes) {
            Some(p) if p.eq_ignore_ascii_case(b"https") => HeaderValue::from_static("https"),
            Some(p) if p.eq_ignore_ascii_case(b"http") => HeaderValue::from_static("http"),
            _ => HeaderValue::from_static(own_proto),
        };
        // The peer (or nothing) and this hop's `Forwarded` node are written straight into the
        // joined value: no `String` of their own.
        let xff = match hop.peer {
            Some(p) => appended(received, X_FORWARDED_FOR, format_args!("{p}")),
            None => appended(received, X_FORWARDED_FOR, format_args!("")),
        };
        let forwarded = received.contains_key(FORWARDED).then(|| match hop.peer {
            Some(IpAddr::V6(v6)) => appended(
                received,
                FORWARDED,
                format_args!("for=\"[{v6}]\";proto={own_proto}"),
            ),
            Some(IpAddr::V4(v4)) => appended(
                received,
                FORWARDED,
                format_args!("for={v4};proto={own_proto}"),
            ),
            None => appended(
                received,
                FORWARDED,
                format_args!("for=unknown;proto={own_proto}"),
            ),
        });
        Forwarding {
            xff: xff.or(peer),
            real_ip,
            proto,
            forwarded: forwarded.flatten(),
        }
    }

    /// Sets the headers on the upstream request (from which `strip` already removed the
    /// client's versions).
    pub(super) fn apply(self, upstream: &mut RequestHeader, hop: &Hop<'_>) -> Result<()> {
        if let Some(xff) = self.xff {
            upstream.append_header(X_FORWARDED_FOR, xff)?;
        }
        if let Some(real_ip) = self.real_ip {
            upstream.append_header(X_REAL_IP, real_ip)?;
        }
        upstream.append_header(X_FORWARDED_PROTO, self.proto)?;
        if let Some(forwarded) = self.forwarded {
            upstream.insert_header(FORWARDED, forwarded)?;
        }
        if let Some(id) = hop.request_id {
            upstream.append_header(X_REQUEST_ID, id.clone())?;
        }
        Ok(())
    }
}

/// Every line of `name` as received, joined with `, `, then `, {last}`; `None` when the
/// request had no such header.
fn appended(
    received: &HeaderMap,
    name: &str,
    last: std::fmt::Arguments<'_>,
) -> Option<HeaderValue> {
    let mut lines = received.get_all(name).iter().peekable();
    lines.peek()?;
    let mut value = Vec::with_capacity(64);
    for line in lines {
        value.extend_from_slice(line.as_bytes());
        value.extend_from_slice(b", ");
    }
    // Writing to a `Vec` does not fail.
    value.write_fmt(last).ok()?;
    // The `Vec` becomes the value's bytes as it is (validated, not copied).
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
}

/// An address as a header value, formatted on the stack (the value's own bytes are the only
/// allocation).
pub(super) fn ip_value(ip: IpAddr) -> HeaderValue {
    if let IpAddr::V4(v4) = ip {
        return ipv4_value(v4);
    }
    // The longest text form of an address (IPv4-mapped IPv6) is 45 bytes.
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let len = match write!(cursor, "{ip}") {
        Ok(()) => cursor.position() as usize,
        Err(_) => 0,
    };
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// An IPv4 address in dotted decimal, without `fmt`: written for every forwarded request
/// (`X-Forwarded-For`, `X-Real-IP`), where `write!("{ip}")` through the formatting machinery
/// cost several times the few digits it writes.
fn ipv4_value(ip: std::net::Ipv4Addr) -> HeaderValue {
    let mut buf = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        let mut digits = itoa::Buffer::new();
        let text = digits.format(octet).as_bytes();
        buf[len..len + text.len()].copy_from_slice(text);
        len += text.len();
    }
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod ip_tests {
    use super::*;

    #[test]
    fn addresses_read_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.1.100",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let addr: IpAddr = ip.parse().expect("address");
            assert_eq!(
                ip_value(addr).to_str().ok(),
                Some(addr.to_string().as_str())
            );
        }
    }
}
