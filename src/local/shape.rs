//! Body templates of local endpoints: a provider's documented shape with keygate's values in it
//! (`{"credits": {balance}, "webhooks": {metadata.webhooks}}`).
//!
//! A template is parsed as JSON once, at config load, and every placeholder becomes a slot that
//! is filled with a JSON *value* (a number, a string with its quotes and escapes, an array, an
//! object, `null`): nothing is spliced into text, so whatever an operator puts in metadata, the
//! answer is valid JSON. A placeholder is a whole value, written bare (`{balance}`) or as a
//! string (`"{balance}"`); one inside a longer string is refused, since it could only be
//! spliced.
//!
//! Object keys keep the template's order (serde_json's map would sort them, and a document's
//! example is compared byte for byte), which is why the template has its own small tree and
//! deserializer instead of a `serde_json::Value`.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::config::LocalKind;
use crate::store::Metadata;

/// What a placeholder stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// `{balance}`: the account's credits, a number.
    Balance,
    /// `{metadata}`: the whole metadata object; `{metadata.a.b}`: a field in it (null when
    /// absent).
    Metadata(Vec<String>),
    /// `{items}`: a list endpoint's page, an array.
    Items,
    /// `{cursor}`: what to pass as `after` for the next page; null on the last.
    Cursor,
    /// `{has_more}`: whether `{cursor}` is set. Like the cursor it follows a full page, so the
    /// page after a full last one is empty.
    HasMore,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    /// A string as written (a placeholder candidate until checked).
    Text(String),
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Slot(Slot),
}

/// Why a template cannot be used; `check-config` shows it with the route.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("is not JSON (placeholders are whole values, like {{balance}}): {0}")]
    NotJson(String),
    #[error("`{{{0}}}` is not a placeholder of a `{1}` endpoint (it has {2})")]
    Unknown(String, &'static str, &'static str),
    #[error(
        "places `{{{0}}}` inside a string; a placeholder must be a whole value, so it is \
         JSON-encoded rather than spliced"
    )]
    Spliced(String),
}

/// The values a template can place; those an endpoint does not have are `None`.
#[derive(Debug, Default)]
pub struct Values<'a> {
    pub balance: Option<i64>,
    pub metadata: Option<&'a Metadata>,
    pub items: Option<Value>,
    pub cursor: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BodyTemplate {
    root: Node,
}

/// The kinds whose answer a template shapes, and their placeholders.
pub fn placeholders(kind: LocalKind) -> Option<&'static str> {
    match kind {
        LocalKind::Balance => Some("{balance}, {metadata}, {metadata.<field>}"),
        LocalKind::Transactions => {
            Some("{items}, {cursor}, {has_more}, {balance}, {metadata}, {metadata.<field>}")
        }
        _ => None,
    }
}

fn kind_name(kind: LocalKind) -> &'static str {
    match kind {
        LocalKind::Balance => "balance",
        LocalKind::Transactions => "transactions",
        LocalKind::Login => "login",
        LocalKind::Exchange => "exchange",
        LocalKind::Keys => "keys",
        LocalKind::Key => "key",
        LocalKind::KeyRotate => "key_rotate",
        LocalKind::Jwks => "jwks",
        LocalKind::Verify => "verify",
    }
}

/// `{name}` -> `name`, when `text` is exactly one placeholder-shaped token.
fn placeholder_name(text: &str) -> Option<&str> {
    let name = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() || first == '_')
        .then_some(())
        .filter(|()| chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .map(|()| name)
}

/// A name as a slot, if it is one the kind has.
fn slot(name: &str, kind: LocalKind) -> Option<Slot> {
    let list = kind == LocalKind::Transactions;
    match name {
        "balance" => Some(Slot::Balance),
        "metadata" => Some(Slot::Metadata(Vec::new())),
        "items" if list => Some(Slot::Items),
        "cursor" if list => Some(Slot::Cursor),
        "has_more" if list => Some(Slot::HasMore),
        _ => {
            let path = name.strip_prefix("metadata.")?;
            let parts: Vec<String> = path.split('.').map(str::to_string).collect();
            parts
                .iter()
                .all(|p| !p.is_empty())
                .then_some(Slot::Metadata(parts))
        }
    }
}

/// Quotes bare placeholders (`{balance}` outside any string) so the template is JSON. Outside a
/// string a `{` followed by a letter can only be a placeholder: a JSON object's key is quoted.
fn quote_bare(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '{' {
            if let Some(end) = rest.find('}') {
                if placeholder_name(&rest[..=end]).is_some() {
                    out.push('"');
                    out.push_str(&rest[..=end]);
                    out.push('"');
                    rest = &rest[end + 1..];
                    continue;
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

impl BodyTemplate {
    /// Parses `text` for an endpoint of `kind`: every placeholder must be one it has.
    pub fn parse(text: &str, kind: LocalKind) -> Result<Self, TemplateError> {
        let quoted = quote_bare(text);
        let mut de = serde_json::Deserializer::from_str(&quoted);
        let root = Node::deserialize(&mut de)
            .and_then(|n| de.end().map(|()| n))
            .map_err(|e| TemplateError::NotJson(e.to_string()))?;
        Ok(Self {
            root: resolve(root, kind)?,
        })
    }

    /// Whether rendering needs the account (its balance or metadata).
    pub fn needs_account(&self) -> bool {
        fn walk(n: &Node) -> bool {
            match n {
                Node::Slot(Slot::Balance | Slot::Metadata(_)) => true,
                Node::Object(fields) => fields.iter().any(|(_, v)| walk(v)),
                Node::Array(items) => items.iter().any(walk),
                _ => false,
            }
        }
        walk(&self.root)
    }

    pub fn render(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        write_node(&mut out, &self.root, values);
        out
    }
}

fn resolve(node: Node, kind: LocalKind) -> Result<Node, TemplateError> {
    Ok(match node {
        Node::Text(text) => match placeholder_name(&text) {
            Some(name) => match slot(name, kind) {
                Some(s) => Node::Slot(s),
                None => {
                    return Err(TemplateError::Unknown(
                        name.to_string(),
                        kind_name(kind),
                        placeholders(kind).unwrap_or("none"),
                    ))
                }
            },
            None => {
                // A known placeholder inside a longer string could only be spliced.
                let mut at = 0;
                while let Some(open) = text[at..].find('{') {
                    let start = at + open;
                    let Some(close) = text[start..].find('}') else {
                        break;
                    };
                    let token = &text[start..=start + close];
                    if let Some(name) = placeholder_name(token) {
                        if slot(name, kind).is_some() {
                            return Err(TemplateError::Spliced(name.to_string()));
                        }
                    }
                    at = start + 1;
                }
                Node::Literal(Value::String(text))
            }
        },
        Node::Object(fields) => Node::Object(
            fields
                .into_iter()
                .map(|(k, v)| resolve(v, kind).map(|v| (k, v)))
                .collect::<Result<_, _>>()?,
        ),
        Node::Array(items) => Node::Array(
            items
                .into_iter()
                .map(|v| resolve(v, kind))
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

fn write_json(out: &mut String, v: &Value) {
    // Serializing a `Value` to a string cannot fail (its keys are strings).
    out.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".into()));
}

fn write_node(out: &mut String, node: &Node, values: &Values<'_>) {
    match node {
        Node::Literal(v) => write_json(out, v),
        Node::Text(t) => write_json(out, &Value::String(t.clone())),
        Node::Object(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, &Value::String(k.clone()));
                out.push(':');
                write_node(out, v, values);
            }
            out.push('}');
        }
        Node::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_node(out, v, values);
            }
            out.push(']');
        }
        Node::Slot(slot) => {
            let value = match slot {
                Slot::Balance => values.balance.map_or(Value::Null, Value::from),
                Slot::Metadata(path) => {
                    let mut at = values.metadata.map(|m| Value::Object(m.clone()));
                    for part in path {
                        at = at.and_then(|v| v.get(part).cloned());
                    }
                    at.unwrap_or(Value::Null)
                }
                Slot::Items => values.items.clone().unwrap_or(Value::Array(Vec::new())),
                Slot::Cursor => values.cursor.clone().map_or(Value::Null, Value::String),
                Slot::HasMore => Value::Bool(values.has_more),
            };
            write_json(out, &value);
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Literal(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Literal(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Literal(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Literal(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Text(v))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Literal(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Literal(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            fields.push((k, v));
        }
        Ok(Node::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(v: Value) -> Metadata {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn bare_and_quoted_placeholders_become_json_values_in_template_order() {
        let t = BodyTemplate::parse(
            r#"{"credits": {balance}, "webhooks": "{metadata.webhooks}", "plan": {metadata.tier.name}, "a": [1, "x {y}"]}"#,
            LocalKind::Balance,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(t.needs_account());
        let m = metadata(json!({ "webhooks": ["https://a.example/\"q\""], "tier": {} }));
        let body = t.render(&Values {
            balance: Some(8500),
            metadata: Some(&m),
            ..Values::default()
        });
        assert_eq!(
            body,
            r#"{"credits":8500,"webhooks":["https://a.example/\"q\""],"plan":null,"a":[1,"x {y}"]}"#
        );
        serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        // The existing form keeps working.
        let old = BodyTemplate::parse(r#"{"wallet":{"balance":{balance}}}"#, LocalKind::Balance);
        assert_eq!(
            old.map(|t| t.render(&Values {
                balance: Some(3),
                ..Values::default()
            })),
            Ok(r#"{"wallet":{"balance":3}}"#.to_string())
        );
    }

    #[test]
    fn list_placeholders_only_on_lists_and_no_splicing() {
        let list =
            r#"{"data": {items}, "pagination": {"next_cursor": {cursor}, "has_more": {has_more}}}"#;
        let t =
            BodyTemplate::parse(list, LocalKind::Transactions).unwrap_or_else(|e| panic!("{e}"));
        assert!(!t.needs_account());
        let body = t.render(&Values {
            items: Some(json!([{ "id": 1 }])),
            cursor: Some("1".into()),
            has_more: true,
            ..Values::default()
        });
        assert_eq!(
            body,
            r#"{"data":[{"id":1}],"pagination":{"next_cursor":"1","has_more":true}}"#
        );
        assert!(matches!(
            BodyTemplate::parse(list, LocalKind::Balance),
            Err(TemplateError::Unknown(name, "balance", _)) if name == "items"
        ));
        assert_eq!(
            BodyTemplate::parse(r#"{"m": "credits: {balance}"}"#, LocalKind::Balance),
            Err(TemplateError::Spliced("balance".into()))
        );
        assert!(matches!(
            BodyTemplate::parse(r#"{"m": {balance}"#, LocalKind::Balance),
            Err(TemplateError::NotJson(_))
        ));
        assert!(matches!(
            BodyTemplate::parse(r#"{"m": {metadata.}}"#, LocalKind::Balance),
            Err(TemplateError::Unknown(..))
        ));
    }
}
