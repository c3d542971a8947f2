//! A GraphQL subscription client over WebSocket (`graphql-transport-ws`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/graphql/ws` at `address` and sends `connection_init` with `init`.
pub async fn connect(address: &str, init: Value) -> Socket {
    let mut request = format!("{}/graphql/ws", address.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the socket opens");
    socket.send(Message::text(json!({ "type": "connection_init", "payload": init }).to_string())).await.unwrap();
    socket
}

/// Connects with `token` and subscribes to `query` (id "1").
pub async fn subscribe(address: &str, token: &str, query: &str, variables: Value) -> Socket {
    let mut socket = connect(address, json!({ "Authorization": format!("Bearer {token}") })).await;
    let ack = next_message(&mut socket, Duration::from_secs(5)).await.expect("an answer to connection_init");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } });
    socket.send(Message::text(subscribe.to_string())).await.unwrap();
    socket
}

/// The next protocol message (a close frame as `{"type": "closed", "code"}`), if one
/// comes within `within`.
pub async fn next_message(socket: &mut Socket, within: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(within, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(json!({ "type": "closed", "code": frame.map(|f| u16::from(f.code)) }));
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// The data of the next `next` message of subscription `field`, if one comes within
/// `within`.
pub async fn next_data(socket: &mut Socket, field: &str, within: Duration) -> Option<Value> {
    let message = next_message(socket, within).await?;
    assert_eq!(message["type"], "next", "{message}");
    assert!(message["payload"]["errors"].is_null(), "{message}");
    Some(message["payload"]["data"][field].clone())
}
