//! `keygate keys import FILE`: reads a JSON-lines file and sends it to
//! `POST /admin/v1/keys/import` in parts, so a file of any size goes through the admin API like
//! every other CLI command. Line numbers in the summary are the file's.

use std::io::Read;
use std::path::Path;
use std::sync::{mpsc, Mutex, MutexGuard};

use serde_json::{json, Map, Value};

use super::client::{Client, ClientError};

/// Entries per request: the API's most. Larger parts are larger SQLite transactions, and at a
/// million stored keys each transaction rewrites thousands of key-hash index pages whatever its
/// size, so fewer, larger ones write less per key.
const PART: usize = 10_000;
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
    fn add(&mut self, part: Summary) {
        self.created += part.created;
        self.existing += part.existing;
        self.errors.extend(part.errors);
    }

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

/// Parts in flight at once. One at a time, keygate sat idle about a third of the import while
/// this process parsed the next part and waited for the answer; with a few, keygate checks and
/// hashes one part while its store writes another and this process parses the next.
const IN_FLIGHT: usize = 3;

/// One part: (file line, entry) per key.
type Part = Vec<(usize, Map<String, Value>)>;

pub fn run(client: &Client, file: &Path) -> Result<Summary, ClientError> {
    let text = read(file)?;
    let summary = Mutex::new(Summary::default());
    let failed: Mutex<Option<ClientError>> = Mutex::new(None);
    let (parts, queue) = mpsc::sync_channel::<Part>(IN_FLIGHT);
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        for _ in 0..IN_FLIGHT {
            scope.spawn(|| loop {
                let next = match queue.lock() {
                    Ok(queue) => queue.recv(),
                    Err(_) => return,
                };
                let Ok(part) = next else { return };
                if lock(&failed).is_some() {
                    // Once one part failed, the rest are not sent.
                    continue;
                }
                match send(client, part) {
                    Ok(done) => lock(&summary).add(done),
                    Err(e) => {
                        lock(&failed).get_or_insert(e);
                    }
                }
            });
        }
        let mut part: Part = Vec::with_capacity(PART);
        let mut part_bytes = 0;
        let queue_part = |part: Part| {
            // Only fails once every sender is gone, which they never are before the end.
            let _ = parts.send(part);
        };
        for (i, line) in text.lines().enumerate() {
            if lock(&failed).is_some() {
                break;
            }
            let number = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            if line.len() > PART_BYTES {
                lock(&summary)
                    .errors
                    .push((number, format!("longer than {PART_BYTES} bytes")));
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(entry)) => {
                    if part_bytes + line.len() > PART_BYTES {
                        queue_part(std::mem::take(&mut part));
                        part_bytes = 0;
                    }
                    part_bytes += line.len();
                    part.push((number, entry));
                }
                // The line may hold a key: say what is wrong, never quote it.
                Ok(_) => lock(&summary)
                    .errors
                    .push((number, "not a JSON object".to_string())),
                Err(e) => lock(&summary)
                    .errors
                    .push((number, format!("not JSON (column {})", e.column()))),
            }
            if part.len() == PART {
                queue_part(std::mem::take(&mut part));
                part_bytes = 0;
            }
        }
        if !part.is_empty() {
            queue_part(part);
        }
        // Closing the queue ends the senders once it is empty; the scope waits for them.
        drop(parts);
    });
    if let Some(e) = into_inner(failed) {
        return Err(e);
    }
    let mut summary = into_inner(summary);
    summary.errors.sort_by_key(|(line, _)| *line);
    Ok(summary)
}

/// A lock that a panicked holder left poisoned is still the data (nothing here panics while
/// holding one; this only keeps the CLI from panicking in turn).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
fn send(client: &Client, part: Part) -> Result<Summary, ClientError> {
    let lines: Vec<usize> = part.iter().map(|(n, _)| *n).collect();
    let entries: Vec<Value> = part.into_iter().map(|(_, e)| Value::Object(e)).collect();
    let reply = client.post("/keys/import", Some(&json!({ "keys": entries })))?;
    let count = |field: &str| reply.value[field].as_u64().unwrap_or(0);
    let mut summary = Summary {
        created: count("created"),
        existing: count("existing"),
        errors: Vec::new(),
    };
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
    Ok(summary)
}
