//! User passwords: argon2id hashes in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$...`).
//!
//! Parameters are OWASP's recommendation for argon2id (19 MiB, 2 passes, 1 lane), which are also
//! the `argon2` crate's defaults. Verification reads the parameters from the stored string, so
//! hashes made with other parameters keep working. Passwords only ever travel as [`Secret`]s,
//! and neither they nor their hashes reach a log line or a response.
//!
//! Hashing and verifying take tens of milliseconds of CPU on purpose: async callers should run
//! them on the blocking pool (`tokio::task::spawn_blocking`).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::secret::Secret;

/// Length bounds of a new password, in characters.
pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 256;

/// A hash of a password nobody knows, made with the current parameters: [`verify_dummy`]
/// verifies against it so an unknown email costs as much as a wrong password.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$a2V5Z2F0ZS1kdW1teS1zYQ$rP0Y+oHnLZDxxsR9wCiAl6ET+do/9JQKkO8zeCcZvUM";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The hasher failed (never for valid parameters and a password within the bounds). The
    /// message carries argon2's error, never the password.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// Hashes a password with a fresh random salt; the result is a PHC string.
pub fn hash(password: &Secret) -> Result<String, PasswordError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (argon2's comparison is constant-time). A
/// malformed or non-argon2 string matches nothing.
pub fn verify(password: &Secret, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return false;
    }
    hasher()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok()
}

/// Spends the time of one real [`verify`], for a login whose email is unknown, so the answer
/// does not reveal which emails exist. Always fails.
pub fn verify_dummy(password: &Secret) {
    let _ = verify(password, DUMMY_HASH);
}

/// Checks a password an operator or user sets: [`MIN_CHARS`]..=[`MAX_CHARS`] characters. The
/// message names the `password` field and never contains the password.
pub fn validate_new(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(format!(
            "`password` must be at least {MIN_CHARS} characters"
        ));
    }
    if chars > MAX_CHARS {
        return Err(format!("`password` must be at most {MAX_CHARS} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let pw = Secret::new("correct horse battery staple");
        let phc = hash(&pw).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify(&pw, &phc));
        assert!(!verify(&Secret::new("correct horse battery stapler"), &phc));
        assert!(!verify(&Secret::new(""), &phc));
        // A fresh salt each time.
        assert_ne!(hash(&pw).expect("hash"), phc);
    }

    #[test]
    fn malformed_hashes_match_nothing() {
        let pw = Secret::new("whatever-password");
        for bad in [
            "",
            "plain",
            "$argon2id$",
            "$pbkdf2-sha256$i=1$c2FsdA$aGFzaA",
        ] {
            assert!(!verify(&pw, bad), "{bad:?}");
        }
    }

    #[test]
    fn the_dummy_hash_uses_the_current_parameters() {
        let parsed = PasswordHash::new(DUMMY_HASH).expect("parses");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        let params = Params::try_from(&parsed).expect("params");
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (
                Params::DEFAULT.m_cost(),
                Params::DEFAULT.t_cost(),
                Params::DEFAULT.p_cost()
            )
        );
        let real = hash(&Secret::new("something-else")).expect("hash");
        let real = PasswordHash::new(&real).expect("parses");
        assert_eq!(real.params, parsed.params);
        assert!(!verify(&Secret::new("anything at all"), DUMMY_HASH));
        verify_dummy(&Secret::new("anything at all"));
    }

    #[test]
    fn dummy_costs_about_as_much_as_a_real_verify() {
        let pw = Secret::new("timing-password");
        let phc = hash(&pw).expect("hash");
        let time = |f: &dyn Fn()| {
            let start = std::time::Instant::now();
            for _ in 0..3 {
                f();
            }
            start.elapsed()
        };
        let real = time(&|| {
            verify(&Secret::new("wrong-password"), &phc);
        });
        let dummy = time(&|| verify_dummy(&Secret::new("wrong-password")));
        let ratio = dummy.as_secs_f64() / real.as_secs_f64().max(1e-9);
        assert!(
            (0.25..4.0).contains(&ratio),
            "dummy {dummy:?} vs real {real:?}"
        );
    }

    #[test]
    fn new_password_bounds() {
        assert!(validate_new("12345678").is_ok());
        assert!(validate_new(&"é".repeat(256)).is_ok());
        let short = validate_new("1234567").err().unwrap_or_default();
        assert!(short.contains("password") && short.contains('8'), "{short}");
        assert!(!short.contains("1234567"));
        let long = validate_new(&"x".repeat(257)).err().unwrap_or_default();
        assert!(long.contains("password") && long.contains("256"), "{long}");
        assert!(validate_new("").is_err());
    }
}
