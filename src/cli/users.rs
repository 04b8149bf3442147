//! `keygate users ...`: user management through the admin API.
//!
//! Passwords are never command-line arguments (they would show in `ps` and shell history): they
//! come from one line of standard input (`--password-stdin`) or from `KEYGATE_USER_PASSWORD`.

use std::io::BufRead;

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::client::{encode, query, Client, ClientError};
use super::output::{show_list, show_one, USER_COLUMNS};
use crate::secret::Secret;

/// The environment variable a password is read from when `--password-stdin` is not given.
pub const PASSWORD_ENV: &str = "KEYGATE_USER_PASSWORD";

const ROLES: [&str; 4] = ["owner", "admin", "member", "read_only"];

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user who can log in. The password comes from standard input
    /// (`--password-stdin`) or from KEYGATE_USER_PASSWORD.
    Create {
        /// The account the user belongs to.
        #[arg(long)]
        account: String,
        /// The login email (unique; compared case-insensitively).
        #[arg(long)]
        email: String,
        /// The user's role in the account (default `member`).
        #[arg(long, value_parser = ROLES)]
        role: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users, oldest first.
    List {
        /// Only this account's users.
        #[arg(long)]
        account: Option<String>,
        /// Page size (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this user id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one user.
    Get { id: String },
    /// Change a user's role (their tokens are cut off).
    SetRole {
        id: String,
        #[arg(value_parser = ROLES)]
        role: String,
    },
    /// Disable a user: they cannot log in, and keys tied to them are refused.
    Disable { id: String },
    /// Enable a disabled user.
    Enable { id: String },
    /// Set a new password (from standard input with `--password-stdin`, or from
    /// KEYGATE_USER_PASSWORD); the user's sessions end.
    ResetPassword {
        id: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

pub fn run(client: &Client, json: bool, command: UsersCommand) -> Result<(), ClientError> {
    let user_path = |id: &str| format!("/users/{}", encode(id));
    let patch = |id: &str, body: Value| -> Result<(), ClientError> {
        show_one(&client.patch(&user_path(id), &body)?, json, USER_COLUMNS);
        Ok(())
    };
    match command {
        UsersCommand::Create {
            account,
            email,
            role,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            let mut body = Map::new();
            body.insert("account_id".into(), json!(account));
            body.insert("email".into(), json!(email));
            body.insert("password".into(), json!(password.expose()));
            if let Some(r) = role {
                body.insert("role".into(), json!(r));
            }
            let reply = client.post("/users", Some(&Value::Object(body)))?;
            show_one(&reply, json, USER_COLUMNS);
        }
        UsersCommand::List {
            account,
            limit,
            after,
        } => {
            let q = query(&[
                ("account_id", account),
                ("limit", limit.map(|l| l.to_string())),
                ("after", after),
            ]);
            let reply = client.get(&format!("/users{q}"))?;
            show_list(&reply, json, "users", USER_COLUMNS);
        }
        UsersCommand::Get { id } => show_one(&client.get(&user_path(&id))?, json, USER_COLUMNS),
        UsersCommand::SetRole { id, role } => patch(&id, json!({ "role": role }))?,
        UsersCommand::Disable { id } => patch(&id, json!({ "status": "disabled" }))?,
        UsersCommand::Enable { id } => patch(&id, json!({ "status": "active" }))?,
        UsersCommand::ResetPassword { id, password_stdin } => {
            let password = read_password(password_stdin)?;
            let body = json!({ "password": password.expose() });
            let reply = client.post(&format!("{}/password", user_path(&id)), Some(&body))?;
            show_one(&reply, json, USER_COLUMNS);
        }
    }
    Ok(())
}

/// The password from one line of standard input, or from [`PASSWORD_ENV`].
fn read_password(from_stdin: bool) -> Result<Secret, ClientError> {
    if from_stdin {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            ClientError::Usage(format!("cannot read the password from standard input: {e}"))
        })?;
        if read == 0 {
            return Err(ClientError::Usage(
                "--password-stdin: standard input is empty".to_string(),
            ));
        }
        return Ok(Secret::new(strip_newline(line)));
    }
    match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => Ok(Secret::new(p)),
        _ => Err(ClientError::Usage(format!(
            "a password is required: pass --password-stdin and write it to standard input, \
             or set {PASSWORD_ENV}"
        ))),
    }
}

/// The line without its line ending (other whitespace is part of the password).
fn strip_newline(mut line: String) -> String {
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_line_ending_is_stripped() {
        assert_eq!(strip_newline("pw\n".into()), "pw");
        assert_eq!(strip_newline("pw\r\n".into()), "pw");
        assert_eq!(strip_newline(" pw ".into()), " pw ");
        assert_eq!(strip_newline("pw".into()), "pw");
    }
}
