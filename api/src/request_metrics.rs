//! What an operator reads of the HTTP service in `/metrics`: GraphQL requests by
//! operation and outcome, their latency by outcome, and how many are in flight.
//!
//! Operation names come from clients, so the labels are bounded: a name that is not a
//! GraphQL name of at most 64 characters counts as `invalid`, and past
//! [`MAX_OPERATIONS`] distinct names the rest count as `other`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Distinct operation names given labels of their own.
pub const MAX_OPERATIONS: usize = 200;

#[derive(Default)]
pub struct RequestMetrics {
    in_flight: AtomicI64,
    recorded: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    /// (operation, code) → requests.
    requests: BTreeMap<(String, &'static str), u64>,
    /// code → latency histogram.
    latency: BTreeMap<&'static str, Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counts a request in flight until dropped.
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RequestMetrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// One answered request: its operation (as the client named it), its outcome
    /// (`OK` or the first error's code) and how long it took.
    pub fn record(&self, operation: Option<&str>, code: &'static str, seconds: f64) {
        let mut recorded = self.recorded.lock().expect("request metrics lock");
        let label = match operation {
            None => "anonymous".to_string(),
            Some(name) if !is_graphql_name(name) => "invalid".to_string(),
            Some(name) => name.to_string(),
        };
        let known = recorded.requests.keys().any(|(operation, _)| *operation == label);
        let distinct = || {
            recorded.requests.keys().map(|(operation, _)| operation).collect::<std::collections::BTreeSet<_>>().len()
        };
        let label = if known || distinct() < MAX_OPERATIONS { label } else { "other".to_string() };
        *recorded.requests.entry((label, code)).or_default() += 1;
        let histogram = recorded.latency.entry(code).or_default();
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// The Prometheus text of what was recorded.
    pub fn render(&self, out: &mut String) {
        let recorded = self.recorded.lock().expect("request metrics lock");
        let _ = writeln!(out, "# HELP inbox_graphql_requests_total GraphQL requests by operation and outcome code.");
        let _ = writeln!(out, "# TYPE inbox_graphql_requests_total counter");
        for ((operation, code), n) in &recorded.requests {
            let _ = writeln!(out, "inbox_graphql_requests_total{{operation=\"{operation}\",code=\"{code}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP inbox_graphql_request_duration_seconds GraphQL request latency by outcome code.");
        let _ = writeln!(out, "# TYPE inbox_graphql_request_duration_seconds histogram");
        for (code, histogram) in &recorded.latency {
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                let _ = writeln!(
                    out,
                    "inbox_graphql_request_duration_seconds_bucket{{code=\"{code}\",le=\"{bound}\"}} {count}"
                );
            }
            let metric = "inbox_graphql_request_duration_seconds";
            let _ = writeln!(out, "{metric}_bucket{{code=\"{code}\",le=\"+Inf\"}} {}", histogram.count);
            let _ = writeln!(out, "{metric}_sum{{code=\"{code}\"}} {}", histogram.sum);
            let _ = writeln!(out, "{metric}_count{{code=\"{code}\"}} {}", histogram.count);
        }
        let _ = writeln!(out, "# HELP inbox_graphql_requests_in_flight GraphQL requests being answered now.");
        let _ = writeln!(out, "# TYPE inbox_graphql_requests_in_flight gauge");
        let _ = writeln!(out, "inbox_graphql_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
    }
}

/// The operation a request names: its `operationName`, else the name its document's
/// first operation gives itself (`query Inbox { … }`), if any.
pub fn operation_name(named: Option<&str>, document: &str) -> Option<String> {
    if let Some(name) = named {
        return Some(name.to_string());
    }
    let mut rest = document.trim_start();
    while let Some(comment) = rest.strip_prefix('#') {
        rest = comment.split_once('\n').map_or("", |(_, after)| after).trim_start();
    }
    let after_keyword = ["query", "mutation", "subscription"].iter().find_map(|k| rest.strip_prefix(k))?;
    let name: String =
        after_keyword.trim_start().chars().take_while(|c| *c == '_' || c.is_ascii_alphanumeric()).take(65).collect();
    (!name.is_empty()).then_some(name)
}

/// `[_A-Za-z][_0-9A-Za-z]*`, at most 64 characters.
fn is_graphql_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded_whatever_names_clients_send() {
        let metrics = RequestMetrics::default();
        metrics.record(Some("not a name\"}"), "BAD_USER_INPUT", 0.001);
        metrics.record(None, "OK", 0.2);
        // Two labels taken: 198 more names get theirs, the other 52 count as one.
        for n in 0..MAX_OPERATIONS + 50 {
            metrics.record(Some(&format!("Op{n}")), "OK", 0.003);
        }
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("inbox_graphql_requests_total{operation=\"other\",code=\"OK\"} 52"), "{out}");
        assert!(out.contains("{operation=\"invalid\",code=\"BAD_USER_INPUT\"} 1"), "{out}");
        assert!(out.contains("{operation=\"anonymous\",code=\"OK\"} 1"), "{out}");
        assert!(out.contains("inbox_graphql_request_duration_seconds_bucket{code=\"OK\",le=\"0.005\"} 250"), "{out}");
        assert!(out.contains("inbox_graphql_request_duration_seconds_count{code=\"OK\"} 251"), "{out}");
        assert_eq!(operation_name(None, "# inbox\n query Inbox($f: Int) { me { id } }").as_deref(), Some("Inbox"));
        assert_eq!(operation_name(None, "{ me { id } }"), None);
        assert_eq!(operation_name(Some("Given"), "query Other { me { id } }").as_deref(), Some("Given"));
        let _flying = metrics.start();
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("inbox_graphql_requests_in_flight 1"), "{out}");
    }
}
