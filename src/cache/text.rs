//! [`Text`]: a string kept as `Bytes`, for ids and names that are also identity header values.
//!
//! One copy per cached value serves both uses: the request path reads it as `&str` (bucket
//! names, logs) and forwards it as a header with [`Text::header_value`], a reference-count bump
//! and a validity scan rather than a copy. Cloning a `Text` shares its bytes, so an account id
//! held by each of its cached keys is stored once.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;
use http::HeaderValue;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    pub fn new(s: &str) -> Self {
        // An exact-size copy: no spare capacity kept per entry.
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // Built only from `&str` (see `new`), so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text as a header value, or `None` when it cannot be one (a control character in a
    /// key name): the header is then left out rather than failing the request.
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.0.clone()).ok()
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Hashes as the `str` it holds, so maps keyed by `Text` are looked up by `&str`.
impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
