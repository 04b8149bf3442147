//! `keygate keys import FILE`: reads a JSON-lines file and sends it to
//! `POST /admin/v1/keys/import` in parts, so a file of any size goes through the admin API like
//! every other CLI command. Line numbers in the summary are the file's.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::client::{Client, ClientError};

/// Entries per request: well under the API's 10,000.
const PART: usize = 5_000;
/// Bytes of lines per request: under the admin API's 2 MB body limit whatever the lines carry
/// (most are about 100 bytes; one with metadata up to 16 KiB more). A longer line is refused.
const PART_BYTES: usize = 1_500_000;

/// What the whole file came to.
#[derive(Debug, Default)]
pub struct Summary {
    pub created: u64,
    pub existing: u64,
    /// (file line, why)
    pub errors: Vec<(usize, String)>,
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "created": self.created,
            "existing": self.existing,
            "refused": self.errors.len(),
            "errors": self.errors.iter()
                .map(|(line, error)| json!({"line": line, "error": error}))
                .collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "created {}, existing {}, refused {}",
            self.created,
            self.existing,
            self.errors.len()
        );
        for (line, error) in &self.errors {
            out.push_str(&format!("\nline {line}: {error}"));
        }
        out
    }
}

pub fn run(client: &Client, file: &Path) -> Result<Summary, ClientError> {
    let text = read(file)?;
    let mut summary = Summary::default();
    let mut part: Vec<(usize, Map<String, Value>)> = Vec::with_capacity(PART);
    let mut part_bytes = 0;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > PART_BYTES {
            summary
                .errors
                .push((number, format!("longer than {PART_BYTES} bytes")));
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(entry)) => {
                if part_bytes + line.len() > PART_BYTES {
                    send(client, std::mem::take(&mut part), &mut summary)?;
                    part_bytes = 0;
                }
                part_bytes += line.len();
                part.push((number, entry));
            }
            // The line may hold a key: say what is wrong, never quote it.
            Ok(_) => summary
                .errors
                .push((number, "not a JSON object".to_string())),
            Err(e) => summary
                .errors
                .push((number, format!("not JSON (column {})", e.column()))),
        }
        if part.len() == PART {
            send(client, std::mem::take(&mut part), &mut summary)?;
            part_bytes = 0;
        }
    }
    if !part.is_empty() {
        send(client, part, &mut summary)?;
    }
    summary.errors.sort_by_key(|(line, _)| *line);
    Ok(summary)
}

fn read(file: &Path) -> Result<String, ClientError> {
    let mut text = String::new();
    let result = if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text).map(|_| ()))
    };
    result.map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", file.display())))?;
    Ok(text)
}

/// One request; the answer's entry numbers (1 = the part's first) become file lines.
fn send(
    client: &Client,
    part: Vec<(usize, Map<String, Value>)>,
    summary: &mut Summary,
) -> Result<(), ClientError> {
    let lines: Vec<usize> = part.iter().map(|(n, _)| *n).collect();
    let entries: Vec<Value> = part.into_iter().map(|(_, e)| Value::Object(e)).collect();
    let reply = client.post("/keys/import", Some(&json!({ "keys": entries })))?;
    let count = |field: &str| reply.value[field].as_u64().unwrap_or(0);
    summary.created += count("created");
    summary.existing += count("existing");
    let file_line = |v: &Value| {
        v["line"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| lines.get(n.wrapping_sub(1)).copied())
            .unwrap_or(0)
    };
    if let Some(errors) = reply.value["errors"].as_array() {
        for e in errors {
            let why = e["error"].as_str().unwrap_or("refused").to_string();
            summary.errors.push((file_line(e), why));
        }
    }
    Ok(())
}
