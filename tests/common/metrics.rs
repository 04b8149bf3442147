//! Reading keygate's Prometheus metrics in tests.

use super::{get, Keygate};

/// The sum of the samples of `name` whose labels include every `(label, value)` in `labels`
/// (in any order; `&[]` sums every series), from Prometheus text; `None` when none matches.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let all = labels.iter().all(|(k, v)| {
                rest.split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\"").as_str())
            });
            if n != name || !all {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .reduce(|a, b| a + b)
}

/// [`sample`] from the running keygate's `/metrics`; 0 when no series matches (a labelled
/// counter has no series until first counted).
pub fn metric(kg: &Keygate, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = get(&kg.ops_url("/metrics"), &[]).body;
    sample(&text, name, labels).unwrap_or(0.0)
}
