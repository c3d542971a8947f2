//! The HTTP surface: GraphQL, its console, health, readiness and metrics, with the
//! security headers every answer carries.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use projections::engine::RunnerState;
use projections::policy::PolicyState;
use serde_json::json;
use tower_http::trace::TraceLayer;

use commands::attachments::MAX_FILE_BYTES;
use futures_util::TryStreamExt;

use crate::auth::Auth;
use crate::error::{ensure_codes, ApiError, ErrorCode};
use crate::graphql::ApiSchema;
use crate::state::{AppState, ClientAddress, RequestId};
use tracing::Instrument;
use uuid::Uuid;

/// Marks an UNAVAILABLE answer as such for clients and proxies: 503, and how long to
/// wait before retrying.
fn retry_later(response: &mut Response) {
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
}

/// How the HTTP layer treats requests before GraphQL sees them.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest request body accepted (1 MB by default: a 150,000-character message fits).
    pub max_body_bytes: usize,
    /// Take the client's address from `X-Forwarded-For` (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
    /// Let callers without credentials introspect the schema.
    pub anonymous_introspection: bool,
    /// Served over TLS here: answers tell browsers to keep to HTTPS (HSTS).
    pub tls: bool,
    /// Origins whose pages may call `/graphql` (CORS); none by default.
    pub cors_allowed_origins: Vec<String>,
}

/// The console's files, in the binary: it works offline and loads nothing from
/// elsewhere (its CSP allows this origin only).
const CONSOLE_HTML: &str = include_str!("../assets/console.html");
const CONSOLE_JS: &str = include_str!("../assets/console.js");
/// `GET /`: where to go from here.
const INDEX_HTML: &str = include_str!("../assets/index.html");
const CONSOLE_CSS: &str = include_str!("../assets/console.css");
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Shared behind one `Arc`: axum clones the state for every request, and the
/// application's state is dozens of handles (cloning it cost a sixth of the server's
/// CPU under the ingest load, measured with perf).
struct HttpState {
    app: AppState,
    schema: ApiSchema,
    settings: HttpSettings,
}

pub fn router(app: AppState, schema: ApiSchema, settings: HttpSettings) -> Router {
    let tls = settings.tls;
    let mut endpoint =
        Router::new().route("/graphql", get(console).post(graphql)).route("/graphql/ws", get(subscriptions));
    if let Some(cors) = cors(&settings.cors_allowed_origins) {
        endpoint = endpoint.layer(cors);
    }
    Router::new()
        .route("/", get(index))
        .merge(endpoint)
        .route(
            "/graphql/console.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], CONSOLE_JS) }),
        )
        .route(
            "/graphql/console.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CONSOLE_CSS) }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .merge(crate::provider_webhooks::router(app.clone()))
        .merge(crate::files::router(app.clone()))
        .layer(axum::middleware::map_response(move |response| security_headers(response, tls)))
        .layer(TraceLayer::new_for_http())
        .with_state(Arc::new(HttpState { app, schema, settings }))
}

/// `GET /`: a page pointing to the console and the docs (its styles from this origin).
async fn index() -> Response {
    let policy = "default-src 'none'; style-src 'self'; frame-ancestors 'none'";
    ([(header::CONTENT_SECURITY_POLICY, policy)], axum::response::Html(INDEX_HTML)).into_response()
}

/// Lets pages of the configured origins call the API from a browser (a frontend on
/// another port, without a proxy); `None` when no origin is configured.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<header::HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    if origins.is_empty() {
        return None;
    }
    let headers =
        [header::AUTHORIZATION, header::CONTENT_TYPE, "x-account-id".parse().ok()?, "x-request-id".parse().ok()?];
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers(headers)
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Subscriptions over WebSocket (see [`crate::live::socket`]).
async fn subscriptions(
    State(state): State<Arc<HttpState>>,
    protocol: async_graphql_axum::GraphQLProtocol,
    upgrade: axum::extract::WebSocketUpgrade,
) -> Response {
    let (schema, authenticator, presence) =
        (state.schema.clone(), state.app.authenticator.clone(), state.app.presence.clone());
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| crate::live::socket::serve(socket, schema, protocol, authenticator, presence))
}

/// One GraphQL request, counted and timed for `/metrics`.
async fn graphql(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let metrics = state.app.requests.clone();
    let _in_flight = metrics.start();
    let started = std::time::Instant::now();
    let headers = request.headers().clone();
    // Who asks, before the body is read: a file is spooled for known callers only.
    let read = match state.app.authenticator.authenticate(&headers).await {
        Ok(auth) => read_graphql(&state, request, auth.0.is_ok()).await.map(|request| (request, auth)),
        Err(error) => Err(error),
    };
    let (answer, operation, code) = match read {
        Ok((request, auth)) => answer_graphql(state, peer, headers, request, auth).await,
        Err(error) => {
            let code = error.code.as_str();
            (error.into_response(), None, code)
        }
    };
    metrics.record(operation.as_deref(), code, started.elapsed().as_secs_f64());
    answer
}

/// Reads a GraphQL request: JSON (at most `max_body_bytes`), or a multipart request
/// carrying a file (the GraphQL multipart request spec: `operations`, `map`, one file
/// of at most [`MAX_FILE_BYTES`], spooled to a temporary file).
async fn read_graphql(
    state: &HttpState,
    request: axum::extract::Request,
    authenticated: bool,
) -> Result<async_graphql::Request, ApiError> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    if content_type.as_deref().is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("multipart/")) {
        if !authenticated {
            return Err(ApiError::unauthenticated());
        }
        let options = async_graphql::http::MultipartOptions::default().max_file_size(MAX_FILE_BYTES).max_num_files(1);
        let body = request.into_body().into_data_stream().map_err(std::io::Error::other).into_async_read();
        return async_graphql::http::receive_body(content_type, body, options).await.map_err(|e| match e {
            async_graphql::ParseRequestError::PayloadTooLarge => ApiError::file_too_large(),
            other => ApiError::bad_input(format!("the request is not a GraphQL multipart request: {other}")),
        });
    }
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("the request body is larger than {} bytes", state.settings.max_body_bytes);
            return Err(ApiError::new(ErrorCode::PayloadTooLarge, message));
        }
        Err(rejection) => return Err(ApiError::bad_input(rejection.body_text())),
    };
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_input(format!("the request is not a GraphQL request: {e}")))
}

/// The answer, with the operation's name and the outcome (`OK` or the first code).
async fn answer_graphql(
    state: Arc<HttpState>,
    peer: SocketAddr,
    headers: HeaderMap,
    request: async_graphql::Request,
    auth: Auth,
) -> (Response, Option<String>, &'static str) {
    let operation = crate::request_metrics::operation_name(request.operation_name.as_deref(), &request.query);
    let client = client_address(&headers, peer, state.settings.trust_forwarded_for);
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
    let code = response
        .errors
        .first()
        .and_then(|e| e.extensions.as_ref()?.get("code").cloned())
        .and_then(|code| ErrorCode::ALL.into_iter().find(|c| async_graphql::Value::from(c.as_str()) == code))
        .map_or("OK", ErrorCode::as_str);
    // A GraphQL answer that could not be given for the database's sake says so in
    // its status too, so clients and proxies retry it.
    let unavailable = response.errors.iter().any(|e| {
        e.extensions.as_ref().and_then(|x| x.get("code")).is_some_and(|c| *c == ErrorCode::Unavailable.as_str().into())
    });
    let mut answer = Json(response).into_response();
    if unavailable {
        retry_later(&mut answer);
    }
    if let Ok(value) = request_id.to_string().parse() {
        answer.headers_mut().insert("x-request-id", value);
    }
    (answer, operation, code)
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

async fn console() -> Response {
    ([(header::CONTENT_SECURITY_POLICY, CONSOLE_CSP)], Html(CONSOLE_HTML)).into_response()
}

/// What every answer carries: no type sniffing, no referrer, no framing, nothing
/// cached (answers carry tokens and personal data), HTTPS only once served over TLS.
async fn security_headers(mut response: Response, tls: bool) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    if tls {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    response
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers and no projector has stopped on an error.
async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let app = &state.app;
    let database = sqlx::query("SELECT 1").execute(&app.pool).await.is_ok();
    let checkpoints = if database { checkpoints(&app.pool).await } else { Vec::new() };
    // Names only: the error texts (which may quote stored data) are in the logs.
    let failed: Vec<&str> = checkpoints.iter().filter(|c| c.stopped).map(|c| c.projector.as_str()).collect();
    // A failed rebuild left the live read model serving: named, not unready.
    let failed_rebuilds: Vec<&str> =
        checkpoints.iter().filter(|c| c.rebuild_failed).map(|c| c.projector.as_str()).collect();
    let lag: serde_json::Map<String, serde_json::Value> =
        checkpoints.iter().map(|c| (c.projector.clone(), json!(c.lag))).collect();
    let local = app.engine.status();
    let projectors: serde_json::Map<String, serde_json::Value> = local
        .iter()
        .map(|(name, s)| {
            let state = match &s.state {
                RunnerState::Standby => "standby",
                RunnerState::Running => "running",
                RunnerState::Failed => "failed",
            };
            (name.to_string(), json!({ "state": state, "position": s.position.global_position }))
        })
        .collect();
    let policies = if database { policy_checkpoints(&app.pool).await } else { Vec::new() };
    // A failing policy holds back its side effects, not the API: named, not unready.
    let failing_policies: Vec<&str> = policies.iter().filter(|p| p.failing).map(|p| p.policy.as_str()).collect();
    let local_policies = app.policies.status();
    let policy_states: serde_json::Map<String, serde_json::Value> = policies
        .iter()
        .map(|p| {
            let here = match local_policies.get(p.policy.as_str()).map(|s| &s.state) {
                Some(PolicyState::Running) => "running",
                Some(PolicyState::Retrying { .. }) => "retrying",
                _ => "standby",
            };
            (p.policy.clone(), json!({ "state": here, "lag_events": p.lag }))
        })
        .collect();
    let ready = database && failed.is_empty();
    let body = json!({
        "failing_policies": failing_policies,
        "policies": policy_states,
        "ready": ready,
        "database": database,
        "failed_projectors": failed.iter().map(|p| json!({ "projector": p })).collect::<Vec<_>>(),
        "failed_rebuilds": failed_rebuilds.iter().map(|p| json!({ "projector": p })).collect::<Vec<_>>(),
        "projectors": projectors,
        "lag_events": lag,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition of the engine's state.
async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
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
            RunnerState::Failed => -1,
        };
        let _ = writeln!(out, "inbox_projector_up{{projector=\"{name}\"}} {up}");
    }
    let checkpoints = checkpoints(&state.app.pool).await;
    let _ = writeln!(
        out,
        "# HELP inbox_projector_rebuild_failed 1 when the projector's last rebuild failed (live tables kept)."
    );
    let _ = writeln!(out, "# TYPE inbox_projector_rebuild_failed gauge");
    for c in &checkpoints {
        let _ = writeln!(
            out,
            "inbox_projector_rebuild_failed{{projector=\"{}\"}} {}",
            c.projector,
            u8::from(c.rebuild_failed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP inbox_decisions_redone_total Mutations decided again because what they read moved on before commit."
    );
    let _ = writeln!(out, "# TYPE inbox_decisions_redone_total counter");
    let _ = writeln!(
        out,
        "inbox_decisions_redone_total {}",
        state.app.decided_again.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP inbox_db_pool_connections Open database connections in the pool.");
    let _ = writeln!(out, "# TYPE inbox_db_pool_connections gauge");
    let _ = writeln!(out, "inbox_db_pool_connections {}", state.app.pool.size());
    let _ = writeln!(out, "# HELP inbox_db_pool_idle_connections Pool connections not in use.");
    let _ = writeln!(out, "# TYPE inbox_db_pool_idle_connections gauge");
    let _ = writeln!(out, "inbox_db_pool_idle_connections {}", state.app.pool.num_idle());
    let _ = writeln!(out, "# HELP inbox_projector_lag_events Events in the log past the projector's checkpoint.");
    let _ = writeln!(out, "# TYPE inbox_projector_lag_events gauge");
    for c in &checkpoints {
        let _ = writeln!(out, "inbox_projector_lag_events{{projector=\"{}\"}} {}", c.projector, c.lag);
    }
    let policies = policy_checkpoints(&state.app.pool).await;
    let _ = writeln!(out, "# HELP inbox_policy_lag_events Events in the log past the policy's checkpoint.");
    let _ = writeln!(out, "# TYPE inbox_policy_lag_events gauge");
    for p in &policies {
        let _ = writeln!(out, "inbox_policy_lag_events{{policy=\"{}\"}} {}", p.policy, p.lag);
    }
    let _ = writeln!(out, "# HELP inbox_policy_failing 1 while the policy retries an event that fails.");
    let _ = writeln!(out, "# TYPE inbox_policy_failing gauge");
    for p in &policies {
        let _ = writeln!(out, "inbox_policy_failing{{policy=\"{}\"}} {}", p.policy, u8::from(p.failing));
    }
    let _ = writeln!(out, "# HELP inbox_policy_up 1 when the policy runs in this process, 0 on standby.");
    let _ = writeln!(out, "# TYPE inbox_policy_up gauge");
    for (name, s) in state.app.policies.status() {
        let up = u8::from(!matches!(s.state, PolicyState::Standby));
        let _ = writeln!(out, "inbox_policy_up{{policy=\"{name}\"}} {up}");
    }
    let depth = commands::jobs::Jobs::depth(&state.app.pool).await.unwrap_or_default();
    let _ = writeln!(out, "# HELP inbox_jobs Jobs kept, by kind and state (pending, running, done, dead).");
    let _ = writeln!(out, "# TYPE inbox_jobs gauge");
    for d in &depth {
        let _ = writeln!(out, "inbox_jobs{{kind=\"{}\",state=\"{}\"}} {}", d.kind, d.state, d.jobs);
    }
    let _ = writeln!(out, "# HELP inbox_job_attempts Attempts made by the jobs kept, by kind and state.");
    let _ = writeln!(out, "# TYPE inbox_job_attempts gauge");
    for d in &depth {
        let _ = writeln!(out, "inbox_job_attempts{{kind=\"{}\",state=\"{}\"}} {}", d.kind, d.state, d.attempts);
    }
    state.app.requests.render(&mut out);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// A projector's checkpoint as `/readyz` and `/metrics` report it.
#[derive(sqlx::FromRow)]
struct Checkpoint {
    projector: String,
    /// Stopped on an error (its text is in the log and the row, not shown).
    stopped: bool,
    /// Events in the log past the checkpoint.
    lag: i64,
    rebuild_failed: bool,
}

/// Every projector's checkpoint; none when the database cannot be read.
async fn checkpoints(pool: &sqlx::PgPool) -> Vec<Checkpoint> {
    sqlx::query_as(
        "SELECT projector, error IS NOT NULL AS stopped, rebuild_error IS NOT NULL AS rebuild_failed, \
         greatest(coalesce((SELECT max(global_position) FROM events), 0) - last_position, 0) AS lag \
         FROM projector_checkpoints ORDER BY projector",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

/// A policy's checkpoint as `/readyz` and `/metrics` report it.
#[derive(sqlx::FromRow)]
struct PolicyCheckpoint {
    policy: String,
    /// Retrying an event that fails (its text is in the log and the row, not shown).
    failing: bool,
    lag: i64,
}

async fn policy_checkpoints(pool: &sqlx::PgPool) -> Vec<PolicyCheckpoint> {
    sqlx::query_as(
        "SELECT policy, error IS NOT NULL AS failing, \
         greatest(coalesce((SELECT max(global_position) FROM events), 0) - last_position, 0) AS lag \
         FROM policy_checkpoints ORDER BY policy",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
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
            ErrorCode::MessagingWindowClosed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({ "errors": [{ "message": self.message, "extensions": { "code": self.code.as_str() } }] });
        let mut response = (status, Json(body)).into_response();
        if self.code == ErrorCode::Unavailable {
            retry_later(&mut response);
        }
        response
    }
}
