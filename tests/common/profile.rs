//! The shipped profiles (`config/examples/*.toml`) started as they are, with only what a test
//! machine must change: listener ports, the data directory, the secrets (the JWT secret too, when
//! the profile names one), the upstream address, and the paths of files the profile names beside
//! itself (made absolute).
//! Everything a provider's document pins (routes, error bodies, key prefixes, limits) is the
//! file's own, so a contract test exercises exactly what a user would run.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{free_port, Keygate};

/// The HS256 secret a profile's `[tokens] secret` is pointed at, so a test can sign tokens
/// keygate accepts (or check what it signed).
pub const PROFILE_JWT_SECRET: &str = "test-profile-jwt-secret-0123456789abcdef";

/// `config/examples/{name}.toml` from the repository.
pub fn profile_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(format!("{name}.toml"))
}

impl Keygate {
    /// Starts keygate on the profile `name` with every upstream pointed at `upstream`.
    pub fn start_profile(name: &str, upstream: SocketAddr) -> Keygate {
        let path = profile_path(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut doc: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        let dir = tempfile::tempdir().expect("tempdir");
        let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");

        let server = table(&mut doc, "server");
        server.insert(
            "data_dir".into(),
            dir.path().join("data").display().to_string().into(),
        );
        server.insert("threads".into(), 1.into());
        server.insert("grace_period_seconds".into(), 0.into());
        server.insert("graceful_shutdown_timeout_seconds".into(), 1.into());

        let listeners = table(&mut doc, "listeners");
        listeners.insert("public".into(), public.to_string().into());
        listeners.insert("admin".into(), admin.to_string().into());
        listeners.insert("ops".into(), ops.to_string().into());

        let secrets = table(&mut doc, "secrets");
        secrets.insert("pepper".into(), env_ref("KEYGATE_TEST_PEPPER"));
        secrets.insert("admin_token".into(), env_ref("KEYGATE_TEST_ADMIN_TOKEN"));
        // A profile that reads its JWT secret from the environment gets the test's instead.
        let mut env = Vec::new();
        if let Some(toml::Value::Table(tokens)) = doc.get_mut("tokens") {
            if tokens.contains_key("secret") {
                tokens.insert("secret".into(), env_ref("KEYGATE_TEST_JWT_SECRET"));
                env.push(("KEYGATE_TEST_JWT_SECRET".into(), PROFILE_JWT_SECRET.into()));
            }
        }

        if let Some(toml::Value::Table(upstreams)) = doc.get_mut("upstreams") {
            for (_, u) in upstreams.iter_mut() {
                if let toml::Value::Table(u) = u {
                    u.remove("addresses");
                    u.insert("address".into(), upstream.to_string().into());
                }
            }
        }

        // The config is written elsewhere: files the profile names beside itself
        // (`body_schema`) keep pointing at the profile's own.
        let beside = path.parent().expect("config/examples").to_path_buf();
        if let Some(toml::Value::Array(routes)) = doc.get_mut("routes") {
            for route in routes.iter_mut() {
                if let Some(toml::Value::String(file)) = route.get_mut("body_schema") {
                    *file = beside.join(&*file).display().to_string();
                }
            }
        }

        let config_path = dir.path().join("keygate.toml");
        std::fs::write(&config_path, toml::to_string(&doc).expect("render profile"))
            .expect("write config");
        let mut kg = Keygate {
            dir,
            public,
            admin,
            ops,
            config_path,
            child: None,
            rust_log: "info".into(),
            env,
            nofile: None,
            stderr_pipe: false,
            stderr: None,
        };
        kg.spawn();
        kg
    }
}

fn table<'a>(doc: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    let entry = doc
        .entry(name.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => t,
        other => panic!("`{name}` in the profile is {other:?}, not a table"),
    }
}

fn env_ref(var: &str) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("env".into(), var.into());
    toml::Value::Table(t)
}
