//! Method + path matching, built once from the config's routes.
//!
//! matchit is a radix tree keyed by path only, so each distinct path pattern holds the indexes of
//! the routes that share it, and the method picks among them.

use std::collections::HashMap;

use crate::config::Route;

#[derive(Debug, Clone)]
pub struct Router {
    tree: matchit::Router<Vec<usize>>,
}

/// A matched route and the path parameters it captured.
#[derive(Debug)]
pub struct RouteMatch<'r, 'p> {
    pub index: usize,
    pub params: matchit::Params<'r, 'p>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Result<Self, String> {
        let mut by_path: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let slot = by_path.entry(r.path.as_str()).or_insert_with(|| {
                order.push(r.path.as_str());
                Vec::new()
            });
            slot.push(i);
        }
        let mut tree = matchit::Router::new();
        for path in order {
            let indexes = by_path.remove(path).unwrap_or_default();
            tree.insert(path, indexes)
                .map_err(|e| format!("path `{path}`: {e}"))?;
        }
        Ok(Self { tree })
    }

    /// The first route (in config order) whose path and method match.
    pub fn find<'r, 'p>(
        &'r self,
        routes: &[Route],
        method: &str,
        path: &'p str,
    ) -> Option<RouteMatch<'r, 'p>> {
        let m = self.tree.at(path).ok()?;
        let index = *m
            .value
            .iter()
            .find(|i| routes.get(**i).is_some_and(|r| r.allows_method(method)))?;
        Some(RouteMatch {
            index,
            params: m.params,
        })
    }
}
