//! Slow and greedy clients on the public listener: a per-client-IP cap on open connections and a
//! total deadline for reading each request's header.
//!
//! Pingora 0.9 bounds each header *read* (`read_timeout`, 60 s) but not the whole header, so a
//! client sending one byte every few seconds holds its connection (and a file descriptor)
//! forever; its `ConnectionFilter` sees only the accept, never the close, so it cannot count open
//! connections. Both are done here instead, by wrapping the proxy app: [`GuardedApp`] sees each
//! accepted stream before pingora's HTTP code does, refuses it when its IP is at the cap, and hands
//! pingora a [`DeadlineStream`] that fails reads once the header deadline passes.
//!
//! Both public listeners are endpoints of one service (see [`TlsEndpoint`]); on the TLS
//! listener's address the handshake is done here too, after the connection has its slot and
//! within the header deadline: done by pingora's listener, before any app sees the stream, a
//! client could hold uncounted half-open handshakes for pingora's 60 s each. The header deadline
//! then starts when the handshake ends.
//!
//! Approximation: the stream does not parse HTTP, it watches the (decrypted) bytes. A header is
//! complete at the first `\r\n\r\n` read; the next request's deadline starts at its first byte
//! after the response began (a non-1xx status line written). Body bytes read after an early
//! response count as a new header, so such a body must arrive within the deadline too. HTTP/2
//! (h2c or ALPN `h2`) opens with a preface holding `\r\n\r\n`, so the deadline covers the
//! preface and then stays off: h2 frames never start with `HTTP/`, and an idle h2 connection is
//! closed by pingora's h2 idle timeout instead. h2c's peek at the preface is under the deadline.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::proxy_protocol;
use crate::forwarded::TrustedProxies;
use crate::metrics::Metrics;

/// The proxy app behind the connection cap and the header deadline.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    limits: Arc<Limits>,
    /// The TLS listener, when there is one: connections accepted on its address get the
    /// handshake.
    tls: Option<TlsEndpoint>,
}

/// The TLS listener's address and handshake.
///
/// Why one app (and one pingora service) for both listeners: each pingora service has its own
/// runtime, and the upstream connection pool is the proxy's. Served by two services, the plain
/// listener's requests reused upstream connections that the TLS service had opened, whose
/// readiness arrives through the other runtime's reactor: a thread switch per upstream read, and
/// plain traffic measured 25% slower for as long as those connections lived.
struct TlsEndpoint {
    address: std::net::SocketAddr,
    acceptor: Arc<Acceptor>,
}

impl TlsEndpoint {
    /// Whether a connection accepted on `local` came in on this listener.
    fn accepted_on(&self, local: std::net::SocketAddr) -> bool {
        local.port() == self.address.port()
            && (self.address.ip().is_unspecified()
                || local.ip().to_canonical() == self.address.ip().to_canonical())
    }
}

/// Open connections per client IP, and the settings.
struct Limits {
    /// Sharded, so accepts from different clients never wait on one lock.
    open: dashmap::DashMap<IpAddr, usize>,
    max_per_ip: usize,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Not capped: every client behind a trusted proxy arrives on its connections, so a cap
    /// on them would cap the whole site, and which client a kept-alive connection serves
    /// changes from request to request (limiting those clients is the balancer's job, and
    /// keygate's per-IP request limits still apply to each of them).
    trusted: TrustedProxies,
    /// Every connection starts with a PROXY protocol header (see `proxy_protocol`).
    proxy_protocol: bool,
}

/// How the public listener guards its connections.
pub struct Guards {
    pub max_per_ip: usize,
    pub header_timeout: Duration,
    pub trusted: TrustedProxies,
    pub proxy_protocol: bool,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: Arc<A>, guards: Guards, metrics: Arc<Metrics>) -> Self {
        let Guards {
            max_per_ip,
            header_timeout,
            trusted,
            proxy_protocol,
        } = guards;
        Self {
            inner,
            limits: Arc::new(Limits {
                open: dashmap::DashMap::new(),
                max_per_ip,
                header_timeout,
                metrics,
                trusted,
                proxy_protocol,
            }),
            tls: None,
        }
    }

    /// Connections accepted on `address` (the TLS listener, an endpoint of the same service)
    /// get a TLS handshake first. A client's plain and TLS connections count against one cap.
    pub fn with_tls(mut self, address: std::net::SocketAddr, acceptor: Arc<Acceptor>) -> Self {
        self.tls = Some(TlsEndpoint { address, acceptor });
        self
    }
}

/// Runs the TLS handshake on an accepted TCP stream, within the header deadline.
async fn handshake(acceptor: &Acceptor, stream: Stream, limits: &Limits) -> Option<Stream> {
    // pingora's TLS stream wraps a concrete transport; a plain TCP listener hands the app its
    // own L4 stream, boxed.
    let l4 = match stream
        .into_any()
        .downcast::<pingora::protocols::l4::stream::Stream>()
    {
        Ok(l4) => l4,
        Err(_) => {
            tracing::error!("TLS listener: accepted stream is not a TCP stream; closing it");
            return None;
        }
    };
    match tokio::time::timeout(limits.header_timeout, acceptor.tls_handshake(*l4)).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            limits.metrics.connection_header_timeout();
            None
        }
    }
}

/// One counted connection of `ip`; dropping it uncounts it.
struct Slot {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Limits {
    /// A slot for a connection from `ip`, or `None` when `ip` is at the cap. A connection whose
    /// peer address is unknown is counted only in the gauge.
    fn take(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<Slot> {
        let ip = ip.filter(|ip| !self.trusted.contains(*ip));
        if let Some(ip) = ip {
            let mut n = self.open.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return None;
            }
            *n += 1;
        }
        self.metrics.open_connections_add(1);
        Some(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.metrics.open_connections_add(-1);
        if let Some(ip) = self.ip {
            self.limits.open.remove_if_mut(&ip, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Which listener took the connection: read before a PROXY header replaces the addresses.
        // With a TLS listener, a connection whose local address cannot be read is closed rather
        // than guessed plain: a wrong guess would serve plain HTTP on the TLS port.
        let tls = match &self.tls {
            None => None,
            Some(tls) => {
                let local = stream.get_socket_digest().and_then(|d| {
                    d.local_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| std::net::SocketAddr::new(a.ip(), a.port()))
                });
                let Some(local) = local else {
                    tracing::warn!("connection closed: its local address could not be read");
                    return None;
                };
                tls.accepted_on(local).then_some(tls)
            }
        };
        // The PROXY header comes first (before a TLS handshake), within the header deadline;
        // its address is the peer from here on (the cap below counts it).
        let stream = if self.limits.proxy_protocol {
            let read = proxy_protocol::accept(stream);
            match tokio::time::timeout(self.limits.header_timeout, read).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "connection closed: no valid PROXY protocol header");
                    self.limits.metrics.connection_bad_proxy_header();
                    return None;
                }
                Err(_) => {
                    self.limits.metrics.connection_bad_proxy_header();
                    return None;
                }
            }
        } else {
            stream
        };
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let Some(slot) = self.limits.take(ip) else {
            self.limits.metrics.connection_over_ip_limit();
            return None; // dropping the stream closes it
        };
        let stream = match tls {
            None => stream,
            Some(tls) => handshake(&tls.acceptor, stream, &self.limits).await?,
        };
        let guarded = DeadlineStream::new(stream, slot);
        // The inner app loops over kept-alive requests itself and returns `None` at the end, so
        // the slot is held for the connection's whole life.
        self.inner.process_new(Box::new(guarded), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Where a connection is in its request cycle, as far as its bytes tell.
#[derive(Debug)]
enum Phase {
    /// Reading a header; `matched` counts the bytes of `\r\n\r\n` seen so far.
    Header { matched: usize },
    /// The header is complete; the request is being handled.
    Handling,
    /// A response has begun; the next byte read starts a new header.
    Answered,
}

/// The accepted stream, failing reads once a header has taken longer than the deadline.
pub struct DeadlineStream {
    inner: Stream,
    phase: Phase,
    /// When the header being read must be complete.
    header_deadline: Instant,
    /// A timer that wakes the connection at or before `header_deadline`. It is not re-armed
    /// for each request (that costs a timer-wheel update per request): it keeps the deadline it
    /// has, and when it fires early (an earlier request's deadline) it is moved to the current
    /// one then.
    timer: Pin<Box<Sleep>>,
    slot: Slot,
}

impl std::fmt::Debug for DeadlineStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl DeadlineStream {
    fn new(inner: Stream, slot: Slot) -> Self {
        let header_deadline = Instant::now() + slot.limits.header_timeout;
        Self {
            inner,
            phase: Phase::Header { matched: 0 },
            header_deadline,
            timer: Box::pin(tokio::time::sleep_until(header_deadline)),
            slot,
        }
    }

    /// Whether the current header's deadline passed; otherwise the timer is set to wake `cx`
    /// by then.
    fn header_deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.header_deadline {
                return true;
            }
            // An earlier header's deadline: wait for this one's instead.
            let at = self.header_deadline;
            self.timer.as_mut().reset(at);
        }
        false
    }

    /// Advances the phase over bytes just read.
    fn saw_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if matches!(self.phase, Phase::Answered) {
            self.header_deadline = Instant::now() + self.slot.limits.header_timeout;
            self.phase = Phase::Header { matched: 0 };
        }
        if let Phase::Header { matched } = &mut self.phase {
            match header_end(*matched, bytes) {
                Ok(()) => self.phase = Phase::Handling,
                Err(now_matched) => *matched = now_matched,
            }
        }
    }

    /// Advances the phase over bytes about to be written: a final status line ends the request.
    fn saw_write(&mut self, bytes: &[u8]) {
        let informational = bytes.len() > 9 && bytes.starts_with(b"HTTP/1.") && bytes[9] == b'1';
        if matches!(self.phase, Phase::Handling) && bytes.starts_with(b"HTTP/") && !informational {
            self.phase = Phase::Answered;
        }
    }
}

/// The end of a header, `\r\n\r\n`.
const HEADER_END: &[u8] = b"\r\n\r\n";

/// Whether `bytes` complete a header whose last `matched` bytes so far were the start of
/// [`HEADER_END`]; otherwise how many of its bytes the data now ends with.
///
/// A vectorised search (`memchr::memmem`) over the chunk: a request header is read in one or
/// two chunks, and a byte-at-a-time scan of it was measurable per request.
fn header_end(matched: usize, bytes: &[u8]) -> Result<(), usize> {
    // A match begun in an earlier chunk, finished at the start of this one.
    if matched > 0 {
        let rest = &HEADER_END[matched..];
        let n = rest.len().min(bytes.len());
        if bytes[..n] == rest[..n] {
            return if n == rest.len() {
                Ok(())
            } else {
                Err(matched + n)
            };
        }
    }
    // Built once: `memmem::find` builds its searcher on every call.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(HEADER_END));
    if FINDER.find(bytes).is_some() {
        return Ok(());
    }
    // The longest proper prefix of the terminator that the chunk ends with (`\r`, `\r\n` or
    // `\r\n\r`). One that also spans the earlier chunk was found above.
    Err((1..HEADER_END.len())
        .rev()
        .find(|&n| bytes.ends_with(&HEADER_END[..n]))
        .unwrap_or(0))
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw_read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if matches!(this.phase, Phase::Header { .. }) && this.header_deadline_passed(cx) {
                    this.slot.limits.metrics.connection_header_timeout();
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request header deadline passed",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.saw_write(buf);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for DeadlineStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for DeadlineStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

/// The TLS stream's details, so pingora sees the ALPN (HTTP/2) and the TLS digest.
impl Ssl for DeadlineStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

#[async_trait]
impl Peek for DeadlineStream {
    /// pingora peeks for the h2c preface before reading anything: a client that sends nothing
    /// must not wait out the header deadline here.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        match tokio::time::timeout_at(self.header_deadline, self.inner.try_peek(buf)).await {
            Ok(peeked) => peeked,
            Err(_) => {
                self.slot.limits.metrics.connection_header_timeout();
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request header deadline passed",
                ))
            }
        }
    }
}

impl GetTimingDigest for DeadlineStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for DeadlineStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for DeadlineStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
