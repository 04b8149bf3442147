//! `charge_on = "success"`: whether a request's reservation goes back once it is over.
//!
//! The upstream decides, not the client. A client that hangs up, before or after the answer's
//! head, still had the upstream do the work; refunding it on the client's write error (as
//! keygate once did) let anyone read paid answers free by closing the socket early.

/// What keygate knows about a forwarded request when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Settlement {
    /// The upstream's final status, when its answer's head arrived.
    pub(super) upstream_status: Option<u16>,
    /// The whole request (head and body) was handed to the upstream.
    pub(super) request_sent: bool,
    /// The request ended with an error on the client's side (it hung up or stopped reading).
    pub(super) client_failed: bool,
}

impl Settlement {
    /// Whether the reservation goes back.
    ///
    /// - The upstream answered: refunded unless it answered 2xx.
    /// - The client hung up after the whole request reached the upstream but before its answer
    ///   came back: charged. pingora stops reading the upstream once the client is gone, so its
    ///   status is never known; the upstream had everything it needed to do the work, and a
    ///   client must not get work free by hanging up. (A client that hangs up on a request the
    ///   upstream would have failed pays for it: the one inaccuracy, and the client's choice.)
    /// - Otherwise the upstream was never reached, failed before answering, or got only part of
    ///   the request: refunded.
    pub(super) fn refund_due(self) -> bool {
        match self.upstream_status {
            Some(status) => !(200..300).contains(&status),
            None => !(self.request_sent && self.client_failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(status: Option<u16>, sent: bool, client_failed: bool) -> bool {
        Settlement {
            upstream_status: status,
            request_sent: sent,
            client_failed,
        }
        .refund_due()
    }

    #[test]
    fn the_upstream_status_decides_whatever_the_client_did() {
        for client_failed in [false, true] {
            assert!(!settle(Some(200), true, client_failed));
            assert!(!settle(Some(204), true, client_failed));
            assert!(settle(Some(304), true, client_failed));
            assert!(settle(Some(404), true, client_failed));
            assert!(settle(Some(500), true, client_failed));
        }
    }

    #[test]
    fn without_an_answer_only_a_client_that_left_after_sending_pays() {
        assert!(
            !settle(None, true, true),
            "hung up while the upstream worked"
        );
        assert!(
            settle(None, false, true),
            "hung up before the request was whole"
        );
        assert!(settle(None, true, false), "the upstream failed");
        assert!(settle(None, false, false), "the upstream was never reached");
    }
}
