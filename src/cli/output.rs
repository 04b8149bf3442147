//! Plain aligned tables for the admin subcommands, and stdout writes that survive a closed pipe.

use std::io::Write;

use serde_json::Value;

use super::client::Reply;

/// Writes to stdout; a closed pipe (`keygate keys list | head -1`) is not an error worth a panic.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// A column: its heading and the JSON field it shows.
pub struct Column {
    pub heading: &'static str,
    pub field: &'static str,
}

pub const fn col(heading: &'static str, field: &'static str) -> Column {
    Column { heading, field }
}

pub const ACCOUNT_COLUMNS: &[Column] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("STATUS", "status"),
    col("PLAN", "plan"),
    col("CREDITS", "credits"),
    col("CREATED", "created_at"),
];

/// `keygate credits balance|top-up|set`: the account (added by the CLI) and its balance.
pub const BALANCE_COLUMNS: &[Column] = &[col("ACCOUNT", "account"), col("BALANCE", "balance")];

pub const TRANSACTION_COLUMNS: &[Column] = &[
    col("ID", "id"),
    col("DELTA", "delta"),
    col("BALANCE", "balance_after"),
    col("REASON", "reason"),
    col("KEY", "key_id"),
    col("CREATED", "created_at"),
];

pub const USER_COLUMNS: &[Column] = &[
    col("ID", "id"),
    col("ACCOUNT", "account_id"),
    col("EMAIL", "email"),
    col("ROLE", "role"),
    col("STATUS", "status"),
    col("CREATED", "created_at"),
];

pub const KEY_COLUMNS: &[Column] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("PREFIX", "display_prefix"),
    col("SCOPES", "scopes"),
    col("PERMISSION", "permission"),
    col("RATE_LIMIT", "rate_limit"),
    col("STATUS", "status"),
    col("CREATED", "created_at"),
    col("EXPIRES", "expires_at"),
    col("LAST_USED", "last_used_at"),
];

/// One line per row, columns padded to their widest cell, two spaces apart.
pub fn table(columns: &[Column], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(&row[c.field])).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.heading.chars().count()).collect();
    for row in &cells {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let headings: Vec<String> = columns.iter().map(|c| c.heading.to_string()).collect();
    let mut out = String::new();
    for line in std::iter::once(&headings).chain(cells.iter()) {
        let mut text = String::new();
        for (value, width) in line.iter().zip(&widths) {
            text.push_str(value);
            let pad = width.saturating_sub(value.chars().count()) + 2;
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON value as table text: `-` for null or empty, lists comma-joined, a rate limit as
/// `10/60s,burst=20`, control characters replaced so server data cannot drive the terminal.
pub fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) if o.contains_key("requests") && o.contains_key("per_seconds") => {
            format!(
                "{}/{}s,burst={}",
                cell(&o["requests"]),
                cell(&o["per_seconds"]),
                o.get("burst").map(cell).unwrap_or_else(|| "-".into())
            )
        }
        other => other.to_string(),
    };
    if text.is_empty() {
        return "-".to_string();
    }
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One record: the raw JSON, or a one-row table.
pub fn show_one(reply: &Reply, json: bool, columns: &[Column]) {
    if json {
        print_raw(reply);
    } else {
        print(&table(columns, std::slice::from_ref(&reply.value)));
    }
}

/// A list response (`{"<field>":[...],"next":...}`): the raw JSON, or a table and, when there is
/// another page, a hint on stderr.
pub fn show_list(reply: &Reply, json: bool, field: &str, columns: &[Column]) {
    if json {
        print_raw(reply);
        return;
    }
    print(&table(columns, items(&reply.value, field)));
    if let Some(next) = reply.value["next"].as_str() {
        eprintln!(
            "(more results: add --after {})",
            cell(&Value::String(next.to_string()))
        );
    }
}

pub fn print_raw(reply: &Reply) {
    let mut raw = reply.raw.clone();
    if !raw.ends_with('\n') {
        raw.push('\n');
    }
    print(&raw);
}

/// The items of a list response (`{"keys":[...]}`), empty when absent.
pub fn items<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value[field].as_array().map(Vec::as_slice).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligns_columns() {
        let rows = [
            json!({"id": "acc_1", "name": "Acme Corporation", "status": "active", "plan": null, "credits": 0, "created_at": null}),
            json!({"id": "acc_22", "name": "B", "status": "suspended", "plan": "pro", "credits": 1500, "created_at": "2025-01-01T00:00:00Z"}),
        ];
        let t = table(ACCOUNT_COLUMNS, &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "ID      NAME              STATUS     PLAN  CREDITS  CREATED"
        );
        assert_eq!(
            lines[1],
            "acc_1   Acme Corporation  active     -     0        -"
        );
        assert_eq!(
            lines[2],
            "acc_22  B                 suspended  pro   1500     2025-01-01T00:00:00Z"
        );
    }

    #[test]
    fn cells() {
        assert_eq!(cell(&json!(["a", "b"])), "a,b");
        assert_eq!(cell(&json!([])), "-");
        assert_eq!(cell(&json!("x\u{1b}[31m")), "x?[31m");
        assert_eq!(cell(&json!(3)), "3");
        assert_eq!(
            cell(&json!({"requests": 10, "per_seconds": 60, "burst": 20})),
            "10/60s,burst=20"
        );
    }
}
