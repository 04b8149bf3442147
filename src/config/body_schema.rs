//! A route's `body_schema`: where it may be set, how large a body it lets keygate buffer, and
//! the schema file read and compiled once per load.

use std::sync::Arc;

use super::{file, Validator};
use crate::body_check::{BodySchema, MAX_CHECKED_BODY};

impl Validator<'_> {
    /// The route's compiled schema and its body limit. A schema is refused where there is no
    /// forwarded body to check (a local endpoint, a route only for GET or HEAD), and on a route
    /// whose limit is over what keygate can buffer; a route that leaves `max_body_bytes` out
    /// gets at most that. A file that cannot be read or compiled is a problem naming the route.
    pub(super) fn body_schema(
        &mut self,
        r: &file::RouteSection,
        max_body_bytes: Option<u64>,
        field: &dyn Fn(&str) -> String,
    ) -> (Option<Arc<BodySchema>>, Option<u64>) {
        let Some(path) = &r.body_schema else {
            return (None, max_body_bytes);
        };
        let route = r
            .name
            .as_ref()
            .map_or_else(|| r.path.get_ref().clone(), |n| n.get_ref().clone());
        let at = path.span();
        if r.local.is_some() {
            self.problem(
                &field("body_schema"),
                &at,
                format!(
                    "route `{route}` is answered by keygate; `body_schema` checks bodies \
                     forwarded to an upstream"
                ),
            );
            return (None, max_body_bytes);
        }
        let bodiless = |m: &toml::Spanned<String>| {
            matches!(m.get_ref().to_ascii_uppercase().as_str(), "GET" | "HEAD")
        };
        if !r.methods.is_empty() && r.methods.iter().all(bodiless) {
            self.problem(
                &field("body_schema"),
                &at,
                format!(
                    "route `{route}` takes only GET or HEAD, which carry no body to check; \
                     list the methods that do (`methods = [\"POST\"]`)"
                ),
            );
        }
        let limit = match &r.max_body_bytes {
            Some(set) if *set.get_ref() > MAX_CHECKED_BODY => {
                self.problem(
                    &field("max_body_bytes"),
                    &set.span(),
                    format!(
                        "route `{route}` has a `body_schema`, so its body is buffered to be \
                         checked: at most {MAX_CHECKED_BODY} bytes"
                    ),
                );
                Some(MAX_CHECKED_BODY)
            }
            _ => max_body_bytes.map(|l| l.min(MAX_CHECKED_BODY)),
        };
        let file = self.base_dir.join(path.get_ref());
        match BodySchema::load(&file) {
            Ok(schema) => (Some(Arc::new(schema)), limit),
            Err(e) => {
                self.problem(&field("body_schema"), &at, format!("route `{route}`: {e}"));
                (None, limit)
            }
        }
    }
}
