//! `keygate keys ...`: key management through the admin API.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::accounts::metadata_arg;
use super::client::{encode, query, Client, ClientError};
use super::output::{cell, print, print_raw, show_list, show_one, KEY_COLUMNS};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its plaintext (shown this once only).
    Create {
        /// The account the key belongs to.
        #[arg(long)]
        account: String,
        /// A name for the key, shown in lists and identity headers.
        #[arg(long)]
        name: String,
        /// A scope the key holds; repeat for several.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// `read` keys are refused on write methods.
        #[arg(long, value_parser = ["read", "read_write"])]
        permission: Option<String>,
        /// When the key stops working (RFC 3339, e.g. 2030-01-01T00:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        expires_at: Option<String>,
        /// A JSON object kept with the key, e.g. '{"customer":"c_42"}'.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
    },
    /// List keys (never their plaintext).
    List {
        /// Only this account's keys.
        #[arg(long)]
        account: Option<String>,
        /// Page size (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this key id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one key.
    Get { id: String },
    /// Rename a key.
    Rename { id: String, name: String },
    /// Disable a key (reversible with `enable`).
    Disable { id: String },
    /// Enable a disabled key.
    Enable { id: String },
    /// Revoke a key for good.
    Revoke { id: String },
    /// Replace a key's scopes (none clears them).
    SetScopes {
        id: String,
        #[arg(value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// Set when a key expires, or `never`.
    SetExpiry {
        id: String,
        #[arg(value_name = "RFC3339|never")]
        expires_at: String,
    },
    /// Give a key its own rate limit (over its account's plan and the route's): REQUESTS per
    /// PER_SECONDS, bursts up to BURST.
    SetLimit {
        id: String,
        requests: u64,
        per_seconds: u64,
        burst: u64,
    },
    /// Remove a key's own rate limit (its account's plan or the route decides again).
    ClearLimit { id: String },
    /// Replace a key's metadata with a JSON object ('{}' clears it).
    SetMetadata {
        id: String,
        #[arg(value_name = "JSON")]
        metadata: String,
    },
    /// Replace a key with a new one (same settings) and print the new plaintext (shown this
    /// once only). The old key keeps working for the grace period, or until revoked.
    Rotate {
        id: String,
        /// How long the old key keeps working; without it, until it is revoked.
        #[arg(long, value_name = "SECONDS")]
        grace_seconds: Option<u64>,
    },
    /// Import keys made elsewhere from a JSON-lines file (`-`: standard input), one entry a
    /// line: `{"key": "sk_..."}` or `{"sha256": "..."}` with `account_id`, and optionally
    /// `name`, `scopes`, `permission`, `expires_at`, `user_id`, `rate_limit`, `resources`,
    /// `metadata`. Refused lines are listed by number; the others go in. Running it again
    /// changes nothing.
    Import {
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
    },
}

pub fn run(client: &Client, json: bool, command: KeysCommand) -> Result<(), ClientError> {
    let key_path = |id: &str| format!("/keys/{}", encode(id));
    let patch = |id: &str, body: Value| -> Result<(), ClientError> {
        show_one(&client.patch(&key_path(id), &body)?, json, KEY_COLUMNS);
        Ok(())
    };
    let action = |id: &str, what: &str| -> Result<(), ClientError> {
        let reply = client.post(&format!("{}/{what}", key_path(id)), None)?;
        show_one(&reply, json, KEY_COLUMNS);
        Ok(())
    };
    match command {
        KeysCommand::Create {
            account,
            name,
            scopes,
            permission,
            expires_at,
            metadata,
        } => {
            let mut body = Map::new();
            body.insert("account_id".into(), json!(account));
            body.insert("name".into(), json!(name));
            body.insert("scopes".into(), json!(scopes));
            if let Some(p) = permission {
                body.insert("permission".into(), json!(p));
            }
            if let Some(t) = expires_at {
                body.insert("expires_at".into(), json!(t));
            }
            if let Some(text) = metadata {
                body.insert("metadata".into(), metadata_arg(&text)?);
            }
            let reply = client.post("/keys", Some(&Value::Object(body)))?;
            if json {
                print_raw(&reply);
            } else {
                print(&created(&reply.value));
            }
        }
        KeysCommand::List {
            account,
            limit,
            after,
        } => {
            let q = query(&[
                ("account_id", account),
                ("limit", limit.map(|l| l.to_string())),
                ("after", after),
            ]);
            let reply = client.get(&format!("/keys{q}"))?;
            show_list(&reply, json, "keys", KEY_COLUMNS);
        }
        KeysCommand::Get { id } => show_one(&client.get(&key_path(&id))?, json, KEY_COLUMNS),
        KeysCommand::Rename { id, name } => patch(&id, json!({ "name": name }))?,
        KeysCommand::Disable { id } => action(&id, "disable")?,
        KeysCommand::Enable { id } => action(&id, "enable")?,
        KeysCommand::Revoke { id } => action(&id, "revoke")?,
        KeysCommand::SetScopes { id, scopes } => patch(&id, json!({ "scopes": scopes }))?,
        KeysCommand::SetExpiry { id, expires_at } => {
            let value = if expires_at.eq_ignore_ascii_case("never") {
                Value::Null
            } else {
                json!(expires_at)
            };
            patch(&id, json!({ "expires_at": value }))?
        }
        KeysCommand::SetLimit {
            id,
            requests,
            per_seconds,
            burst,
        } => patch(
            &id,
            json!({ "rate_limit": {
                "requests": requests, "per_seconds": per_seconds, "burst": burst
            } }),
        )?,
        KeysCommand::ClearLimit { id } => patch(&id, json!({ "rate_limit": null }))?,
        KeysCommand::SetMetadata { id, metadata } => {
            patch(&id, json!({ "metadata": metadata_arg(&metadata)? }))?
        }
        KeysCommand::Rotate { id, grace_seconds } => {
            let body = match grace_seconds {
                Some(g) => json!({ "grace_seconds": g }),
                None => json!({}),
            };
            let reply = client.post(&format!("{}/rotate", key_path(&id)), Some(&body))?;
            if json {
                print_raw(&reply);
            } else {
                print(&rotated(&reply.value));
            }
        }
        KeysCommand::Import { file } => {
            let summary = super::import::run(client, &file)?;
            if json {
                println!("{}", summary.to_json());
            } else {
                print(&summary.to_text());
            }
        }
    }
    Ok(())
}

/// The rotate output: the new plaintext once, labelled, the new key's id, and what became of
/// the old one.
fn rotated(reply: &Value) -> String {
    let old = &reply["old"];
    let until = if old["expires_at"].is_null() {
        "until revoked".to_string()
    } else {
        format!("until {}", cell(&old["expires_at"]))
    };
    format!(
        "{}replaces:    {} (works {until})\n",
        created(reply),
        cell(&old["id"]),
    )
}

/// The create output: the plaintext once, labelled, then the key's details.
fn created(key: &Value) -> String {
    format!(
        "API key (shown only now; store it securely):\n\n    {}\n\n\
         id:          {}\n\
         account:     {}\n\
         name:        {}\n\
         prefix:      {}\n\
         scopes:      {}\n\
         permission:  {}\n\
         expires:     {}\n",
        cell(&key["key"]),
        cell(&key["id"]),
        cell(&key["account_id"]),
        cell(&key["name"]),
        cell(&key["display_prefix"]),
        cell(&key["scopes"]),
        cell(&key["permission"]),
        cell(&key["expires_at"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_output_labels_the_plaintext_and_id() {
        let out = created(&json!({
            "key": "kg_test_abc", "id": "key_1", "account_id": "acc_1", "name": "n",
            "display_prefix": "kg_test_ab", "scopes": [], "permission": "read", "expires_at": null
        }));
        assert!(out.contains("API key (shown only now"));
        assert!(out.contains("\n    kg_test_abc\n"));
        assert!(out.contains("id:          key_1\n"));
        assert!(out.contains("expires:     -\n"));
    }

    #[test]
    fn rotate_output_names_the_old_key_and_its_end() {
        let out = rotated(&json!({
            "key": "kg_test_new", "id": "key_2", "account_id": "acc_1", "name": "n",
            "display_prefix": "kg_test_ne", "scopes": [], "permission": "read", "expires_at": null,
            "old": { "id": "key_1", "expires_at": "2030-01-01T00:00:00Z" }
        }));
        assert!(out.contains("\n    kg_test_new\n"), "{out}");
        assert!(out.contains("id:          key_2\n"), "{out}");
        assert!(
            out.contains("replaces:    key_1 (works until 2030-01-01T00:00:00Z)\n"),
            "{out}"
        );
        let out = rotated(
            &json!({"key": "k", "id": "key_2", "old": {"id": "key_1", "expires_at": null}}),
        );
        assert!(out.contains("(works until revoked)"), "{out}");
    }
}
