//! Request bodies checked against a route's JSON Schema (`body_schema`), before any credit is
//! taken and before the upstream is reached.
//!
//! The schema is read and compiled once, when the config loads (draft 2020-12, formats such as
//! `email` asserted, no `$ref` fetched from the network or the disk). A request then costs one
//! JSON parse and one validation. A failure names the failing field by its JSON pointer and
//! says what is wrong with it without repeating the caller's value: the body may carry personal
//! data (an email to look up), and an error body is no place to echo it.
//!
//! Nothing here knows pingora: the proxy reads the body and hands over the bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The most body keygate buffers to check: pingora replays at most this much of a buffered body
/// to the upstream (its retry buffer), so a schema route's `max_body_bytes` may not exceed it.
pub const MAX_CHECKED_BODY: u64 = 64 * 1024;

/// Longest `{detail}` written; past it the text is cut at a character boundary and ends in `…`.
/// A property name in an "unexpected property" message comes from the caller.
const MAX_DETAIL: usize = 200;

/// Why a schema file cannot be used. Reported by `check-config` against the route.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not JSON: {source}")]
    NotJson {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path} is not a usable JSON Schema (draft 2020-12): {message}")]
    Invalid { path: String, message: String },
}

/// A compiled schema and the file it came from.
pub struct BodySchema {
    path: PathBuf,
    validator: jsonschema::Validator,
}

impl fmt::Debug for BodySchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodySchema")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl BodySchema {
    /// Reads and compiles the schema at `path`. Load time only.
    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| SchemaError::Read {
            path: shown.clone(),
            source,
        })?;
        let schema: Value =
            serde_json::from_slice(&text).map_err(|source| SchemaError::NotJson {
                path: shown.clone(),
                source,
            })?;
        Self::compile(path.to_path_buf(), &schema)
    }

    /// Compiles a schema already parsed (`path` is only for messages).
    pub fn compile(path: PathBuf, schema: &Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| SchemaError::Invalid {
                path: path.display().to_string(),
                message: e.masked().to_string(),
            })?;
        Ok(Self { path, validator })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a request body. `content_type` is the request's `Content-Type`, when it sent one:
    /// a body declared as something other than JSON is refused whatever its bytes. `Err` holds
    /// the detail for the 422 answer.
    pub fn check(&self, content_type: Option<&str>, body: &[u8]) -> Result<(), String> {
        if let Some(ct) = content_type {
            if !is_json_media_type(ct) {
                return Err(
                    "the request body must be JSON (Content-Type: application/json)".into(),
                );
            }
        }
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Err(if body.is_empty() {
                "the request body is empty; a JSON document is expected".into()
            } else {
                "the request body is not valid JSON".into()
            });
        };
        self.validator
            .validate(&value)
            .map_err(|error| describe(&error))
    }
}

/// `application/json`, or any `+json` type (`application/merge-patch+json`), with parameters.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `<pointer>: <what is wrong>`, the caller's value masked. A missing required property is
/// reported at its own pointer (`/email`), not at the object that lacks it. The whole body is
/// `/`.
fn describe(error: &jsonschema::ValidationError<'_>) -> String {
    let mut pointer = error.instance_path().to_string();
    if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
        if let Some(name) = property.as_str() {
            pointer.push('/');
            pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
        }
    }
    if pointer.is_empty() {
        pointer.push('/');
    }
    let text = format!("{pointer}: {}", error.masked());
    truncate(text, MAX_DETAIL)
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> BodySchema {
        let s = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "required": ["email"],
            "properties": {
                "email": {"type": "string", "format": "email"},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "additionalProperties": false
        });
        BodySchema::compile("lookup.json".into(), &s).expect("compiles")
    }

    #[test]
    fn a_valid_body_passes() {
        let s = schema();
        assert_eq!(
            s.check(Some("application/json"), br#"{"email":"a@b.co"}"#),
            Ok(())
        );
        assert_eq!(s.check(None, br#"{"email":"a@b.co","tags":["x"]}"#), Ok(()));
        assert_eq!(
            s.check(
                Some("application/json; charset=utf-8"),
                br#"{"email":"a@b.co"}"#
            ),
            Ok(())
        );
    }

    #[test]
    fn failures_name_the_field_without_its_value() {
        let s = schema();
        let d = s
            .check(None, br#"{"email":"secret-not-an-email"}"#)
            .unwrap_err();
        assert!(d.starts_with("/email: "), "{d}");
        assert!(!d.contains("secret"), "{d}");
        let d = s.check(None, br#"{}"#).unwrap_err();
        assert!(d.starts_with("/email: "), "{d}");
        let d = s
            .check(None, br#"{"email":"a@b.co","tags":[1]}"#)
            .unwrap_err();
        assert!(d.starts_with("/tags/0: "), "{d}");
        let d = s.check(None, br#"[1]"#).unwrap_err();
        assert!(d.starts_with("/: "), "{d}");
    }

    #[test]
    fn not_json_and_wrong_content_type_are_refused() {
        let s = schema();
        assert_eq!(
            s.check(None, b"email=a@b.co").unwrap_err(),
            "the request body is not valid JSON"
        );
        assert!(s.check(None, b"").unwrap_err().contains("empty"));
        assert!(s
            .check(Some("text/plain"), br#"{"email":"a@b.co"}"#)
            .unwrap_err()
            .contains("Content-Type"));
        assert_eq!(
            s.check(Some("application/problem+json"), br#"{"email":"a@b.co"}"#),
            Ok(())
        );
    }

    #[test]
    fn long_details_are_cut() {
        let s = schema();
        let name = "é".repeat(500);
        let body = format!(r#"{{"email":"a@b.co","{name}":1}}"#);
        let d = s.check(None, body.as_bytes()).unwrap_err();
        assert!(d.len() <= MAX_DETAIL + '…'.len_utf8(), "{}", d.len());
        assert!(d.ends_with('…'));
    }

    #[test]
    fn a_bad_schema_is_refused() {
        let e = BodySchema::compile("bad.json".into(), &json!({"type": 12})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad.json is not a usable JSON Schema"),
            "{e}"
        );
    }
}
