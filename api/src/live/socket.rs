//! The WebSocket at `/graphql/ws`: GraphQL subscriptions over `graphql-transport-ws`
//! (and the legacy `graphql-ws`), authenticated at `connection_init` with the same
//! tokens as HTTP. An agent with a socket open counts as present.
//!
//! The socket's frames go out through a bounded queue that this module drains, so a
//! subscription can close its socket with a code (a subscriber too slow to keep up,
//! credentials revoked) and a client that stops reading cannot hold frames without
//! bound: when a frame waits longer than [`SEND_TIMEOUT`], the socket is dropped.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_graphql::Data;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::{header, HeaderMap};
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::{CancellationToken, PollSender};

use crate::auth::Authenticator;
use crate::graphql::ApiSchema;
use crate::live::presence::Presence;

/// Close codes this server sends (besides the protocol's own).
pub mod close {
    /// `connection_init` carried no valid credentials, or they were revoked.
    pub const FORBIDDEN: u16 = 4403;
    /// The subscriber fell more than the retained events behind: reconnect, resuming
    /// from the last `position` received.
    pub const TOO_SLOW: u16 = 4008;
}

/// Frames queued for the socket before the server stops producing more for it.
const OUTGOING_FRAMES: usize = 256;
/// How long one frame may wait for a client that does not read.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How a refused `connection_init` is told apart among the socket's close frames.
const REFUSED_INIT: &str = "forbidden: ";

/// Lets what runs on a socket close it with a code; in every subscription's context.
#[derive(Clone, Default)]
pub struct SocketControl {
    reason: Arc<OnceLock<(u16, String)>>,
    closing: CancellationToken,
}

impl SocketControl {
    /// Closes the socket with `code` (the first call wins).
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.reason.set((code, reason.to_string()));
        self.closing.cancel();
    }

    async fn closed(&self) -> CloseFrame {
        self.closing.cancelled().await;
        let (code, reason) = self.reason.get().cloned().unwrap_or((1000, String::new()));
        CloseFrame { code, reason: reason.into() }
    }
}

/// Serves one upgraded socket until either side closes it.
pub async fn serve(
    socket: WebSocket,
    schema: ApiSchema,
    protocol: async_graphql_axum::GraphQLProtocol,
    authenticator: Arc<Authenticator>,
    presence: Presence,
) {
    let (sink, stream) = socket.split();
    let (frames, queued) = tokio::sync::mpsc::channel::<Message>(OUTGOING_FRAMES);
    let control = SocketControl::default();
    let mut writer = tokio::spawn(write(queued, sink, control.clone()));
    let init_control = control.clone();
    let served = async_graphql_axum::GraphQLWebSocket::new_with_pair(
        PollSender::new(frames).sink_map_err(|_| axum::Error::new("the socket's writer stopped")),
        stream,
        schema,
        protocol,
    )
    .on_connection_init(move |payload| async move {
        let headers = credentials(&payload);
        let refused = |why: &str| async_graphql::Error::new(format!("{REFUSED_INIT}{why}"));
        let auth = authenticator.authenticate(&headers).await.map_err(|e| refused(&e.message))?;
        let agent = match auth.principal() {
            Ok(principal) => (principal.account_id, principal.user_id),
            Err(error) => return Err(refused(&error.message)),
        };
        let mut data = Data::default();
        data.insert(auth);
        data.insert(init_control);
        // The agent counts as present while the socket is open.
        data.insert(presence.connect(agent).await);
        Ok(data)
    })
    .serve();
    tokio::select! {
        // The client closed: the writer sends what is queued, and ends.
        _ = served => {
            let _ = writer.await;
        }
        // Closed from here (the close frame is sent), or the client stopped reading.
        _ = &mut writer => {}
    }
}

/// The HTTP headers `connection_init`'s payload stands for: `Authorization: Bearer …`
/// (or a bare `token`), and `X-Account-Id` for a session.
fn credentials(payload: &serde_json::Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let token = payload
        .get("Authorization")
        .or_else(|| payload.get("authorization"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| payload.get("token").and_then(|v| v.as_str()).map(|t| format!("Bearer {t}")));
    if let Some(value) = token.and_then(|t| t.parse().ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    if let Some(value) = payload.get("X-Account-Id").and_then(|v| v.as_str()).and_then(|v| v.parse().ok()) {
        headers.insert("x-account-id", value);
    }
    headers
}

/// Writes queued frames to the socket until the queue ends or the socket is closed.
async fn write(
    mut queued: tokio::sync::mpsc::Receiver<Message>,
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    control: SocketControl,
) {
    loop {
        let frame = tokio::select! {
            biased;
            frame = control.closed() => {
                let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
                return;
            }
            next = queued.recv() => match next {
                Some(frame) => frame,
                None => return,
            },
        };
        // A refused init closes with 4403 (the library closes with 1002).
        let frame = match frame {
            Message::Close(Some(frame)) if frame.reason.starts_with(REFUSED_INIT) => {
                Message::Close(Some(CloseFrame { code: close::FORBIDDEN, reason: frame.reason }))
            }
            other => other,
        };
        match tokio::time::timeout(SEND_TIMEOUT, sink.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("a subscriber stopped reading its socket; dropping it");
                return;
            }
        }
    }
}
