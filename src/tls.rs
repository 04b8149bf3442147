//! TLS material, read from PEM files: the public TLS listener's certificates (chosen by SNI,
//! swapped on SIGHUP) and the CA certificates an upstream's certificate must chain to.
//!
//! rustls only, no pingora: the configuration reads files through here, and `proxy` hands the
//! [`ServerConfig`] built here to pingora. The crypto provider is rustls' `ring`, the one
//! pingora's `rustls` feature installs as the process default for its upstream connector.
//!
//! Errors name the file and never carry its content: a private key file's bytes reach neither a
//! log nor `keygate check-config`'s output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate { path: String },
    #[error("{path}: a certificate in it cannot be parsed ({detail})")]
    BadCertificate { path: String, detail: String },
    #[error("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it")]
    NoKey { path: String },
    /// `detail` comes from rustls and names a kind of problem, never the key's bytes.
    #[error("{path}: the private key cannot be used ({detail})")]
    BadKey { path: String, detail: String },
    #[error("{key} is not the private key of the certificate in {cert}")]
    Mismatch { cert: String, key: String },
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(path)?;
    let name = || path.display().to_string();
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::BadCertificate {
            path: name(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate { path: name() });
    }
    for cert in &certs {
        // pingora parses CA certificates with x509-parser and panics on one it cannot read, so
        // every certificate is parsed here first, where a failure is a config error.
        if let Err(e) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            return Err(TlsFileError::BadCertificate {
                path: name(),
                detail: e.to_string(),
            });
        }
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read(path)?;
    let name = path.display().to_string();
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TlsFileError::NoKey { path: name }),
        // The PEM error may quote a line of the file: report only that it is malformed.
        Err(_) => Err(TlsFileError::BadKey {
            path: name,
            detail: "malformed PEM".into(),
        }),
    }
}

/// The DNS names a certificate is for: its subjectAltName DNS entries, or its common name when
/// it has none. Lower-case; wildcards kept as `*.example.com`.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    names
}

/// The listener's certificates by name. A client's SNI picks the certificate whose names match
/// it exactly, else one whose wildcard (`*.example.com`, one label) matches, else the first
/// certificate listed, which also answers clients that send no SNI. When two certificates share
/// a name, the one listed first wins.
pub struct CertSet {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Each certificate's names, for logs.
    names: Vec<Vec<String>>,
}

impl std::fmt::Debug for CertSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSet")
            .field("names", &self.names)
            .finish()
    }
}

impl CertSet {
    /// Reads and checks every pair. The error carries the index of the pair at fault.
    pub fn load(files: &[CertFiles]) -> Result<CertSet, (usize, TlsFileError)> {
        let provider = provider();
        let mut keys = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            keys.push(load_pair(f, &provider).map_err(|e| (i, e))?);
        }
        let mut keys = keys.into_iter();
        let Some(first) = keys.next() else {
            return Err((
                0,
                TlsFileError::NoCertificate {
                    path: "(no certificate listed)".into(),
                },
            ));
        };
        let mut set = CertSet {
            default: first.0.clone(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            names: Vec::new(),
        };
        for (key, names) in std::iter::once(first).chain(keys) {
            for name in &names {
                let (map, name) = match name.strip_prefix("*.") {
                    Some(rest) => (&mut set.wildcard, rest),
                    None => (&mut set.exact, name.as_str()),
                };
                map.entry(name.to_string()).or_insert_with(|| key.clone());
            }
            set.names.push(names);
        }
        Ok(set)
    }

    /// The certificate for a client's SNI (`None`: the client sent none).
    pub fn for_name(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(sni) = sni else {
            return &self.default;
        };
        let lower;
        let sni = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = sni.to_ascii_lowercase();
            lower.as_str()
        } else {
            sni
        };
        if let Some(key) = self.exact.get(sni) {
            return key;
        }
        sni.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }

    /// Each certificate's DNS names, in the order listed.
    pub fn names(&self) -> &[Vec<String>] {
        &self.names
    }
}

fn load_pair(
    f: &CertFiles,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, Vec<String>), TlsFileError> {
    let certs = read_certs(&f.cert)?;
    let key = read_key(&f.key)?;
    let names = dns_names(&certs[0]);
    let certified = CertifiedKey::from_der(certs, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsFileError::Mismatch {
            cert: f.cert.display().to_string(),
            key: f.key.display().to_string(),
        },
        other => TlsFileError::BadKey {
            path: f.key.display().to_string(),
            detail: other.to_string(),
        },
    })?;
    Ok((Arc::new(certified), names))
}

/// Picks each handshake's certificate from the current [`CertSet`]; a reload swaps the set
/// without touching connections already open (their handshake is over) or in handshake (they
/// hold the set they read).
#[derive(Debug)]
pub struct SniResolver {
    current: ArcSwap<CertSet>,
}

impl SniResolver {
    pub fn new(certs: Arc<CertSet>) -> Self {
        Self {
            current: ArcSwap::new(certs),
        }
    }

    /// The certificates the next handshakes get.
    pub fn replace(&self, certs: Arc<CertSet>) {
        self.current.store(certs);
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().for_name(hello.server_name()).clone())
    }
}

/// The listener's rustls configuration: TLS 1.2 and 1.3 only (rustls has nothing older),
/// certificates from `resolver`, ALPN `h2` then `http/1.1` when `http2`, else `http/1.1` only.
pub fn server_config(
    resolver: Arc<SniResolver>,
    http2: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// The CA certificates in a PEM file (DER), each checked to be usable as a trust anchor.
pub fn load_ca(path: &Path) -> Result<Vec<Vec<u8>>, TlsFileError> {
    let certs = read_certs(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| TlsFileError::BadCertificate {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
    }
    Ok(certs.into_iter().map(|c| c.as_ref().to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        _dir: tempfile::TempDir,
        files: CertFiles,
    }

    fn pair(names: &[&str]) -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .expect("cert");
        let files = CertFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, c.cert.pem()).expect("write");
        std::fs::write(&files.key, c.signing_key.serialize_pem()).expect("write");
        Pair { _dir: dir, files }
    }

    fn leaf(key: &CertifiedKey) -> Vec<String> {
        dns_names(&key.cert[0])
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let a = pair(&["a.example.com"]);
        let b = pair(&["b.example.com", "*.wild.example.com"]);
        let set = CertSet::load(&[a.files.clone(), b.files.clone()]).expect("load");
        assert_eq!(leaf(set.for_name(Some("a.example.com"))), ["a.example.com"]);
        assert_eq!(
            leaf(set.for_name(Some("B.Example.COM")))[0],
            "b.example.com"
        );
        assert_eq!(
            leaf(set.for_name(Some("x.wild.example.com")))[0],
            "b.example.com"
        );
        // A wildcard covers one label only.
        assert_eq!(
            leaf(set.for_name(Some("y.x.wild.example.com")))[0],
            "a.example.com"
        );
        assert_eq!(leaf(set.for_name(Some("other.test")))[0], "a.example.com");
        assert_eq!(leaf(set.for_name(None))[0], "a.example.com");
    }

    #[test]
    fn file_problems_name_the_file_and_never_the_key() {
        let a = pair(&["a.example.com"]);
        let b = pair(&["b.example.com"]);
        let swapped = CertFiles {
            cert: a.files.cert.clone(),
            key: b.files.key.clone(),
        };
        let (at, e) = CertSet::load(&[a.files.clone(), swapped]).expect_err("mismatch");
        assert_eq!(at, 1);
        assert!(matches!(e, TlsFileError::Mismatch { .. }), "{e}");

        let missing = CertFiles {
            cert: a.files.cert.with_file_name("nope.pem"),
            key: a.files.key.clone(),
        };
        let (_, e) = CertSet::load(&[missing]).expect_err("missing");
        assert!(e.to_string().contains("nope.pem"), "{e}");

        // A key file that is not PEM: the message names it and quotes nothing from it.
        let secret =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw!!\n-----END PRIVATE KEY-----\n";
        std::fs::write(&b.files.key, secret).expect("write");
        let (_, e) = CertSet::load(std::slice::from_ref(&b.files)).expect_err("bad key");
        let text = e.to_string();
        assert!(text.contains("key.pem"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");

        // The certificate where the key should be.
        let c = b.files.key.clone();
        std::fs::copy(&b.files.cert, &c).expect("copy");
        let (_, e) = CertSet::load(std::slice::from_ref(&b.files)).expect_err("no key");
        assert!(matches!(e, TlsFileError::NoKey { .. }), "{e}");
    }

    #[test]
    fn a_ca_file_needs_a_certificate() {
        let a = pair(&["a.example.com"]);
        assert_eq!(load_ca(&a.files.cert).expect("ca").len(), 1);
        let e = load_ca(&a.files.key).expect_err("a key is no CA");
        assert!(matches!(e, TlsFileError::NoCertificate { .. }), "{e}");
    }
}
