//! Request ids: the `X-Request-Id` keygate sends upstream, returns in every response and logs.
//!
//! An id a trusted proxy sent is kept (when it is 1 to [`MAX_LEN`] visible ASCII characters), so
//! one request has one id from the load balancer to the upstream. Otherwise keygate makes one:
//! a random prefix drawn once per process, then a counter (`3f9a61c0e2d4-000000000000002a`).
//!
//! Why not a UUID: a counter needs no random number per request, only one atomic add, and the
//! ids of one process sort by arrival in its logs. The 48-bit random prefix keeps replicas (and
//! restarts) apart: two processes draw the same prefix with odds of about 1 in 2^48 per pair.
//! The counter is one shared atomic: with keygate's usual one or two worker threads its cache
//! line does not bounce enough to measure.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

/// The longest id accepted from a trusted proxy; longer ones are replaced.
pub const MAX_LEN: usize = 128;

/// `12 hex digits` + `-` + `16 hex digits`.
const GENERATED_LEN: usize = 12 + 1 + 16;

/// Makes request ids for one process.
#[derive(Debug)]
pub struct RequestIds {
    prefix: [u8; 12],
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    pub fn new() -> Self {
        let mut prefix = [0u8; 12];
        hex(rand::random::<u64>() & 0xffff_ffff_ffff, &mut prefix);
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// A new id; one allocation (the header value's bytes), no formatting machinery.
    pub fn generate(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; GENERATED_LEN];
        id[..12].copy_from_slice(&self.prefix);
        id[12] = b'-';
        hex(n, &mut id[13..]);
        // Hex digits and `-` are always a valid header value.
        HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }

    /// The id of a request: `sent` when a trusted peer sent an acceptable one, else a new one.
    pub fn for_request(&self, sent: Option<&HeaderValue>) -> HeaderValue {
        match sent {
            Some(v) if acceptable(v.as_bytes()) => v.clone(),
            _ => self.generate(),
        }
    }
}

/// 1 to [`MAX_LEN`] bytes, each visible ASCII (no spaces, controls or anything that needs
/// escaping in a log line).
pub fn acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// `n` as lower-case hex, right-aligned and zero-padded into `out`.
fn hex(mut n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_well_formed() {
        let ids = RequestIds::new();
        let a = ids.generate();
        let b = ids.generate();
        assert_ne!(a, b);
        for v in [&a, &b] {
            let s = v.to_str().expect("ascii");
            assert_eq!(s.len(), GENERATED_LEN);
            assert!(acceptable(v.as_bytes()));
            let (prefix, counter) = s.split_once('-').expect("dash");
            assert_eq!(prefix.len(), 12);
            assert_eq!(counter.len(), 16);
        }
        assert_eq!(&a.to_str().unwrap()[..12], &b.to_str().unwrap()[..12]);
        assert!(a.to_str().unwrap().ends_with("0001"));
        assert!(b.to_str().unwrap().ends_with("0002"));
    }

    #[test]
    fn a_sent_id_is_kept_only_when_acceptable() {
        let ids = RequestIds::new();
        let ok = HeaderValue::from_static("lb-7f3a:req/42");
        assert_eq!(ids.for_request(Some(&ok)), ok);
        let long = HeaderValue::from_str(&"a".repeat(MAX_LEN + 1)).unwrap();
        let max = HeaderValue::from_str(&"a".repeat(MAX_LEN)).unwrap();
        assert_eq!(ids.for_request(Some(&max)), max);
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_static("has space"),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            HeaderValue::from_bytes(b"tab\there").unwrap(),
            long,
        ] {
            let got = ids.for_request(Some(&bad));
            assert_ne!(got, bad);
            assert_eq!(got.len(), GENERATED_LEN);
        }
        assert_eq!(ids.for_request(None).len(), GENERATED_LEN);
    }
}
