//! TLS and HTTP/2 through the real binary: a TLS listener with certificates chosen by SNI and
//! re-read on SIGHUP, TLS 1.2 / 1.3 only, TLS to upstreams with a CA file, HTTP/2 over TLS (ALPN)
//! and h2c, and gRPC (trailers) to an h2c upstream. Certificates are made here with rcgen; the
//! clients are rustls (explicit versions, a kept-alive connection), the h2 crate and openssl.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- certificates

/// A certificate authority for test certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses).
    fn leaf(&self, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Leaf {
    /// Writes `{stem}.pem` and `{stem}.key` under `dir`; their paths.
    fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

// ---------------------------------------------------------------- TLS client

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

struct Client {
    roots: Arc<rustls::RootCertStore>,
}

impl Client {
    fn trusting(ca: &Ca) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.issuer.der().clone()).expect("root");
        Client {
            roots: Arc::new(roots),
        }
    }

    /// A TLS connection to `addr` naming `sni` (an IP address sends no SNI), offering `alpn`,
    /// limited to `versions`.
    async fn connect_with(
        &self,
        addr: SocketAddr,
        sni: &str,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(sni.to_string()).expect("server name");
        let tcp = TcpStream::connect(addr).await?;
        tokio::time::timeout(WAIT, connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
    }

    async fn connect(&self, addr: SocketAddr, sni: &str) -> Tls {
        self.connect_with(addr, sni, &[b"http/1.1"], rustls::ALL_VERSIONS)
            .await
            .unwrap_or_else(|e| panic!("TLS to {addr} as {sni}: {e}"))
    }
}

/// The leaf certificate the server presented.
fn served(conn: &Tls) -> CertificateDer<'static> {
    conn.get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .clone()
}

/// One HTTP/1.1 request on an open connection (kept alive); the response, read by its
/// `Content-Length`.
async fn h1<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    conn: &mut S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: keygate.test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.expect("write request");
    tokio::time::timeout(WAIT, read_response(conn))
        .await
        .expect("response in time")
}

async fn read_response<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> Resp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = conn.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

// ---------------------------------------------------------------- HTTP/2 client

/// An HTTP/2 response with its trailers.
struct H2Resp {
    resp: Resp,
    trailers: Option<http::HeaderMap>,
}

/// An HTTP/2 connection over `io` (TLS with ALPN h2, or cleartext with prior knowledge).
async fn h2_client<S>(io: S) -> h2::client::SendRequest<Bytes>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

async fn h2_request(
    send: &mut h2::client::SendRequest<Bytes>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> H2Resp {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("https://keygate.test{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(()).expect("request");
    let ready = tokio::time::timeout(WAIT, send.clone().ready())
        .await
        .expect("h2 ready in time")
        .expect("h2 ready");
    *send = ready;
    let (response, mut stream) = send
        .send_request(request, body.is_none())
        .expect("send request");
    if let Some(body) = body {
        stream.send_data(body, true).expect("send body");
    }
    let read = async move {
        let response = response.await.expect("h2 response");
        let (parts, mut body) = response.into_parts();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("h2 body");
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.expect("h2 trailers");
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        H2Resp {
            resp: Resp {
                status: parts.status.as_u16(),
                headers,
                body: String::from_utf8_lossy(&bytes).to_string(),
            },
            trailers,
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("h2 response in time")
}

// ---------------------------------------------------------------- upstreams

/// An HTTP/1.1 upstream over TLS answering every request with JSON naming its path and the key
/// id keygate vouched for.
fn tls_upstream(leaf: &Leaf) -> SocketAddr {
    let certs = vec![leaf.der.clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(
        KeyPair::from_pem(&leaf.key_pem)
            .expect("key")
            .serialize_der(),
    )
    .expect("key der");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match tls.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        let key_id = head
                            .lines()
                            .find_map(|l| l.strip_prefix("x-keygate-key-id: "))
                            .unwrap_or("")
                            .to_string();
                        let body = json!({"tls": true, "path": path, "key_id": key_id}).to_string();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if tls.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
}

/// A gRPC-like h2c upstream: answers each request with its body, `application/grpc`, the
/// request headers it saw (as `x-seen-*`), then trailers `grpc-status: 0`, `grpc-message: ok`.
fn h2c_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = conn.accept().await {
                        tokio::spawn(async move {
                            let (parts, mut body) = request.into_parts();
                            let mut bytes = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                bytes.extend_from_slice(&chunk);
                            }
                            let seen = |name: &str| {
                                parts
                                    .headers
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string()
                            };
                            let response = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .header("x-seen-content-type", seen("content-type"))
                                .header("x-seen-te", seen("te"))
                                .header("x-seen-key-id", seen("x-keygate-key-id"))
                                .header("x-seen-path", parts.uri.path())
                                .body(())
                                .expect("response");
                            let Ok(mut stream) = respond.send_response(response, false) else {
                                return;
                            };
                            let _ = stream.send_data(Bytes::from(bytes), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().expect("value"));
                            trailers.insert("grpc-message", "ok".parse().expect("value"));
                            let _ = stream.send_trailers(trailers);
                        });
                    }
                });
            }
        });
    });
    addr
}

// ---------------------------------------------------------------- keygate with TLS

const UNAUTHORIZED_TEMPLATE: &str = r#"
[errors.missing_credential]
body = '{"error":{"code":"{reason}","detail":"{message}"}}'

[errors.upstream_unavailable]
body = '{"error":{"code":"{reason}","detail":"{message}"}}'
"#;

/// Keygate with a TLS listener serving `certs` (cert, key) pairs; `extra` is appended.
fn start_tls(
    echo: &Echo,
    certs: &[(PathBuf, PathBuf)],
    extra: &str,
    server: &str,
) -> (Keygate, SocketAddr) {
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let certs: Vec<String> = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect();
    let mut opts = Options::new(echo.addr);
    opts.server_toml = server.to_string();
    opts.extra_toml = format!(
        "{extra}\n{UNAUTHORIZED_TEMPLATE}\n[listeners.tls]\naddress = \"{tls}\"\ncerts = [{}]\n",
        certs.join(", ")
    );
    let kg = Keygate::start(&opts);
    wait_until("the TLS listener", WAIT, || {
        std::net::TcpStream::connect(tls).is_ok()
    });
    (kg, tls)
}

fn key_for(kg: &Keygate) -> String {
    let account = kg.create_account("acme");
    kg.create_key(&account, json!({})).1
}

/// Keygate serving one certificate, for `a.keygate.test` from [`OneCert::ca`], and a key.
/// Fields drop in order: keygate stops before its upstream and certificate files go.
struct OneCert {
    kg: Keygate,
    echo: Echo,
    ca: Ca,
    tls: SocketAddr,
    key: String,
    _dir: tempfile::TempDir,
}

fn one_cert() -> OneCert {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["a.keygate.test"]);
    let echo = Echo::start();
    let (kg, tls) = start_tls(&echo, &[leaf.write(dir.path(), "a")], "", "");
    let key = key_for(&kg);
    OneCert {
        kg,
        echo,
        ca,
        tls,
        key,
        _dir: dir,
    }
}

// ---------------------------------------------------------------- TLS downstream

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_requests_and_rejections_over_tls_with_the_certificate_sni_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let a = ca.leaf(&["a.keygate.test", "127.0.0.1"]);
    let b = ca.leaf(&["b.keygate.test"]);
    let pair_a = a.write(dir.path(), "a");
    let pair_b = b.write(dir.path(), "b");
    let echo = Echo::start();
    let (kg, tls) = start_tls(&echo, &[pair_a, pair_b], "", "");
    let key = key_for(&kg);
    let auth = bearer(&key);
    let client = Client::trusting(&ca);

    let mut conn = client.connect(tls, "a.keygate.test").await;
    assert_eq!(
        served(&conn),
        a.der,
        "SNI a.keygate.test gets a's certificate"
    );
    let r = h1(&mut conn, "GET", "/v1/things", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["path"], "/v1/things");
    assert!(seen["headers"]["x-keygate-key-id"].as_str().is_some());
    assert!(
        seen["headers"].get("authorization").is_none(),
        "the key reached the upstream: {seen}"
    );
    // The same kept-alive connection: a rejection in the configured format.
    let r = h1(&mut conn, "GET", "/v1/things", &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.json()["error"]["code"], "missing_credential");
    assert!(r.json()["error"]["detail"].is_string(), "{}", r.body);

    let conn = client.connect(tls, "b.keygate.test").await;
    assert_eq!(
        served(&conn),
        b.der,
        "SNI b.keygate.test gets b's certificate"
    );
    // No SNI (an IP address): the first certificate listed.
    let conn = client.connect(tls, "127.0.0.1").await;
    assert_eq!(served(&conn), a.der, "no SNI gets the first certificate");

    // The plain listener is unchanged.
    let r = call(&kg, "/v1/plain", &key);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_accepted_and_1_1_is_refused() {
    let OneCert { ca, tls, key, .. } = &one_cert();
    let (tls, key) = (*tls, key.as_str());
    let client = Client::trusting(ca);
    for (version, name) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut conn = client
            .connect_with(tls, "a.keygate.test", &[b"http/1.1"], &[version])
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(conn.get_ref().1.protocol_version(), Some(name));
        let r = h1(
            &mut conn,
            "GET",
            "/v1/x",
            &[("authorization", &bearer(key))],
        )
        .await;
        assert_eq!(r.status, 200, "{name:?}: {}", r.body);
    }

    // TLS 1.1, from a client allowed to offer it: the server answers its hello with an alert
    // (rustls sends handshake_failure). Had the client refused on its own, it would have said
    // "no protocols available" and sent nothing.
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &tls.to_string(), "-tls1_1"])
        .args([
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-servername",
            "a.keygate.test",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("openssl ({e}); install it: apt-get install -y openssl"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "TLS 1.1 was accepted:\n{text}");
    assert!(
        text.contains("Protocol  : TLSv1.1") && text.contains("SSL alert number"),
        "expected the server's alert to a TLS 1.1 hello:\n{text}"
    );
    assert!(!text.contains("no protocols available"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_new_certificates_and_open_connections_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let old = ca.leaf(&["a.keygate.test"]);
    let pair = old.write(dir.path(), "a");
    let echo = Echo::start();
    let (kg, tls) = start_tls(&echo, std::slice::from_ref(&pair), "", "");
    let key = key_for(&kg);
    let auth = bearer(&key);
    let client = Client::trusting(&ca);

    let mut before = client.connect(tls, "a.keygate.test").await;
    assert_eq!(served(&before), old.der);
    let r = h1(&mut before, "GET", "/v1/one", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // New certificate and key in the same files, then SIGHUP.
    let new = ca.leaf(&["a.keygate.test"]);
    new.write(dir.path(), "a");
    kg.signal("-HUP");
    kg.wait_for_log("TLS certificates reloaded", 1);
    let fresh = client.connect(tls, "a.keygate.test").await;
    assert_eq!(
        served(&fresh),
        new.der,
        "a new connection gets the new certificate"
    );
    let r = h1(&mut before, "GET", "/v1/two", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "the connection opened before: {}", r.body);

    // A key that does not match: the reload is refused, naming the file, never its content,
    // and the certificates loaded last keep being served.
    let other = ca.leaf(&["other.keygate.test"]);
    std::fs::write(&pair.1, &other.key_pem).expect("write key");
    kg.signal("-HUP");
    kg.wait_for_log("configuration not reloaded", 1);
    let log = kg.log();
    assert!(log.contains("is not the private key of"), "{log}");
    assert!(log.contains(&pair.1.display().to_string()), "{log}");
    let key_body: String = other.key_pem.lines().nth(1).expect("key line").into();
    assert!(
        !log.contains(&key_body),
        "the key's content reached the log"
    );
    let still = client.connect(tls, "a.keygate.test").await;
    assert_eq!(served(&still), new.der);
    let r = h1(&mut before, "GET", "/v1/three", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_shakes_hands_is_closed_at_the_header_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["a.keygate.test"]);
    let echo = Echo::start();
    let (_kg, tls) = start_tls(
        &echo,
        &[leaf.write(dir.path(), "a")],
        "",
        "request_header_timeout_seconds = 1",
    );
    let mut silent = TcpStream::connect(tls).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TLS client was not closed: {read:?}"
    );
}

/// Both listeners are endpoints of one service, told apart by the address a connection came in
/// on: plain HTTP sent to the TLS port is never answered as HTTP (nor forwarded), and a TLS
/// handshake offered to the plain port does not complete, while each port serves its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_public_port_speaks_only_its_own_protocol() {
    let OneCert {
        kg,
        echo,
        ca,
        tls,
        key,
        ..
    } = &one_cert();
    let tls = *tls;
    let auth = bearer(key);

    // Plain HTTP on the TLS port: a TLS alert or a close, never an HTTP answer.
    let mut plain_to_tls = TcpStream::connect(tls).await.expect("connect");
    let request = format!(
        "GET /v1/x HTTP/1.1\r\nHost: a\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    plain_to_tls
        .write_all(request.as_bytes())
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain_to_tls.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "the TLS port answered plain HTTP: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // A TLS handshake on the plain port does not complete.
    let client = Client::trusting(ca);
    let handshake = client
        .connect_with(
            kg.public,
            "a.keygate.test",
            &[b"http/1.1"],
            rustls::ALL_VERSIONS,
        )
        .await;
    assert!(
        handshake.is_err(),
        "the plain port completed a TLS handshake"
    );
    assert_eq!(
        echo.hits(),
        0,
        "a request on the wrong port reached the upstream"
    );

    // Each port still serves its own protocol.
    let mut conn = client.connect(tls, "a.keygate.test").await;
    assert_eq!(
        h1(&mut conn, "GET", "/v1/x", &[("authorization", &auth)])
            .await
            .status,
        200
    );
    let plain = get(
        &format!("http://{}/v1/x", kg.public),
        &[("authorization", &auth)],
    );
    assert_eq!(plain.status, 200);
    assert_eq!(echo.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_tls_connections_share_the_per_ip_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["a.keygate.test"]);
    let echo = Echo::start();
    let (kg, tls) = start_tls(
        &echo,
        &[leaf.write(dir.path(), "a")],
        "",
        "max_connections_per_ip = 2",
    );
    let key = key_for(&kg);
    let client = Client::trusting(&ca);

    // One kept-alive TLS connection and one plain one fill this IP's cap of 2.
    let mut one = client.connect(tls, "a.keygate.test").await;
    let r = h1(
        &mut one,
        "GET",
        "/v1/a",
        &[("authorization", &bearer(&key))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut plain = TcpStream::connect(kg.public).await.expect("connect");
    let r = h1(
        &mut plain,
        "GET",
        "/v1/b",
        &[("authorization", &bearer(&key))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let third = client
        .connect_with(tls, "a.keygate.test", &[b"http/1.1"], rustls::ALL_VERSIONS)
        .await;
    assert!(third.is_err(), "a third connection was served over TLS");

    // Closing the plain one frees a slot for TLS.
    drop(plain);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let attempt = client
            .connect_with(tls, "a.keygate.test", &[b"http/1.1"], rustls::ALL_VERSIONS)
            .await;
        if let Ok(mut conn) = attempt {
            let r = h1(
                &mut conn,
                "GET",
                "/v1/c",
                &[("authorization", &bearer(&key))],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- TLS upstreams

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_checks_the_certificate_against_the_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream_ca = Ca::new("upstream ca");
    let other_ca = Ca::new("another ca");
    let upstream = tls_upstream(&upstream_ca.leaf(&["upstream.test"]));
    let ca_file = dir.path().join("upstream-ca.pem");
    let wrong_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&ca_file, upstream_ca.pem()).expect("write");
    std::fs::write(&wrong_ca_file, other_ca.pem()).expect("write");

    let echo = Echo::start();
    let mut opts = Options::new(echo.addr);
    opts.extra_toml = format!(
        r#"
[upstreams.secure]
address = "{upstream}"
tls = true
sni = "upstream.test"
ca_file = "{ca}"

[upstreams.untrusted]
address = "{upstream}"
tls = true
sni = "upstream.test"
ca_file = "{wrong}"

[[routes]]
name = "secure"
path = "/secure/{{*rest}}"
upstream = "secure"

[[routes]]
name = "untrusted"
path = "/untrusted/{{*rest}}"
upstream = "untrusted"
{UNAUTHORIZED_TEMPLATE}
"#,
        ca = ca_file.display(),
        wrong = wrong_ca_file.display(),
    );
    let kg = Keygate::start(&opts);
    let key = key_for(&kg);

    let r = call(&kg, "/secure/x", &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tls"], true);
    assert_eq!(r.json()["path"], "/secure/x");
    assert!(!r.json()["key_id"].as_str().unwrap_or("").is_empty());
    // Kept alive upstream and reused: a second call works the same.
    assert_eq!(call(&kg, "/secure/y", &key).status, 200);

    let r = call(&kg, "/untrusted/x", &key);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(
        r.json()["error"]["code"],
        "upstream_unavailable",
        "{}",
        r.body
    );
    assert!(r.json()["error"]["detail"].is_string(), "{}", r.body);
    assert!(r.header("server").is_none_or(|s| !s.contains("Pingora")));
}

#[test]
fn check_config_names_bad_tls_files_and_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let (cert, key) = ca.leaf(&["a.keygate.test"]).write(dir.path(), "a");
    let (_, other_key) = ca.leaf(&["b.keygate.test"]).write(dir.path(), "b");
    let missing = dir.path().join("missing.pem");
    let check = |toml: &str| {
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, toml).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run check-config");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let head = format!(
        "[server]\ndata_dir = \"{}\"\n",
        dir.path().join("data").display()
    );
    let tls = |cert: &Path, key: &Path| {
        format!(
            "{head}[listeners.tls]\naddress = \"127.0.0.1:8443\"\ncerts = [\n  {{ cert = \"{}\", key = \"{}\" }},\n]\n",
            cert.display(),
            key.display()
        )
    };

    let (code, out) = check(&tls(&cert, &key));
    assert_eq!(code, Some(0), "{out}");

    let (code, out) = check(&tls(&missing, &key));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("line 6") && out.contains("missing.pem"),
        "{out}"
    );

    let (code, out) = check(&tls(&cert, &other_key));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is not the private key of"), "{out}");
    assert!(out.contains("b.key") && out.contains("a.pem"), "{out}");
    let key_text = std::fs::read_to_string(&other_key).expect("read");
    assert!(
        !out.contains(key_text.lines().nth(1).expect("line")),
        "{out}"
    );

    // With --skip-secrets the files are not read (they live on the deployed machines).
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, tls(&missing, &missing)).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check-config", "--skip-secrets"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");

    // Settings that cannot apply.
    let (code, out) = check(&format!(
        "{head}[upstreams.a]\naddress = \"127.0.0.1:1\"\nverify = false\nca_file = \"{}\"\n\n\
         [upstreams.b]\naddress = \"127.0.0.1:2\"\nprotocol = \"h2\"\n\n\
         [upstreams.c]\naddress = \"127.0.0.1:3\"\ntls = true\nprotocol = \"h2c\"\n\n\
         [upstreams.d]\naddress = \"127.0.0.1:4\"\ntls = true\nca_file = \"{}\"\n",
        cert.display(),
        missing.display()
    ));
    assert_eq!(code, Some(2), "{out}");
    for expected in [
        "`upstreams.a.verify`: applies only with `tls = true`",
        "`upstreams.a.ca_file`: applies only with `tls = true`",
        "`upstreams.b.protocol`",
        "`upstreams.c.protocol`",
        "`upstreams.d.ca_file`: cannot read",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    let (code, out) = check(&format!(
        "{head}[listeners.tls]\naddress = \"127.0.0.1:8443\"\ncerts = []\nciphers = \"x\"\n"
    ));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("ciphers"), "unknown fields are refused: {out}");
}

// ---------------------------------------------------------------- HTTP/2

const H2_ROUTES: &str = r#"
[[routes]]
name = "limited"
path = "/limited/{*rest}"
upstream = "api"
rate_limit = { requests = 1, per_seconds = 3600 }

[[routes]]
name = "balance"
path = "/account/balance"
local = "balance"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_and_local_answers_are_the_same_over_h2_and_h2c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["a.keygate.test"]);
    let echo = Echo::start();
    let (kg, tls) = start_tls(
        &echo,
        &[leaf.write(dir.path(), "a")],
        &format!("{H2_ROUTES}\n"),
        "",
    );
    // A second keygate with `[listeners] h2c = true` on its plain listener, in a config written
    // here (the harness writes `[listeners]` itself).
    let routes = format!("{DEFAULT_ROUTES}\n{H2_ROUTES}");
    let plain = Keygate::start_with_config(|slots| {
        format!(
            r#"
[server]
data_dir = "{data}"
request_header_timeout_seconds = 1
graceful_shutdown_timeout_seconds = 1

[listeners]
public = "{public}"
admin = "{admin}"
ops = "{ops}"
h2c = true

[secrets]
pepper = {{ env = "KEYGATE_TEST_PEPPER" }}
admin_token = {{ env = "KEYGATE_TEST_ADMIN_TOKEN" }}

[keys]
prefix = "kg_test_"

[upstreams.api]
address = "{upstream}"

{routes}
{errors}
"#,
            data = slots.data_dir.display(),
            public = slots.public,
            admin = slots.admin,
            ops = slots.ops,
            upstream = echo.addr,
            routes = routes,
            errors = UNAUTHORIZED_TEMPLATE,
        )
    });

    for (label, kg) in [("h2 over TLS", &kg), ("h2c", &plain)] {
        let key = key_for(kg);
        let auth = bearer(&key);
        let mut send = if label == "h2c" {
            h2_client(TcpStream::connect(kg.public).await.expect("connect")).await
        } else {
            let client = Client::trusting(&ca);
            let conn = client
                .connect_with(
                    tls,
                    "a.keygate.test",
                    &[b"h2", b"http/1.1"],
                    rustls::ALL_VERSIONS,
                )
                .await
                .expect("connect");
            assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            h2_client(conn).await
        };

        // A client's identity header, in either spelling, never reaches the upstream.
        let spoofed = [
            ("authorization", auth.as_str()),
            ("x-keygate-key-id", "key_spoofed"),
            ("x_keygate_account_id", "acct_spoofed"),
        ];
        let r = h2_request(&mut send, "GET", "/v1/items", &spoofed, None)
            .await
            .resp;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        let seen = r.json();
        assert_eq!(seen["path"], "/v1/items", "{label}");
        let key_id = seen["headers"]["x-keygate-key-id"].as_str().unwrap_or("");
        assert!(
            key_id.starts_with("key_") && key_id != "key_spoofed",
            "{label}: {seen}"
        );
        assert!(!r.body.contains("spoofed"), "{label}: {seen}");

        let r = h2_request(&mut send, "GET", "/v1/items", &[], None)
            .await
            .resp;
        assert_eq!(r.status, 401, "{label}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{label}");
        assert_eq!(r.json()["error"]["code"], "missing_credential", "{label}");
        assert!(
            r.json()["error"]["detail"].is_string(),
            "{label}: {}",
            r.body
        );

        let r = h2_request(
            &mut send,
            "GET",
            "/limited/a",
            &[("authorization", &auth)],
            None,
        )
        .await
        .resp;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        assert_eq!(r.header("ratelimit-limit"), Some("1"), "{label}");
        let r = h2_request(
            &mut send,
            "GET",
            "/limited/a",
            &[("authorization", &auth)],
            None,
        )
        .await
        .resp;
        assert_eq!(r.status, 429, "{label}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "rate_limited", "{label}");
        assert_eq!(r.header("ratelimit-remaining"), Some("0"), "{label}");
        assert!(r.header("retry-after").is_some(), "{label}");

        let r = h2_request(
            &mut send,
            "GET",
            "/account/balance",
            &[("authorization", &auth)],
            None,
        )
        .await
        .resp;
        assert_eq!(r.status, 200, "{label}: {}", r.body);
        assert!(
            r.body.contains("balance") || r.body.contains('0'),
            "{label}: {}",
            r.body
        );
    }

    // h2c leaves HTTP/1.1 as it was on the same listener.
    let key = key_for(&plain);
    let r = call(&plain, "/v1/h1", &key);
    assert_eq!(r.status, 200, "{}", r.body);

    // An h2c connection idle past the header deadline (1 s) after its preface still serves:
    // the deadline covers the preface only; HTTP/2 idles until pingora's h2 idle timeout.
    let mut send = h2_client(TcpStream::connect(plain.public).await.expect("connect")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = h2_request(
        &mut send,
        "GET",
        "/v1/late",
        &[("authorization", &bearer(&key))],
        None,
    )
    .await
    .resp;
    assert_eq!(r.status, 200, "{}", r.body);

    // A client that connects to the h2c listener and sends nothing is closed at the deadline
    // (pingora's peek for the h2c preface is under it).
    let mut silent = TcpStream::connect(plain.public).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent client was not closed: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reaches_an_h2c_upstream_and_its_trailers_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["a.keygate.test"]);
    let grpc = h2c_upstream();
    let echo = Echo::start();
    let (kg, tls) = start_tls(
        &echo,
        &[leaf.write(dir.path(), "a")],
        &format!(
            r#"
[upstreams.grpc]
address = "{grpc}"
protocol = "h2c"

[[routes]]
name = "grpc"
path = "/pkg.Service/{{method}}"
methods = ["POST"]
upstream = "grpc"
"#
        ),
        "",
    );
    let key = key_for(&kg);
    let client = Client::trusting(&ca);
    let conn = client
        .connect_with(tls, "a.keygate.test", &[b"h2"], rustls::ALL_VERSIONS)
        .await
        .expect("connect");
    let mut send = h2_client(conn).await;
    // One gRPC message: uncompressed, 5 bytes long.
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let auth = bearer(&key);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    for _ in 0..2 {
        let r = h2_request(
            &mut send,
            "POST",
            "/pkg.Service/Call",
            &headers,
            Some(message.clone()),
        )
        .await;
        assert_eq!(r.resp.status, 200, "{}", r.resp.body);
        assert_eq!(r.resp.header("content-type"), Some("application/grpc"));
        assert_eq!(
            r.resp.header("x-seen-content-type"),
            Some("application/grpc")
        );
        assert_eq!(r.resp.header("x-seen-te"), Some("trailers"));
        assert_eq!(r.resp.header("x-seen-path"), Some("/pkg.Service/Call"));
        assert!(!r.resp.header("x-seen-key-id").unwrap_or("").is_empty());
        assert_eq!(r.resp.body.as_bytes(), &message[..]);
        let trailers = r.trailers.expect("trailers");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(
            trailers.get("grpc-message").map(|v| v.as_bytes()),
            Some(&b"ok"[..])
        );
    }
    // Without a key: the rejection, not the upstream.
    let r = h2_request(
        &mut send,
        "POST",
        "/pkg.Service/Call",
        &headers[1..],
        Some(message.clone()),
    )
    .await;
    assert_eq!(r.resp.status, 401, "{}", r.resp.body);
    assert!(r.resp.header("x-seen-path").is_none());
}

// ---------------------------------------------------------------- behind a load balancer

/// A TLS connection that first sends `prefix` in the clear (a PROXY protocol header).
async fn connect_after(client: &Client, addr: SocketAddr, sni: &str, prefix: &[u8]) -> Tls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .expect("versions")
        .with_root_certificates(client.roots.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(prefix).await.expect("write prefix");
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// Over TLS the upstream hears `X-Forwarded-Proto: https` (whatever the client claims), and with
/// `proxy_protocol` the header comes before the TLS handshake and gives the client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_upstream_hears_https_and_a_proxy_header_precedes_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let files = ca.leaf(&["a.keygate.test"]).write(dir.path(), "a");
    let client = Client::trusting(&ca);
    let echo = Echo::start();
    let (kg, tls) = start_tls(&echo, std::slice::from_ref(&files), "", "");
    let mut conn = client.connect(tls, "a.keygate.test").await;
    let r = h1(
        &mut conn,
        "GET",
        "/open/x",
        &[("X-Forwarded-Proto", "http")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let upstream = r.json()["headers"].clone();
    assert_eq!(upstream["x-forwarded-proto"], "https", "{upstream}");
    assert_eq!(upstream["x-real-ip"], "127.0.0.1", "{upstream}");
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    drop(kg);

    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut opts = Options::new(echo.addr);
    opts.listeners_toml = "proxy_protocol = true\n".into();
    opts.extra_toml = format!(
        "[listeners.tls]\naddress = \"{tls}\"\ncerts = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        files.0.display(),
        files.1.display()
    );
    let _kg = Keygate::start(&opts);
    wait_until("the TLS listener", WAIT, || {
        std::net::TcpStream::connect(tls).is_ok()
    });
    let mut conn = connect_after(
        &client,
        tls,
        "a.keygate.test",
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 443\r\n",
    )
    .await;
    let r = h1(&mut conn, "GET", "/open/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let upstream = r.json()["headers"].clone();
    assert_eq!(upstream["x-real-ip"], "198.51.100.9", "{upstream}");
    assert_eq!(upstream["x-forwarded-proto"], "https", "{upstream}");
}
