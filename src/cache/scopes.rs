//! Scope sets, interned: a deployment's keys share a handful of scope lists, so a million cached
//! keys hold a pointer each to one of a few [`ScopeSet`]s rather than a `Vec<String>` each, and
//! the space-separated header value is made once per set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use http::HeaderValue;

use super::text::Text;

/// A key's scopes, in the order they were stored, with their identity header value.
#[derive(Debug, PartialEq, Eq)]
pub struct ScopeSet {
    list: Box<[Box<str>]>,
    /// Space-separated, as OAuth's `scope` claim.
    joined: Text,
}

impl ScopeSet {
    pub fn new(scopes: &[String]) -> Self {
        Self {
            list: scopes.iter().map(|s| s.as_str().into()).collect(),
            joined: Text::new(&scopes.join(" ")),
        }
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.list.iter().any(|s| &**s == scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|s| &**s)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn header_value(&self) -> Option<HeaderValue> {
        self.joined.header_value()
    }
}

/// One shared [`ScopeSet`] per distinct list. Holds them weakly: a set no cached key uses any
/// more is dropped, and its slot is swept once the map has doubled since the last sweep, so the
/// map never outgrows twice the sets in use however many keys are written.
#[derive(Default)]
pub struct ScopeInterner {
    sets: DashMap<Vec<String>, Weak<ScopeSet>>,
    /// The map's size at which the next sweep runs.
    sweep_at: AtomicUsize,
}

/// Below this many sets no sweep runs (a sweep is a pass over the map).
const MIN_SWEEP: usize = 1024;

impl ScopeInterner {
    /// The shared set for `scopes` (on the load path: one map read when the set is known).
    pub fn intern(&self, scopes: &[String]) -> Arc<ScopeSet> {
        if let Some(set) = self.sets.get(scopes).and_then(|w| w.upgrade()) {
            return set;
        }
        let set = Arc::new(ScopeSet::new(scopes));
        let entry = self.sets.entry(scopes.to_vec()).or_insert_with(Weak::new);
        let mut slot = entry;
        // Another loader may have interned it meanwhile: use theirs.
        if let Some(theirs) = slot.upgrade() {
            return theirs;
        }
        *slot = Arc::downgrade(&set);
        drop(slot);
        self.maybe_sweep();
        set
    }

    fn maybe_sweep(&self) {
        let len = self.sets.len();
        let at = self.sweep_at.load(Ordering::Relaxed).max(MIN_SWEEP);
        if len < at {
            return;
        }
        self.sets.retain(|_, set| set.strong_count() > 0);
        self.sweep_at
            .store((self.sets.len() * 2).max(MIN_SWEEP), Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equal_lists_share_one_set() {
        let interner = ScopeInterner::default();
        let a = interner.intern(&list(&["leads:read", "emails:read"]));
        let b = interner.intern(&list(&["leads:read", "emails:read"]));
        assert!(Arc::ptr_eq(&a, &b));
        let c = interner.intern(&list(&["leads:read"]));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(a.contains("emails:read") && !c.contains("emails:read"));
        assert_eq!(
            a.header_value(),
            Some(HeaderValue::from_static("leads:read emails:read"))
        );
        // A list is not confused with one whose scope holds the separator.
        let odd = interner.intern(&list(&["leads:read emails:read"]));
        assert!(!Arc::ptr_eq(&a, &odd));
        assert!(!odd.contains("leads:read"));
    }

    #[test]
    fn unused_sets_are_swept() {
        let interner = ScopeInterner::default();
        let kept = interner.intern(&list(&["kept"]));
        for i in 0..10 * MIN_SWEEP {
            drop(interner.intern(&list(&[&format!("s{i}")])));
        }
        assert!(interner.len() <= 2 * MIN_SWEEP, "{}", interner.len());
        assert!(Arc::ptr_eq(&kept, &interner.intern(&list(&["kept"]))));
    }
}
