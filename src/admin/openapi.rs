//! `GET /admin/v1/openapi.json`: the admin API's OpenAPI 3.1 document, derived from the code by
//! utoipa: each handler's `#[utoipa::path]` (its responses, parameters and body), the request
//! and view types' `ToSchema` / `IntoParams` derives, and the router (`super::router`), which
//! registers every handler through `utoipa_axum::routes!` so a route cannot exist without its
//! description. What a schema cannot derive from a Rust type (a pattern, a length) is stated
//! beside the type and comes from the same constants the checks in
//! [`crate::keyservice::validate`] use.
//!
//! The document needs the admin token like every other admin path (the listener serves nothing
//! without it); its 401 is documented.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, RefOr, Required};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use super::error::ApiResult;
use crate::app::Shared;
use crate::config::Plan;
use crate::keyservice::validate;

/// The document's fixed parts; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate admin API",
        description = "Key, user, account and credit management. Every request, this document's \
                       too, needs `Authorization: Bearer <admin token>`. Errors are \
                       `{\"error\":{\"code\":\"...\",\"message\":\"...\"}}`; request bodies \
                       refuse unknown fields."
    ),
    security(("adminToken" = [])),
    components(schemas(ErrorBody)),
    modifiers(&AdminToken)
)]
pub struct ApiDoc;

struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "adminToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the admin token ([secrets] admin_token)"))
                    .build(),
            ),
        );
    }
}

/// The error body every failure answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code (see `ErrorCode`).
    #[schema(value_type = ErrorCode)]
    pub code: &'static str,
    /// A sentence for people, naming the refused field or parameter where there is one.
    pub message: String,
}

/// Every code an admin error carries (`ApiError::code`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // A schema only: the codes are written by `ApiError::code`.
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Conflict,
    InvalidBody,
    InvalidQuery,
    StoreUnavailable,
    Overloaded,
    InternalError,
}

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(ErrorBody::schema_ref()))
            .build(),
    )
}

trait SchemaRef {
    fn schema_ref() -> RefOr<Schema>;
}

impl<T: ToSchema> SchemaRef for T {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
    }
}

fn one(status: &str, response: ResponseBuilder) -> BTreeMap<String, RefOr<Response>> {
    BTreeMap::from([(status.to_string(), RefOr::T(response.build()))])
}

/// The answers any admin request can get: 401 without the admin token, 503 when the store
/// fails.
pub struct Always;

impl IntoResponses for Always {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = one(
            "401",
            error_response("missing or invalid admin token (`unauthorized`)").header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(String::schema())
                    .description(Some("`Bearer`"))
                    .build(),
            ),
        );
        all.extend(one(
            "503",
            error_response("the store is unavailable (`store_unavailable`); retrying is safe"),
        ));
        all
    }
}

/// 404 `not_found`: the path's resource does not exist (or is a deleted account).
pub struct NotFound;

impl IntoResponses for NotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        one(
            "404",
            error_response("no such resource, or a deleted account (`not_found`)"),
        )
    }
}

/// 422 `invalid_body`: the body was refused; the message names the field.
pub struct InvalidBody;

impl IntoResponses for InvalidBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        one(
            "422",
            error_response(
                "the body is malformed, misses a field, has an unknown one or a value outside \
                 its schema (`invalid_body`)",
            ),
        )
    }
}

/// 400 `invalid_query`: a query parameter was refused; the message names it.
pub struct InvalidQuery;

impl IntoResponses for InvalidQuery {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        one(
            "400",
            error_response("a query parameter is malformed or out of range (`invalid_query`)"),
        )
    }
}

/// 409 `conflict`: the change contradicts the target's state.
pub struct Conflict;

impl IntoResponses for Conflict {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        one(
            "409",
            error_response("the change contradicts the target's state (`conflict`)"),
        )
    }
}

/// What hashing a password can add: 503 `overloaded` (with `Retry-After`; documented with the
/// store's 503) and 500 when keygate itself fails.
pub struct Hashing;

impl IntoResponses for Hashing {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        one(
            "500",
            error_response("keygate failed to hash the password (`internal_error`)"),
        )
    }
}

/// `limit` on every list: 1..=1000, default 100.
pub fn limit_param() -> Parameter {
    ParameterBuilder::new()
        .name("limit")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(format!(
            "page size, 1 to {}; absent: {}",
            super::paging::MAX_LIMIT,
            super::paging::DEFAULT_LIMIT
        )))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(super::paging::MAX_LIMIT)),
        ))
        .build()
}

/// A display name ([`validate::name`]): 1-200 characters, not blank, no control characters.
pub fn name_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(validate::MAX_NAME_CHARS))
        .pattern(Some(validate::name_pattern()))
        .description(Some(
            "1-200 characters, not blank, no control characters; stored trimmed",
        ))
}

/// [`name_schema`], or null.
pub fn optional_name_schema() -> ObjectBuilder {
    name_schema().schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// An email ([`validate::email`]).
pub fn email_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(validate::MAX_EMAIL_CHARS))
        .pattern(Some(validate::email_pattern()))
        .description(Some(
            "name@domain, stored lower-cased; unique across accounts",
        ))
}

/// A password: 8-256 characters, never returned.
pub fn password_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(crate::passwords::MIN_CHARS))
        .max_length(Some(crate::passwords::MAX_CHARS))
        .write_only(Some(true))
        .description(Some("never returned"))
}

/// A key's scopes ([`validate::scopes`]): at most 100, each 1-64 of `A-Za-z0-9:._-`.
pub fn scopes_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(validate::SCOPE_PATTERN)),
        )
        .max_items(Some(validate::MAX_SCOPES))
        .description(Some("duplicates are dropped"))
}

/// A key's resources ([`validate::resources`]): kind -> ids, each 1-64 of `A-Za-z0-9_.:-`;
/// null: unrestricted.
pub fn resources_schema() -> ObjectBuilder {
    let name = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(validate::RESOURCE_PATTERN))
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(name()))
        .max_properties(Some(validate::MAX_RESOURCE_KINDS))
        .additional_properties(Some(
            ArrayBuilder::new()
                .items(name())
                .max_items(Some(validate::MAX_RESOURCE_IDS)),
        ))
        .description(Some(
            "resource kind -> the ids of that kind the key may reach; null: unrestricted",
        ))
}

/// An RFC 3339 time, or null.
pub fn optional_time_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        )))
}

/// The bodies that must change something: `{}` is refused ("nothing to change").
const AT_LEAST_ONE_FIELD: [&str; 3] = ["UpdateAccount", "UpdateKey", "UpdateUser"];

/// The derived document as JSON, with what the derives cannot say added: `minProperties` on
/// [`AT_LEAST_ONE_FIELD`] (utoipa-gen 5.5 writes `#[schema(min_properties = 1)]` as
/// `maxProperties`).
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    for name in AT_LEAST_ONE_FIELD {
        if let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(Value::as_object_mut)
        {
            schema.insert("minProperties".into(), json!(1));
        }
    }
    // A body documented as "may be left out" is read by `OptionalBody`: not required. (utoipa
    // only drops `required` for an `Option<T>` body, whose schema would then also allow
    // `null`, which the handlers refuse.)
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for operation in paths.values_mut().filter_map(Value::as_object_mut) {
            for body in operation
                .values_mut()
                .filter_map(|op| op.get_mut("requestBody"))
                .filter_map(Value::as_object_mut)
            {
                if body.get("description") == Some(&json!("may be left out")) {
                    body.insert("required".into(), json!(false));
                }
            }
        }
    }
    doc
}

/// The document as JSON, with the configured plans as the values `plan` may take (they change
/// on reload, so they are read per request).
pub fn spec(base: &Value, plans: &HashMap<String, Plan>) -> Value {
    let mut doc = base.clone();
    let mut names: Vec<&str> = plans.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut allowed: Vec<Value> = names.iter().map(|n| json!(n)).collect();
    allowed.push(Value::Null);
    if let Some(plan) = doc
        .pointer_mut("/components/schemas/UpdateAccount/properties/plan")
        .and_then(Value::as_object_mut)
    {
        plan.insert("enum".into(), Value::Array(allowed));
    }
    doc
}

/// The base document, made once when the router is built.
pub struct Document(pub Value);

#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "this document (OpenAPI 3.1)", body = Object),
        Always
    )
)]
pub async fn document(
    State(shared): State<Arc<Shared>>,
    axum::Extension(doc): axum::Extension<Arc<Document>>,
) -> ApiResult<Json<Value>> {
    let config = shared.config.load();
    Ok(Json(spec(&doc.0, &config.plans)))
}
