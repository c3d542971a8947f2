//! The Messenger Platform's webhook format, read into [`Notice`]s: every entry and
//! every messaging event (messages, postbacks, quick replies, echoes of our own
//! sends, delivery and read watermarks in milliseconds).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use domain::attachment::Attachment;
use domain::values::{FileType, MessageStatus};
use reqwest::multipart::{Form, Part};

use super::{Malformed, Notice, ProviderMedia, ProviderMessage};

#[derive(Deserialize)]
struct Payload {
    object: String,
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    messaging: Vec<Value>,
    /// Events while another app holds the thread (handover): not ours to answer.
    #[serde(default)]
    standby: Vec<Value>,
}

#[derive(Deserialize)]
struct Messaging {
    sender: Party,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    postback: Option<Postback>,
    #[serde(default)]
    delivery: Option<Watermark>,
    #[serde(default)]
    read: Option<Watermark>,
}

#[derive(Deserialize)]
struct Party {
    id: String,
}

#[derive(Deserialize)]
struct Message {
    mid: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    is_echo: bool,
    #[serde(default)]
    reply_to: Option<ReplyTo>,
    #[serde(default)]
    quick_reply: Option<Value>,
    #[serde(default)]
    attachments: Vec<Value>,
}

#[derive(Deserialize)]
struct ReplyTo {
    #[serde(default)]
    mid: Option<String>,
}

#[derive(Deserialize)]
struct Postback {
    #[serde(default)]
    mid: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    payload: Option<String>,
}

#[derive(Deserialize)]
struct Watermark {
    watermark: i64,
}

/// The page ids a payload is for.
pub fn routing_ids(body: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut ids: Vec<String> = envelope(body)?.entry.into_iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn envelope(body: &[u8]) -> Result<Payload, Malformed> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("not a Messenger webhook payload: {e}")))?;
    if payload.object != "page" {
        return Err(Malformed(format!("object '{}' is not page", payload.object)));
    }
    Ok(payload)
}

/// Reads a webhook body. Not the Messenger envelope: [`Malformed`]. An event of a
/// kind not handled, or one that does not read, becomes [`Notice::Ignored`].
pub fn parse(body: &[u8]) -> Result<Vec<Notice>, Malformed> {
    let mut notices = Vec::new();
    for entry in envelope(body)?.entry {
        for item in entry.messaging {
            notices.push(event(&entry.id, item));
        }
        if !entry.standby.is_empty() {
            let kind = format!("{} standby event(s)", entry.standby.len());
            notices.push(Notice::Ignored { routing_id: entry.id.clone(), kind });
        }
    }
    Ok(notices)
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

fn event(page_id: &str, item: Value) -> Notice {
    let ignored = |kind: String| Notice::Ignored { routing_id: page_id.to_string(), kind };
    let event: Messaging = match serde_json::from_value(item) {
        Ok(event) => event,
        Err(e) => return ignored(format!("unreadable messaging event: {e}")),
    };
    let watermark = |status, mark: Watermark| match millis(mark.watermark) {
        Some(up_to) => {
            Notice::Watermark { routing_id: page_id.to_string(), recipient: event.sender.id.clone(), status, up_to }
        }
        None => ignored(format!("watermark {}", mark.watermark)),
    };
    if let Some(mark) = event.delivery {
        return watermark(MessageStatus::Delivered, mark);
    }
    if let Some(mark) = event.read {
        return watermark(MessageStatus::Read, mark);
    }
    let Some(sent_at) = event.timestamp.and_then(millis) else {
        return ignored("messaging event without a timestamp".into());
    };
    let received = |mid: String, text: String, media: Vec<ProviderMedia>, reply_to: Option<String>| {
        Notice::Message(ProviderMessage {
            routing_id: page_id.to_string(),
            sender: event.sender.id.clone(),
            sender_name: None,
            sender_phone: None,
            provider_message_id: mid,
            sent_at,
            text,
            media,
            reply_to,
        })
    };
    if let Some(message) = event.message {
        if message.is_echo {
            // Sent by the page: the sender is the page, the recipient the user.
            return Notice::Echo { routing_id: page_id.to_string(), provider_message_id: message.mid };
        }
        let media = files(&message.attachments);
        let text = message
            .text
            .filter(|t| !t.trim().is_empty())
            .or_else(|| quick_reply(message.quick_reply.as_ref()))
            .or_else(|| attachment_titles(&message.attachments))
            .or_else(|| (!media.is_empty()).then(String::new));
        return match text {
            Some(text) => received(message.mid, text, media, message.reply_to.and_then(|r| r.mid)),
            None => ignored("message without text or files".into()),
        };
    }
    if let Some(postback) = event.postback {
        // A postback without a mid is keyed by its sender and time, which a
        // redelivery repeats.
        let mid =
            postback.mid.unwrap_or_else(|| format!("postback:{}:{}", event.sender.id, sent_at.timestamp_millis()));
        let text = postback.title.or(postback.payload).filter(|t| !t.trim().is_empty());
        return match text {
            Some(text) => received(mid, text, Vec::new(), None),
            None => ignored("postback without a title".into()),
        };
    }
    ignored("messaging event".into())
}

fn quick_reply(reply: Option<&Value>) -> Option<String> {
    reply?.get("payload")?.as_str().filter(|p| !p.trim().is_empty()).map(str::to_string)
}

/// The files of a message (image, audio, video, file, sticker), by their CDN URLs.
fn files(attachments: &[Value]) -> Vec<ProviderMedia> {
    attachments
        .iter()
        .filter_map(|a| {
            let url = a.pointer("/payload/url")?.as_str()?.to_string();
            let file_type = match a.get("type")?.as_str()? {
                _ if a.pointer("/payload/sticker_id").is_some() => FileType::Sticker,
                "image" => FileType::Image,
                "audio" => FileType::Audio,
                "video" => FileType::Video,
                "file" => FileType::File,
                "sticker" => FileType::Sticker,
                _ => return None,
            };
            Some(ProviderMedia { file_type, mime_type: None, file_name: None, source: url })
        })
        .collect()
}

/// Shared links and products as text: their titles, if any.
fn attachment_titles(attachments: &[Value]) -> Option<String> {
    let titles: Vec<&str> = attachments
        .iter()
        .filter_map(|a| a.get("title").or_else(|| a.pointer("/payload/title")).and_then(Value::as_str))
        .filter(|t| !t.trim().is_empty())
        .collect();
    (!titles.is_empty()).then(|| titles.join("\n"))
}

/// The Send API's body for a text reply to `psid`: a `RESPONSE` inside the standard
/// window, else a human agent's `HUMAN_AGENT`-tagged message.
pub fn text(psid: &str, body: &str, human_agent_tag: bool) -> Value {
    message(psid, serde_json::json!({"text": body}), human_agent_tag)
}

/// The Send API's body for a file uploaded as `attachment_id` (see [`upload_form`]).
pub fn attachment(psid: &str, file: &Attachment, attachment_id: &str, human_agent_tag: bool) -> Value {
    let payload = serde_json::json!({"attachment_id": attachment_id});
    message(psid, serde_json::json!({"attachment": {"type": kind(file), "payload": payload}}), human_agent_tag)
}

/// A message to `psid`: a `RESPONSE`, or past the standard window a human agent's.
fn message(psid: &str, message: Value, human_agent_tag: bool) -> Value {
    let mut request = serde_json::json!({
        "recipient": {"id": psid},
        "messaging_type": "RESPONSE",
        "message": message,
    });
    if human_agent_tag {
        request["messaging_type"] = "MESSAGE_TAG".into();
        request["tag"] = "HUMAN_AGENT".into();
    }
    request
}

/// The Send API's attachment type of a file.
fn kind(file: &Attachment) -> &'static str {
    match file.file_type {
        FileType::Image | FileType::Sticker => "image",
        FileType::Audio => "audio",
        FileType::Video => "video",
        FileType::File => "file",
    }
}

/// The Attachment Upload API's form (`POST /{page_id}/message_attachments`) for a file.
pub fn upload_form(file: &Attachment, mime_type: &str, bytes: Vec<u8>) -> anyhow::Result<Form> {
    let name = file.file_name.clone().unwrap_or_else(|| "file".to_string());
    let message = serde_json::json!({"attachment": {"type": kind(file), "payload": {"is_reusable": false}}});
    let data = Part::bytes(bytes).file_name(name).mime_str(mime_type)?;
    Ok(Form::new().text("message", message.to_string()).part("filedata", data))
}

/// The attachment id an upload was given (`attachment_id`).
pub fn uploaded_id(answer: &Value) -> Option<String> {
    answer.get("attachment_id")?.as_str().filter(|id| !id.is_empty()).map(str::to_string)
}

/// A user's name from the Graph API's profile answer (`first_name`, `last_name`), if
/// it gives one.
pub fn profile_name(answer: &Value) -> Option<String> {
    let part = |key: &str| answer.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let name = [part("first_name"), part("last_name")].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let name = if name.is_empty() { part("name").unwrap_or_default().to_string() } else { name };
    (!name.is_empty()).then_some(name)
}

/// The id the Send API accepted a message under (`message_id`).
pub fn accepted_id(answer: &Value) -> Option<String> {
    answer.get("message_id")?.as_str().filter(|id| !id.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(entries: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"object": "page", "entry": entries})).unwrap()
    }

    #[test]
    fn every_entry_is_read_messages_postbacks_echoes_and_watermarks_in_milliseconds() {
        let notices = parse(&body(json!([
            {"id": "PAGE", "time": 1458692752478u64, "messaging": [
                {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE"}, "timestamp": 1458692752478u64,
                 "message": {"mid": "m_abc", "text": "hello", "reply_to": {"mid": "m_prev"}}}]},
            {"id": "PAGE", "time": 1458692752479u64, "messaging": [
                {"sender": {"id": "PSID2"}, "recipient": {"id": "PAGE"}, "timestamp": 1458692752479u64,
                 "postback": {"mid": "m_pb", "title": "Get started", "payload": "START"}}]},
            {"id": "PAGE", "messaging": [
                {"sender": {"id": "PAGE"}, "recipient": {"id": "PSID1"}, "timestamp": 1458692752480u64,
                 "message": {"mid": "m_ours", "is_echo": true, "app_id": 1, "text": "hi"}}]},
            {"id": "PAGE", "messaging": [
                {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE"},
                 "delivery": {"mids": ["m_ours"], "watermark": 1458668856253u64}}]},
            {"id": "PAGE", "messaging": [
                {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE"}, "timestamp": 1458692752481u64,
                 "message": {"mid": "m_qr", "quick_reply": {"payload": "RED"}}}]},
        ])))
        .unwrap();
        assert_eq!(notices.len(), 5, "{notices:?}");
        let Notice::Message(first) = &notices[0] else { panic!("{:?}", notices[0]) };
        assert_eq!(
            (first.sender.as_str(), first.text.as_str(), first.reply_to.as_deref()),
            ("PSID1", "hello", Some("m_prev"))
        );
        assert_eq!(first.sent_at.timestamp_millis(), 1_458_692_752_478);
        let Notice::Message(postback) = &notices[1] else { panic!("{:?}", notices[1]) };
        assert_eq!((postback.provider_message_id.as_str(), postback.text.as_str()), ("m_pb", "Get started"));
        assert_eq!(notices[2], Notice::Echo { routing_id: "PAGE".into(), provider_message_id: "m_ours".into() });
        let Notice::Watermark { recipient, status, up_to, .. } = &notices[3] else { panic!("{:?}", notices[3]) };
        assert_eq!((recipient.as_str(), *status), ("PSID1", MessageStatus::Delivered));
        assert_eq!(up_to.timestamp_millis(), 1_458_668_856_253, "a watermark is milliseconds, not seconds");
        let Notice::Message(quick) = &notices[4] else { panic!("{:?}", notices[4]) };
        assert_eq!(quick.text, "RED");
        assert_eq!(routing_ids(&body(json!([{"id": "B"}, {"id": "A"}, {"id": "B"}]))).unwrap(), vec!["A", "B"]);
        assert!(parse(br#"{"object":"whatsapp_business_account","entry":[]}"#).is_err());
    }
}
