//! The event envelope: what the store wraps around a domain event before it enters the
//! log, and what every reader unwraps. One module for both directions, so the write
//! side and the read side cannot drift apart:
//!
//! - the metadata keys and the metadata an event carries (who, as part of what, when);
//! - sealing personal fields with their data subject's key, and opening them again
//!   (a shredded key opens to `null`);
//! - the JSON text an event is stored and hashed as, and the per-stream hash chain
//!   over it ([`chain`]).
//!
//! Lives on the read side because both sides need it (dependencies point one way).

pub mod chain;

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::actor::Actor;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::keyring::{decrypt, encrypt, Aes256Gcm, Keyring};

/// Metadata key listing the payload fields sealed with the data subject's key.
pub const META_SEALED: &str = "sealed_fields";
/// Metadata key naming the data subject whose key sealed the fields.
pub const META_SUBJECT: &str = "data_subject";
/// Metadata key naming who caused the event ([`Actor`]'s text form).
pub const META_ACTOR: &str = "actor";
/// Metadata key of the request (or chain of reactions) an event belongs to.
pub const META_CORRELATION: &str = "correlation_id";
/// Metadata key of the event a policy's or a job's event reacts to (`<type>/<id>/<seq>`).
pub const META_CAUSATION: &str = "causation_id";
const META_CHANNEL: &str = "channel";
const META_OCCURRED_AT: &str = "occurred_at";

/// Prefix of a sealed value, naming the format so it can evolve.
const SEALED_PREFIX: &str = "v1:";

/// What an event's metadata records besides its sealing.
pub struct Metadata<'a> {
    pub actor: &'a Actor,
    pub correlation_id: Uuid,
    pub causation_id: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub occurred_at: DateTime<Utc>,
}

impl Metadata<'_> {
    fn to_json(&self) -> Value {
        let mut metadata = json!({
            META_ACTOR: self.actor.to_string(),
            META_CORRELATION: self.correlation_id.to_string(),
            META_OCCURRED_AT: self.occurred_at.to_rfc3339(),
        });
        if let Some(causation) = self.causation_id {
            metadata[META_CAUSATION] = json!(causation);
        }
        if let Some(channel) = self.channel {
            metadata[META_CHANNEL] = json!(channel);
        }
        metadata
    }
}

/// A domain event's payload, ready to seal: its personal fields and whose they are.
pub struct Unsealed<'a> {
    pub payload: Value,
    pub personal_fields: &'a [&'a str],
    pub subject: Option<Uuid>,
}

/// Wraps a payload for the log: seals its personal fields with `cipher` (the subject's
/// key, when there are fields to seal) and builds its metadata, which names what was
/// sealed and for whom.
pub fn seal(
    event: Unsealed<'_>,
    cipher: Option<&Aes256Gcm>,
    metadata: &Metadata<'_>,
) -> anyhow::Result<(Value, Value)> {
    let Unsealed { mut payload, personal_fields, subject } = event;
    let mut metadata = metadata.to_json();
    let (Some(subject), Some(cipher)) = (subject, cipher) else { return Ok((payload, metadata)) };
    let body = variant_body(&mut payload).context("event payload is not an externally tagged object")?;
    let mut sealed = Vec::new();
    for field in personal_fields {
        if let Some(slot) = body.get_mut(*field) {
            if !slot.is_null() {
                *slot = Value::String(seal_value(cipher, subject, slot)?);
                sealed.push(*field);
            }
        }
    }
    if !sealed.is_empty() {
        metadata[META_SEALED] = json!(sealed.join(","));
        metadata[META_SUBJECT] = json!(subject.to_string());
    }
    Ok((payload, metadata))
}

/// Opens the sealed fields of one payload, as named by its metadata; a field whose
/// key is shredded reads `null`.
pub async fn open(
    conn: &mut PgConnection,
    keyring: &Keyring,
    payload: &mut Value,
    metadata: &Value,
) -> anyhow::Result<()> {
    if metadata.get(META_SEALED).is_none() {
        return Ok(());
    }
    let subject: Uuid = metadata
        .get(META_SUBJECT)
        .and_then(Value::as_str)
        .context("sealed event without a data subject")?
        .parse()
        .context("sealed event with a malformed data subject")?;
    let cipher = keyring.data_key(&mut *conn, subject).await?;
    let Some(body) = variant_body(payload) else { return Ok(()) };
    for field in sealed_fields(metadata) {
        let Some(slot) = body.get_mut(field) else { continue };
        let Some(sealed) = slot.as_str() else { continue };
        *slot = match &cipher {
            Some(cipher) => {
                open_value(cipher, subject, sealed).with_context(|| format!("failed to open field {field}"))?
            }
            None => Value::Null,
        };
        storable(slot);
    }
    Ok(())
}

/// Sets every field the metadata names as sealed to `null`: how an auditor sees a
/// field that does not open (verification names the damage).
pub fn blank_sealed_fields(payload: &mut Value, metadata: &Value) {
    if let Some(body) = variant_body(payload) {
        for field in sealed_fields(metadata) {
            if let Some(slot) = body.get_mut(field) {
                *slot = Value::Null;
            }
        }
    }
}

/// Whether the metadata names sealed fields.
pub fn is_sealed(metadata: &Value) -> bool {
    metadata.get(META_SEALED).is_some()
}

/// Who caused the event, as its metadata records it (`system` when it names no one).
pub fn recorded_actor(metadata: &Value) -> &str {
    metadata.get(META_ACTOR).and_then(Value::as_str).unwrap_or("system")
}

/// The fields an event's metadata names as sealed.
fn sealed_fields(metadata: &Value) -> impl Iterator<Item = &str> {
    let fields = metadata.get(META_SEALED).and_then(Value::as_str).unwrap_or_default();
    fields.split(',').filter(|f| !f.is_empty())
}

/// Seals a JSON value (its JSON text) for `subject`: `v1:` + base64(nonce ‖ ciphertext),
/// the subject bound as associated data.
pub fn seal_value(cipher: &Aes256Gcm, subject: Uuid, value: &Value) -> anyhow::Result<String> {
    let plain = serde_json::to_vec(value)?;
    Ok(format!("{SEALED_PREFIX}{}", BASE64.encode(encrypt(cipher, subject.as_bytes(), &plain)?)))
}

/// Opens a value sealed by [`seal_value`].
fn open_value(cipher: &Aes256Gcm, subject: Uuid, sealed: &str) -> anyhow::Result<Value> {
    let body = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| anyhow!("unknown sealed value format"))?;
    let bytes = BASE64.decode(body).context("sealed value is not base64")?;
    Ok(serde_json::from_slice(&decrypt(cipher, subject.as_bytes(), &bytes)?)?)
}

/// Makes opened text storable: a NUL (which no PostgreSQL text can hold, and which
/// only sealed fields can carry into the log) reads as U+FFFD. Input refuses NUL;
/// this keeps an event the log already holds from stopping a read model for good.
fn storable(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('\0') => *text = text.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(storable),
        Value::Object(fields) => {
            if fields.keys().any(|k| k.contains('\0')) {
                *fields = std::mem::take(fields).into_iter().map(|(k, v)| (k.replace('\0', "\u{FFFD}"), v)).collect();
            }
            fields.values_mut().for_each(storable);
        }
        _ => {}
    }
}

/// The field object of an externally tagged event (`{"Variant": {...}}`).
pub fn variant_body(payload: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    payload.as_object_mut()?.values_mut().next()?.as_object_mut()
}

/// An event's identity, `<aggregate type>/<aggregate id>/<sequence>`: what the events
/// a policy or job writes in reaction name as their cause, and what jobs are keyed by.
pub fn event_id(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    format!("{aggregate_type}/{aggregate_id}/{sequence}")
}

/// The JSON text an event is stored and hashed as. `serde_json::to_string` writes
/// the same text as `Value`'s `Display`, without its per-token `fmt` round trips.
pub fn json_text(value: &Value) -> anyhow::Result<String> {
    serde_json::to_string(value).context("failed to serialise an event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_subject() {
        let keyring = Keyring::new([7; 32]);
        let subject = Uuid::from_u128(1);
        let key = keyring.new_data_key(subject).unwrap();
        let value = serde_json::json!("Olá, preciso de ajuda");
        let sealed = seal_value(&key.cipher, subject, &value).unwrap();
        assert!(!sealed.contains("ajuda"));
        assert_eq!(open_value(&key.cipher, subject, &sealed).unwrap(), value);
        assert!(open_value(&key.cipher, Uuid::from_u128(2), &sealed).is_err());
        let other = keyring.new_data_key(Uuid::from_u128(3)).unwrap();
        assert!(open_value(&other.cipher, subject, &sealed).is_err());
    }

    #[test]
    fn sealing_names_the_sealed_fields_and_subject_and_leaves_the_rest_in_clear() {
        let keyring = Keyring::new([7; 32]);
        let subject = Uuid::from_u128(9);
        let key = keyring.new_data_key(subject).unwrap();
        let actor = Actor::Contact(subject);
        let metadata = Metadata {
            actor: &actor,
            correlation_id: Uuid::from_u128(1),
            causation_id: None,
            channel: Some("api"),
            occurred_at: DateTime::<Utc>::from_timestamp(0, 0).unwrap(),
        };
        let event = Unsealed {
            payload: json!({ "MessageReceived": { "content": "meu CPF", "email": null, "at": 1 } }),
            personal_fields: &["content", "email"],
            subject: Some(subject),
        };
        let (payload, metadata) = seal(event, Some(&key.cipher), &metadata).unwrap();
        assert!(!payload.to_string().contains("CPF"));
        assert_eq!(payload["MessageReceived"]["at"], 1);
        assert_eq!(metadata[META_SEALED], "content", "a null field is not sealed");
        assert_eq!(metadata[META_SUBJECT], subject.to_string());
        assert_eq!(metadata[META_ACTOR], actor.to_string());
        assert_eq!(metadata[META_CHANNEL], "api");
        let mut blanked = payload.clone();
        blank_sealed_fields(&mut blanked, &metadata);
        assert_eq!(blanked["MessageReceived"]["content"], Value::Null);
    }
}
