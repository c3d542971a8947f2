//! Concurrent deliveries: optimistic concurrency on the route stream, not luck,
//! decides how many contacts, conversations and messages there are.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use tests::{gql_at, receive_variables, TestApp, RECEIVE};

async fn deliver_concurrently(app: &TestApp, inbox: &str, source_ids: Vec<String>) -> Vec<serde_json::Value> {
    let address = Arc::new(app.server.address.clone());
    let token = Arc::new(app.token.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (n, source_id) in source_ids.into_iter().enumerate() {
        let (address, token, client, inbox) = (address.clone(), token.clone(), app.client.clone(), inbox.to_string());
        tasks.spawn(async move {
            let variables = receive_variables(&inbox, "new-contact", &source_id, &format!("message {n}"));
            gql_at(&client, &address, Some(&token), RECEIVE, variables).await
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("delivery task");
        assert!(answer.get("errors").is_none(), "a delivery failed: {answer}");
        answers.push(answer["data"]["receiveMessage"].clone());
    }
    answers
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.expect("count")
}

#[tokio::test]
async fn twenty_concurrent_redeliveries_of_a_first_message_make_one_conversation_and_one_message() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Burst").await;
    let answers = deliver_concurrently(&app, &inbox, vec!["same-id".to_string(); 20]).await;
    let message_ids: HashSet<String> = answers.iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(message_ids.len(), 1, "every delivery answers with the one message");
    app.projected().await;
    assert_eq!(count(&app, "SELECT count(*) FROM rm_conversations").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM rm_messages").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM rm_contacts").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM events WHERE event_type = 'MessageReceived'").await, 1);
}

#[tokio::test]
async fn twenty_concurrent_different_first_messages_make_one_conversation_with_twenty_messages() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Burst").await;
    let answers = deliver_concurrently(&app, &inbox, (0..20).map(|n| format!("id-{n}")).collect()).await;
    let conversations: HashSet<&str> = answers.iter().map(|a| a["conversation"]["id"].as_str().unwrap()).collect();
    assert_eq!(conversations.len(), 1);
    app.projected().await;
    assert_eq!(count(&app, "SELECT count(*) FROM rm_conversations").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM rm_messages WHERE message_type = 'incoming'").await, 20);
    assert_eq!(count(&app, "SELECT messages_count::bigint FROM rm_conversations").await, 20);
    assert_eq!(count(&app, "SELECT count(*) FROM rm_contacts").await, 1);
}

#[tokio::test]
async fn twenty_concurrent_agent_replies_to_one_conversation_all_land() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Busy").await;
    let conversation = app.receive(&inbox, "c", "m", "hi").await["conversation"]["id"].as_str().unwrap().to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (client, address, token, conversation) =
            (app.client.clone(), app.server.address.clone(), app.token.clone(), conversation.clone());
        tasks.spawn(async move {
            gql_at(
                &client,
                &address,
                Some(&token),
                "mutation($c: ID!, $t: String!) { sendMessage(input: {conversationId: $c, content: $t}) { id } }",
                json!({ "c": conversation, "t": format!("reply {n}") }),
            )
            .await
        });
    }
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("reply task");
        assert!(answer.get("errors").is_none(), "a reply failed: {answer}");
    }
    app.projected().await;
    assert_eq!(count(&app, "SELECT count(*) FROM rm_messages WHERE message_type = 'outgoing'").await, 20);
}

/// Twenty deliveries at once, alternating between the two servers; `ids(n)` names the
/// n-th message's contact and source id. Returns the `receiveMessage` answers.
async fn deliver_through_both(
    app: &TestApp,
    second: &tests::TestServer,
    inbox: &str,
    ids: fn(usize) -> (String, String),
) -> Vec<serde_json::Value> {
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let address = if n % 2 == 0 { app.server.address.clone() } else { second.address.clone() };
        let (client, token, inbox) = (app.client.clone(), app.token.clone(), inbox.to_string());
        let (contact, source_id) = ids(n);
        tasks.spawn(async move {
            let variables = receive_variables(&inbox, &contact, &source_id, &format!("message {n}"));
            gql_at(&client, &address, Some(&token), RECEIVE, variables).await
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("delivery task");
        assert!(answer.get("errors").is_none(), "a delivery failed: {answer}");
        answers.push(answer["data"]["receiveMessage"].clone());
    }
    answers
}

#[tokio::test]
async fn concurrent_messages_from_one_new_contact_through_two_servers_make_one_conversation() {
    let app = TestApp::spawn().await;
    let second = tests::TestServer::start(&app.database_url).await;
    let inbox = app.create_inbox("Two nodes").await;
    deliver_through_both(&app, &second, &inbox, |n| ("roaming-contact".into(), format!("m-{n}"))).await;
    app.projected().await;
    assert_eq!(count(&app, "SELECT count(*) FROM rm_conversations").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM rm_contacts").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM rm_messages").await, 20);
    second.stop().await;
}

#[tokio::test]
async fn new_conversations_through_two_servers_at_once_are_numbered_one_to_n() {
    let app = TestApp::spawn().await;
    let second = tests::TestServer::start(&app.database_url).await;
    let inbox = app.create_inbox("Two nodes").await;
    let answers = deliver_through_both(&app, &second, &inbox, |n| (format!("contact-{n}"), "m-1".into())).await;
    let mut numbers: Vec<i64> =
        answers.iter().map(|a| a["conversation"]["displayId"].as_i64().expect("a number")).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<i64>>());
    second.stop().await;
}
