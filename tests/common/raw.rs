//! Requests sent byte for byte as written: no client normalises the path or the header names,
//! which is what attack regression tests need.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `request` as written and returns the status and the body.
pub fn raw(to: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(to).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A GET of `path` with `headers` (each line ending in `\r\n`) as written.
pub fn raw_get(to: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    raw(
        to,
        &format!("GET {path} HTTP/1.1\r\nHost: keygate\r\n{headers}Connection: close\r\n\r\n"),
    )
}

/// A connection to `to` from the local address `from` (`127.0.0.2`, `127.0.0.3`...: on Linux all
/// of 127.0.0.0/8 is loopback, so each is a distinct client IP to keygate).
pub fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = rt.block_on(async {
        let socket = match from {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(from, 0))?;
        socket.connect(to).await?.into_std()
    })?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// A response read off a raw connection: status, header lines, body.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawAnswer {
    /// The first header of that name (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Parses a whole answer read to the end of the connection; `None` when nothing (or no status
/// line) came back.
pub fn parse_answer(bytes: &[u8]) -> Option<RawAnswer> {
    let text = String::from_utf8_lossy(bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.get(9..12)?.parse().ok()?;
    Some(RawAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// Sends `request` (`Connection: close` expected in it) from `from` and reads the answer to the
/// end of the connection.
pub fn raw_from(from: IpAddr, to: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut stream = connect_from(from, to).expect("connect");
    stream.write_all(request).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    parse_answer(&answer)
        .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(&answer)))
}
