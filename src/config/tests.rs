//! Unit tests for [`crate::config`]: parsing, validation reports, and secrets.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::errors::Detail;
use crate::errors::Reason;

const EXAMPLE: &str = include_str!("../../config/keygate.toml");

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, "test.toml") {
        Ok(_) => panic!("expected an invalid config:\n{text}"),
        Err(ConfigError::Invalid { path, problems }) => {
            assert_eq!(path, "test.toml");
            problems
        }
        Err(other) => panic!("expected a validation report, got: {other}"),
    }
}

fn parse_error(text: &str) -> String {
    match Config::parse(text, "test.toml") {
        Ok(_) => panic!("expected a parse error:\n{text}"),
        Err(e @ ConfigError::Parse { .. }) => e.to_string(),
        Err(other) => panic!("expected a parse error, got: {other}"),
    }
}

/// The problem mentioning `field`, which must also name `line`.
fn assert_problem(problems: &[String], field: &str, line: usize) {
    let p = problems
        .iter()
        .find(|p| p.contains(&format!("`{field}`")))
        .unwrap_or_else(|| panic!("no problem about `{field}` in {problems:#?}"));
    assert!(
        p.contains(&format!("line {line}:")),
        "problem about `{field}` should name line {line}: {p}"
    );
}

const MINIMAL: &str = r#"
[upstreams.api]
address = "127.0.0.1:8000"

[[routes]]
path = "/{*rest}"
upstream = "api"
"#;

#[test]
fn example_config_parses() {
    let c = Config::parse(EXAMPLE, "config/keygate.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.public.to_string(), "127.0.0.1:8080");
    assert_eq!(c.listeners.admin.to_string(), "127.0.0.1:8081");
    assert_eq!(c.listeners.ops.to_string(), "127.0.0.1:9090");
    assert_eq!(c.key_format.prefix(), "kg_live_");
    assert_eq!(c.credential_sources.len(), 2);
    assert_eq!(c.credential_sources[0].header.as_str(), "authorization");
    assert_eq!(c.credential_sources[0].scheme.as_deref(), Some("bearer "));
    assert_eq!(c.credential_sources[1].header.as_str(), "x-api-key");
    assert_eq!(c.credential_sources[1].scheme, None);
    let route = |name: &str| {
        c.routes
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no route {name}"))
    };
    assert_eq!(c.routes.len(), 10);
    assert_eq!(route("health").auth, AuthMode::None);
    assert_eq!(route("root").path, "/");
    assert_eq!(route("root").auth, AuthMode::ApiKey);
    assert!(route("account_info").local.is_some());
    assert_eq!(route("login").auth, AuthMode::None);
    assert!(route("login").ip_limit.is_some());
    assert_eq!(route("my_keys").auth, AuthMode::Session);
    assert_eq!(route("exchange").auth, AuthMode::ApiKey);
    assert_eq!(route("api").auth, AuthMode::Any);
    assert!(route("api").key_limit.is_some());
    assert!(c.plans.contains_key("pro"));
    assert!(matches!(c.store, StoreSettings::Sqlite { .. }));
    assert_eq!(c.identity.namespace, "x-keygate-");
    assert_eq!(c.templates.get(Reason::MissingCredential).status, 401);
    assert!(c.secret_refs.pepper.is_none());
    // No route of the example requires a scope, so users may grant none.
    assert_eq!(c.self_service.scopes, Some(vec![]));
    assert_eq!(c.self_service.max_per_user, 100);
}

#[test]
fn defaults_fill_everything_left_out() {
    let c = Config::parse(MINIMAL, "min.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.threads, 1);
    assert_eq!(c.key_format.prefix(), "kg_live_");
    assert_eq!(c.cache.ttl, Duration::from_secs(60));
    assert_eq!(c.cache.negative_ttl, Duration::from_secs(5));
    assert_eq!(c.last_used_interval, Duration::from_secs(60));
    assert_eq!(c.identity.key_id.as_str(), "x-keygate-key-id");
    assert_eq!(c.routes[0].name, "route0");
    match &c.store {
        StoreSettings::Sqlite { path } => assert_eq!(path, &PathBuf::from("data/keygate.db")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_field_names_the_field_and_line() {
    let text = "[server]\nthreads = 1\nthreadz = 2\n";
    let e = parse_error(text);
    assert!(e.contains("threadz"), "{e}");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.starts_with("test.toml"), "{e}");

    // Nested: inside a route.
    let text = format!("{MINIMAL}scops = [\"a\"]\n");
    let e = parse_error(&text);
    assert!(e.contains("scops"), "{e}");
    let line = text.lines().count();
    assert!(e.contains(&format!("line {line}")), "{e}");

    // An unknown top-level section.
    let e = parse_error("[servers]\nthreads = 1\n");
    assert!(e.contains("servers"), "{e}");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn inline_secrets_are_refused() {
    let e = parse_error("[secrets]\npepper = \"hunter2\"\n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn several_problems_are_reported_at_once_with_lines() {
    let text = r#"[listeners]
public = "not-an-address"

[keys]
prefix = "BAD-PREFIX"
body_length = 8

[upstreams.api]
address = "nohost"

[[routes]]
path = "no-slash"
upstream = "missing"
methods = ["GET", "NOT A METHOD"]
scopes = ["ok:scope", "bad scope"]
"#;
    let p = problems(text);
    assert_problem(&p, "listeners.public", 2);
    assert_problem(&p, "keys.prefix", 5);
    assert_problem(&p, "keys.body_length", 6);
    assert_problem(&p, "upstreams.api.address", 9);
    assert_problem(&p, "routes[0].path", 12);
    assert_problem(&p, "routes[0].upstream", 13);
    assert_problem(&p, "routes[0].methods", 14);
    assert_problem(&p, "routes[0].scopes", 15);
    assert!(p.len() >= 8, "{p:#?}");
    // The whole report is in the error's text.
    let e = Config::parse(text, "test.toml")
        .expect_err("invalid")
        .to_string();
    for problem in &p {
        assert!(e.contains(problem.as_str()), "{e}");
    }
}

#[test]
fn identity_header_outside_the_namespace_is_rejected() {
    let text = format!("{MINIMAL}\n[identity]\naccount_id = \"x-account-id\"\n");
    let p = problems(&text);
    let msg = p
        .iter()
        .find(|p| p.contains("identity.account_id"))
        .unwrap_or_else(|| panic!("{p:#?}"));
    assert!(msg.contains("x-account-id"), "{msg}");
    assert!(msg.contains("x-keygate-"), "{msg}");

    // A custom namespace with headers inside it is fine.
    let text = format!(
        "{MINIMAL}\n[identity]\nnamespace = \"x-enrow-\"\nkey_id = \"x-enrow-key\"\n\
         key_name = \"x-enrow-key-name\"\naccount_id = \"X-Enrow-Account\"\n\
         user_id = \"x-enrow-user\"\nscopes = \"x-enrow-scopes\"\nauth_method = \"x-enrow-auth\"\n"
    );
    let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.identity.account_id.as_str(), "x-enrow-account");
}

#[test]
fn error_template_body_must_be_json() {
    let text = format!("{MINIMAL}\n[errors.invalid_key]\nbody = '{{\"message\": oops}}'\n");
    let p = problems(&text);
    assert!(
        p.iter().any(|p| p.contains("errors.invalid_key.body")),
        "{p:#?}"
    );

    // Not JSON is fine when the content type says so.
    let text = format!(
        "{MINIMAL}\n[errors.invalid_key]\nbody = 'nope: {{message}}'\ncontent_type = \"text/plain\"\n"
    );
    let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    let t = c.templates.get(Reason::InvalidKey);
    assert_eq!(
        t.render(Reason::InvalidKey, &Detail::default()),
        "nope: The API key is not valid"
    );
}

#[test]
fn error_template_status_is_checked() {
    let text = format!("{MINIMAL}\n[errors.invalid_key]\nstatus = 200\n");
    let p = problems(&text);
    assert!(
        p.iter().any(|p| p.contains("errors.invalid_key.status")),
        "{p:#?}"
    );
}

#[test]
fn unknown_reason_code_is_an_error() {
    let e = parse_error(&format!(
        "{MINIMAL}\n[errors.no_such_reason]\nstatus = 401\n"
    ));
    assert!(e.contains("no_such_reason"), "{e}");
}

#[test]
fn custom_templates_render_exactly() {
    let text = format!(
        "{MINIMAL}\n[errors.invalid_key]\nstatus = 401\nbody = '{{\"message\":\"This apikey is not valid\"}}'\n"
    );
    let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    let t = c.templates.get(Reason::InvalidKey);
    assert_eq!(t.status, 401);
    assert_eq!(
        t.render(Reason::InvalidKey, &Detail::default()),
        r#"{"message":"This apikey is not valid"}"#
    );
}

#[test]
fn conflicting_routes_are_reported() {
    let text = format!("{MINIMAL}\n[[routes]]\npath = \"/{{*other}}\"\nupstream = \"api\"\n");
    let p = problems(&text);
    assert_problem(&p, "routes[1].path", 10);
    // Every conflict is reported, each with its route's line.
    let text = format!("{text}\n[[routes]]\npath = \"/{{*third}}\"\nupstream = \"api\"\n");
    let p = problems(&text);
    assert_problem(&p, "routes[1].path", 10);
    assert_problem(&p, "routes[2].path", 14);
}

#[test]
fn duplicate_route_names_are_refused() {
    let text = format!(
        "{MINIMAL}\n[[routes]]\nname = \"a\"\npath = \"/x\"\nupstream = \"api\"\n\n[[routes]]\nname = \"a\"\npath = \"/y\"\nupstream = \"api\"\n"
    );
    let p = problems(&text);
    assert_problem(&p, "routes[2].name", 15);
    assert!(p.iter().any(|p| p.contains("routes[1]")), "{p:#?}");
}

#[test]
fn redis_backend_needs_a_url() {
    let p = problems(&format!("{MINIMAL}\n[store]\nbackend = \"redis\"\n"));
    assert!(p.iter().any(|p| p.contains("store.url")), "{p:#?}");
    let p = problems(&format!(
        "{MINIMAL}\n[store]\nbackend = \"redis\"\nurl = \"http://x\"\n"
    ));
    assert!(p.iter().any(|p| p.contains("store.url")), "{p:#?}");
    let c = Config::parse(
        &format!(
            "{MINIMAL}\n[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n{PEPPER}"
        ),
        "t",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(c.store, StoreSettings::Redis { .. }));
}

const PEPPER: &str = "[secrets]\npepper = { env = \"KEYGATE_PEPPER\" }\n";

#[test]
fn a_shared_store_needs_a_configured_pepper() {
    for store in [
        "url = \"redis://127.0.0.1:6379/0\"",
        "cluster_nodes = [\"redis://127.0.0.1:7000\"]",
    ] {
        let p = problems(&format!(
            "{MINIMAL}\n[store]\nbackend = \"redis\"\n{store}\n"
        ));
        let p = p
            .iter()
            .find(|p| p.contains("secrets.pepper"))
            .unwrap_or_else(|| panic!("no problem about the pepper: {p:#?}"));
        assert!(p.contains("same pepper"), "{p}");
    }
    // The embedded store may generate its own.
    assert!(Config::parse(MINIMAL, "t").is_ok());
}

#[test]
fn replicas_on_a_shared_store_derive_one_token_secret_from_the_pepper() {
    std::env::set_var(
        "KEYGATE_UNIT_TEST_PEPPER_SHARED",
        "one-pepper-for-all-replicas",
    );
    let redis = "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n\
                 [secrets]\npepper = { env = \"KEYGATE_UNIT_TEST_PEPPER_SHARED\" }\n";
    let replica = |dir: &Path| {
        let text = format!(
            "[server]\ndata_dir = \"{}\"\n{redis}{MINIMAL}",
            dir.display()
        );
        let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        resolve_secrets(&c).expect("secrets")
    };
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (sa, sb) = (replica(a.path()), replica(b.path()));
    let (ja, jb) = (sa.jwt_secret.expect("hs256"), sb.jwt_secret.expect("hs256"));
    assert_eq!(ja.expose(), jb.expose(), "replicas must agree");
    assert_ne!(ja.expose(), sa.pepper.expose(), "never the pepper itself");
    assert!(!a.path().join("jwt_secret").exists(), "nothing generated");

    // With the embedded store each data directory gets its own generated secret.
    let local = |dir: &Path| {
        let text = format!("[server]\ndata_dir = \"{}\"\n{MINIMAL}", dir.display());
        let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        resolve_secrets(&c)
            .expect("secrets")
            .jwt_secret
            .expect("hs256")
    };
    assert_ne!(local(a.path()).expose(), local(b.path()).expose());
}

#[test]
fn tls_upstreams_verify_by_default_and_take_their_protocol() {
    let text = MINIMAL.replace(
        "address = \"127.0.0.1:8000\"",
        "address = \"api.example.com:443\"\ntls = true\nprotocol = \"h2\"",
    );
    let c = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    let u = c
        .routes
        .iter()
        .next()
        .and_then(|r| r.upstream.clone())
        .expect("upstream");
    assert!(u.tls && u.verify && u.ca.is_none());
    assert_eq!(u.sni, "api.example.com");
    assert_eq!(u.protocol, UpstreamProtocol::H2);
    // Plain by default, HTTP/1.1 by default.
    let c = Config::parse(MINIMAL, "t").unwrap_or_else(|e| panic!("{e}"));
    let u = c
        .routes
        .iter()
        .next()
        .and_then(|r| r.upstream.clone())
        .expect("upstream");
    assert!(!u.tls && u.protocol == UpstreamProtocol::H1);
}

#[test]
fn tls_settings_that_cannot_apply_are_problems_with_their_line() {
    let text = MINIMAL.replace(
        "address = \"127.0.0.1:8000\"",
        "address = \"127.0.0.1:8000\"\nverify = false\nprotocol = \"h2\"",
    );
    let p = problems(&text);
    assert_problem(&p, "upstreams.api.verify", 4);
    assert_problem(&p, "upstreams.api.protocol", 5);
    let tls = "[listeners]\npublic = \"127.0.0.1:8080\"\n[listeners.tls]\naddress = \"127.0.0.1:8080\"\ncerts = []\n";
    let p = problems(&format!("{tls}{MINIMAL}"));
    assert_problem(&p, "listeners.tls.address", 4);
    assert_problem(&p, "listeners.tls.certs", 5);
}

#[test]
fn tls_files_are_read_at_load_unless_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.pem");
    let text = format!(
        "[listeners.tls]\naddress = \"127.0.0.1:8443\"\ncerts = [{{ cert = \"{m}\", key = \"{m}\" }}]\n{MINIMAL}",
        m = missing.display()
    );
    let p = problems(&text);
    assert_problem(&p, "listeners.tls.certs[0]", 3);
    assert!(p.iter().any(|p| p.contains("nope.pem")), "{p:#?}");
    let path = dir.path().join("k.toml");
    std::fs::write(&path, &text).expect("write");
    let c = Config::load_without_files(&path).unwrap_or_else(|e| panic!("{e}"));
    let tls = c.listeners.tls.expect("tls listener");
    assert!(tls.http2 && tls.certs.is_none());
    assert_eq!(tls.files[0].cert, missing);
}

#[test]
fn redis_timeout_defaults_to_a_second_and_is_bounded() {
    let redis = "[secrets]\npepper = { env = \"P\" }\n[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n";
    let c = Config::parse(&format!("{MINIMAL}\n{redis}"), "t").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.redis_timeout, Duration::from_secs(1));
    let c = Config::parse(&format!("{MINIMAL}\n{redis}timeout_ms = 250\n"), "t")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.redis_timeout, Duration::from_millis(250));
    for bad in ["0", "5", "60001"] {
        let p = problems(&format!("{MINIMAL}\n{redis}timeout_ms = {bad}\n"));
        assert!(p.iter().any(|p| p.contains("store.timeout_ms")), "{p:#?}");
    }
}

/// `[store] password` takes the Redis password from the environment or a file, like every other
/// secret: never inline, only for Redis, and not twice (in the URL as well).
#[test]
fn the_redis_password_is_a_secret_reference() {
    let redis = "[secrets]\npepper = { env = \"P\" }\n[store]\nbackend = \"redis\"\n";
    let c = Config::parse(
        &format!(
            "{MINIMAL}\n{redis}url = \"redis://keygate@redis:6379/0\"\npassword = {{ env = \"KEYGATE_REDIS_PASSWORD\" }}\n"
        ),
        "t",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.secret_refs.store_password,
        Some(SecretRef::Env("KEYGATE_REDIS_PASSWORD".into()))
    );

    let e = parse_error(&format!(
        "{MINIMAL}\n{redis}url = \"redis://redis:6379/0\"\npassword = \"hunter2\"\n"
    ));
    assert!(e.contains("line 14"), "{e}");

    // Lines: MINIMAL is 7, a blank, then [secrets] at 9 and `password` at 14.
    let p = problems(&format!(
        "{MINIMAL}\n{redis}url = \"redis://keygate:inline@redis:6379/0\"\npassword = {{ env = \"X\" }}\n"
    ));
    assert_problem(&p, "store.password", 14);
    assert!(!p.iter().any(|p| p.contains("inline")), "{p:#?}");
    let p = problems(&format!(
        "{MINIMAL}\n[store]\npassword = {{ file = \"/run/x\" }}\n"
    ));
    assert_problem(&p, "store.password", 10);
}

#[test]
fn the_redis_password_resolves_and_check_config_names_it_when_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = "[store]\nbackend = \"redis\"\nurl = \"redis://keygate@redis:6379/0\"\n";
    let pepper = "[secrets]\npepper = { env = \"KEYGATE_UNIT_TEST_PEPPER_REDIS\" }\n";
    std::env::set_var(
        "KEYGATE_UNIT_TEST_PEPPER_REDIS",
        "a-pepper-for-the-redis-test",
    );
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "s3cret/with:odd@chars\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let c = with_secrets(
        dir.path(),
        &format!(
            "{pepper}{redis}password = {{ file = \"{}\" }}\n",
            file.display()
        ),
    );
    assert!(check_secrets(&c).is_empty(), "{:?}", check_secrets(&c));
    let s = resolve_secrets(&c).expect("secrets");
    assert_eq!(
        s.store_password.as_ref().map(|p| p.expose()),
        Some("s3cret/with:odd@chars")
    );

    let c = with_secrets(
        dir.path(),
        &format!(
            "{pepper}{redis}password = {{ env = \"KEYGATE_UNIT_TEST_SURELY_UNSET_REDIS\" }}\n"
        ),
    );
    let p = check_secrets(&c);
    assert!(
        p.iter()
            .any(|p| p.contains("store.password")
                && p.contains("KEYGATE_UNIT_TEST_SURELY_UNSET_REDIS")),
        "{p:?}"
    );
    let e = resolve_secrets(&c).expect_err("unset").to_string();
    assert!(e.contains("store_password"), "{e}");
}

// ------------------------------------------------------------------ secrets

fn with_secrets(data_dir: &Path, secrets: &str) -> Config {
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n\n{secrets}\n{MINIMAL}",
        data_dir.display()
    );
    Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn secrets_from_env_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "  file-admin-token\n").expect("write");
    // A variable name only this test uses: tests run in parallel threads.
    std::env::set_var("KEYGATE_UNIT_TEST_PEPPER_1", " env-pepper ");
    let c = with_secrets(
        &dir.path().join("data"),
        &format!(
            "[secrets]\npepper = {{ env = \"KEYGATE_UNIT_TEST_PEPPER_1\" }}\nadmin_token = {{ file = \"{}\" }}\n",
            token_file.display()
        ),
    );
    let s = resolve_secrets(&c).expect("secrets");
    assert_eq!(s.pepper.expose(), "env-pepper");
    assert_eq!(s.admin_token.expose(), "file-admin-token");
    // Nothing was generated.
    assert!(!dir.path().join("data").join("pepper").exists());
}

#[test]
fn missing_env_and_empty_file_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = with_secrets(
        dir.path(),
        "[secrets]\npepper = { env = \"KEYGATE_UNIT_TEST_SURELY_UNSET_VAR\" }\n",
    );
    let e = resolve_secrets(&c).expect_err("unset env").to_string();
    assert!(e.contains("KEYGATE_UNIT_TEST_SURELY_UNSET_VAR"), "{e}");
    assert!(e.contains("pepper"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let c = with_secrets(
        dir.path(),
        &format!(
            "[secrets]\nadmin_token = {{ file = \"{}\" }}\n",
            empty.display()
        ),
    );
    let e = resolve_secrets(&c).expect_err("empty file").to_string();
    assert!(e.contains("admin_token"), "{e}");

    let c = with_secrets(
        dir.path(),
        &format!(
            "[secrets]\nadmin_token = {{ file = \"{}\" }}\n",
            dir.path().join("nope").display()
        ),
    );
    assert!(resolve_secrets(&c).is_err());
}

#[test]
fn secrets_are_generated_once_with_mode_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let c = with_secrets(&data, "");
    let first = resolve_secrets(&c).expect("generate");
    for name in ["pepper", "admin_token"] {
        let path = data.join(name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        let on_disk = std::fs::read_to_string(&path).expect("read");
        assert!(on_disk.trim().len() >= 32, "{name} too short");
    }
    assert_eq!(
        std::fs::read_to_string(data.join("pepper")).expect("read"),
        first.pepper.expose()
    );
    assert_ne!(first.pepper.expose(), first.admin_token.expose());

    let second = resolve_secrets(&c).expect("reuse");
    assert_eq!(first.pepper, second.pepper);
    assert_eq!(first.admin_token, second.admin_token);
}

/// A knob the gate cannot apply to a route's kind is refused, never accepted and ignored.
#[test]
fn knobs_that_cannot_act_on_a_route_are_refused() {
    let route = |body: &str| {
        format!(
            "[upstreams.api]\naddress = \"127.0.0.1:8000\"\n\n[[routes]]\npath = \"/x/{{key_id}}\"\n{body}\n"
        )
    };
    for (body, field) in [
        ("upstream = \"api\"\nauth = \"none\"\nscopes = [\"a\"]", "routes[0].scopes"),
        ("upstream = \"api\"\nauth = \"none\"\npermission = \"read\"", "routes[0].permission"),
        (
            "upstream = \"api\"\nauth = \"none\"\nrate_limit = { requests = 1, per_seconds = 1 }",
            "routes[0].rate_limit",
        ),
        (
            "upstream = \"api\"\nauth = \"none\"\naccount_rate_limit = { requests = 1, per_seconds = 1 }",
            "routes[0].account_rate_limit",
        ),
        ("upstream = \"api\"\nauth = \"session\"", "routes[0].auth"),
        ("local = \"key\"\nauth = \"session\"\nscopes = [\"a\"]", "routes[0].scopes"),
        ("local = \"key\"\nauth = \"session\"\ncost = 1", "routes[0].cost"),
        ("local = \"balance\"\ncost = 1", "routes[0].cost"),
    ] {
        let p = problems(&route(body));
        assert_problem(&p, field, 5);
    }
    // What does apply is accepted: IP limits anywhere, caller and account limits on sessions,
    // and login's per-email `rate_limit`.
    for body in [
        "upstream = \"api\"\nip_rate_limit = { requests = 1, per_seconds = 1 }",
        "local = \"key\"\nauth = \"session\"\nrate_limit = { requests = 1, per_seconds = 1 }\naccount_rate_limit = { requests = 1, per_seconds = 1 }\nip_rate_limit = { requests = 1, per_seconds = 1 }",
        "local = \"login\"\nauth = \"none\"\nrate_limit = { requests = 1, per_seconds = 1 }",
    ] {
        if let Err(e) = Config::parse(&route(body), "t") {
            panic!("{body}: {e}");
        }
    }
}

#[test]
fn strip_headers_default_replace_and_validate() {
    let names = |c: &Config| -> Vec<String> {
        c.strip_headers
            .iter()
            .map(|h| h.as_str().to_string())
            .collect()
    };
    let c = Config::parse(MINIMAL, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&c), file::DEFAULT_STRIP_HEADERS);

    let text = format!("{MINIMAL}\n[forwarding]\nstrip_headers = [\"X-Debug\", \"x_user\"]\n");
    let c = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&c), ["x-debug", "x_user"], "replaces the default");
    let text = format!("{MINIMAL}\n[forwarding]\nstrip_headers = []\n");
    let c = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(c.strip_headers.is_empty());

    let text = format!("{MINIMAL}\n[forwarding]\nstrip_headers = [\"ok\", \"not a header\"]\n");
    assert_problem(&problems(&text), "forwarding.strip_headers", 10);
    let text = format!("{MINIMAL}\n[forwarding]\nstrip = []\n");
    assert!(parse_error(&text).contains("unknown field"));
}

#[test]
fn slow_client_limits_default_and_must_be_positive() {
    let c = Config::parse(MINIMAL, "min.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.request_header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_connections_per_ip, 256);
    let text = format!(
        "[server]\nrequest_header_timeout_seconds = 0\nmax_connections_per_ip = 0\n{MINIMAL}"
    );
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|p| p.contains("server.request_header_timeout_seconds")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|p| p.contains("server.max_connections_per_ip")),
        "{p:#?}"
    );
}

#[test]
fn upstream_keepalive_pool_defaults_past_pingoras_and_must_be_positive() {
    let c = Config::parse(MINIMAL, "min.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.upstream_keepalive_pool_size, 1024);
    let c = Config::parse(
        &format!("[server]\nupstream_keepalive_pool_size = 64\n{MINIMAL}"),
        "pool.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.upstream_keepalive_pool_size, 64);
    let p = problems(&format!(
        "[server]\nupstream_keepalive_pool_size = 0\n{MINIMAL}"
    ));
    assert!(
        p.iter()
            .any(|p| p.contains("server.upstream_keepalive_pool_size")),
        "{p:#?}"
    );
}

#[test]
fn self_service_bounds_default_and_are_checked() {
    let c = Config::parse(MINIMAL, "min.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.self_service.max_per_user, 100);
    assert_eq!(
        c.self_service.scopes,
        Some(vec![]),
        "what the routes require"
    );
    let routed = format!("{MINIMAL}\n[[routes]]\npath = \"/l\"\nupstream = \"api\"\nscopes = [\"leads:read\", \"a:b\"]\n");
    let c = Config::parse(&routed, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.self_service.scopes,
        Some(vec!["a:b".to_string(), "leads:read".to_string()])
    );

    let text =
        format!("[keys]\nmax_per_user = 5\nself_service_scopes = [\"leads:read\"]\n{MINIMAL}");
    let c = Config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.self_service.max_per_user, 5);
    assert_eq!(c.self_service.scopes, Some(vec!["leads:read".to_string()]));

    let p = problems("[keys]\nmax_per_user = 0\nself_service_scopes = [\"ok\", \"not ok\"]\n");
    assert_problem(&p, "keys.max_per_user", 2);
    assert_problem(&p, "keys.self_service_scopes", 3);
    assert!(parse_error("[keys]\nmax_keys = 5\n").contains("max_keys"));
}

#[test]
fn trusted_proxies_are_parsed_at_load_and_bad_ones_named_with_their_line() {
    let c = Config::parse(MINIMAL, "min.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(c.server.trusted_proxies.is_empty());
    assert!(!c.listeners.proxy_protocol);
    let text = format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\", \"127.0.0.2\"]\n\
         [listeners]\nproxy_protocol = true\n{MINIMAL}"
    );
    let c = Config::parse(&text, "ok.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(c.listeners.proxy_protocol);
    for ip in ["10.1.2.3", "fd00::1", "127.0.0.2"] {
        assert!(
            c.server.trusted_proxies.contains(ip.parse().unwrap()),
            "{ip}"
        );
    }
    assert!(!c
        .server
        .trusted_proxies
        .contains("127.0.0.3".parse().unwrap()));
    let text = format!(
        "[server]\ntrusted_proxies = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n{MINIMAL}"
    );
    assert_problem(&problems(&text), "server.trusted_proxies", 4);
}

#[test]
fn body_limits_default_to_ten_mebibytes_on_forwarded_routes_only() {
    let text = format!(
        "{MINIMAL}\n[[routes]]\npath = \"/small\"\nupstream = \"api\"\nmax_body_bytes = 100\n\n\
         [[routes]]\npath = \"/jwks\"\nlocal = \"jwks\"\nauth = \"none\"\n"
    );
    let c = Config::parse(&text, "ok.toml").unwrap_or_else(|e| panic!("{e}"));
    let limits: Vec<_> = c.routes.iter().map(|r| r.max_body_bytes).collect();
    assert_eq!(limits, [Some(10 * 1024 * 1024), Some(100), None]);
    let text = format!("[forwarding]\nmax_body_bytes = 5\n{MINIMAL}");
    let c = Config::parse(&text, "ok.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.routes.iter().next().and_then(|r| r.max_body_bytes),
        Some(5)
    );
    let text = format!(
        "{MINIMAL}\n[[routes]]\npath = \"/jwks\"\nlocal = \"jwks\"\nauth = \"none\"\nmax_body_bytes = 5\n"
    );
    assert_problem(&problems(&text), "routes[1].max_body_bytes", 13);
}

#[test]
fn sliding_windows_parse_and_refuse_a_burst() {
    let text = format!(
        "{MINIMAL}rate_limit = {{ requests = 10, per_seconds = 60, algorithm = \"sliding_window\" }}\n\n\
         [plans.pro]\nkey = {{ requests = 100, per_seconds = 60, algorithm = \"sliding_window\" }}\n"
    );
    let config = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    let window = crate::ratelimit::Limit {
        requests: 10,
        per_seconds: 60,
        burst: 10,
        algorithm: crate::ratelimit::Algorithm::SlidingWindow,
    };
    assert_eq!(config.routes[0].key_limit, Some(window));
    let plan = config.plans.get("pro").and_then(|p| p.key);
    assert_eq!(
        plan.map(|l| l.algorithm),
        Some(crate::ratelimit::Algorithm::SlidingWindow)
    );
    let p = problems(&format!(
        "{MINIMAL}rate_limit = {{ requests = 10, per_seconds = 60, burst = 20, algorithm = \"sliding_window\" }}\n"
    ));
    assert_problem(&p, "routes[0].rate_limit", 8);
    assert!(
        p.iter()
            .any(|p| p.contains("`burst` is a token-bucket setting")),
        "{p:#?}"
    );
    let e = parse_error(&format!(
        "{MINIMAL}rate_limit = {{ requests = 10, algorithm = \"leaky\" }}\n"
    ));
    assert!(e.contains("sliding_window"), "{e}");
}

#[test]
fn a_body_only_where_it_shapes_the_answer_and_only_valid_templates() {
    let route = |body: &str| {
        format!(
            "[upstreams.api]\naddress = \"127.0.0.1:8000\"\n\n[[routes]]\npath = \"/x\"\n{body}\n"
        )
    };
    // Today's bug: a `body` on a transactions-less kind was accepted and ignored.
    for (body, needle) in [
        (
            "local = \"exchange\"\nbody = '{\"a\":1}'",
            "answers a fixed shape",
        ),
        (
            "local = \"jwks\"\nauth = \"none\"\nbody = '{\"a\":1}'",
            "answers a fixed shape",
        ),
        (
            "upstream = \"api\"\nbody = '{\"a\":1}'",
            "only local endpoints",
        ),
        (
            "local = \"balance\"\nbody = '{\"a\":{items}}'",
            "`{items}` is not a placeholder",
        ),
        (
            "local = \"balance\"\nbody = '{\"a\":\"n={balance}\"}'",
            "inside a string",
        ),
        (
            "local = \"transactions\"\nbody = '{\"a\":{items}'",
            "is not JSON",
        ),
    ] {
        let p = problems(&route(body));
        assert_problem(&p, "routes[0].body", 5);
        assert!(p.iter().any(|p| p.contains(needle)), "{body}: {p:#?}");
    }
    for body in [
        "local = \"balance\"\nbody = '{\"credits\":{balance},\"webhooks\":{metadata.webhooks}}'",
        "local = \"transactions\"\nbody = '{\"data\":{items},\"pagination\":{\"next\":\"{cursor}\"}}'",
    ] {
        if let Err(e) = Config::parse(&route(body), "t") {
            panic!("{body}: {e}");
        }
    }
}
