//! Requests sent byte for byte as written: no client normalises the path or the header names,
//! which is what attack regression tests need.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
