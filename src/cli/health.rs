//! `keygate health`: one GET to an ops endpoint, exit 0 on a 2xx answer and 1 otherwise. The
//! Docker image's `HEALTHCHECK` runs it, because the image has no shell, curl or wget.

use std::process::ExitCode;
use std::time::Duration;

/// The liveness endpoint on the ops listener's default port.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/healthz";

/// Checks `url` within `timeout`; prints one line saying what was wrong when it fails.
pub fn run(url: &str, timeout: Duration) -> ExitCode {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("keygate health: {url} answered {}", response.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("keygate health: {url}: {e}");
            ExitCode::from(1)
        }
    }
}
