//! The HTTP surface: GraphQL, GraphiQL, health, readiness and metrics.

use std::fmt::Write;
use std::net::SocketAddr;

use async_graphql::http::GraphiQLSource;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use projections::engine::RunnerState;
use serde_json::json;
use tower_http::trace::TraceLayer;

use crate::error::{ensure_codes, ApiError, ErrorCode};
use crate::graphql::ApiSchema;
use crate::state::{AppState, ClientAddress, RequestId};
use tracing::Instrument;
use uuid::Uuid;

/// What an UNAVAILABLE answer tells clients to wait before retrying.
const RETRY_AFTER_SECONDS: &str = "1";

/// How the HTTP layer treats requests before GraphQL sees them.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Largest request body accepted (1 MB by default: a 150,000-character message fits).
    pub max_body_bytes: usize,
    /// Take the client's address from `X-Forwarded-For` (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
    /// Let callers without credentials introspect the schema.
    pub anonymous_introspection: bool,
}

#[derive(Clone)]
struct HttpState {
    app: AppState,
    schema: ApiSchema,
    settings: HttpSettings,
}

pub fn router(app: AppState, schema: ApiSchema, settings: HttpSettings) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(HttpState { app, schema, settings })
}

async fn graphql(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("the request body is larger than {} bytes", state.settings.max_body_bytes);
            return ApiError::new(ErrorCode::PayloadTooLarge, message).into_response();
        }
        Err(rejection) => return ApiError::bad_input(rejection.body_text()).into_response(),
    };
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return ApiError::bad_input(format!("the request is not a GraphQL request: {e}")).into_response(),
    };
    let client = client_address(&headers, peer, state.settings.trust_forwarded_for);
    let auth = match state.app.authenticator.authenticate(&headers).await {
        Ok(auth) => auth,
        Err(error) => return error.into_response(),
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Uuid>().ok())
        .unwrap_or_else(Uuid::now_v7);
    let span = tracing::info_span!("graphql", request_id = %request_id, operation = request.operation_name.as_deref().unwrap_or(""));
    let anonymous = auth.0.is_err();
    let mut request = request.data(auth).data(RequestId(request_id)).data(client);
    if anonymous && !state.settings.anonymous_introspection {
        request = request.disable_introspection();
    }
    let mut response = state.schema.execute(request).instrument(span).await;
    ensure_codes(&mut response);
    // A GraphQL answer that could not be given for the database's sake says so in
    // its status too, so clients and proxies retry it.
    let unavailable = response.errors.iter().any(|e| {
        e.extensions.as_ref().and_then(|x| x.get("code")).is_some_and(|c| *c == ErrorCode::Unavailable.as_str().into())
    });
    let mut answer = Json(response).into_response();
    if unavailable {
        *answer.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    if let Ok(value) = request_id.to_string().parse() {
        answer.headers_mut().insert("x-request-id", value);
    }
    answer
}

/// The peer's address, or the first `X-Forwarded-For` hop behind a trusted proxy.
fn client_address(headers: &HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> ClientAddress {
    let forwarded = trust_forwarded_for
        .then(|| headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()))
        .flatten()
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok());
    ClientAddress(forwarded.unwrap_or(peer.ip()).to_string())
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers and no projector has stopped on an error.
async fn readyz(State(state): State<HttpState>) -> Response {
    let app = &state.app;
    let database = sqlx::query("SELECT 1").execute(&app.pool).await.is_ok();
    // Every projector's checkpoint, its error if it stopped, and how many events
    // behind the head of the log it is.
    let checkpoints: Vec<(String, Option<String>, i64)> = if database {
        sqlx::query_as(
            "SELECT projector, error, greatest(coalesce((SELECT max(global_position) FROM events), 0) - last_position, 0) \
             FROM projector_checkpoints ORDER BY projector",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    let failed: Vec<(&str, &str)> =
        checkpoints.iter().filter_map(|(p, e, _)| e.as_deref().map(|e| (p.as_str(), e))).collect();
    let lag: serde_json::Map<String, serde_json::Value> =
        checkpoints.iter().map(|(p, _, lag)| (p.clone(), json!(lag))).collect();
    let local = app.engine.status();
    let projectors: serde_json::Map<String, serde_json::Value> = local
        .iter()
        .map(|(name, s)| {
            let state = match &s.state {
                RunnerState::Standby => "standby".to_string(),
                RunnerState::Running => "running".to_string(),
                RunnerState::Failed(e) => format!("failed: {e}"),
            };
            (name.to_string(), json!({ "state": state, "position": s.position.global_position }))
        })
        .collect();
    let ready = database && failed.is_empty();
    let body = json!({
        "ready": ready,
        "database": database,
        "failed_projectors": failed.iter().map(|(p, e)| json!({ "projector": p, "error": e })).collect::<Vec<_>>(),
        "projectors": projectors,
        "lag_events": lag,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition of the engine's state.
async fn metrics(State(state): State<HttpState>) -> Response {
    let mut out = String::new();
    let status = state.app.engine.status();
    let _ =
        writeln!(out, "# HELP inbox_projector_position Last global position applied by the projector in this process.");
    let _ = writeln!(out, "# TYPE inbox_projector_position gauge");
    for (name, s) in &status {
        let _ = writeln!(out, "inbox_projector_position{{projector=\"{name}\"}} {}", s.position.global_position);
    }
    let _ =
        writeln!(out, "# HELP inbox_projector_events_applied_total Events applied by the projector in this process.");
    let _ = writeln!(out, "# TYPE inbox_projector_events_applied_total counter");
    for (name, s) in &status {
        let _ = writeln!(out, "inbox_projector_events_applied_total{{projector=\"{name}\"}} {}", s.events_applied);
    }
    let _ = writeln!(out, "# HELP inbox_projector_up 1 when the projector runs here, 0 on standby, -1 when failed.");
    let _ = writeln!(out, "# TYPE inbox_projector_up gauge");
    for (name, s) in &status {
        let up = match s.state {
            RunnerState::Running => 1,
            RunnerState::Standby => 0,
            RunnerState::Failed(_) => -1,
        };
        let _ = writeln!(out, "inbox_projector_up{{projector=\"{name}\"}} {up}");
    }
    let _ = writeln!(out, "# HELP inbox_db_pool_connections Open database connections in the pool.");
    let _ = writeln!(out, "# TYPE inbox_db_pool_connections gauge");
    let _ = writeln!(out, "inbox_db_pool_connections {}", state.app.pool.size());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The same body shape as a GraphQL error, for failures before GraphQL runs.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.code {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::BadUserInput => StatusCode::BAD_REQUEST,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({ "errors": [{ "message": self.message, "extensions": { "code": self.code.as_str() } }] });
        let mut response = (status, Json(body)).into_response();
        if self.code == ErrorCode::Unavailable {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}
