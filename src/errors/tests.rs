use std::collections::HashMap;

use super::*;

#[test]
fn defaults_cover_every_reason() {
    let t = Templates::default();
    for r in Reason::ALL {
        let body = t.get(r).render(r, &Detail::default());
        let v: serde_json::Value = serde_json::from_str(&body).expect("valid json");
        assert_eq!(v["error"]["code"], r.as_str());
        assert_eq!(t.get(r).status, r.default_status());
    }
    assert_eq!(t.get(Reason::InsufficientCredits).status, 402);
}

#[test]
fn scope_is_named_and_escaped() {
    let t = Templates::default();
    let body = t.get(Reason::InsufficientScope).render(
        Reason::InsufficientScope,
        &Detail {
            scope: Some("leads:\"write\"".into()),
            message: None,
        },
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect("valid json");
    assert_eq!(
        v["error"]["message"],
        "The API key is missing the required scope leads:\"write\""
    );
}

#[test]
fn every_reason_round_trips_through_its_code() {
    for r in Reason::ALL {
        assert_eq!(Reason::from_code(r.code()), Some(r));
        assert_eq!(r.as_str(), r.code());
        assert_eq!(r.to_string(), r.code());
        assert_eq!(Reason::CODES[r.index()], r.code());
        let json = serde_json::to_string(&r).expect("serialize");
        assert_eq!(json, format!("\"{}\"", r.code()));
        let back: Reason = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, r);
    }
    assert_eq!(Reason::from_code("no_such_reason"), None);
    let e = serde_json::from_str::<Reason>("\"no_such_reason\"").expect_err("unknown code");
    assert!(
        e.to_string().contains("unknown variant `no_such_reason`"),
        "{e}"
    );
}

#[test]
fn indices_are_dense_and_unique() {
    let mut seen = [false; Reason::COUNT];
    for (i, r) in Reason::ALL.into_iter().enumerate() {
        assert_eq!(r.index(), i, "{r} is not at its index");
        assert!(!seen[r.index()], "{r} shares an index");
        seen[r.index()] = true;
    }
    assert!(seen.iter().all(|s| *s));
    let codes: std::collections::HashSet<_> = Reason::CODES.iter().collect();
    assert_eq!(codes.len(), Reason::COUNT, "codes are unique");
}

/// The rendering before templates were prepared: a replace per placeholder per rejection. Kept
/// here as the reference the prepared rendering must match byte for byte.
fn replace_render(
    body: &str,
    content_type: &str,
    template_message: &str,
    reason: Reason,
    detail: &Detail,
) -> String {
    let json = content_type.contains("json");
    let scope = detail.scope.as_deref().unwrap_or("");
    let message = detail
        .message
        .as_deref()
        .unwrap_or(template_message)
        .replace("{scope}", scope);
    let esc = |s: &str| {
        if json {
            let q = serde_json::to_string(s).expect("string");
            q[1..q.len() - 1].to_string()
        } else {
            s.to_string()
        }
    };
    body.replace("{reason}", reason.as_str())
        .replace("{message}", &esc(&message))
        .replace("{scope}", &esc(scope))
}

#[test]
fn prepared_templates_render_what_replacing_rendered() {
    let bodies = [
        DEFAULT_BODY,
        "{reason}",
        "{message}",
        "{scope}",
        "{reason}: at the start",
        "at the end: {message}",
        "in {scope} the middle",
        r#"{"message":"This apikey is not valid"}"#,
        "no placeholder at all",
        "",
        "{reason}{reason} and {message}, {message} again {scope}{scope}",
        "{message}{reason}{scope}",
        "{{reason}} {unknown} {mess age} {scope {} }{",
        r#"{"error":"{message}","code":"{reason}","scope":"{scope}"}"#,
    ];
    let messages = [
        "The API key is not valid",
        "Missing {scope}",
        "{scope} first, {scope} twice",
        "quotes \" and \\ and\nnewline {reason} {message}",
        "",
    ];
    let details = [
        Detail::default(),
        Detail {
            scope: Some("leads:write".into()),
            message: None,
        },
        Detail {
            scope: Some("odd\"scope\\".into()),
            message: None,
        },
        Detail {
            scope: None,
            message: Some("field \"email\" is\tmissing".into()),
        },
    ];
    for content_type in ["application/json", "text/plain"] {
        for body in bodies {
            for message in messages {
                let t = Template::new(400, content_type.into(), body.into(), message.into());
                for reason in [Reason::InvalidKey, Reason::InsufficientScope] {
                    for detail in &details {
                        assert_eq!(
                            t.render(reason, detail),
                            replace_render(body, content_type, message, reason, detail),
                            "body {body:?}, message {message:?}, {content_type}, {detail:?}"
                        );
                    }
                }
            }
        }
    }
}

/// A message the rejection supplies may quote the caller's input: nothing in it is expanded.
#[test]
fn a_supplied_message_is_inserted_as_it_is() {
    let t = Templates::default();
    let body = t.get(Reason::InvalidBody).render(
        Reason::InvalidBody,
        &Detail {
            scope: None,
            message: Some("unknown field `{scope}`".into()),
        },
    );
    assert_eq!(
        body,
        r#"{"error":{"code":"invalid_body","message":"unknown field `{scope}`"}}"#
    );
}

#[test]
fn overrides_replace_only_their_reason() {
    let mut overrides = HashMap::new();
    overrides.insert(
        Reason::InvalidKey,
        Template::new(
            401,
            "application/json".into(),
            r#"{"message":"{message}"}"#.into(),
            "This apikey is not valid".into(),
        ),
    );
    let t = Templates::new(overrides);
    assert_eq!(
        t.get(Reason::InvalidKey)
            .render(Reason::InvalidKey, &Detail::default()),
        r#"{"message":"This apikey is not valid"}"#
    );
    assert_eq!(
        t.get(Reason::KeyRevoked)
            .render(Reason::KeyRevoked, &Detail::default()),
        r#"{"error":{"code":"key_revoked","message":"The API key has been revoked"}}"#
    );
}

/// With a `{detail}` slot the specifics go there and the configured message stays; without
/// specifics the slot is empty.
#[test]
fn detail_has_its_own_slot() {
    let t = Template::new(
        422,
        "application/json".into(),
        r#"{"error":"{message}","detail":"{detail}"}"#.into(),
        "Invalid request body".into(),
    );
    let specifics = Detail {
        scope: None,
        message: Some("/email: value is not a \"email\"".into()),
    };
    assert_eq!(
        t.render(Reason::InvalidBody, &specifics),
        r#"{"error":"Invalid request body","detail":"/email: value is not a \"email\""}"#
    );
    assert_eq!(
        t.render(Reason::InvalidBody, &Detail::default()),
        r#"{"error":"Invalid request body","detail":""}"#
    );
}
