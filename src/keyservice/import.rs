//! Importing keys made elsewhere, so a provider's customers keep the keys they hold: each entry
//! is a plaintext key (hashed here, never kept) or the SHA-256 digest a provider stored, with
//! whatever a created key can carry (account, user, name, scopes, permission, expiry, its own
//! rate limit, resources, metadata), each checked as on creation. Entries are checked one by
//! one — a bad one is reported with its line number and the others go in — then stored in
//! batches (one transaction each on SQLite). Idempotent: a key already stored is reported as
//! existing, and left as it is.
//!
//! A plaintext key in keygate's own format is stored under `HMAC(pepper, key)`, like a made
//! one; a key of a `[keys] legacy` format, and a SHA-256 digest, under
//! `HMAC(pepper, SHA-256(key))` — the same hash, so both forms of one key are one key, and the
//! hash the request path computes for that prefix ([`crate::keys::KeyFormat::lookup_hash`]).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::validate::{self, RateLimitBody};
use super::{Actor, KeyService, ServiceError, ServiceResult};
use crate::invalidation::Invalidation;
use crate::keys::KeyHash;
use crate::store::{now, AccountStatus, ImportOutcome, KeyRecord, Metadata, NewKey, Permission};

/// Keys per store call: one SQLite transaction each (a whole CLI part).
const BATCH: usize = 10_000;
/// Most entries one call takes (the CLI sends files in parts of this size or less).
pub const MAX_IMPORT: usize = 10_000;

/// One entry as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The plaintext key.
    #[serde(default)]
    key: Option<String>,
    /// Its SHA-256, 64 hex digits or base64 (standard or URL-safe, padding optional).
    #[serde(default)]
    sha256: Option<String>,
    account_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default = "default_name")]
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    permission: Option<Permission>,
    /// RFC 3339, in the future.
    #[serde(default)]
    expires_at: Option<String>,
    /// The key's own limit, as on creation.
    #[serde(default)]
    rate_limit: Option<RateLimitBody>,
    /// Resource kind -> allowed ids; absent: unrestricted.
    #[serde(default)]
    resources: Option<BTreeMap<String, Vec<String>>>,
    /// Any JSON object (not null), as on creation.
    #[serde(default)]
    metadata: Metadata,
}

fn default_name() -> String {
    "imported".to_string()
}

/// What an import came to, entry by entry. Line numbers count from 1 in the order given.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// (line, key id, stored now: false when it already existed)
    pub keys: Vec<(usize, String, bool)>,
    /// (line, why the entry was refused); never holds a key.
    pub errors: Vec<(usize, String)>,
}

impl ImportReport {
    pub fn created(&self) -> usize {
        self.keys.iter().filter(|(_, _, new)| *new).count()
    }
}

/// An entry checked and hashed, ready for the store.
struct Ready {
    line: usize,
    new: NewKey,
}

impl KeyService {
    /// Imports `entries` (JSON objects, line `first_line + i` for entry `i`). Operators only.
    pub async fn import_keys(
        &self,
        actor: &Actor,
        entries: Vec<Map<String, Value>>,
        first_line: usize,
    ) -> ServiceResult<ImportReport> {
        if !matches!(actor, Actor::Operator) {
            return Err(ServiceError::NotFound("no such endpoint".into()));
        }
        if entries.len() > MAX_IMPORT {
            return Err(ServiceError::invalid(
                "keys",
                format!("`keys`: at most {MAX_IMPORT} entries per call"),
            ));
        }
        let mut report = ImportReport::default();
        let mut ready = Vec::with_capacity(entries.len());
        let mut accounts: HashMap<String, Option<AccountStatus>> = HashMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let line = first_line + i;
            match self.check_entry(entry, &mut accounts).await {
                Ok(new) => ready.push(Ready { line, new }),
                Err(message) => report.errors.push((line, message)),
            }
        }
        for chunk in chunks(ready, BATCH) {
            let lines: Vec<usize> = chunk.iter().map(|r| r.line).collect();
            let outcomes = self
                .store
                .import_keys(chunk.into_iter().map(|r| r.new).collect())
                .await?;
            for (line, outcome) in lines.into_iter().zip(outcomes) {
                match outcome {
                    ImportOutcome::Created(key) => {
                        self.invalidate_created(&key).await;
                        report.keys.push((line, key.id, true));
                    }
                    ImportOutcome::Existing(id) => report.keys.push((line, id, false)),
                    ImportOutcome::Failed(e) => report.errors.push((line, e.to_string())),
                }
            }
        }
        report.errors.sort_by_key(|(line, _)| *line);
        self.record(
            actor,
            "key.import",
            "keys",
            format!(
                "created={} existing={} refused={}",
                report.created(),
                report.keys.len() - report.created(),
                report.errors.len()
            ),
        )
        .await;
        Ok(report)
    }

    /// Drops a cached "unknown key" answer for the new key's hash, should one exist.
    async fn invalidate_created(&self, key: &KeyRecord) {
        self.invalidate(Invalidation::Key(key.hash)).await;
    }

    /// The entry as a key to store, or why not (a message that never holds the key).
    async fn check_entry(
        &self,
        entry: Map<String, Value>,
        accounts: &mut HashMap<String, Option<AccountStatus>>,
    ) -> Result<NewKey, String> {
        let entry: Entry =
            serde_path_to_error::deserialize(Value::Object(entry)).map_err(entry_error)?;
        let (hash, display_prefix) = self.entry_hash(&entry)?;
        let name = validate::name("name", &entry.name).map_err(|e| e.to_string())?;
        let scopes = validate::scopes(entry.scopes).map_err(|e| e.to_string())?;
        let user_id = entry
            .user_id
            .map(|u| validate::name("user_id", &u))
            .transpose()
            .map_err(|e| e.to_string())?;
        let rate_limit = entry
            .rate_limit
            .map(|l| validate::rate_limit("rate_limit", l))
            .transpose()
            .map_err(|e| e.to_string())?;
        let resources = entry
            .resources
            .map(validate::resources)
            .transpose()
            .map_err(|e| e.to_string())?;
        let metadata = validate::metadata(entry.metadata).map_err(|e| e.to_string())?;
        let expires_at = match entry.expires_at.as_deref() {
            None => None,
            Some(t) => {
                let at = validate::time("expires_at", t).map_err(|e| e.to_string())?;
                if at <= now() {
                    return Err("`expires_at` must be in the future".to_string());
                }
                Some(at)
            }
        };
        let status = match accounts.get(&entry.account_id) {
            Some(s) => *s,
            None => {
                let s = self
                    .store
                    .get_account(&entry.account_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|a| a.status);
                accounts.insert(entry.account_id.clone(), s);
                s
            }
        };
        match status {
            None => return Err("account not found".to_string()),
            Some(AccountStatus::Deleted) => {
                return Err("the account is deleted; it cannot get new keys".to_string())
            }
            Some(_) => {}
        }
        if let Some(user_id) = &user_id {
            let user = self
                .store
                .get_user(user_id)
                .await
                .map_err(|e| e.to_string())?;
            if user.is_none_or(|u| u.account_id != entry.account_id) {
                return Err("`user_id`: no such user in the account".to_string());
            }
        }
        Ok(NewKey {
            account_id: entry.account_id,
            user_id,
            name,
            display_prefix,
            hash,
            scopes,
            permission: entry.permission.unwrap_or(Permission::ReadWrite),
            expires_at,
            rate_limit,
            resources,
            rotated_from: None,
            metadata,
        })
    }

    /// The lookup hash and the list prefix of an entry's key.
    fn entry_hash(&self, entry: &Entry) -> Result<(KeyHash, String), String> {
        match (&entry.key, &entry.sha256) {
            (Some(key), None) => {
                let hash = self
                    .key_format
                    .lookup_hash(&self.hasher, key)
                    .map_err(|_| {
                        "`key` fits neither keygate's key format nor a `[keys] legacy` format"
                            .to_string()
                    })?;
                let shown = match self.key_format.legacy_for(key) {
                    // The legacy prefix and four characters: enough to tell keys apart in a list.
                    Some(l) => key.chars().take(l.prefix.len() + 4).collect(),
                    None => self.key_format.display_prefix(key),
                };
                Ok((hash, shown))
            }
            (None, Some(digest)) => {
                let Some(legacy) = self.key_format.legacy().first() else {
                    return Err(
                        "a `sha256` entry needs a `[keys] legacy` format, or the key could \
                         never be presented"
                            .to_string(),
                    );
                };
                let digest = decode_digest(digest).ok_or_else(|| {
                    "`sha256` must be 32 bytes as 64 hex digits or base64".to_string()
                })?;
                Ok((
                    self.hasher.hash_legacy_digest(&digest),
                    legacy.prefix.clone(),
                ))
            }
            (Some(_), Some(_)) => Err("give `key` or `sha256`, not both".to_string()),
            (None, None) => Err("`key` or `sha256` is required".to_string()),
        }
    }
}

/// Why serde refused an entry, naming the field (`metadata`, `rate_limit.burst`). serde quotes
/// a string it did not expect, and a plaintext key given where another field belongs would be
/// echoed: then only the field is named.
fn entry_error(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let text = e.inner().to_string();
    if text.contains("invalid type: string") || text.contains("invalid value: string") {
        format!("`{path}` has the wrong type")
    } else if path == "." {
        text
    } else {
        format!("`{path}`: {text}")
    }
}

/// A SHA-256 digest as hex or base64 (the forms providers and migration tools write).
fn decode_digest(text: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())?
    };
    bytes.try_into().ok()
}

fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        out.push(items.by_ref().take(size).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{decode_digest, entry_error, Entry};

    fn refusal(entry: serde_json::Value) -> String {
        match serde_path_to_error::deserialize::<_, Entry>(entry) {
            Ok(_) => "accepted".into(),
            Err(e) => entry_error(e),
        }
    }

    #[test]
    fn a_refused_entry_names_the_field_and_never_quotes_a_string() {
        let key = "sk_live_0123456789abcdef0123";
        let cases = [
            (
                serde_json::json!({ "account_id": "a", "metadata": [1] }),
                "`metadata`: invalid type: sequence, expected a map",
            ),
            (
                serde_json::json!({ "account_id": "a", "metadata": null }),
                "`metadata`: invalid type: null, expected a map",
            ),
            (
                serde_json::json!({ "account_id": "a", "metadata": key }),
                "`metadata` has the wrong type",
            ),
            (
                serde_json::json!({ "account_id": "a", "scopes": key }),
                "`scopes` has the wrong type",
            ),
            (
                serde_json::json!({ "account_id": "a", "rate_limit": { "requests": 1 } }),
                "`rate_limit`: missing field `per_seconds`",
            ),
        ];
        for (entry, expected) in cases {
            assert_eq!(refusal(entry), expected);
        }
        let accepted =
            serde_json::json!({ "account_id": "a", "metadata": { "k": [key] }, "resources": {} });
        assert_eq!(refusal(accepted), "accepted");
    }

    #[test]
    fn a_digest_reads_as_hex_or_any_base64() {
        let digest = crate::keys::sha256("sk_live_0123456789abcdef");
        let hex = hex::encode(digest);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        assert_eq!(decode_digest(&hex), Some(digest));
        assert_eq!(decode_digest(&hex.to_uppercase()), Some(digest));
        assert_eq!(decode_digest(&b64), Some(digest));
        assert_eq!(decode_digest(&url), Some(digest));
        assert_eq!(decode_digest("abcd"), None);
        assert_eq!(decode_digest(&hex[..62]), None);
    }
}
