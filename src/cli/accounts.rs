//! `keygate accounts ...`: account management through the admin API.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{encode, query, Client, ClientError};
use super::output::{show_list, show_one, ACCOUNT_COLUMNS};

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account.
    Create {
        name: String,
        /// A JSON object for local endpoints' body templates, e.g. '{"webhooks":[]}'.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
    },
    /// List accounts, oldest first.
    List {
        /// Page size (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this account id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one account.
    Get { id: String },
    /// Put an account on a plan from the config's `[plans.*]`, or `none` to take it off.
    SetPlan {
        id: String,
        #[arg(value_name = "PLAN|none")]
        plan: String,
    },
    /// Replace an account's metadata with a JSON object ('{}' clears it).
    SetMetadata {
        id: String,
        #[arg(value_name = "JSON")]
        metadata: String,
    },
    /// Suspend an account: its keys are refused until it is reactivated.
    Suspend {
        id: String,
        /// Also revoke every key of the account, for good (reactivating brings none back).
        #[arg(long)]
        revoke_keys: bool,
    },
    /// Reactivate a suspended account.
    Reactivate { id: String },
    /// Delete an account (soft: its keys answer `account_missing`). Cannot be undone.
    Delete { id: String },
}

pub fn run(client: &Client, json: bool, command: AccountsCommand) -> Result<(), ClientError> {
    let one = |path: String| -> Result<(), ClientError> {
        show_one(&client.post(&path, None)?, json, ACCOUNT_COLUMNS);
        Ok(())
    };
    match command {
        AccountsCommand::Create { name, metadata } => {
            let mut body = json!({ "name": name });
            if let Some(text) = metadata {
                body["metadata"] = metadata_arg(&text)?;
            }
            let reply = client.post("/accounts", Some(&body))?;
            show_one(&reply, json, ACCOUNT_COLUMNS);
        }
        AccountsCommand::SetMetadata { id, metadata } => {
            let reply = client.patch(
                &format!("/accounts/{}", encode(&id)),
                &json!({ "metadata": metadata_arg(&metadata)? }),
            )?;
            show_one(&reply, json, ACCOUNT_COLUMNS);
        }
        AccountsCommand::List { limit, after } => {
            let q = query(&[("limit", limit.map(|l| l.to_string())), ("after", after)]);
            let reply = client.get(&format!("/accounts{q}"))?;
            show_list(&reply, json, "accounts", ACCOUNT_COLUMNS);
        }
        AccountsCommand::Get { id } => {
            let reply = client.get(&format!("/accounts/{}", encode(&id)))?;
            show_one(&reply, json, ACCOUNT_COLUMNS);
        }
        AccountsCommand::SetPlan { id, plan } => {
            let plan = if plan.eq_ignore_ascii_case("none") {
                Value::Null
            } else {
                json!(plan)
            };
            let reply = client.patch(
                &format!("/accounts/{}", encode(&id)),
                &json!({ "plan": plan }),
            )?;
            show_one(&reply, json, ACCOUNT_COLUMNS);
        }
        AccountsCommand::Suspend { id, revoke_keys } => {
            let body = revoke_keys.then(|| json!({ "revoke_keys": true }));
            let path = format!("/accounts/{}/suspend", encode(&id));
            show_one(&client.post(&path, body.as_ref())?, json, ACCOUNT_COLUMNS);
        }
        AccountsCommand::Reactivate { id } => one(format!("/accounts/{}/reactivate", encode(&id)))?,
        AccountsCommand::Delete { id } => {
            let reply = client.delete(&format!("/accounts/{}", encode(&id)))?;
            show_one(&reply, json, ACCOUNT_COLUMNS);
        }
    }
    Ok(())
}

/// A metadata argument (an account's or a key's): JSON text, checked here so a typo is named
/// before any request.
pub(super) fn metadata_arg(text: &str) -> Result<Value, ClientError> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ClientError::Usage(
            "metadata must be a JSON object, e.g. '{\"webhooks\":[]}'".into(),
        )),
        Err(e) => Err(ClientError::Usage(format!(
            "metadata is not valid JSON: {e}"
        ))),
    }
}
