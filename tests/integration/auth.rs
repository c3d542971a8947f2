//! Who may call what, and what bad input gets.

use serde_json::{json, Value};
use tests::TestApp;

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {answer}"))
}

#[tokio::test]
async fn operations_without_a_valid_token_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Locked").await;
    let before = app.event_count().await;
    let operations = [
        "{ conversations { edges { cursor } } }",
        "{ inboxes { id } }",
        "{ events { edges { cursor } } }",
        "{ me { id } }",
        "mutation { createInbox(input: {name: \"x\", channel: API}) { id } }",
    ];
    for token in [None, Some("ibx_not-a-real-token"), Some("garbage")] {
        for operation in operations {
            let answer = app.gql_as(token, operation, json!({})).await;
            assert_eq!(code(&answer), "UNAUTHENTICATED", "{operation} with {token:?}: {answer}");
        }
        let answer = app.gql_as(token, tests::RECEIVE, tests::receive_variables(&inbox, "c", "m", "hi")).await;
        assert_eq!(code(&answer), "UNAUTHENTICATED");
    }
    assert_eq!(app.event_count().await, before, "refused calls write nothing");
}

#[tokio::test]
async fn another_accounts_administrator_can_neither_see_nor_touch_a_conversation() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Mine").await;
    let conversation =
        app.receive(&inbox, "c", "m", "private matter").await["conversation"]["id"].as_str().unwrap().to_string();
    let other = app.other_account().await;
    let as_other = |query: &'static str, variables: Value| app.gql_as(Some(&other.token), query, variables);
    let before = app.event_count().await;
    let read = as_other("query($c: ID!) { conversation(id: $c) { id } }", json!({ "c": conversation })).await;
    assert_eq!(code(&read), "NOT_FOUND");
    let history =
        as_other("query($c: ID!) { conversationHistory(id: $c) { eventType } }", json!({ "c": conversation })).await;
    assert_eq!(code(&history), "NOT_FOUND");
    let reply = as_other(
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"hi\"}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    assert_eq!(code(&reply), "NOT_FOUND");
    let resolve = as_other(
        "mutation($c: ID!) { setConversationStatus(input: {conversationId: $c, status: RESOLVED}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    assert_eq!(code(&resolve), "NOT_FOUND");
    let inject = as_other(tests::RECEIVE, tests::receive_variables(&inbox, "c", "m2", "spoofed")).await;
    assert_eq!(code(&inject), "NOT_FOUND");
    let list = as_other(
        "{ conversations { edges { node { id } } } inboxes { id } events { edges { node { aggregateId } } } }",
        json!({}),
    )
    .await;
    assert_eq!(list["data"]["conversations"]["edges"], json!([]));
    assert_eq!(list["data"]["inboxes"], json!([]));
    let foreign_events = list["data"]["events"]["edges"].as_array().unwrap();
    assert!(foreign_events.iter().all(|e| e["node"]["aggregateId"] != conversation.as_str()));
    assert_eq!(app.event_count().await, before, "refused calls write nothing");
}

#[tokio::test]
async fn malformed_input_is_a_bad_user_input_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Strict").await;
    let conversation = app.receive(&inbox, "c", "m", "hello").await["conversation"]["id"].as_str().unwrap().to_string();
    app.projected().await;
    let before = app.event_count().await;
    let models = app.read_models().await;
    let send = "mutation($c: ID!, $t: String!) { sendMessage(input: {conversationId: $c, content: $t}) { id } }";
    let cases: Vec<(&str, Value)> = vec![
        (send, json!({ "c": "not-a-uuid", "t": "hi" })),
        (send, json!({ "c": conversation, "t": "   " })),
        (send, json!({ "c": conversation, "t": "x".repeat(150_001) })),
        (send, json!({ "c": conversation, "t": 42 })),
        (tests::RECEIVE, tests::receive_variables(&inbox, "", "m2", "hi")),
        (tests::RECEIVE, json!({ "input": { "inboxId": inbox, "contact": { "sourceId": "z", "email": "not an email" }, "sourceId": "q", "content": "hi" } })),
        (tests::RECEIVE, json!({ "input": { "inboxId": inbox, "contact": { "sourceId": "z", "phone": "call me maybe" }, "sourceId": "q", "content": "hi" } })),
        (
            "mutation($c: ID!, $u: DateTime) { setConversationStatus(input: {conversationId: $c, status: RESOLVED, snoozedUntil: $u}) { id } }",
            json!({ "c": conversation, "u": "2099-01-01T00:00:00Z" }),
        ),
        ("mutation($c: ID!) { setConversationStatus(input: {conversationId: $c, status: CLOSED}) { id } }", json!({ "c": conversation })),
        ("mutation($c: ID!) { setConversationLabels(input: {conversationId: $c, labels: [\"no spaces\"]}) { id } }", json!({ "c": conversation })),
        ("mutation { createInbox(input: {name: \"\", channel: API}) { id } }", json!({})),
        (
            "mutation($c: ID!, $a: JSON!) { setConversationCustomAttributes(input: {conversationId: $c, attributes: $a}) { id } }",
            json!({ "c": conversation, "a": { "nested": { "no": 1 } } }),
        ),
        (
            "mutation($c: ID!, $a: JSON!) { setConversationCustomAttributes(input: {conversationId: $c, attributes: $a}) { id } }",
            json!({ "c": conversation, "a": ["not", "an", "object"] }),
        ),
        ("mutation { createLabel(input: {title: \"ok\", color: \"red\"}) { id } }", json!({})),
        ("{ conversations(after: \"bm90IGEgY3Vyc29y\") { edges { cursor } } }", json!({})),
        ("{ conversations(first: 100000) { edges { cursor } } }", json!({})),
        ("{ events(after: \"nope\") { edges { cursor } } }", json!({})),
        ("{ conversations { edges { node { nonexistent } } } }", json!({})),
    ];
    for (query, variables) in cases {
        let answer = app.gql(query, variables.clone()).await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{query} with {variables}: {answer}");
        assert!(!answer.to_string().contains("sqlx"), "no internal detail leaks: {answer}");
    }
    let raw = app
        .client
        .post(format!("{}/graphql", app.server.address))
        .bearer_auth(&app.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert_eq!(app.event_count().await, before, "nothing was written");
    app.projected().await;
    assert_eq!(app.read_models().await, models, "no read model changed");
}

#[tokio::test]
async fn a_personal_api_token_acts_as_its_user_in_its_account() {
    let app = TestApp::spawn().await;
    let created = app.ok("mutation { createApiToken(input: {name: \"CRM sync\"}) { id token } }", json!({})).await;
    let token = created["createApiToken"]["token"].as_str().unwrap();
    assert_ne!(token, app.token);
    let me = app.gql_as(Some(token), "{ me { id name role } }", json!({})).await;
    assert_eq!(
        me["data"]["me"],
        json!({ "id": app.user_id.to_string(), "name": "Ana Admin", "role": "ADMINISTRATOR" })
    );
    let empty = app.gql("mutation { createApiToken(input: {name: \"  \"}) { token } }", json!({})).await;
    assert_eq!(code(&empty), "BAD_USER_INPUT");
}
