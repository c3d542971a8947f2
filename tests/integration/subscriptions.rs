//! Subscriptions over WebSocket: what happens reaches every screen allowed to see it,
//! from whichever process wrote it, once, after the read models show it; a client
//! resumes from its last position.

use std::time::Duration;

use serde_json::{json, Value};
use tests::socket::{connect, next_data, next_message, Socket};
use tests::{gql_at, receive_variables, TestApp, TestServer, RECEIVE};

/// The subscriptions the access checks below cover (`notificationCreated`'s are in
/// `notifications.rs`, `liveMetricsUpdated`'s in `live_metrics.rs`; the access matrix
/// holds the schema to this list).
pub const CHECKED: [&str; 5] =
    ["conversationEvents", "typingChanged", "presenceChanged", "liveMetricsUpdated", "notificationCreated"];

const EVENTS: &str = "subscription($after: String, $inbox: ID) { conversationEvents(after: $after, inboxId: $inbox) { \
    position type conversationId message { content } conversation { id status } } }";

async fn subscribe(address: &str, token: &str, variables: Value) -> Socket {
    tests::socket::subscribe(address, token, EVENTS, variables).await
}

/// The next pushed event, if one comes within `within`.
async fn next_event(socket: &mut Socket, within: Duration) -> Option<Value> {
    next_data(socket, "conversationEvents", within).await
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

#[tokio::test]
async fn presence_of_one_account_is_not_pushed_to_another() {
    let app = TestApp::spawn().await;
    let other = app.other_account().await;
    let presence = "subscription { presenceChanged { agent { id } status } }";
    let mut outsider = tests::socket::subscribe(&app.server.address, &other.token, presence, json!({})).await;
    let mut colleague = tests::socket::subscribe(&app.server.address, &app.token, presence, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (agent, agent_token) = app.agent("busy@acme.test", "AGENT").await;
    let busy = app
        .gql_as(Some(&agent_token), "mutation { setAvailability(input: {status: BUSY}) { status } }", json!({}))
        .await;
    assert_eq!(busy["data"]["setAvailability"]["status"], "BUSY", "{busy}");
    let mut seen = Vec::new();
    while let Some(change) = next_data(&mut colleague, "presenceChanged", Duration::from_secs(5)).await {
        seen.push(change.clone());
        if change["agent"]["id"] == agent.as_str() && change["status"] == "BUSY" {
            break;
        }
    }
    assert!(seen.iter().any(|c| c["agent"]["id"] == agent.as_str() && c["status"] == "BUSY"), "{seen:?}");
    // The outsider hears of their own account's agents only (their own socket's arrival).
    let mut heard = Vec::new();
    while let Some(change) = next_data(&mut outsider, "presenceChanged", Duration::from_millis(800)).await {
        heard.push(change["agent"]["id"].as_str().unwrap().to_string());
    }
    let ours = [agent.clone(), app.user_id.to_string()];
    assert!(heard.iter().all(|id| !ours.contains(id)), "another account hears nothing of this one's agents: {heard:?}");
}

#[tokio::test]
async fn typing_reaches_the_colleagues_who_may_see_the_conversation_on_every_process_and_nobody_else() {
    let app = TestApp::spawn().await;
    let second = TestServer::start(&app.database_url).await;
    let inbox = app.create_inbox("Support").await;
    let (member, member_token) = app.agent("member@acme.test", "AGENT").await;
    let (_, non_member_token) = app.agent("elsewhere@acme.test", "AGENT").await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": inbox, "u": member }),
    )
    .await;
    let other = app.other_account().await;
    let conversation =
        app.receive(&inbox, "c-1", "m-1", "hello").await["conversation"]["id"].as_str().unwrap().to_string();
    let typing = "subscription { typingChanged { conversationId on agent { id } } }";
    let mut member_screen = tests::socket::subscribe(&second.address, &member_token, typing, json!({})).await;
    let mut non_member = tests::socket::subscribe(&second.address, &non_member_token, typing, json!({})).await;
    let mut outsider = tests::socket::subscribe(&app.server.address, &other.token, typing, json!({})).await;
    let mut own_screen = tests::socket::subscribe(&app.server.address, &app.token, typing, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let set = "mutation($c: ID!, $on: Boolean!) { setTyping(input: {conversationId: $c, on: $on}) { on } }";
    app.ok(set, json!({ "c": conversation, "on": true })).await;
    let pushed = next_data(&mut member_screen, "typingChanged", Duration::from_secs(5)).await.expect("typing pushed");
    assert_eq!(
        pushed,
        json!({ "conversationId": conversation, "on": true, "agent": { "id": app.user_id.to_string() } })
    );
    app.ok(set, json!({ "c": conversation, "on": false })).await;
    let stopped = next_data(&mut member_screen, "typingChanged", Duration::from_secs(5)).await.expect("stop pushed");
    assert_eq!(stopped["on"], false);
    for (who, screen) in
        [("a non-member", &mut non_member), ("another account", &mut outsider), ("the typist", &mut own_screen)]
    {
        let heard = next_message(screen, Duration::from_millis(500)).await;
        assert!(heard.is_none(), "{who} hears nothing: {heard:?}");
    }
    // Typing in a conversation one may not see is refused, and never stored.
    let events = app.event_count().await;
    let refused = app.gql_as(Some(&non_member_token), set, json!({ "c": conversation, "on": true })).await;
    assert!(refused["errors"].is_array(), "{refused}");
    assert_eq!(app.event_count().await, events);
    second.stop().await;
}
