//! The providers' webhooks: `GET` (the verify handshake) and `POST` (signed
//! notifications) at `/webhooks/whatsapp[/{inboxId}]` and
//! `/webhooks/messenger[/{inboxId}]`. Meta allows one callback URL per app, and one
//! app serves many numbers and pages: the app-level paths route by the ids inside.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use commands::channel::intake::{IntakeError, ProviderApi};
use commands::channel::settings;
use commands::channel::signature::SIGNATURE_HEADER;
use commands::channel::MAX_WEBHOOK_BYTES;
use domain::values::Channel;
use uuid::Uuid;

use crate::state::AppState;

/// The webhook routes, with their own body limit (providers send up to 4 MB).
pub fn router<S: Clone + Send + Sync + 'static>(app: AppState) -> Router<S> {
    Router::new()
        .route("/webhooks/{provider}", get(handshake_app).post(notify_app))
        .route("/webhooks/{provider}/{inbox}", get(handshake_inbox).post(notify_inbox))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .with_state(app)
}

fn provider(name: &str) -> Option<Channel> {
    match name {
        "whatsapp" => Some(Channel::Whatsapp),
        "messenger" => Some(Channel::Messenger),
        _ => None,
    }
}

fn answer(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// The verify handshake: `hub.mode=subscribe` and the configured verify token are
/// answered with `hub.challenge` as the body; anything else is 403.
async fn handshake(app: &AppState, channel: Channel, inbox: Option<Uuid>, query: &HashMap<String, String>) -> Response {
    let (Some("subscribe"), Some(token), Some(challenge)) =
        (query.get("hub.mode").map(String::as_str), query.get("hub.verify_token"), query.get("hub.challenge"))
    else {
        return answer(
            StatusCode::FORBIDDEN,
            "the handshake needs hub.mode=subscribe, hub.verify_token and hub.challenge",
        );
    };
    let (pool, keyring) = (&app.pool, app.commands.store().keyring());
    let known = match inbox {
        Some(inbox) => settings::of_inbox(pool, keyring, channel, inbox)
            .await
            .map(|found| found.is_some_and(|inbox| inbox.verify_token_is(token))),
        None => settings::verify_token_known(pool, keyring, channel, token).await,
    };
    match known {
        Ok(true) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge.clone()).into_response()
        }
        Ok(false) => answer(StatusCode::FORBIDDEN, "the verify token does not match"),
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "a webhook handshake could not be checked");
            answer(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}

async fn handshake_app(
    State(app): State<AppState>,
    Path(provider_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match provider(&provider_name) {
        Some(channel) => handshake(&app, channel, None, &query).await,
        None => answer(StatusCode::NOT_FOUND, "no such provider"),
    }
}

async fn handshake_inbox(
    State(app): State<AppState>,
    Path((provider_name, inbox)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match (provider(&provider_name), inbox.parse::<Uuid>()) {
        (Some(channel), Ok(inbox)) => handshake(&app, channel, Some(inbox), &query).await,
        _ => answer(StatusCode::NOT_FOUND, "no such inbox"),
    }
}

/// A notification: stored before it is answered 200, so a provider's retry after a
/// failure loses nothing and a redelivery stores nothing twice.
async fn notify(app: &AppState, channel: Channel, inbox: Option<Uuid>, headers: &HeaderMap, body: &[u8]) -> Response {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let provider = ProviderApi { outbound: &app.outbound, graph: &app.graph };
    match app.commands.receive_webhook(&provider, channel, inbox, signature, body).await {
        Ok(intake) => {
            tracing::debug!(channel = channel.as_str(), ?intake, "provider webhook");
            answer(StatusCode::OK, "EVENT_RECEIVED")
        }
        Err(IntakeError::UnknownInbox(_)) => answer(StatusCode::NOT_FOUND, "no such inbox"),
        Err(IntakeError::BadSignature) => {
            tracing::warn!(channel = channel.as_str(), ?inbox, "a provider webhook whose signature does not verify");
            answer(StatusCode::UNAUTHORIZED, "the X-Hub-Signature-256 header does not verify")
        }
        Err(IntakeError::Malformed(why)) => {
            tracing::info!(channel = channel.as_str(), error = %why, "a malformed provider webhook");
            answer(StatusCode::BAD_REQUEST, "not a webhook payload of this provider")
        }
        Err(IntakeError::Internal(error)) => {
            // Nothing is lost: the provider retries.
            tracing::warn!(
                error = format!("{error:#}"),
                "a provider webhook could not be stored; the provider retries"
            );
            answer(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}

async fn notify_app(
    State(app): State<AppState>,
    Path(provider_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match provider(&provider_name) {
        Some(channel) => notify(&app, channel, None, &headers, &body).await,
        None => answer(StatusCode::NOT_FOUND, "no such provider"),
    }
}

async fn notify_inbox(
    State(app): State<AppState>,
    Path((provider_name, inbox)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match (provider(&provider_name), inbox.parse::<Uuid>()) {
        (Some(channel), Ok(inbox)) => notify(&app, channel, Some(inbox), &headers, &body).await,
        _ => answer(StatusCode::NOT_FOUND, "no such inbox"),
    }
}
