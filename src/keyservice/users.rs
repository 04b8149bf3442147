//! Users: create, change role or status, set the password. A user's role and status bound what
//! their keys may do, so a change drops the cached credentials of the user's keys (they carry
//! the user); a role lowered or a user disabled also cuts off the user's tokens (they carry the
//! old role), and a new password ends the user's sessions.
//!
//! Passwords arrive as [`Secret`]s, are hashed with argon2id on the blocking pool, and never
//! reach an error, an audit entry or a log line.

use super::audit::{role_str, user_status_str};
use super::narrowing;
use super::validate;
use super::{Actor, KeyService, ServiceError, ServiceResult};
use crate::invalidation::Invalidation;
use crate::passwords;
use crate::secret::Secret;
use crate::store::{AccountStatus, NewUser, Role, User, UserPatch, UserStatus};

#[derive(Debug)]
pub struct NewUserInput {
    pub account_id: String,
    pub email: String,
    pub password: Secret,
    pub role: Role,
}

/// An absent field is left as it is.
#[derive(Debug, Default)]
pub struct UserChange {
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
}

fn user_not_found() -> ServiceError {
    ServiceError::NotFound("user not found".to_string())
}

fn password_ok(password: &Secret) -> ServiceResult<()> {
    passwords::validate_new(password.expose()).map_err(|m| ServiceError::invalid("password", m))
}

/// argon2id on the process-wide bounded hasher (tens of milliseconds of CPU, 19 MiB).
async fn hash(password: Secret) -> ServiceResult<String> {
    passwords::hash_bounded(password)
        .await
        .map_err(|e| match e {
            passwords::PasswordError::Overloaded => ServiceError::Overloaded,
            e => ServiceError::Internal(e.to_string()),
        })
}

impl KeyService {
    pub async fn create_user(&self, actor: &Actor, req: NewUserInput) -> ServiceResult<User> {
        let NewUserInput {
            account_id,
            email,
            password,
            role,
        } = req;
        let email = validate::email(&email)?;
        password_ok(&password)?;
        let account = self
            .store
            .get_account(&account_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("account not found".to_string()))?;
        if account.status == AccountStatus::Deleted {
            return Err(ServiceError::Conflict(
                "the account is deleted; it cannot get new users".to_string(),
            ));
        }
        // Cheap before the expensive hash; the store checks again, atomically.
        if self.store.find_user_by_email(&email).await?.is_some() {
            return Err(ServiceError::Conflict(
                "a user with this email exists".to_string(),
            ));
        }
        let password_hash = hash(password).await?;
        let user = self
            .store
            .create_user(NewUser {
                account_id: account.id,
                email,
                password_hash,
                role,
            })
            .await?;
        self.record(
            actor,
            "user.create",
            &user.id,
            format!(
                "account={} email={:?} role={}",
                user.account_id,
                user.email,
                role_str(user.role)
            ),
        )
        .await;
        Ok(user)
    }

    pub async fn update_user(
        &self,
        actor: &Actor,
        id: &str,
        change: UserChange,
    ) -> ServiceResult<User> {
        let UserChange { role, status } = change;
        if role.is_none() && status.is_none() {
            return Err(ServiceError::invalid(
                "body",
                "nothing to change: set `role` or `status`",
            ));
        }
        let current = self.store.get_user(id).await?.ok_or_else(user_not_found)?;
        let user = self
            .store
            .update_user(
                id,
                UserPatch {
                    role,
                    status,
                    password_hash: None,
                },
            )
            .await?;
        self.invalidate(Invalidation::User(user.id.clone())).await;
        let mut changes = Vec::new();
        if role.is_some() {
            changes.push(format!(
                "role {} -> {}",
                role_str(current.role),
                role_str(user.role)
            ));
        }
        if status.is_some() {
            changes.push(format!(
                "status {} -> {}",
                user_status_str(current.status),
                user_status_str(user.status)
            ));
        }
        // A lower role or a disabled user takes rights from the user's tokens (sessions carry
        // the role, access tokens the permission it bounds): cut them. Raising a role or
        // enabling a user takes nothing away.
        let narrows = narrowing::role_lowered(current.role, user.role)
            || (current.status == UserStatus::Active && user.status != UserStatus::Active);
        if narrows {
            changes.push("tokens=cut".into());
            self.cut_then_record(&user.id, actor, "user.update", &user.id, changes.join(" "))
                .await?;
        } else {
            self.record(actor, "user.update", &user.id, changes.join(" "))
                .await;
        }
        Ok(user)
    }

    /// Sets a new password; the user's existing sessions end.
    pub async fn set_password(
        &self,
        actor: &Actor,
        id: &str,
        password: Secret,
    ) -> ServiceResult<User> {
        password_ok(&password)?;
        // Not found before spending a hash on a user that does not exist.
        self.store.get_user(id).await?.ok_or_else(user_not_found)?;
        let password_hash = hash(password).await?;
        let user = self
            .store
            .update_user(
                id,
                UserPatch {
                    password_hash: Some(password_hash),
                    ..UserPatch::default()
                },
            )
            .await?;
        self.cut_then_record(
            &user.id,
            actor,
            "user.password",
            &user.id,
            "password set".into(),
        )
        .await?;
        Ok(user)
    }
}
