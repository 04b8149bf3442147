//! The `keygate` command line: `serve`, `check-config`, and subcommands that call the admin API
//! (`accounts`, `keys`, `users`, `credits`; see [`client`] and [`output`]).

pub mod accounts;
pub mod client;
pub mod credits;
pub mod health;
pub mod import;
pub mod keys;
pub mod output;
pub mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::secret::Secret;
use accounts::AccountsCommand;
use client::{Client, ClientError};
use credits::CreditsCommand;
use keys::KeysCommand;
use users::UsersCommand;

#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "API-key authentication sidecar and edge gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy, admin and ops listeners.
    Serve {
        #[arg(long, short, default_value = "config/keygate.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print every problem with its field and line, then check that
    /// every secret it names can be read (environment variables set, files present and not
    /// readable by everyone). TLS certificates, keys and CA files are read and checked too.
    CheckConfig {
        /// The config file; `--config FILE` works too, as for `serve`.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Check the file alone, not its secrets nor its TLS files (for a build machine that
        /// has none of them).
        #[arg(long)]
        skip_secrets: bool,
    },
    /// Ask a running keygate's ops listener whether it is alive (or ready): exit 0 on a 2xx
    /// answer, 1 otherwise. For container health checks in images without curl.
    Health {
        /// The ops endpoint to ask; `/readyz` for readiness.
        #[arg(long, default_value = health::DEFAULT_URL)]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u64,
    },
    /// Manage accounts through the admin API.
    Accounts {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Manage API keys through the admin API.
    Keys {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage users (who log in) through the admin API.
    Users {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Account credit balances and transactions through the admin API.
    Credits {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: CreditsCommand,
    },
}

/// How to reach the admin API; accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the admin listener.
    #[arg(
        long,
        env = "KEYGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub admin_url: String,
    /// The admin token (required; prefer the environment variable, as arguments are visible
    /// in `ps`).
    #[arg(
        long,
        env = "KEYGATE_ADMIN_TOKEN",
        hide_env_values = true,
        value_parser = parse_secret,
        global = true
    )]
    pub admin_token: Option<Secret>,
    /// Print the raw JSON response instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let Cli { command } = cli;
    match command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig {
            file,
            config,
            skip_secrets,
        } => match file.or(config) {
            Some(file) => check_config(&file, skip_secrets),
            // clap requires one of them; this is unreachable, but not worth a panic.
            None => ExitCode::from(2),
        },
        Command::Health {
            url,
            timeout_seconds,
        } => health::run(&url, std::time::Duration::from_secs(timeout_seconds.max(1))),
        Command::Accounts { admin, command } => {
            call_admin(admin, |client, json| accounts::run(client, json, command))
        }
        Command::Keys { admin, command } => {
            call_admin(admin, |client, json| keys::run(client, json, command))
        }
        Command::Users { admin, command } => {
            call_admin(admin, |client, json| users::run(client, json, command))
        }
        Command::Credits { admin, command } => {
            call_admin(admin, |client, json| credits::run(client, json, command))
        }
    }
}

/// Runs an admin subcommand: exit 1 with `error: ...` on stderr when the call fails, 2 when no
/// admin token was given or the command's input is unusable (a missing password).
fn call_admin(
    admin: AdminArgs,
    run: impl FnOnce(&Client, bool) -> Result<(), ClientError>,
) -> ExitCode {
    let AdminArgs {
        admin_url,
        admin_token,
        json,
    } = admin;
    let Some(token) = admin_token.filter(|t| !t.expose().is_empty()) else {
        eprintln!(
            "error: an admin token is required: set KEYGATE_ADMIN_TOKEN or pass --admin-token"
        );
        return ExitCode::from(2);
    };
    let client = Client::new(&admin_url, token);
    match run(&client, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ClientError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Makes SIGHUP's default action (ending the process) keygate's no longer, from the start.
///
/// The reload service listens for SIGHUP only once pingora runs it, after the configuration is
/// read, the store opened and the listeners bound: until then, a reload sent early (a config
/// reloader as the pod starts) ended keygate. tokio's handler, once installed, stays for the
/// life of the process (its docs: the default behaviour is not restored), so installing it here
/// turns an early SIGHUP into nothing; the reload service's own listener takes the later ones.
fn take_over_sighup() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return;
    };
    let _in_runtime = runtime.enter();
    if let Err(e) = signal(SignalKind::hangup()) {
        eprintln!("keygate: cannot take over SIGHUP ({e}); one sent during startup ends keygate");
    }
}

/// `keygate check-config`: exit 0 and `FILE: ok`, or exit 2 with every problem found.
fn check_config(file: &std::path::Path, skip_secrets: bool) -> ExitCode {
    // TLS keys are secrets too: with --skip-secrets, no TLS file is read.
    let loaded = if skip_secrets {
        Config::load_without_files(file)
    } else {
        Config::load(file)
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let problems = if skip_secrets {
        Vec::new()
    } else {
        crate::config::check_secrets(&config)
    };
    for warning in &config.warnings {
        eprintln!("{}: warning: {warning}", file.display());
    }
    if problems.is_empty() {
        println!("{}: ok", file.display());
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{}: secrets cannot be read:\n{}",
        file.display(),
        problems.join("\n")
    );
    ExitCode::from(2)
}

fn serve(path: &std::path::Path) -> ExitCode {
    take_over_sighup();
    let (config, source) = match crate::reload::ConfigSource::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("keygate: {:#}", anyhow::Error::from(e));
            return ExitCode::from(1);
        }
    };
    // Held until keygate stops: dropping it writes out the lines still queued.
    let log_writer = crate::logging::init(&config.log);
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    let result = crate::app::build(config).and_then(|app| crate::proxy::run(app, source));
    // The queued lines first, then the error after them.
    drop(log_writer);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn admin_options_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "keygate",
            "keys",
            "create",
            "--account",
            "acc_1",
            "--name",
            "n",
            "--scope",
            "a",
            "--scope",
            "b:read",
            "--json",
            "--admin-token",
            "t0k",
            "--admin-url",
            "http://x:1",
        ]);
        let Ok(Cli {
            command: Command::Keys { admin, command },
        }) = cli
        else {
            panic!("parse failed");
        };
        assert!(admin.json);
        assert_eq!(admin.admin_url, "http://x:1");
        assert_eq!(admin.admin_token.as_ref().map(Secret::expose), Some("t0k"));
        assert!(!format!("{admin:?}").contains("t0k"));
        let KeysCommand::Create { scopes, .. } = command else {
            panic!("not create");
        };
        assert_eq!(scopes, ["a", "b:read"]);
    }

    #[test]
    fn credit_amounts_may_be_negative() {
        let cli = Cli::try_parse_from([
            "keygate", "credits", "top-up", "acc_1", "-5", "--reason", "fix",
        ]);
        let Ok(Cli {
            command:
                Command::Credits {
                    command: CreditsCommand::TopUp { amount, reason, .. },
                    ..
                },
        }) = cli
        else {
            panic!("parse failed");
        };
        assert_eq!(amount, -5);
        assert_eq!(reason.as_deref(), Some("fix"));
    }

    #[test]
    fn passwords_are_never_flags() {
        let cli = Cli::try_parse_from([
            "keygate",
            "users",
            "create",
            "--account",
            "a",
            "--email",
            "a@b.c",
            "--password",
            "hunter22",
        ]);
        assert!(cli.is_err());
        let cli = Cli::try_parse_from([
            "keygate",
            "users",
            "create",
            "--account",
            "a",
            "--email",
            "a@b.c",
            "--role",
            "read_only",
            "--password-stdin",
        ]);
        let Ok(Cli {
            command:
                Command::Users {
                    command:
                        UsersCommand::Create {
                            role,
                            password_stdin,
                            ..
                        },
                    ..
                },
        }) = cli
        else {
            panic!("parse failed");
        };
        assert_eq!(role.as_deref(), Some("read_only"));
        assert!(password_stdin);
        assert!(Cli::try_parse_from(["keygate", "users", "set-role", "usr_1", "boss"]).is_err());
        let cli = Cli::try_parse_from([
            "keygate",
            "keys",
            "rotate",
            "key_1",
            "--grace-seconds",
            "60",
        ]);
        assert!(matches!(
            cli,
            Ok(Cli {
                command: Command::Keys {
                    command: KeysCommand::Rotate {
                        grace_seconds: Some(60),
                        ..
                    },
                    ..
                }
            })
        ));
    }

    #[test]
    fn permission_is_checked_locally() {
        let cli = Cli::try_parse_from([
            "keygate",
            "keys",
            "create",
            "--account",
            "a",
            "--name",
            "n",
            "--permission",
            "admin",
        ]);
        assert!(cli.is_err());
    }
}
