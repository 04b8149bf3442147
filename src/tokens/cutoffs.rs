//! Token cut-offs: how a token dies with its key, user or account without a store read.
//!
//! A cut-off says "tokens whose subject (a key, user or account id) is this, issued at or before
//! this millisecond, are dead". Cut-offs arrive as invalidation events (this replica's own writes
//! and other replicas' through the bus) and are read from the store at start, so a replica started
//! after a revocation refuses the revoked key's tokens too. They live in memory, sharded (no
//! global lock on the request path), and are forgotten once every token they could stop has
//! expired on its own.
//!
//! # Precision
//!
//! Times are milliseconds since the Unix epoch. A token carries its issue time in milliseconds
//! (claim `iat_ms`, see [`super::Claims::issued_at_ms`]); one without it (issued before the claim
//! existed) counts as issued at the first millisecond of its `iat` second, so a cut in that
//! second stops it. A cut-off stored or published in whole seconds (the format before
//! milliseconds, see [`parse_text`]) counts as the last millisecond of its second, so it stops
//! everything issued in that second, as it always did.
//!
//! A token is issued after every cut-off its issuing replica knows of for its subjects
//! ([`TokenCutoffs::issue_floor`]): a login or an exchange right after a cut — in the same
//! millisecond, or on a replica whose clock lags the cutting one's — is never refused by it.
//!
//! # Clock skew between replicas
//!
//! A cut-off is the cutting replica's clock; a token's issue time is the issuing replica's. With
//! Redis and several replicas the comparison is therefore exact only up to their clock skew
//! `d`: a token issued on a replica whose clock runs `d` ms *ahead*, in the last `d` ms before
//! the cut (real time), survives it — it was issued concurrently with the change, and a revoke
//! still refuses the key itself through the cache. A replica whose clock *lags* loses nothing once
//! the cut-off has reached it (the floor above); a token it issues in the few milliseconds before
//! the event arrives, on a clock `d` ms behind, is refused. Keep replica clocks synchronised (NTP:
//! skew well under 10 ms); keygate's tolerance is that skew, nothing is added to it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::{CredentialReads, StoreError};

/// Milliseconds since the Unix epoch, on this replica's clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The first millisecond of a second: what a token that only carries `iat` (seconds) counts as,
/// so every cut in that second stops it.
pub fn first_ms_of(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

/// The last millisecond of a second: what a cut-off written in whole seconds counts as, so it
/// stops everything issued in that second.
pub fn last_ms_of(secs: i64) -> i64 {
    secs.saturating_mul(1000).saturating_add(999)
}

/// A cut-off as stored (Redis) and published (the invalidation bus): decimal seconds with three
/// fraction digits, `1700000000.123`. Whole seconds (`1700000000`) are the older format.
pub fn to_text(at_ms: i64) -> String {
    format!("{}.{:03}", at_ms.div_euclid(1000), at_ms.rem_euclid(1000))
}

/// Reads [`to_text`]'s format back. A whole number is a cut-off from before milliseconds: it
/// means the end of that second ([`last_ms_of`]). Anything else (a sign on the fraction, more
/// than three fraction digits, no digits) is `None`.
pub fn parse_text(s: &str) -> Option<i64> {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        None => {
            let unsigned = s.strip_prefix('-').unwrap_or(s);
            digits(unsigned).then(|| s.parse().ok().map(last_ms_of))?
        }
        Some((secs, frac)) => {
            let unsigned = secs.strip_prefix('-').unwrap_or(secs);
            if !digits(unsigned) || !digits(frac) || frac.len() > 3 {
                return None;
            }
            let secs: i64 = secs.parse().ok()?;
            // "0.5" is 500 ms, as a decimal reads.
            let frac: i64 = format!("{frac:0<3}").parse().ok()?;
            Some(secs.checked_mul(1000)?.checked_add(frac)?)
        }
    }
}

#[derive(Debug, Default)]
pub struct TokenCutoffs {
    /// Subject -> cut-off, in milliseconds.
    by_subject: dashmap::DashMap<String, i64>,
    /// Whether the stored cut-offs have been read since start. Until then a token cannot be
    /// checked against revocations made before this process started, so none is accepted.
    loaded: AtomicBool,
}

impl TokenCutoffs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a token of `subject` issued at `issued_at_ms` has been cut: issued at or before
    /// the subject's cut-off.
    pub fn is_cut(&self, subject: &str, issued_at_ms: i64) -> bool {
        self.by_subject
            .get(subject)
            .is_some_and(|cut| *cut >= issued_at_ms)
    }

    /// The earliest issue time a new token for these subjects may carry: just after the latest
    /// cut-off known here for any of them (`None`: no cut-off).
    pub fn issue_floor<'a>(&self, subjects: impl IntoIterator<Item = &'a str>) -> Option<i64> {
        subjects
            .into_iter()
            .filter_map(|s| self.by_subject.get(s).map(|cut| *cut))
            .max()
            .map(|cut| cut.saturating_add(1))
    }

    /// Records a cut-off (milliseconds); a later one replaces an earlier one, never the other
    /// way round.
    pub fn record(&self, subject: &str, at_ms: i64) {
        let mut slot = self.by_subject.entry(subject.to_string()).or_insert(at_ms);
        if *slot < at_ms {
            *slot = at_ms;
        }
    }

    /// Whether tokens can be checked: the stored cut-offs have been loaded at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Loads the cut-offs recorded since `since_secs` (at startup, and when events may have been
    /// lost). Returns how many were read.
    pub async fn reload(
        &self,
        store: &dyn CredentialReads,
        since_secs: i64,
    ) -> Result<usize, StoreError> {
        let all = store.token_cutoffs(first_ms_of(since_secs)).await?;
        let n = all.len();
        for (subject, at_ms) in all {
            self.record(&subject, at_ms);
        }
        self.loaded.store(true, Ordering::Release);
        Ok(n)
    }

    /// Forgets cut-offs made before `before_secs`: once every token issued up to a cut-off has
    /// expired on its own, the cut-off stops nothing, so memory follows recent revocations
    /// rather than every revocation ever made. Returns how many were dropped.
    pub fn prune(&self, before_secs: i64) -> usize {
        let before = first_ms_of(before_secs);
        let was = self.by_subject.len();
        self.by_subject.retain(|_, at| *at >= before);
        was.saturating_sub(self.by_subject.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_stops_tokens_issued_up_to_it_and_only_grows() {
        let c = TokenCutoffs::new();
        assert!(!c.is_cut("key_a", 100));
        c.record("key_a", 100);
        assert!(c.is_cut("key_a", 100) && c.is_cut("key_a", 99));
        assert!(!c.is_cut("key_a", 101), "a token made after the cut lives");
        assert!(!c.is_cut("key_b", 1), "other subjects are untouched");
        c.record("key_a", 50);
        assert!(
            c.is_cut("key_a", 100),
            "an earlier cut never replaces a later one"
        );
        c.record("key_a", 200);
        assert!(c.is_cut("key_a", 150));
    }

    #[test]
    fn milliseconds_tell_before_from_after_within_one_second() {
        let c = TokenCutoffs::new();
        let second = 1_700_000_000;
        let cut = first_ms_of(second) + 400;
        c.record("usr_a", cut);
        assert!(c.is_cut("usr_a", first_ms_of(second) + 399));
        assert!(c.is_cut("usr_a", cut), "the cut's own millisecond is cut");
        assert!(!c.is_cut("usr_a", cut + 1), "one millisecond later lives");
        // A token with only `iat` seconds counts from the start of its second: cut.
        assert!(c.is_cut("usr_a", first_ms_of(second)));
        // A whole-second cut-off (the old format) stops its whole second, and only it.
        c.record("key_old", last_ms_of(second));
        assert!(c.is_cut("key_old", first_ms_of(second) + 999));
        assert!(!c.is_cut("key_old", first_ms_of(second + 1)));
    }

    #[test]
    fn a_new_token_is_issued_after_every_known_cut() {
        let c = TokenCutoffs::new();
        assert_eq!(c.issue_floor(["key_a", "acc_a"]), None);
        c.record("key_a", 1_000);
        c.record("acc_a", 5_000);
        c.record("usr_b", 9_000);
        let floor = c.issue_floor(["key_a", "acc_a"]).expect("a floor");
        assert_eq!(floor, 5_001);
        assert!(!c.is_cut("key_a", floor) && !c.is_cut("acc_a", floor));
    }

    #[test]
    fn text_round_trips_and_reads_whole_seconds_as_their_end() {
        for ms in [0, 1, 999, 1_000, 1_700_000_000_123, -1, -1_500] {
            assert_eq!(parse_text(&to_text(ms)), Some(ms), "{ms}");
        }
        assert_eq!(to_text(1_700_000_000_007), "1700000000.007");
        assert_eq!(parse_text("1700000000"), Some(1_700_000_000_999));
        assert_eq!(parse_text("1700000000.5"), Some(1_700_000_000_500));
        for bad in [
            "", ".", "1.", ".5", "1.2345", "1.-5", "x", "1e3", "1.5.5", "+1",
        ] {
            assert_eq!(parse_text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn old_cutoffs_are_forgotten_and_recent_ones_kept() {
        let c = TokenCutoffs::new();
        let now = crate::store::now();
        c.record("key_old", first_ms_of(now));
        c.record("key_new", first_ms_of(now));
        let early = first_ms_of(now - 5);
        // Nothing is older than a minute ago: both stay.
        assert_eq!(c.prune(now - 60), 0);
        assert!(c.is_cut("key_old", early) && c.is_cut("key_new", early));
        // Everything made before a minute from now goes, and stops nothing any more.
        assert_eq!(c.prune(now + 60), 2);
        assert!(!c.is_cut("key_old", early));
        assert!(!c.is_cut("key_new", early));
    }
}
