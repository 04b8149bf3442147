//! User passwords: argon2id hashes in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$...`).
//!
//! Parameters are OWASP's recommendation for argon2id (19 MiB, 2 passes, 1 lane), which are also
//! the `argon2` crate's defaults. Verification reads the parameters from the stored string, so
//! hashes made with other parameters keep working. Passwords only ever travel as [`Secret`]s,
//! and neither they nor their hashes reach a log line or a response.
//!
//! Hashing and verifying take tens of milliseconds of CPU and 19 MiB of memory each, on purpose.
//! Async callers go through [`hash_bounded`] and [`admit`] + [`Turn::verify`]: one process-wide
//! [`BoundedHasher`] runs at most one hash per core on the blocking pool, lets a short queue wait
//! for a turn, and refuses the rest with [`PasswordError::Overloaded`] (503 with `Retry-After`),
//! so a login flood costs a bounded amount of memory and threads and leaves the proxy's cores
//! their share.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::OnceLock;
use tokio::sync::{Semaphore, SemaphorePermit};

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
    /// Every hashing slot is busy and the queue is full: try again shortly.
    #[error("password hashing is at capacity")]
    Overloaded,
}

/// How many password operations may wait for a turn, per hashing slot, before more are refused.
/// A waiting operation holds no argon2 memory; the queue absorbs a burst of honest logins.
const QUEUE_PER_SLOT: usize = 4;

/// Bounds concurrent argon2 work: `slots` run at once on the blocking pool, `queue` more wait,
/// the rest are refused at once. Permits are taken in order (tokio's semaphore is fair).
pub struct BoundedHasher {
    /// Running plus waiting operations; a failed `try_acquire` here is the overload answer.
    admitted: Semaphore,
    /// Operations running on the blocking pool, each holding argon2's memory.
    running: Semaphore,
}

impl BoundedHasher {
    pub fn new(slots: usize, queue: usize) -> Self {
        let slots = slots.max(1);
        Self {
            admitted: Semaphore::new(slots.saturating_add(queue)),
            running: Semaphore::new(slots),
        }
    }

    /// A place among the running and waiting operations, or [`PasswordError::Overloaded`] at
    /// once when the queue is full. Callers take it before any other work for the password
    /// (a store lookup), so refused requests cost nearly nothing.
    pub fn admit(&self) -> Result<Turn<'_>, PasswordError> {
        let admitted = self
            .admitted
            .try_acquire()
            .map_err(|_| PasswordError::Overloaded)?;
        Ok(Turn {
            pool: self,
            _admitted: admitted,
        })
    }

    /// [`BoundedHasher::admit`], then [`Turn::run`].
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        self.admit()?.run(work).await
    }
}

/// An admitted password operation: it waits for a running slot when it runs.
pub struct Turn<'a> {
    pool: &'a BoundedHasher,
    _admitted: SemaphorePermit<'a>,
}

impl Turn<'_> {
    /// Runs `work` on the blocking pool once a slot is free.
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _running = self
            .pool
            .running
            .acquire()
            .await
            .map_err(|_| PasswordError::Overloaded)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| PasswordError::Hash(format!("hashing task failed: {e}")))
    }

    /// [`verify`] (with `Some(phc)`) or [`verify_dummy`] (with `None`, for an unknown user):
    /// `false` for no match.
    pub async fn verify(
        self,
        password: Secret,
        phc: Option<String>,
    ) -> Result<bool, PasswordError> {
        self.run(move || match phc {
            Some(phc) => verify(&password, &phc),
            None => {
                verify_dummy(&password);
                false
            }
        })
        .await
    }
}

/// The process-wide hasher: one slot per core but one (a core stays free for the proxy, so a
/// login flood cannot slow the requests it serves), at least one; [`QUEUE_PER_SLOT`] waiting
/// per slot.
pub fn hasher_pool() -> &'static BoundedHasher {
    static POOL: OnceLock<BoundedHasher> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let slots = cores.saturating_sub(1).max(1);
        BoundedHasher::new(slots, slots.saturating_mul(QUEUE_PER_SLOT))
    })
}

/// [`hash`] through the process-wide [`BoundedHasher`].
pub async fn hash_bounded(password: Secret) -> Result<String, PasswordError> {
    hasher_pool().run(move || hash(&password)).await?
}

/// A turn on the process-wide [`BoundedHasher`], for a verification (see [`Turn::verify`]).
pub fn admit() -> Result<Turn<'static>, PasswordError> {
    hasher_pool().admit()
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

    #[tokio::test]
    async fn the_bounded_hasher_queues_then_refuses() {
        let pool = std::sync::Arc::new(BoundedHasher::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
        let blocker = {
            let (pool, wait) = (pool.clone(), wait.clone());
            tokio::spawn(async move {
                pool.run(move || wait.lock().map(|w| w.recv().is_ok()).unwrap_or(false))
                    .await
            })
        };
        // The second waits in the queue; the third finds it full.
        while pool.running.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let queued = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| 7).await })
        };
        while pool.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            pool.run(|| 0).await,
            Err(PasswordError::Overloaded)
        ));
        release.send(()).expect("release");
        assert!(blocker.await.expect("join").expect("ran"));
        assert_eq!(queued.await.expect("join").expect("ran"), 7);
        // Free again.
        assert_eq!(pool.run(|| 1).await.expect("ran"), 1);
    }

    #[tokio::test]
    async fn bounded_hash_and_verify() {
        let pw = Secret::new("correct horse battery staple");
        let phc = hash_bounded(pw.clone()).await.expect("hash");
        let verify = |pw: &Secret, phc: Option<String>| {
            let pw = pw.clone();
            async move {
                admit()
                    .expect("admitted")
                    .verify(pw, phc)
                    .await
                    .expect("verify")
            }
        };
        assert!(verify(&pw, Some(phc.clone())).await);
        let wrong = Secret::new("wrong-password");
        assert!(!verify(&wrong, Some(phc)).await);
        assert!(!verify(&wrong, None).await);
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
