//! `GET /admin/v1/openapi.json`: a hand-written OpenAPI 3.0 description of the admin API.

use axum::Json;
use serde_json::{json, Value};

pub async fn document() -> Json<Value> {
    Json(spec())
}

fn op(summary: &str, ok: &str, schema: &str) -> Value {
    json!({
        "summary": summary,
        "responses": {
            ok: {
                "description": "success",
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
            },
            "default": {
                "description": "error",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
            }
        }
    })
}

fn with_body(mut operation: Value, schema: &str) -> Value {
    operation["requestBody"] = json!({
        "required": true,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    });
    operation
}

fn id_param() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }])
}

fn paging(extra: &[(&str, &str)]) -> Value {
    let mut params = vec![
        json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 1000 } }),
        json!({ "name": "after", "in": "query", "schema": { "type": "string" } }),
    ];
    for (name, ty) in extra {
        params.push(json!({ "name": name, "in": "query", "schema": { "type": ty } }));
    }
    Value::Array(params)
}

fn action(summary: &str, schema: &str) -> Value {
    json!({ "parameters": id_param(), "post": op(summary, "200", schema) })
}

pub fn spec() -> Value {
    let mut list_accounts = op("List accounts", "200", "AccountList");
    list_accounts["parameters"] = paging(&[]);
    let mut list_keys = op("List keys", "200", "KeyList");
    list_keys["parameters"] = paging(&[("account_id", "string")]);
    let mut list_users = op("List users", "200", "UserList");
    list_users["parameters"] = paging(&[("account_id", "string")]);
    let mut rotate = op(
        "Rotate a key: a successor with the same settings (its plaintext returned once); the old key \
         expires after grace_seconds, or works until revoked when that is absent. 409 if revoked",
        "201",
        "RotatedKey",
    );
    rotate["requestBody"] = json!({
        "required": false,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/KeyRotation" } } }
    });
    let mut audit = op("Read the audit log, newest first", "200", "AuditList");
    audit["parameters"] = json!([
        { "name": "target", "in": "query", "schema": { "type": "string" } },
        { "name": "limit", "in": "query", "schema": { "type": "integer" } }
    ]);
    let mut transactions = op(
        "An account's credit transactions, oldest first",
        "200",
        "TransactionList",
    );
    transactions["parameters"] = paging(&[]);
    let time = json!({ "type": "string", "format": "date-time", "nullable": true });
    let credits = json!({
        "parameters": id_param(),
        "get": op("An account's credit balance", "200", "Balance"),
        "post": with_body(
            op("Top up (positive delta) or deduct (negative); 409 if the balance would go below zero", "200", "Balance"),
            "CreditAdjustment"
        ),
        "put": with_body(op("Set the credit balance", "200", "Balance"), "CreditBalance")
    });
    let rate_limit = json!({
        "type": "object", "nullable": true, "additionalProperties": false,
        "required": ["requests", "per_seconds", "burst"],
        "description": "The key's own token-bucket limit, over its account's plan and the route's",
        "properties": {
            "requests": { "type": "integer", "minimum": 1, "maximum": 1_000_000_000 },
            "per_seconds": { "type": "integer", "minimum": 1, "maximum": 86_400 * 366 },
            "burst": { "type": "integer", "minimum": 1, "maximum": u32::MAX }
        }
    });
    let resources = json!({
        "type": "object", "nullable": true,
        "description": "Resource kind -> the ids of that kind the key may reach (kinds and ids: [A-Za-z0-9_.:-]{1,64}); null: unrestricted",
        "additionalProperties": { "type": "array", "items": { "type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$" } }
    });
    let schemas = credit_schemas(&time);
    let user_schemas = user_schemas(&time);
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "keygate admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every request needs `Authorization: Bearer <admin token>`. Errors are {\"error\":{\"code\",\"message\"}}."
        },
        "security": [{ "adminToken": [] }],
        "paths": {
            "/admin/v1/accounts": {
                "post": with_body(op("Create an account", "201", "Account"), "NewAccount"),
                "get": list_accounts
            },
            "/admin/v1/accounts/{id}": {
                "parameters": id_param(),
                "get": op("Get an account", "200", "Account"),
                "patch": with_body(op("Put an account on a configured plan, or take it off (null)", "200", "Account"), "AccountPatch"),
                "delete": op("Delete an account (soft)", "200", "Account")
            },
            "/admin/v1/accounts/{id}/credits": credits,
            "/admin/v1/accounts/{id}/transactions": { "parameters": id_param(), "get": transactions },
            "/admin/v1/accounts/{id}/suspend": action("Suspend an account", "Account"),
            "/admin/v1/accounts/{id}/reactivate": action("Reactivate a suspended account", "Account"),
            "/admin/v1/keys": {
                "post": with_body(op("Create a key; the plaintext is returned once", "201", "CreatedKey"), "NewKey"),
                "get": list_keys
            },
            "/admin/v1/keys/{id}": {
                "parameters": id_param(),
                "get": op("Get a key", "200", "Key"),
                "patch": with_body(op("Rename a key, set its scopes, expiry or rate limit", "200", "Key"), "KeyPatch")
            },
            "/admin/v1/keys/{id}/disable": action("Disable a key", "Key"),
            "/admin/v1/keys/{id}/enable": action("Enable a disabled key", "Key"),
            "/admin/v1/keys/{id}/revoke": action("Revoke a key for good", "Key"),
            "/admin/v1/keys/{id}/rotate": { "parameters": id_param(), "post": rotate },
            "/admin/v1/users": {
                "post": with_body(op("Create a user (409 if the email is taken, in any account)", "201", "User"), "NewUser"),
                "get": list_users
            },
            "/admin/v1/users/{id}": {
                "parameters": id_param(),
                "get": op("Get a user", "200", "User"),
                "patch": with_body(op("Change a user's role or status; the user's tokens are cut off", "200", "User"), "UserPatch")
            },
            "/admin/v1/users/{id}/password": {
                "parameters": id_param(),
                "post": with_body(op("Set a user's password; the user's sessions end", "200", "User"), "UserPassword")
            },
            "/admin/v1/audit": { "get": audit },
            "/admin/v1/openapi.json": {
                "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3.0 JSON" } } }
            }
        },
        "components": {
            "securitySchemes": { "adminToken": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": { "error": { "type": "object", "properties": {
                        "code": { "type": "string", "enum": ["unauthorized", "not_found", "method_not_allowed", "conflict", "invalid_body", "store_unavailable", "internal_error"] },
                        "message": { "type": "string" }
                    } } }
                },
                "NewAccount": {
                    "type": "object", "additionalProperties": false, "required": ["name"],
                    "properties": { "name": { "type": "string", "minLength": 1, "maxLength": 200 } }
                },
                "Account": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "name": { "type": "string" },
                        "status": { "type": "string", "enum": ["active", "suspended", "deleted"] },
                        "plan": { "type": "string", "nullable": true },
                        "credits": { "type": "integer", "minimum": 0 },
                        "created_at": time
                    }
                },
                "AccountList": {
                    "type": "object",
                    "properties": {
                        "accounts": { "type": "array", "items": { "$ref": "#/components/schemas/Account" } },
                        "next": { "type": "string", "nullable": true }
                    }
                },
                "NewKey": {
                    "type": "object", "additionalProperties": false, "required": ["account_id", "name"],
                    "properties": {
                        "account_id": { "type": "string" },
                        "name": { "type": "string", "minLength": 1, "maxLength": 200 },
                        "scopes": { "type": "array", "items": { "type": "string" }, "default": [] },
                        "permission": { "type": "string", "enum": ["read", "read_write"], "default": "read_write" },
                        "expires_at": time,
                        "user_id": { "type": "string", "description": "a user of the same account" },
                        "rate_limit": rate_limit,
                        "resources": resources
                    }
                },
                "KeyPatch": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string" },
                        "scopes": { "type": "array", "items": { "type": "string" } },
                        "expires_at": time,
                        "rate_limit": rate_limit,
                        "resources": resources
                    }
                },
                "Key": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "account_id": { "type": "string" },
                        "user_id": { "type": "string", "nullable": true },
                        "name": { "type": "string" },
                        "display_prefix": { "type": "string" },
                        "scopes": { "type": "array", "items": { "type": "string" } },
                        "permission": { "type": "string", "enum": ["read", "read_write"] },
                        "status": { "type": "string", "enum": ["active", "disabled", "revoked"] },
                        "rate_limit": rate_limit,
                        "resources": resources,
                        "rotated_from": { "type": "string", "nullable": true, "description": "the key this one replaced" },
                        "created_at": time,
                        "expires_at": time,
                        "last_used_at": time
                    }
                },
                "CreatedKey": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Key" },
                        { "type": "object", "properties": { "key": { "type": "string", "description": "the plaintext, shown once" } } }
                    ]
                },
                "KeyList": {
                    "type": "object",
                    "properties": {
                        "keys": { "type": "array", "items": { "$ref": "#/components/schemas/Key" } },
                        "next": { "type": "string", "nullable": true }
                    }
                },
                "AuditList": {
                    "type": "object",
                    "properties": { "entries": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "id": { "type": "integer" },
                            "at": time,
                            "actor": { "type": "string" },
                            "action": { "type": "string" },
                            "target": { "type": "string" },
                            "detail": { "type": "string" }
                        }
                    } } }
                }
            }
        }
    });
    if let Some(all) = doc["components"]["schemas"].as_object_mut() {
        for extra in [schemas, user_schemas] {
            if let Value::Object(extra) = extra {
                all.extend(extra);
            }
        }
    }
    doc
}

/// The schemas of the users and key rotation endpoints.
fn user_schemas(time: &Value) -> Value {
    let role = json!({ "type": "string", "enum": ["owner", "admin", "member", "read_only"] });
    let password = json!({
        "type": "string", "minLength": crate::passwords::MIN_CHARS, "maxLength": crate::passwords::MAX_CHARS,
        "writeOnly": true, "description": "never returned"
    });
    json!({
        "NewUser": {
            "type": "object", "additionalProperties": false,
            "required": ["account_id", "email", "password"],
            "properties": {
                "account_id": { "type": "string" },
                "email": { "type": "string", "format": "email", "maxLength": 254, "description": "stored lower-cased; unique" },
                "password": password,
                "role": { "allOf": [role], "default": "member" }
            }
        },
        "UserPatch": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "role": role,
                "status": { "type": "string", "enum": ["active", "disabled"] }
            }
        },
        "UserPassword": {
            "type": "object", "additionalProperties": false, "required": ["password"],
            "properties": { "password": password }
        },
        "User": {
            "type": "object",
            "properties": {
                "id": { "type": "string" },
                "account_id": { "type": "string" },
                "email": { "type": "string" },
                "role": role,
                "status": { "type": "string", "enum": ["active", "disabled"] },
                "created_at": time
            }
        },
        "UserList": {
            "type": "object",
            "properties": {
                "users": { "type": "array", "items": { "$ref": "#/components/schemas/User" } },
                "next": { "type": "string", "nullable": true }
            }
        },
        "KeyRotation": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "grace_seconds": { "type": "integer", "minimum": 0, "description": "how long the old key keeps working; absent: until revoked" }
            }
        },
        "RotatedKey": {
            "allOf": [
                { "$ref": "#/components/schemas/Key" },
                { "type": "object", "properties": {
                    "key": { "type": "string", "description": "the new key's plaintext, shown once" },
                    "old": { "$ref": "#/components/schemas/Key" }
                } }
            ]
        }
    })
}

/// The schemas of the plan and credits endpoints.
fn credit_schemas(time: &Value) -> Value {
    let reason = json!({ "type": "string", "minLength": 1, "maxLength": 200 });
    json!({
        "AccountPatch": {
            "type": "object", "additionalProperties": false,
            "properties": { "plan": { "type": "string", "nullable": true, "description": "a plan from the config's [plans.*]; null clears" } }
        },
        "Balance": {
            "type": "object",
            "properties": { "balance": { "type": "integer", "minimum": 0 } }
        },
        "CreditAdjustment": {
            "type": "object", "additionalProperties": false, "required": ["delta"],
            "properties": {
                "delta": { "type": "integer", "not": { "enum": [0] } },
                "reason": reason
            }
        },
        "CreditBalance": {
            "type": "object", "additionalProperties": false, "required": ["balance"],
            "properties": {
                "balance": { "type": "integer", "minimum": 0, "maximum": crate::store::MAX_CREDITS },
                "reason": reason
            }
        },
        "TransactionList": {
            "type": "object",
            "properties": {
                "transactions": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer" },
                        "delta": { "type": "integer" },
                        "reason": { "type": "string" },
                        "key_id": { "type": "string", "nullable": true },
                        "balance_after": { "type": "integer" },
                        "created_at": time
                    }
                } },
                "next": { "type": "string", "nullable": true, "description": "pass as `after` for the next page" }
            }
        }
    })
}
