//! Events that change shape. A stored row keeps the version it was written at and is
//! brought to the current shape whenever it is read (replay, every projector, export,
//! the auditor's views) by the steps below, one version at a time. A payload changes
//! shape by raising its enum's version in `domain_event!` and adding the step here;
//! stored rows are never rewritten (their hash chain covers them as stored).

use serde_json::Value;

/// One step: events of `aggregate_type` at version `from` become version `to`.
struct Step {
    aggregate_type: &'static str,
    from: &'static str,
    to: &'static str,
    /// Rewrites the payload (`{ "<EventType>": { fields } }`) of one event.
    apply: fn(event_type: &str, body: &mut serde_json::Map<String, Value>),
}

const STEPS: &[Step] = &[
    // Account events v2: `AccountCreated.created_at` is `at`, as in every other event.
    Step { aggregate_type: "account", from: "1", to: "2", apply: account_created_at },
];

fn account_created_at(event_type: &str, body: &mut serde_json::Map<String, Value>) {
    if event_type == "AccountCreated" {
        if let Some(at) = body.remove("created_at") {
            body.insert("at".into(), at);
        }
    }
}

/// Whether events of `aggregate_type` stored at `version` are read as they are.
pub fn is_current(aggregate_type: &str, version: &str) -> bool {
    !STEPS.iter().any(|s| s.aggregate_type == aggregate_type && s.from == version)
}

/// Brings a stored payload from `version` to the current shape, updating both.
pub fn upcast(aggregate_type: &str, event_type: &str, version: &mut String, payload: &mut Value) {
    while let Some(step) = STEPS.iter().find(|s| s.aggregate_type == aggregate_type && s.from == version.as_str()) {
        if let Some(body) = payload.get_mut(event_type).and_then(Value::as_object_mut) {
            (step.apply)(event_type, body);
        }
        *version = step.to.to_string();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::account::AccountEvent;

    #[test]
    fn an_old_account_created_reads_in_the_current_shape_and_a_current_one_as_it_is() {
        let mut payload = json!({ "AccountCreated": { "name": "Acme", "created_at": "2026-11-01T09:00:00Z" } });
        let mut version = "1".to_string();
        assert!(!is_current("account", &version));
        upcast("account", "AccountCreated", &mut version, &mut payload);
        assert_eq!(version, "2");
        assert!(matches!(serde_json::from_value(payload.clone()).unwrap(), AccountEvent::AccountCreated { .. }));
        let before = payload.clone();
        upcast("account", "AccountCreated", &mut version, &mut payload);
        assert_eq!(payload, before, "a current event is left as it is");
        assert!(is_current("conversation", "1"));
    }
}
