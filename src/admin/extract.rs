//! Extractors whose rejections are [`ApiError::InvalidBody`] (422 JSON naming the field) or, for
//! the query string, [`ApiError::InvalidQuery`] (400), instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query as AxumQuery, Request};
use axum::http::request::Parts;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::ApiError;
use crate::secret::Secret;

/// A JSON request body: an object (serde would read a struct from an array too, which the
/// document does not allow). Malformed JSON, another JSON type, wrong types, unknown fields
/// (request types use `deny_unknown_fields`) and missing fields are all 422 `invalid_body`; the
/// content type is not checked (the Bearer token, not the browser, guards this API).
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        Ok(Body(parse_object(&bytes)?))
    }
}

/// `bytes` as a `T`, if they hold a JSON object.
fn parse_object<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    // axum's parser reports the path of the failing field (`scopes[1]: invalid type ...`).
    let Json(value) = Json::<T>::from_bytes(bytes).map_err(|e| ApiError::invalid(e.body_text()))?;
    Ok(value)
}

/// A JSON body that may be left out: an empty (or all-whitespace) body is `T::default()`;
/// anything else is parsed as [`Body`] does.
pub struct OptionalBody<T>(pub T);

impl<T, S> FromRequest<S> for OptionalBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        if bytes.trim_ascii().is_empty() {
            return Ok(OptionalBody(T::default()));
        }
        Ok(OptionalBody(parse_object(&bytes)?))
    }
}

/// Query parameters; a bad value is 400 `invalid_query` naming the parameter.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let AxumQuery(value) = AxumQuery::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
        Ok(Query(value))
    }
}

/// The `{id}` path segment.
pub struct Id(pub String);

impl<S> FromRequestParts<S> for Id
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        Ok(Id(id))
    }
}

/// For `#[serde(deserialize_with = "secret")]` on a password field: a JSON string becomes a
/// [`Secret`]; anything else is refused with a message that does not repeat the value (serde's
/// own "invalid type: integer `12345678`" would echo a mistyped password back).
pub fn secret<'de, D>(d: D) -> Result<Secret, D::Error>
where
    D: Deserializer<'de>,
{
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(Secret::new(s)),
        _ => Err(serde::de::Error::custom("expected a string")),
    }
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>` field: runs
/// only when the field is present, so `null` becomes `Some(None)` and absence `None`.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// For `#[serde(default, deserialize_with = "not_null")]` on an `Option<T>` field the document
/// calls non-nullable: absence is `None` (serde's default), a value is `Some`, and `null` is
/// refused (`invalid type: null, expected ...`, with the field's path) instead of being read as
/// absence, as a plain `Option` would.
pub fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        #[serde(default, deserialize_with = "not_null")]
        name: Option<String>,
        #[serde(default, deserialize_with = "present")]
        plan: Option<Option<String>>,
    }

    #[test]
    fn not_null_refuses_null_but_allows_absence() {
        let p: Patch = serde_json::from_str("{}").unwrap();
        assert_eq!((p.name, p.plan), (None, None));
        let p: Patch = serde_json::from_str(r#"{"name":"x","plan":null}"#).unwrap();
        assert_eq!((p.name.as_deref(), p.plan), (Some("x"), Some(None)));
        let e = serde_json::from_str::<Patch>(r#"{"name":null}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type: null"), "{e}");
    }
}
