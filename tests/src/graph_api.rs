//! A fake Graph API on loopback (WhatsApp Cloud API and Messenger Send API): answers
//! sends with the providers' documented shapes, or with the scripted failures first,
//! and keeps every request it got.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A scripted answer: status, body, and a `Retry-After` in seconds.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self { status, body: json!({}), retry_after: None }
    }
    /// The Graph API's error shape.
    pub fn error(status: u16, code: i64, message: &str) -> Self {
        let body = json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Ax1"}});
        Self { status, body, retry_after: None }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Sent {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: std::time::Instant,
    /// The id it was accepted under (none: refused).
    pub accepted_as: Option<String>,
}

impl Sent {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }
}

#[derive(Default)]
struct Script {
    answers: VecDeque<Answer>,
    sent: Vec<Sent>,
    /// Template list requests: (path with query, authorization header).
    listed: Vec<(String, String)>,
    /// Its own address, for the `paging.next` links it hands out.
    url: String,
    /// Media requests: (path, authorization header).
    media: Vec<(String, String)>,
    /// Profile requests: (user id, authorization header).
    profiles: Vec<(String, String)>,
    /// File uploads (WhatsApp media, Messenger attachments).
    uploads: Vec<Uploaded>,
}

/// A file uploaded to the fake: where, with which token, and its form's parts.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub path: String,
    pub authorization: String,
    /// The id it answered with.
    pub id: String,
    /// Part name → the part.
    pub parts: std::collections::BTreeMap<String, FormPart>,
}

/// A part of a multipart form: its file name, content type and bytes.
pub type FormPart = (Option<String>, Option<String>, Vec<u8>);

impl Uploaded {
    pub fn text(&self, part: &str) -> String {
        self.parts.get(part).map(|p| String::from_utf8_lossy(&p.2).into_owned()).unwrap_or_default()
    }
}

/// The templates the fake lists, over two pages.
pub fn templates() -> Vec<Value> {
    vec![
        json!({"name": "order_update", "language": "en_US", "category": "UTILITY", "status": "APPROVED", "id": "1",
               "components": [{"type": "HEADER", "format": "TEXT", "text": "Your order"},
                              {"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships today."}]}),
        json!({"name": "hello_world", "language": "en_US", "category": "UTILITY", "status": "APPROVED", "id": "2",
               "components": [{"type": "BODY", "text": "Hello World"}]}),
        json!({"name": "summer_promo", "language": "pt_BR", "category": "MARKETING", "status": "REJECTED", "id": "3",
               "components": [{"type": "BODY", "text": "Promoção!"}]}),
    ]
}

#[derive(Clone)]
pub struct GraphApi {
    pub url: String,
    script: Arc<Mutex<Script>>,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

impl GraphApi {
    /// Listens on a loopback port; `answers` answer the first sends, in order.
    pub async fn start(answers: Vec<Answer>) -> GraphApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        Self::serve(listener, answers)
    }

    /// Listens on `port` (a provider that comes back where it was down).
    pub async fn start_on(port: u16, answers: Vec<Answer>) -> GraphApi {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the port");
        Self::serve(listener, answers)
    }

    fn serve(listener: tokio::net::TcpListener, answers: Vec<Answer>) -> GraphApi {
        let port = listener.local_addr().expect("address").port();
        let url = format!("http://127.0.0.1:{port}");
        let script = Arc::new(Mutex::new(Script { answers: answers.into(), url: url.clone(), ..Script::default() }));
        let app = Router::new()
            .route("/{version}/{id}/messages", post(send))
            .route("/{version}/{id}/message_templates", get(list_templates))
            .route("/{version}/{id}/media", post(upload))
            .route("/{version}/{id}/message_attachments", post(upload))
            .route("/{version}/{id}", get(media_url))
            .route("/media-bytes/{id}", get(media_bytes))
            .with_state(script.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake Graph API serves");
        });
        GraphApi { url, script, _task: Arc::new(task) }
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.script.lock().expect("script").sent.clone()
    }

    /// The template lists it was asked for: (path and query, authorization).
    pub fn listed(&self) -> Vec<(String, String)> {
        self.script.lock().expect("script").listed.clone()
    }

    /// The profiles it was asked for: (user id, authorization).
    pub fn profile_requests(&self) -> Vec<(String, String)> {
        self.script.lock().expect("script").profiles.clone()
    }

    /// The media requests it got: (path, authorization).
    pub fn media_requests(&self) -> Vec<(String, String)> {
        self.script.lock().expect("script").media.clone()
    }

    /// The files uploaded to it.
    pub fn uploads(&self) -> Vec<Uploaded> {
        self.script.lock().expect("script").uploads.clone()
    }

    /// The sends it accepted.
    pub fn accepted(&self) -> Vec<Sent> {
        self.sent().into_iter().filter(|s| s.accepted_as.is_some()).collect()
    }

    /// Waits (at most `timeout`) until it has received `n` sends.
    pub async fn wait_for_sent(&self, n: usize, timeout: Duration) -> Vec<Sent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let sent = self.sent();
            if sent.len() >= n || tokio::time::Instant::now() > deadline {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn send(
    State(script): State<Arc<Mutex<Script>>>,
    Path((version, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut script = script.lock().expect("script");
    let number = script.sent.len() + 1;
    let scripted = script.answers.pop_front();
    let whatsapp = body.get("messaging_product").is_some();
    let (response, accepted_as) = match scripted {
        Some(answer) => {
            let status = StatusCode::from_u16(answer.status).expect("a status");
            let mut response = (status, Json(answer.body)).into_response();
            if let Some(seconds) = answer.retry_after {
                response.headers_mut().insert("retry-after", seconds.to_string().parse().expect("a header"));
            }
            (response, None)
        }
        None if whatsapp => {
            let to = body["to"].clone();
            let id = format!("wamid.fake{number}");
            let answer = json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                                "messages": [{"id": id, "message_status": "accepted"}]});
            (Json(answer).into_response(), Some(id))
        }
        None => {
            let id = format!("m_fake{number}");
            (Json(json!({"recipient_id": body["recipient"]["id"], "message_id": id})).into_response(), Some(id))
        }
    };
    script.sent.push(Sent {
        path: format!("/{version}/{id}/messages"),
        headers,
        body,
        at: std::time::Instant::now(),
        accepted_as,
    });
    response
}

/// `POST /{version}/{phone_number_id}/media` (WhatsApp: answers `{id}`) and
/// `POST /{version}/{page_id}/message_attachments` (Messenger: `{attachment_id}`).
async fn upload(
    State(script): State<Arc<Mutex<Script>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    let mut parts = std::collections::BTreeMap::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(str::to_string);
        let bytes = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        parts.insert(name, (file_name, content_type, bytes));
    }
    let mut script = script.lock().expect("script");
    let path = uri.path().to_string();
    let whatsapp = path.ends_with("/media");
    let id = format!("{}{}", if whatsapp { "media-" } else { "att-" }, script.uploads.len() + 1);
    script.uploads.push(Uploaded { path, authorization: authorization(&headers), id: id.clone(), parts });
    if whatsapp {
        Json(json!({"id": id})).into_response()
    } else {
        Json(json!({"attachment_id": id})).into_response()
    }
}

/// `GET /{version}/{waba}/message_templates`: two templates on the first page, the
/// rest behind `paging.next`.
async fn list_templates(
    State(script): State<Arc<Mutex<Script>>>,
    Path((version, id)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut script = script.lock().expect("script");
    let authorization = authorization(&headers);
    let page_two = query.get("after").is_some_and(|a| a == "2");
    let mut path = format!("/{version}/{id}/message_templates");
    if page_two {
        path.push_str("?after=2");
    }
    script.listed.push((path, authorization));
    let all = templates();
    let body = if page_two {
        json!({"data": all[2..].to_vec(), "paging": {"cursors": {"before": "2", "after": "3"}}})
    } else {
        let next = format!("{}/{version}/{id}/message_templates?after=2", script.url);
        json!({"data": all[..2].to_vec(), "paging": {"cursors": {"before": "0", "after": "2"}, "next": next}})
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// The bytes the fake serves for a media id.
pub fn media_bytes_of(id: &str) -> Vec<u8> {
    format!("\u{89}PNG fake bytes of {id}").into_bytes()
}

fn authorization(headers: &HeaderMap) -> String {
    headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// `GET /{version}/{id}`: a Messenger user's profile (`?fields=…`), or where a
/// WhatsApp media id's bytes are, for 5 minutes.
async fn media_url(
    State(script): State<Arc<Mutex<Script>>>,
    Path((version, id)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut script = script.lock().expect("script");
    if query.contains_key("fields") {
        script.profiles.push((id.clone(), authorization(&headers)));
        return Json(json!({"first_name": "Peter", "last_name": "Chang", "id": id})).into_response();
    }
    script.media.push((format!("/{version}/{id}"), authorization(&headers)));
    if authorization(&headers).is_empty() {
        return Answer::error(401, 190, "Invalid OAuth access token").into_response();
    }
    let url = format!("{}/media-bytes/{id}", script.url);
    let size = media_bytes_of(&id).len();
    Json(json!({"url": url, "mime_type": "image/png", "sha256": "x", "file_size": size, "id": id,
                "messaging_product": "whatsapp"}))
    .into_response()
}

/// `GET /media-bytes/{id}`: the bytes (a CDN for Messenger, the media URL for WhatsApp).
async fn media_bytes(State(script): State<Arc<Mutex<Script>>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    script.lock().expect("script").media.push((format!("/media-bytes/{id}"), authorization(&headers)));
    ([("content-type", "image/png")], media_bytes_of(&id)).into_response()
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).expect("a status");
        (status, Json(self.body)).into_response()
    }
}
