//! Error bodies, prepared once when the config loads.
//!
//! A template body is split at its placeholders into [`Piece`]s, and its message at `{scope}`,
//! with the message's text already escaped for the body's content type. A rejection then renders
//! by concatenation: no search through the template and no replace per request. Each value is
//! inserted exactly once, so a value that happens to contain a placeholder is written as it is.
//!
//! `{detail}` is where a rejection's specifics go (which body field failed and why). A body
//! without that slot gets them in place of its `{message}`, as before the slot existed; a body
//! with it keeps its configured message and writes the specifics apart (empty when there are
//! none).

use std::borrow::Cow;
use std::collections::HashMap;

use super::Reason;

/// The default body: a stable machine code plus a message.
pub const DEFAULT_BODY: &str = r#"{"error":{"code":"{reason}","message":"{message}"}}"#;

const REASON: &str = "{reason}";
const MESSAGE: &str = "{message}";
const SCOPE: &str = "{scope}";
const DETAIL: &str = "{detail}";

/// Values a rejection can carry into its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    pub scope: Option<String>,
    /// The rejection's specifics (e.g. which body field was wrong): the body's `{detail}` when
    /// it has that slot, else in place of the template's message. Inserted as it is: it may
    /// quote the caller's input, so nothing in it is expanded.
    pub message: Option<String>,
}

/// One part of a prepared body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    Reason,
    Message,
    Scope,
    Detail,
}

/// One reason's prepared response.
#[derive(Debug, Clone)]
pub struct Template {
    pub status: u16,
    pub content_type: String,
    /// Whether values are JSON-escaped (the content type says JSON).
    json: bool,
    body: Box<[Piece]>,
    /// The body has a `{detail}` slot: the specifics go there, not in place of the message.
    has_detail: bool,
    /// The template's message split at `{scope}` (one more part than there are scopes), each
    /// part already escaped for the body.
    message: Box<[Box<str>]>,
    /// The bytes every rendering writes from the template itself, to size the output once.
    fixed_len: usize,
}

impl Template {
    /// Prepares `body` and `message`; `{reason}`, `{message}`, `{scope}` and `{detail}` in the
    /// body and `{scope}` in the message are the places values go.
    pub fn new(status: u16, content_type: String, body: String, message: String) -> Self {
        let json = content_type.contains("json");
        let body = split_body(&body);
        let has_detail = body.contains(&Piece::Detail);
        let message: Box<[Box<str>]> = message
            .split(SCOPE)
            .map(|part| escape(json, part).into())
            .collect();
        let message_len: usize = message.iter().map(|p| p.len()).sum();
        let fixed_len = body
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Message => message_len,
                Piece::Reason | Piece::Scope | Piece::Detail => 0,
            })
            .sum();
        Self {
            status,
            content_type,
            json,
            body: body.into(),
            has_detail,
            message,
            fixed_len,
        }
    }

    /// The template a reason has when the config leaves it out.
    fn default_for(reason: Reason) -> Self {
        Self::new(
            reason.default_status(),
            "application/json".into(),
            DEFAULT_BODY.into(),
            reason.default_message().into(),
        )
    }

    /// Fills the placeholders. Values are JSON-escaped when the body is JSON, so a scope name can
    /// never break the document.
    pub fn render(&self, reason: Reason, detail: &Detail) -> String {
        let scope = escape(self.json, detail.scope.as_deref().unwrap_or(""));
        let specifics = detail.message.as_deref().map(|m| escape(self.json, m));
        // With a `{detail}` slot the specifics go there and the message stays the template's.
        let own_message = specifics.as_ref().filter(|_| !self.has_detail);
        let mut out = String::with_capacity(self.fixed_len + 64);
        for piece in &self.body {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Reason => out.push_str(reason.code()),
                Piece::Scope => out.push_str(&scope),
                Piece::Detail => out.push_str(specifics.as_deref().unwrap_or("")),
                Piece::Message => match own_message {
                    Some(message) => out.push_str(message),
                    None => {
                        for (i, part) in self.message.iter().enumerate() {
                            if i > 0 {
                                out.push_str(&scope);
                            }
                            out.push_str(part);
                        }
                    }
                },
            }
        }
        out
    }
}

/// Splits a body at its placeholders, left to right. Load time only.
fn split_body(body: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut at = 0;
    while let Some(found) = body[at..].find('{') {
        let start = at + found;
        let rest = &body[start..];
        let slot = [
            (REASON, Piece::Reason),
            (MESSAGE, Piece::Message),
            (SCOPE, Piece::Scope),
            (DETAIL, Piece::Detail),
        ]
        .into_iter()
        .find(|(name, _)| rest.starts_with(name));
        match slot {
            Some((name, piece)) => {
                if start > text_start {
                    pieces.push(Piece::Text(body[text_start..start].into()));
                }
                pieces.push(piece);
                at = start + name.len();
                text_start = at;
            }
            None => at = start + 1,
        }
    }
    if body.len() > text_start {
        pieces.push(Piece::Text(body[text_start..].into()));
    }
    pieces
}

/// `s` as it goes into the body: JSON-escaped (without the quotes) when the body is JSON.
/// Borrowed when nothing needs escaping, which is the usual case (scope names are plain).
fn escape(json: bool, s: &str) -> Cow<'_, str> {
    let plain = |b: u8| b >= 0x20 && b != b'"' && b != b'\\';
    if !json || s.bytes().all(plain) {
        return Cow::Borrowed(s);
    }
    let quoted = serde_json::to_string(s).unwrap_or_default();
    Cow::Owned(
        quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or("")
            .to_string(),
    )
}

/// Every reason's template, with defaults for the ones the config leaves out, indexed by
/// [`Reason::index`].
#[derive(Debug, Clone)]
pub struct Templates {
    by_reason: [Template; Reason::COUNT],
}

impl Templates {
    pub fn new(mut overrides: HashMap<Reason, Template>) -> Self {
        let by_reason = std::array::from_fn(|i| {
            let reason = Reason::ALL[i];
            overrides
                .remove(&reason)
                .unwrap_or_else(|| Template::default_for(reason))
        });
        Self { by_reason }
    }

    pub fn get(&self, reason: Reason) -> &Template {
        // `index` is below `Reason::COUNT` by construction (both come from the same table).
        &self.by_reason[reason.index()]
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new(HashMap::new())
    }
}
