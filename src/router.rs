//! The route table: the config's routes and the method + path matcher over them, built together
//! once per load (and per reload), so a table that exists always matches.
//!
//! matchit is a radix tree keyed by path only, so each distinct path pattern holds the indexes of
//! the routes that share it, and the method picks among them.

use std::collections::HashMap;
use std::ops::Deref;

use crate::config::Route;

/// Two route paths the matcher cannot hold together (a conflict or a malformed pattern).
#[derive(Debug, Clone, thiserror::Error)]
#[error("path `{path}`: {message}")]
pub struct RouteError {
    pub path: String,
    pub message: String,
}

/// The routes in config order with their matcher. Derefs to the routes, so `table[i]` is the
/// route a [`RouteMatch::index`] names.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    tree: matchit::Router<Vec<usize>>,
}

/// A matched route and the path parameters it captured.
#[derive(Debug)]
pub struct RouteMatch<'r, 'p> {
    pub index: usize,
    pub route: &'r Route,
    pub params: matchit::Params<'r, 'p>,
}

impl RouteTable {
    /// Every path the matcher refuses is reported, not only the first.
    pub fn new(routes: Vec<Route>) -> Result<Self, Vec<RouteError>> {
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
        let mut errors = Vec::new();
        for path in order {
            let indexes = by_path.remove(path).unwrap_or_default();
            if let Err(e) = tree.insert(path, indexes) {
                errors.push(RouteError {
                    path: path.to_string(),
                    message: e.to_string(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self { routes, tree })
    }

    /// A table with no routes (every request is `route_not_found`).
    pub fn empty() -> Self {
        Self {
            routes: Vec::new(),
            tree: matchit::Router::new(),
        }
    }

    /// The first route (in config order) whose path and method match.
    pub fn find<'r, 'p>(&'r self, method: &str, path: &'p str) -> Option<RouteMatch<'r, 'p>> {
        let m = self.tree.at(path).ok()?;
        let (index, route) = m.value.iter().find_map(|i| {
            self.routes
                .get(*i)
                .filter(|r| r.allows_method(method))
                .map(|r| (*i, r))
        })?;
        Some(RouteMatch {
            index,
            route,
            params: m.params,
        })
    }

    /// Route names in config order (metric labels).
    pub fn names(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.name.clone()).collect()
    }
}

impl Deref for RouteTable {
    type Target = [Route];

    fn deref(&self) -> &[Route] {
        &self.routes
    }
}
