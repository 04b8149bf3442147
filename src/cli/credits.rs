//! `keygate credits ...`: account credit balances and their transactions through the admin API.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::client::{encode, query, Client, ClientError, Reply};
use super::output::{print, print_raw, show_list, table, BALANCE_COLUMNS, TRANSACTION_COLUMNS};

#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Show an account's credit balance.
    Balance { account: String },
    /// Add credits to an account (a negative amount deducts; the balance never goes below zero).
    #[command(allow_negative_numbers = true)]
    TopUp {
        account: String,
        amount: i64,
        /// Why, for the transaction history (default `top-up`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Set an account's credit balance.
    Set {
        account: String,
        balance: i64,
        /// Why, for the transaction history (default `set`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// List an account's credit transactions, oldest first.
    Transactions {
        account: String,
        /// Page size (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this transaction id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
}

pub fn run(client: &Client, json: bool, command: CreditsCommand) -> Result<(), ClientError> {
    let credits_path = |account: &str| format!("/accounts/{}/credits", encode(account));
    match command {
        CreditsCommand::Balance { account } => {
            let reply = client.get(&credits_path(&account))?;
            show_balance(&reply, json, &account);
        }
        CreditsCommand::TopUp {
            account,
            amount,
            reason,
        } => {
            let body = with_reason(json!({ "delta": amount }), reason);
            let reply = client.post(&credits_path(&account), Some(&body))?;
            show_balance(&reply, json, &account);
        }
        CreditsCommand::Set {
            account,
            balance,
            reason,
        } => {
            let body = with_reason(json!({ "balance": balance }), reason);
            let reply = client.put(&credits_path(&account), &body)?;
            show_balance(&reply, json, &account);
        }
        CreditsCommand::Transactions {
            account,
            limit,
            after,
        } => {
            let q = query(&[("limit", limit.map(|l| l.to_string())), ("after", after)]);
            let reply = client.get(&format!("/accounts/{}/transactions{q}", encode(&account)))?;
            show_list(&reply, json, "transactions", TRANSACTION_COLUMNS);
        }
    }
    Ok(())
}

fn with_reason(mut body: Value, reason: Option<String>) -> Value {
    if let (Some(r), Some(map)) = (reason, body.as_object_mut()) {
        map.insert("reason".into(), json!(r));
    }
    body
}

/// `{"balance": n}` as the raw JSON, or a table row with the account it belongs to.
fn show_balance(reply: &Reply, json: bool, account: &str) {
    if json {
        print_raw(reply);
        return;
    }
    let mut row = Map::new();
    row.insert("account".into(), json!(account));
    row.insert("balance".into(), reply.value["balance"].clone());
    print(&table(BALANCE_COLUMNS, &[Value::Object(row)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_added_only_when_given() {
        assert_eq!(with_reason(json!({"delta": 5}), None), json!({"delta": 5}));
        assert_eq!(
            with_reason(json!({"delta": 5}), Some("promo".into())),
            json!({"delta": 5, "reason": "promo"})
        );
    }
}
