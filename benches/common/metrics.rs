//! Prometheus text as the benches read it: the API server's `/metrics` and the `keyward`
//! processes' own.

use std::collections::BTreeMap;

use kube::Client;

use super::Result;

pub type Labels = BTreeMap<String, String>;

/// The API server's `/metrics`, through the bench's client.
pub async fn scrape_apiserver(client: &Client) -> Result<String> {
    // `Request::new("")` with the name `metrics` builds a plain `GET /metrics`.
    let request = kube::core::Request::new("")
        .get("metrics", &Default::default())
        .map_err(|e| format!("build GET /metrics: {e}"))?;
    Ok(client.request_text(request).await.map_err(|e| format!("the API server's /metrics: {e}"))?)
}

/// The samples of the metric `name` (exactly that name, any labels) in Prometheus text.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (Labels, f64)> + 'a {
    text.lines().filter(|line| !line.starts_with('#')).filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.rsplit_once('}').map(|(labels, value)| (parse_labels(labels), value))?,
            // A longer name that starts with this one has neither `{` nor a space here.
            None if rest.starts_with(' ') => (BTreeMap::new(), rest),
            None => return None,
        };
        // Values may be printed in exponent form ("1.2e+06").
        Some((labels, value.split_whitespace().next()?.parse().ok()?))
    })
}

/// Every series of `name` added up; `None` when there is none.
pub fn total(text: &str, name: &str) -> Option<f64> {
    samples(text, name).map(|(_, v)| v).reduce(|a, b| a + b)
}

/// A counter's series, labels -> value (series with the same labels added up).
pub fn counter(text: &str, name: &str) -> BTreeMap<Labels, u64> {
    let mut series = BTreeMap::new();
    for (labels, value) in samples(text, name) {
        *series.entry(labels).or_insert(0) += value.round() as u64;
    }
    series
}

/// Parses `a="x",b="y"` as Prometheus writes labels (values escape `\`, `"` and newlines).
pub fn parse_labels(text: &str) -> Labels {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}
