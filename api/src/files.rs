//! `GET /attachments/{id}?expires=…&signature=…`: a file of a message, through the
//! short-lived signed link the API hands to those who may see the message (an `<img>`
//! loads it without credentials). A link that is altered or expired is refused.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use uuid::Uuid;

use crate::state::AppState;

pub fn router<S: Clone + Send + Sync + 'static>(app: AppState) -> Router<S> {
    Router::new().route("/attachments/{id}", get(download)).with_state(app)
}

fn refused(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn download(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else { return refused(StatusCode::NOT_FOUND, "no such file") };
    let expires = query.get("expires").and_then(|e| e.parse::<i64>().ok());
    let signature = query.get("signature");
    let (Some(expires), Some(signature)) = (expires, signature) else {
        return refused(StatusCode::FORBIDDEN, "a file is served through the link the API gives");
    };
    if !app.attachments.link_works(id, expires, signature, Utc::now()) {
        return refused(StatusCode::FORBIDDEN, "this link is not valid, or has expired: ask the API for a new one");
    }
    match app.attachments.open(id).await {
        Ok(Some((mime_type, bytes))) => {
            // Images, sound and video show in the page; anything else (an HTML file an
            // agent or contact sent) is downloaded, never rendered from this origin.
            let shown = ["image/", "audio/", "video/"].iter().any(|kind| mime_type.starts_with(kind));
            let disposition = if shown { "inline" } else { "attachment" };
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, mime_type),
                    (header::CONTENT_DISPOSITION, disposition.to_string()),
                    (header::CACHE_CONTROL, "private, max-age=300".to_string()),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(None) => refused(StatusCode::NOT_FOUND, "no such file (not fetched yet, or erased)"),
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "a file could not be served");
            refused(StatusCode::SERVICE_UNAVAILABLE, "try again")
        }
    }
}
