//! The WhatsApp Cloud API's webhook format, read into [`Notice`]s: every entry,
//! every change, every message and status (not just the first of each).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use domain::attachment::Attachment;
use domain::channel::TemplateRef;
use domain::values::{FileType, MessageStatus};
use reqwest::multipart::{Form, Part};

use super::{Malformed, Notice, ProviderMedia, ProviderMessage, ProviderStatus};

#[derive(Deserialize)]
struct Payload {
    object: String,
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessagesValue {
    metadata: Metadata,
    contacts: Vec<WaContact>,
    messages: Vec<Value>,
    statuses: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Deserialize)]
struct WaContact {
    wa_id: String,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct WaMessage {
    from: String,
    id: String,
    timestamp: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    context: Option<Context>,
    #[serde(flatten)]
    body: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct Context {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct WaStatus {
    id: String,
    status: String,
    timestamp: String,
    #[serde(default)]
    errors: Vec<WaError>,
}

#[derive(Deserialize)]
struct WaError {
    #[serde(default)]
    code: Value,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The phone number ids a payload is for (to route it before anything else is read).
pub fn routing_ids(body: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut ids: Vec<String> = parse(body)?.iter().map(|n| n.routing_id().to_string()).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Reads a webhook body. Not the Cloud API's envelope: [`Malformed`]. An item of a
/// kind not handled, or one that does not read, becomes [`Notice::Ignored`].
pub fn parse(body: &[u8]) -> Result<Vec<Notice>, Malformed> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("not a WhatsApp webhook payload: {e}")))?;
    if payload.object != "whatsapp_business_account" {
        return Err(Malformed(format!("object '{}' is not whatsapp_business_account", payload.object)));
    }
    let mut notices = Vec::new();
    for change in payload.entry.into_iter().flat_map(|e| e.changes) {
        if change.field != "messages" {
            notices.push(Notice::Ignored { routing_id: String::new(), kind: format!("field {}", change.field) });
            continue;
        }
        let value: MessagesValue = match serde_json::from_value(change.value) {
            Ok(value) => value,
            Err(e) => {
                notices.push(Notice::Ignored { routing_id: String::new(), kind: format!("unreadable change: {e}") });
                continue;
            }
        };
        let routing_id = value.metadata.phone_number_id;
        for item in value.messages {
            notices.push(message(&routing_id, &value.contacts, item));
        }
        for item in value.statuses {
            notices.push(status(&routing_id, item));
        }
    }
    Ok(notices)
}

fn seconds(timestamp: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(timestamp.parse().ok()?, 0)
}

fn message(routing_id: &str, contacts: &[WaContact], item: Value) -> Notice {
    let ignored = |kind: String| Notice::Ignored { routing_id: routing_id.to_string(), kind };
    let message: WaMessage = match serde_json::from_value(item) {
        Ok(message) => message,
        Err(e) => return ignored(format!("unreadable message: {e}")),
    };
    let Some(sent_at) = seconds(&message.timestamp) else {
        return ignored(format!("message with timestamp '{}'", message.timestamp));
    };
    let part = message.body.get(&message.kind);
    let field = |path: &[&str]| -> Option<String> {
        let mut at = part?;
        for key in path {
            at = at.get(key)?;
        }
        at.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
    };
    let mut reply_to = message.context.and_then(|c| c.id);
    let mut media = Vec::new();
    let text = match message.kind.as_str() {
        "text" => field(&["body"]),
        "button" => field(&["text"]),
        "interactive" => field(&["button_reply", "title"]).or_else(|| field(&["list_reply", "title"])),
        "image" | "video" | "document" | "audio" | "sticker" => {
            let Some(source) = field(&["id"]) else {
                return ignored(format!("{} without a media id", message.kind));
            };
            let file_type = match message.kind.as_str() {
                "image" => FileType::Image,
                "video" => FileType::Video,
                "audio" => FileType::Audio,
                "sticker" => FileType::Sticker,
                _ => FileType::File,
            };
            media.push(ProviderMedia {
                file_type,
                mime_type: field(&["mime_type"]),
                file_name: field(&["filename"]),
                source,
            });
            Some(field(&["caption"]).unwrap_or_default())
        }
        "location" => location(part),
        "contacts" => shared_contacts(part),
        "reaction" => {
            reply_to = field(&["message_id"]).or(reply_to);
            // An empty emoji takes a reaction back: nothing to show.
            field(&["emoji"])
        }
        _ => None,
    };
    let Some(text) = text else {
        return ignored(format!("message of type {}", message.kind));
    };
    let profile = contacts.iter().find(|c| c.wa_id == message.from);
    Notice::Message(ProviderMessage {
        routing_id: routing_id.to_string(),
        sender_name: profile.and_then(|c| c.profile.as_ref()?.name.clone()),
        sender_phone: Some(format!("+{}", message.from)),
        sender: message.from,
        provider_message_id: message.id,
        sent_at,
        text,
        media,
        reply_to,
    })
}

/// A shared location as text: its name and address, else its coordinates.
fn location(part: Option<&Value>) -> Option<String> {
    let part = part?;
    let text = |key: &str| part.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
    let named: Vec<&str> = [text("name"), text("address")].into_iter().flatten().collect();
    let coordinates = match (part.get("latitude")?.as_f64(), part.get("longitude")?.as_f64()) {
        (Some(lat), Some(lon)) => format!("{lat}, {lon}"),
        _ => return None,
    };
    Some(if named.is_empty() { coordinates } else { format!("{} ({coordinates})", named.join(", ")) })
}

/// Shared contact cards as text: each one's name and phone numbers.
fn shared_contacts(part: Option<&Value>) -> Option<String> {
    let cards = part?.as_array()?;
    let lines: Vec<String> = cards
        .iter()
        .map(|card| {
            let name = card.pointer("/name/formatted_name").and_then(Value::as_str).unwrap_or_default();
            let phones: Vec<&str> = card
                .get("phones")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(|p| p.get("phone").and_then(Value::as_str)).collect())
                .unwrap_or_default();
            [name.to_string(), phones.join(", ")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(": ")
        })
        .filter(|line| !line.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn status(routing_id: &str, item: Value) -> Notice {
    let ignored = |kind: String| Notice::Ignored { routing_id: routing_id.to_string(), kind };
    let status: WaStatus = match serde_json::from_value(item) {
        Ok(status) => status,
        Err(e) => return ignored(format!("unreadable status: {e}")),
    };
    let Some(at) = seconds(&status.timestamp) else {
        return ignored(format!("status with timestamp '{}'", status.timestamp));
    };
    let outcome = match status.status.as_str() {
        "sent" => Ok(MessageStatus::Sent),
        "delivered" => Ok(MessageStatus::Delivered),
        "read" => Ok(MessageStatus::Read),
        "failed" => {
            let error = status.errors.first();
            let code = error.map(|e| e.code.to_string().trim_matches('"').to_string()).unwrap_or_default();
            let title = error.and_then(|e| e.title.clone().or_else(|| e.message.clone())).unwrap_or_default();
            Err((code, title))
        }
        other => return ignored(format!("status {other}")),
    };
    Notice::Status(ProviderStatus {
        routing_id: routing_id.to_string(),
        provider_message_id: status.id,
        status: outcome,
        at,
    })
}

/// The Cloud API's body for a text reply to `to` (a `wa_id`), quoting the message
/// `quoted` (its wamid) when it answers one.
pub fn text(to: &str, body: &str, quoted: Option<&str>) -> Value {
    outgoing(to, "text", serde_json::json!({"preview_url": false, "body": body}), quoted)
}

/// The Cloud API's body for a file uploaded as `media_id` (see [`upload_form`]), with
/// the reply's text as its caption (images, videos and documents show one) and a
/// document's file name.
pub fn media(to: &str, file: &Attachment, media_id: &str, caption: &str, quoted: Option<&str>) -> Value {
    let kind = match file.file_type {
        FileType::Image => "image",
        FileType::Audio => "audio",
        FileType::Video => "video",
        FileType::Sticker => "sticker",
        FileType::File => "document",
    };
    let mut object = serde_json::json!({"id": media_id});
    if !caption.is_empty() {
        object["caption"] = caption.into();
    }
    if let (FileType::File, Some(name)) = (file.file_type, &file.file_name) {
        object["filename"] = name.as_str().into();
    }
    outgoing(to, kind, object, quoted)
}

/// A message of `kind` to `to`, its content under that key, quoting `quoted`.
fn outgoing(to: &str, kind: &str, content: Value, quoted: Option<&str>) -> Value {
    let mut request = serde_json::json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": kind,
    });
    request[kind] = content;
    if let Some(quoted) = quoted {
        request["context"] = serde_json::json!({"message_id": quoted});
    }
    request
}

/// The Cloud API's media upload (`POST /{phone_number_id}/media`) of a file.
pub fn upload_form(file_name: &str, mime_type: &str, bytes: Vec<u8>) -> anyhow::Result<Form> {
    let file = Part::bytes(bytes).file_name(file_name.to_string()).mime_str(mime_type)?;
    Ok(Form::new().text("messaging_product", "whatsapp").text("type", mime_type.to_string()).part("file", file))
}

/// The media id an upload was given (`id`).
pub fn uploaded_id(answer: &Value) -> Option<String> {
    answer.get("id")?.as_str().filter(|id| !id.is_empty()).map(str::to_string)
}

/// The Cloud API's body for an approved template to `to`, with its components as the
/// agent gave them (the provider's shape).
pub fn template(to: &str, template: &TemplateRef, components: &Value) -> Value {
    serde_json::json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {"name": template.name, "language": {"code": template.language}, "components": components},
    })
}

/// The id the Cloud API accepted a message under (`messages[0].id`).
pub fn accepted_id(answer: &Value) -> Option<String> {
    answer.pointer("/messages/0/id")?.as_str().filter(|id| !id.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(phone: &str, value: Value) -> Value {
        let mut value = value;
        value["messaging_product"] = json!("whatsapp");
        value["metadata"] = json!({"display_phone_number": "15550783881", "phone_number_id": phone});
        json!({"field": "messages", "value": value})
    }

    fn body(entries: Vec<Vec<Value>>) -> Vec<u8> {
        let entry: Vec<Value> = entries.into_iter().map(|changes| json!({"id": "WABA", "changes": changes})).collect();
        serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": entry})).unwrap()
    }

    #[test]
    fn every_entry_change_message_and_status_is_read() {
        let first = change(
            "111",
            json!({
                "contacts": [{"profile": {"name": "Sheena"}, "wa_id": "16505551234"}, {"wa_id": "16505550000"}],
                "messages": [
                    {"from": "16505551234", "id": "wamid.A", "timestamp": "1749416383", "type": "text", "text": {"body": "Another color?"}},
                    {"from": "16505550000", "id": "wamid.B", "timestamp": "1749416384", "type": "interactive",
                     "context": {"from": "111", "id": "wamid.ours"},
                     "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}},
                ],
            }),
        );
        let second = change(
            "222",
            json!({"statuses": [
                {"id": "wamid.S", "status": "read", "timestamp": "1750857384", "recipient_id": "1"},
                {"id": "wamid.F", "status": "failed", "timestamp": "1750857385", "recipient_id": "1",
                 "errors": [{"code": 131047, "title": "Re-engagement message"}]},
            ]}),
        );
        let notices = parse(&body(vec![vec![first], vec![second]])).unwrap();
        assert_eq!(notices.len(), 4, "{notices:?}");
        let Notice::Message(a) = &notices[0] else { panic!("{:?}", notices[0]) };
        assert_eq!(
            (a.routing_id.as_str(), a.sender.as_str(), a.text.as_str()),
            ("111", "16505551234", "Another color?")
        );
        assert_eq!(a.sender_name.as_deref(), Some("Sheena"));
        assert_eq!(a.sent_at.timestamp(), 1_749_416_383);
        let Notice::Message(b) = &notices[1] else { panic!("{:?}", notices[1]) };
        assert_eq!(
            (b.text.as_str(), b.reply_to.as_deref(), b.sender_name.as_deref()),
            ("Yes", Some("wamid.ours"), None)
        );
        let Notice::Status(read) = &notices[2] else { panic!("{:?}", notices[2]) };
        assert_eq!((read.routing_id.as_str(), read.status.clone()), ("222", Ok(MessageStatus::Read)));
        let Notice::Status(failed) = &notices[3] else { panic!("{:?}", notices[3]) };
        assert_eq!(failed.status, Err(("131047".into(), "Re-engagement message".into())));
        assert_eq!(routing_ids(&body(vec![])).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn other_kinds_read_as_text_or_are_ignored_and_a_foreign_body_is_malformed() {
        let message = |kind: &str, part: Value| {
            let mut m = json!({"from": "1", "id": "wamid.X", "timestamp": "1749416383", "type": kind});
            m[kind] = part;
            let notices = parse(&body(vec![vec![change("9", json!({"messages": [m]}))]])).unwrap();
            match &notices[0] {
                Notice::Message(m) => Some(m.text.clone()),
                _ => None,
            }
        };
        let place = json!({"latitude": 1.5, "longitude": -2.25, "name": "Office", "address": "Main St 1"});
        assert_eq!(message("location", place).as_deref(), Some("Office, Main St 1 (1.5, -2.25)"));
        let card = json!([{"name": {"formatted_name": "Ana"}, "phones": [{"phone": "+55 11 5555"}]}]);
        assert_eq!(message("contacts", card).as_deref(), Some("Ana: +55 11 5555"));
        assert_eq!(message("button", json!({"payload": "p", "text": "Stop"})).as_deref(), Some("Stop"));
        assert_eq!(message("reaction", json!({"message_id": "wamid.ours", "emoji": "👍"})).as_deref(), Some("👍"));
        assert_eq!(message("reaction", json!({"message_id": "wamid.ours", "emoji": ""})), None);
        assert_eq!(message("unsupported", json!({})), None);
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"object":"page","entry":[]}"#).is_err());
        let odd = body(vec![vec![json!({"field": "account_update", "value": {}})]]);
        assert!(matches!(&parse(&odd).unwrap()[0], Notice::Ignored { .. }));
    }
}
