//! Resolving the pepper, the admin token, the token signing secret and the Redis password.
//!
//! Each comes from an environment variable or a file named in the config. When neither is
//! configured, keygate generates one into its data directory (mode 0600) on first start and
//! reuses it after, so a single-machine install works with no setup and keys survive restarts.
//! The log says where a generated secret is, never what it is.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::distr::{Alphanumeric, SampleString};

use super::{Config, SecretRef};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{name}`: environment variable {var} is not set or empty")]
    MissingEnv { name: &'static str, var: String },
    #[error("secret `{name}`: cannot read {path}: {source}")]
    File {
        name: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("secret `{name}`: {path} is empty")]
    Empty { name: &'static str, path: String },
    #[error("secret `{name}`: cannot create {path}: {source}")]
    Create {
        name: &'static str,
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Secrets {
    pub pepper: Secret,
    pub admin_token: Secret,
    /// HS256 signing secret (configured or generated); `None` with EdDSA / RS256.
    pub jwt_secret: Option<Secret>,
    /// EdDSA / RS256 private key PEM; `None` with HS256.
    pub jwt_private_key: Option<Secret>,
    /// `[store] password`; never generated (Redis decides it).
    pub store_password: Option<Secret>,
}

pub fn resolve_secrets(config: &Config) -> Result<Secrets, SecretError> {
    let hs256 = config.tokens.algorithm == crate::tokens::Algorithm::Hs256;
    let pepper = resolve(
        "pepper",
        config.secret_refs.pepper.as_ref(),
        &config.data_dir,
    )?;
    let shared_store = !matches!(config.store, super::StoreSettings::Sqlite { .. });
    let jwt_secret = match (hs256, &config.tokens.secret, shared_store) {
        (false, _, _) => None,
        // Replicas on one store must accept each other's tokens, and a secret generated into
        // each data directory would differ; the pepper is required to be shared there.
        (true, None, true) => Some(derive_jwt_secret(&pepper)),
        (true, reference, _) => Some(resolve("jwt_secret", reference.as_ref(), &config.data_dir)?),
    };
    let jwt_private_key = match (&config.tokens.private_key, hs256) {
        (Some(r), false) => Some(resolve("jwt_private_key", Some(r), &config.data_dir)?),
        (None, false) => {
            return Err(SecretError::MissingEnv {
                name: "jwt_private_key",
                var: "[tokens] private_key = { file = \"...\" } (needed for EdDSA / RS256)".into(),
            })
        }
        _ => None,
    };
    let store_password = match &config.secret_refs.store_password {
        Some(r) => Some(resolve("store_password", Some(r), &config.data_dir)?),
        None => None,
    };
    Ok(Secrets {
        store_password,
        jwt_secret,
        jwt_private_key,
        pepper,
        admin_token: resolve(
            "admin_token",
            config.secret_refs.admin_token.as_ref(),
            &config.data_dir,
        )?,
    })
}

/// The HS256 secret replicas share when none is configured: an HMAC of a fixed label under the
/// pepper. One-way, so a leaked token secret does not reveal the pepper; set `[tokens] secret`
/// to rotate it on its own.
fn derive_jwt_secret(pepper: &Secret) -> Secret {
    use hmac::{Hmac, Mac};
    // HMAC accepts a key of any length, so this cannot fail; a fixed label keeps it distinct.
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(pepper.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"keygate jwt hs256 secret v1");
    Secret::new(hex::encode(mac.finalize().into_bytes()))
}

fn resolve(
    name: &'static str,
    reference: Option<&SecretRef>,
    data_dir: &Path,
) -> Result<Secret, SecretError> {
    match reference {
        Some(SecretRef::Env(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
            _ => Err(SecretError::MissingEnv {
                name,
                var: var.clone(),
            }),
        },
        Some(SecretRef::File(path)) => read_file(name, Path::new(path)),
        None => generated(name, data_dir),
    }
}

fn read_file(name: &'static str, path: &Path) -> Result<Secret, SecretError> {
    let text = fs::read_to_string(path).map_err(|source| SecretError::File {
        name,
        path: path.display().to_string(),
        source,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(SecretError::Empty {
            name,
            path: path.display().to_string(),
        });
    }
    Ok(Secret::new(value))
}

fn generated(name: &'static str, data_dir: &Path) -> Result<Secret, SecretError> {
    let path = data_dir.join(name);
    if path.exists() {
        return read_file(name, &path);
    }
    let create_err = |source| SecretError::Create {
        name,
        path: path.display().to_string(),
        source,
    };
    fs::create_dir_all(data_dir).map_err(create_err)?;
    let _ = fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700));
    let value = Alphanumeric.sample_string(&mut rand::rng(), 48);
    // Written to a private temporary file, then linked into place: a crash midway leaves no
    // empty secret behind, and `hard_link` fails if another process got there first, so two
    // processes racing on first start cannot overwrite each other's secret.
    let tmp = data_dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(create_err)?;
    file.write_all(value.as_bytes()).map_err(create_err)?;
    file.sync_all().map_err(create_err)?;
    drop(file);
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    if let Err(e) = linked {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return read_file(name, &path);
        }
        return Err(create_err(e));
    }
    tracing::warn!(secret = name, path = %path.display(), "generated a new secret; keep this file safe");
    Ok(Secret::new(value))
}

/// What `keygate check-config` says about the secrets a config names, without generating or
/// changing anything: every environment variable set and non-empty, every file present,
/// readable, non-empty and not readable by everyone. One line per problem; empty when all is
/// well. Secrets left to generation are fine (they are made at first start).
pub fn check_secrets(config: &Config) -> Vec<String> {
    let hs256 = config.tokens.algorithm == crate::tokens::Algorithm::Hs256;
    let mut named: Vec<(&str, &SecretRef)> = Vec::new();
    if let Some(r) = &config.secret_refs.pepper {
        named.push(("secrets.pepper", r));
    }
    if let Some(r) = &config.secret_refs.admin_token {
        named.push(("secrets.admin_token", r));
    }
    match (&config.tokens.secret, &config.tokens.private_key) {
        (Some(r), _) if hs256 => named.push(("tokens.secret", r)),
        (_, Some(r)) if !hs256 => named.push(("tokens.private_key", r)),
        _ => {}
    }
    if let Some(r) = &config.secret_refs.store_password {
        named.push(("store.password", r));
    }
    let mut problems = Vec::new();
    for (field, reference) in named {
        match reference {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => {}
                Ok(_) => problems.push(format!("  `{field}`: environment variable {var} is empty")),
                Err(_) => problems.push(format!(
                    "  `{field}`: environment variable {var} is not set"
                )),
            },
            SecretRef::File(path) => {
                if let Some(problem) = check_file(Path::new(path)) {
                    problems.push(format!("  `{field}`: {path}: {problem}"));
                }
            }
        }
    }
    problems
}

fn check_file(path: &Path) -> Option<String> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(e.to_string()),
    };
    if meta.permissions().mode() & 0o004 != 0 {
        return Some(format!(
            "is readable by every user (mode {:o}); chmod o-r it",
            meta.permissions().mode() & 0o777
        ));
    }
    match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Some("is empty".into()),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}
