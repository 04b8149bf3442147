//! A blocking client for the admin API (ureq), used by the `accounts`, `keys`, `users` and
//! `credits` subcommands.

use std::time::Duration;

use serde_json::Value;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The admin listener could not be reached (refused, DNS, timeout, bad URL).
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The API answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The request could not be built (a malformed URL, or a token that is not a header value).
    #[error("cannot send a request to {url}: {reason}")]
    InvalidRequest { url: String, reason: String },
    /// A success status with a body that is not JSON.
    #[error("unexpected response from {url}: {reason}")]
    BadResponse { url: String, reason: String },
    /// The command line or its input cannot make a request (a missing password); nothing was
    /// sent. Exit code 2.
    #[error("{0}")]
    Usage(String),
}

/// A successful answer: the raw body (for `--json`) and its parsed value (for tables).
#[derive(Debug)]
pub struct Reply {
    pub raw: String,
    pub value: Value,
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Secret,
}

impl Client {
    /// `base_url` is the admin listener (`http://127.0.0.1:8081`); paths are under `/admin/v1`.
    pub fn new(base_url: &str, token: Secret) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            agent,
            base: format!("{}/admin/v1", base_url.trim_end_matches('/')),
            token,
        }
    }

    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Reply, ClientError> {
        self.call("POST", path, body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.call("PATCH", path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.call("PUT", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Reply, ClientError> {
        self.call("DELETE", path, None)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, ClientError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let builder = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {}", self.token.expose()));
        let result = match body {
            Some(b) => builder
                .header("content-type", "application/json")
                .body(b.to_string())
                .map(|req| self.agent.run(req)),
            None => builder.body(()).map(|req| self.agent.run(req)),
        };
        let mut resp = result
            .map_err(|e| ClientError::InvalidRequest {
                url: self.base.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let raw = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| unreachable(format!("reading the response: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &raw));
        }
        let value = serde_json::from_str(&raw).map_err(|e| ClientError::BadResponse {
            url: self.base.clone(),
            reason: format!("status {status}, body is not JSON ({e})"),
        })?;
        Ok(Reply { raw, value })
    }
}

/// The `{"error":{"code","message"}}` body, or the status and a short excerpt of whatever came.
fn api_error(status: u16, raw: &str) -> ClientError {
    let parsed: Option<Value> = serde_json::from_str(raw).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v["error"][name].as_str())
            .map(str::to_string)
    };
    ClientError::Api {
        status,
        code: field("code").unwrap_or_else(|| "http_error".to_string()),
        message: field("message")
            .unwrap_or_else(|| raw.chars().take(200).collect::<String>().trim().to_string()),
    }
}

/// Percent-encodes a path segment or query value (everything but RFC 3986 unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from the present values, or an empty string.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("key_AZaz09-._~"), "key_AZaz09-._~");
        assert_eq!(encode("../x y/é"), "..%2Fx%20y%2F%C3%A9");
    }

    #[test]
    fn builds_queries() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("a", Some("1".into())),
                ("b", None),
                ("c", Some("x&y".into()))
            ]),
            "?a=1&c=x%26y"
        );
    }

    #[test]
    fn reads_error_bodies() {
        let e = api_error(
            404,
            r#"{"error":{"code":"not_found","message":"key not found"}}"#,
        );
        assert_eq!(e.to_string(), "404 not_found: key not found");
        let e = api_error(502, "Bad Gateway");
        assert_eq!(e.to_string(), "502 http_error: Bad Gateway");
    }

    #[test]
    fn unreachable_names_the_url_and_never_the_token() {
        let c = Client::new("http://127.0.0.1:1/", Secret::new("tok-SECRET"));
        let e = c
            .get("/accounts")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("http://127.0.0.1:1/admin/v1"), "{e}");
        assert!(!e.contains("tok-SECRET"));
    }
}
