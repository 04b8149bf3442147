//! The PROXY protocol (v1 text and v2 binary, HAProxy's spec) on the public listener:
//! `[listeners] proxy_protocol = true`, for L4 load balancers (AWS NLB, HAProxy in TCP mode)
//! that pass a connection on byte for byte and say in a header who opened it.
//!
//! With the flag on, every connection must start with a valid header, or it is closed: a
//! listener that accepted connections without one would let anyone reaching it directly claim
//! any address. The header's source address then replaces the TCP peer everywhere (per-IP
//! connection cap, `trusted_proxies`, the client IP): the L4 balancer is trusted by turning the
//! flag on, and what it reports is the client's TCP address as if the client had connected
//! directly. A `LOCAL` command (the balancer's own health checks) or an `UNKNOWN`/unspecified
//! address keeps the real peer. With the flag off, headers are never read.
//!
//! pingora 0.9 has a hook for this only before a TLS handshake that pingora runs itself
//! (`PreTlsProcess`), not on plain listeners, and keygate runs its TLS handshakes in
//! `connections`; so [`accept`] reads the header there, off the raw TCP stream, before any
//! handshake, for the plain and the TLS listener alike (pingora's `Stream` puts back the bytes
//! read past the header). The parsing itself is the `ppp` crate's.

use std::net::SocketAddr;

use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A v1 header is at most 107 bytes; a v2 one is 16 plus its addresses and TLVs. Balancers send
/// a few TLVs (AWS: the VPC endpoint id); more than this is not a header keygate accepts.
const MAX_HEADER: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before a whole PROXY protocol header")]
    Closed,
    #[error("not a valid PROXY protocol header")]
    Invalid,
    #[error("a PROXY protocol header is only read from a TCP stream")]
    NotTcp,
}

/// What a header said: the client's address (`None`: keep the peer), and how many of the bytes
/// read it took.
struct Parsed {
    source: Option<SocketAddr>,
    len: usize,
}

/// Reads one header from `stream`. Bytes read past it are returned to be put back.
async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Option<SocketAddr>, Vec<u8>), ProxyHeaderError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        filled += n;
        let header = HeaderResult::parse(&buf[..filled]);
        if header.is_incomplete() {
            if filled == buf.len() {
                return Err(ProxyHeaderError::Invalid);
            }
            continue;
        }
        let parsed = parsed(header).ok_or(ProxyHeaderError::Invalid)?;
        let rest = buf.get(parsed.len..filled).unwrap_or_default().to_vec();
        return Ok((parsed.source, rest));
    }
}

fn parsed(header: HeaderResult<'_>) -> Option<Parsed> {
    match header {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Some(Parsed {
                source,
                len: h.header.len(),
            })
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                // A UNIX-socket or unspecified source says nothing about a client IP.
                (ppp::v2::Command::Proxy, _) => None,
            };
            Some(Parsed {
                source,
                len: h.len(),
            })
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => None,
    }
}

/// Reads the header off a plain TCP stream, puts back what followed it, and makes the header's
/// source the stream's peer address.
pub(super) async fn accept(stream: Stream) -> Result<Stream, ProxyHeaderError> {
    if !stream.as_any().is::<L4Stream>() {
        return Err(ProxyHeaderError::NotTcp);
    }
    let mut l4 = stream
        .into_any()
        .downcast::<L4Stream>()
        .map_err(|_| ProxyHeaderError::NotTcp)?;
    read_into(&mut l4).await?;
    Ok(l4)
}

async fn read_into(l4: &mut L4Stream) -> Result<(), ProxyHeaderError> {
    let (source, rest) = read_header(l4).await?;
    l4.rewind(&rest);
    if let Some(source) = source {
        set_peer(l4, source);
    }
    Ok(())
}

/// Replaces the peer address pingora reports for this connection (`Session::client_addr`).
fn set_peer(l4: &mut L4Stream, source: SocketAddr) {
    use std::os::unix::io::AsRawFd;
    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
    let _ = digest.peer_addr.set(Some(PeerAddr::Inet(source)));
    if let Some(local) = l4.get_socket_digest().and_then(|d| d.local_addr().cloned()) {
        let _ = digest.local_addr.set(Some(local));
    }
    l4.set_socket_digest(digest);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<(Option<SocketAddr>, Vec<u8>), ProxyHeaderError> {
        let mut input = bytes;
        read_header(&mut input).await
    }

    #[tokio::test]
    async fn v1_tcp4_and_tcp6_with_the_request_after_it() {
        let (source, rest) =
            read(b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n")
                .await
                .expect("header");
        assert_eq!(source, Some("198.51.100.7:5555".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (source, rest) = read(b"PROXY TCP6 2001:db8::1 ::1 5555 80\r\n")
            .await
            .expect("header");
        assert_eq!(source, Some("[2001:db8::1]:5555".parse().unwrap()));
        assert!(rest.is_empty());
        let (source, _) = read(b"PROXY UNKNOWN\r\n").await.expect("header");
        assert_eq!(source, None);
    }

    #[tokio::test]
    async fn v2_proxy_and_local() {
        let client: SocketAddr = "198.51.100.7:5555".parse().unwrap();
        let server: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .expect("v2");
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"GET /");
        let (source, rest) = read(&bytes).await.expect("header");
        assert_eq!(source, Some(client));
        assert_eq!(rest, b"GET /");
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .expect("v2");
        assert_eq!(read(&local).await.expect("header").0, None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 999.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 5555 80\n",
            b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c",
        ] {
            assert!(read(bad).await.is_err(), "{bad:?}");
        }
        // Cut short: the connection closed before the header ended.
        assert!(matches!(
            read(b"PROXY TCP4 1.2.3.4").await,
            Err(ProxyHeaderError::Closed)
        ));
        // Endless: never a header.
        let long = [b'A'; 4096];
        assert!(read(&long).await.is_err());
        let mut v1_long = b"PROXY TCP4 ".to_vec();
        v1_long.extend([b'1'; 300]);
        assert!(read(&v1_long).await.is_err());
    }
}
