//! Subscriptions over WebSocket: what happens reaches every screen allowed to see it,
//! from whichever process wrote it, once, after the read models show it; a client
//! resumes from its last position.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tests::{gql_at, receive_variables, TestApp, TestServer, RECEIVE};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The subscriptions the access checks below cover (`notificationCreated`'s are in
/// `notifications.rs`; the access matrix holds the schema to this list).
pub const CHECKED: [&str; 2] = ["conversationEvents", "notificationCreated"];

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const EVENTS: &str = "subscription($after: String, $inbox: ID) { conversationEvents(after: $after, inboxId: $inbox) { \
    position type conversationId message { content } conversation { id status } } }";

pub(crate) async fn connect(address: &str, init: Value) -> Socket {
    let mut request = format!("{}/graphql/ws", address.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the socket opens");
    socket.send(Message::text(json!({ "type": "connection_init", "payload": init }).to_string())).await.unwrap();
    socket
}

async fn subscribe(address: &str, token: &str, variables: Value) -> Socket {
    let mut socket = connect(address, json!({ "Authorization": format!("Bearer {token}") })).await;
    let ack = next_message(&mut socket, Duration::from_secs(5)).await.expect("an answer to connection_init");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": EVENTS, "variables": variables } });
    socket.send(Message::text(subscribe.to_string())).await.unwrap();
    socket
}

pub(crate) async fn next_message(socket: &mut Socket, within: Duration) -> Option<Value> {
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

/// The next pushed event, if one comes within `within`.
async fn next_event(socket: &mut Socket, within: Duration) -> Option<Value> {
    let message = next_message(socket, within).await?;
    assert_eq!(message["type"], "next", "{message}");
    assert!(message["payload"]["errors"].is_null(), "{message}");
    Some(message["payload"]["data"]["conversationEvents"].clone())
}

/// Pushed events until `n` messages were created (or the wait runs out).
async fn until_messages(socket: &mut Socket, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    while events.iter().filter(|e: &&Value| e["type"] == "MESSAGE_CREATED").count() < n {
        match next_event(socket, Duration::from_secs(10)).await {
            Some(event) => events.push(event),
            None => break,
        }
    }
    events
}

#[tokio::test]
async fn a_subscriber_on_one_process_receives_what_another_wrote_once_and_already_queryable() {
    let app = TestApp::spawn().await;
    let second = TestServer::start(&app.database_url).await;
    let inbox = app.create_inbox("Support").await;
    let mut socket = subscribe(&second.address, &app.token, json!({})).await;
    // Subscribed before anything is written: give the subscription a moment to start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.receive(&inbox, "c-1", "m-1", "written through the first server").await;

    let events = until_messages(&mut socket, 1).await;
    let message = events.iter().find(|e| e["type"] == "MESSAGE_CREATED").expect("MESSAGE_CREATED pushed");
    assert_eq!(message["message"]["content"], "written through the first server");
    assert_eq!(message["conversation"]["status"], "OPEN", "the conversation is queryable on receipt");
    assert!(events.iter().any(|e| e["type"] == "CONVERSATION_CREATED"));
    // Each once: nothing more arrives.
    assert!(next_event(&mut socket, Duration::from_millis(800)).await.is_none());
    // The state is queryable on the second server as pushed.
    let conversation = message["conversationId"].as_str().unwrap();
    let asked = gql_at(
        &app.client,
        &second.address,
        Some(&app.token),
        "query($c: ID!) { conversation(id: $c) { messagesCount } }",
        json!({ "c": conversation }),
    )
    .await;
    assert_eq!(asked["data"]["conversation"]["messagesCount"], 1);
    second.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_reconnects_with_its_last_position_receives_exactly_what_it_missed_in_order() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Support").await;
    let mut socket = subscribe(&app.server.address, &app.token, json!({ "inbox": inbox })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.receive(&inbox, "c-0", "m-0", "before the disconnect").await;
    let seen = until_messages(&mut socket, 1).await;
    let last = seen.last().unwrap()["position"].as_str().unwrap().to_string();
    socket.close(None).await.unwrap();

    for n in 1..=50 {
        let variables = receive_variables(&inbox, &format!("c-{}", n % 5), &format!("m-{n}"), &format!("missed {n}"));
        let answer = gql_at(&app.client, &app.server.address, Some(&app.token), RECEIVE, variables).await;
        assert!(answer["errors"].is_null(), "{answer}");
    }
    let mut socket = subscribe(&app.server.address, &app.token, json!({ "inbox": inbox, "after": last })).await;
    let replayed = until_messages(&mut socket, 50).await;
    let contents: Vec<&str> = replayed
        .iter()
        .filter(|e| e["type"] == "MESSAGE_CREATED")
        .map(|e| e["message"]["content"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=50).map(|n| format!("missed {n}")).collect();
    assert_eq!(contents, expected, "exactly the 50 missed messages, in order");
    let positions: Vec<&str> = replayed.iter().map(|e| e["position"].as_str().unwrap()).collect();
    let mut unique = positions.clone();
    unique.dedup();
    assert_eq!(unique.len(), positions.len(), "no event twice");
    // Then live.
    app.receive(&inbox, "c-9", "m-live", "live again").await;
    let live = until_messages(&mut socket, 1).await;
    assert_eq!(live.iter().find(|e| e["type"] == "MESSAGE_CREATED").unwrap()["message"]["content"], "live again");

    // Beyond the bound: one RESYNC_REQUIRED, then live.
    sqlx::query("UPDATE events SET recorded_at = recorded_at - interval '2 days' WHERE false")
        .execute(&app.pool)
        .await
        .unwrap();
    let beginning = projections::feed::FeedPosition::START.to_string();
    for n in 0..600 {
        let variables = receive_variables(&inbox, &format!("bulk-{}", n % 20), &format!("b-{n}"), "bulk");
        gql_at(&app.client, &app.server.address, Some(&app.token), RECEIVE, variables).await;
    }
    let mut far_behind = subscribe(&app.server.address, &app.token, json!({ "after": beginning })).await;
    let first = next_event(&mut far_behind, Duration::from_secs(10)).await.expect("an answer");
    assert_eq!(first["type"], "RESYNC_REQUIRED", "{first}");
}

#[tokio::test]
async fn bad_credentials_close_the_socket_and_others_see_nothing_of_the_account() {
    let app = TestApp::spawn().await;
    let mut refused = connect(&app.server.address, json!({ "Authorization": "Bearer ibx_nope" })).await;
    let closed = next_message(&mut refused, Duration::from_secs(5)).await.expect("an answer");
    assert_eq!((closed["type"].as_str(), closed["code"].as_u64()), (Some("closed"), Some(4403)), "{closed}");

    let inbox = app.create_inbox("Private").await;
    let other = app.other_account().await;
    let (_, agent_token) = app.agent("outside@acme.test", "AGENT").await;
    let mut outsider = subscribe(&app.server.address, &other.token, json!({})).await;
    let mut non_member = subscribe(&app.server.address, &agent_token, json!({})).await;
    let mut admin = subscribe(&app.server.address, &app.token, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.receive(&inbox, "c-1", "m-1", "confidential").await;
    assert_eq!(until_messages(&mut admin, 1).await.iter().filter(|e| e["type"] == "MESSAGE_CREATED").count(), 1);
    assert!(next_event(&mut outsider, Duration::from_millis(800)).await.is_none(), "another account sees nothing");
    assert!(next_event(&mut non_member, Duration::from_millis(300)).await.is_none(), "a non-member sees nothing");

    // A revoked token's subscription stops.
    let created = app.ok("mutation { createApiToken(input: {name: \"screen\"}) { id token } }", json!({})).await;
    let (token_id, token) =
        (created["createApiToken"]["id"].clone(), created["createApiToken"]["token"].as_str().unwrap().to_string());
    let mut screen = subscribe(&app.server.address, &token, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.ok("mutation($id: ID!) { revokeApiToken(input: {id: $id}) { revoked } }", json!({ "id": token_id })).await;
    app.receive(&inbox, "c-1", "m-2", "after the revocation").await;
    let after = next_message(&mut screen, Duration::from_secs(3)).await;
    assert!(
        after.as_ref().is_none_or(
            |m| m["type"] != "next" || m["payload"]["data"]["conversationEvents"]["type"] != "MESSAGE_CREATED"
        ),
        "a revoked token receives nothing more: {after:?}"
    );
}
