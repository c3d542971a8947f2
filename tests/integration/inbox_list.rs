//! The inbox list: filters, sorts and keyset pages.

use std::collections::HashSet;

use serde_json::{json, Value};
use tests::TestApp;

const LIST: &str = "query($f: ConversationFilter, $s: ConversationSort, $first: Int, $after: String) { \
    conversations(filter: $f, sortBy: $s, first: $first, after: $after) { \
      edges { cursor node { id displayId priority labels assignee { id } } } pageInfo { hasNextPage endCursor } } }";

async fn ids(app: &TestApp, filter: Value) -> Vec<i64> {
    let data = app.ok(LIST, json!({ "f": filter, "first": 100 })).await;
    data["conversations"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["displayId"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn the_inbox_list_filters_sorts_and_pages_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let support = app.create_inbox("Support").await;
    let sales = app.create_inbox("Sales").await;
    let mut conversations = Vec::new();
    for n in 0..7 {
        let inbox = if n < 5 { &support } else { &sales };
        let answer = app.receive(inbox, &format!("contact-{n}"), "m", &format!("question {n}")).await;
        conversations.push(answer["conversation"]["id"].as_str().unwrap().to_string());
    }
    let me = app.user_id.to_string();
    for n in [1, 3] {
        app.ok(
            "mutation($c: ID!, $u: ID!) { assignConversation(input: {conversationId: $c, assigneeId: $u}) { id } }",
            json!({ "c": conversations[n], "u": me }),
        )
        .await;
    }
    app.ok(
        "mutation($c: ID!) { setConversationPriority(input: {conversationId: $c, priority: URGENT}) { id } }",
        json!({ "c": conversations[4] }),
    )
    .await;
    app.ok(
        "mutation($c: ID!) { setConversationLabels(input: {conversationId: $c, labels: [\"refund\"]}) { id } }",
        json!({ "c": conversations[2] }),
    )
    .await;

    // Newest activity first (assignment, labels and priority are not activity).
    assert_eq!(ids(&app, json!({})).await, vec![7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(ids(&app, json!({ "assignee": "ME" })).await, vec![4, 2]);
    assert_eq!(ids(&app, json!({ "assigneeId": me })).await, vec![4, 2]);
    assert_eq!(ids(&app, json!({ "assignee": "UNASSIGNED" })).await, vec![7, 6, 5, 3, 1]);
    assert_eq!(ids(&app, json!({ "inboxId": sales })).await, vec![7, 6]);
    assert_eq!(ids(&app, json!({ "label": "refund" })).await, vec![3]);
    assert_eq!(ids(&app, json!({ "priority": "URGENT" })).await, vec![5]);
    assert_eq!(
        ids(&app, json!({ "status": "OPEN", "inboxId": support, "assignee": "UNASSIGNED" })).await,
        vec![5, 3, 1]
    );
    assert_eq!(ids(&app, json!({ "status": "RESOLVED" })).await, Vec::<i64>::new());

    let counts =
        app.ok("{ conversationCounts(filter: {status: OPEN}) { mine unassigned assigned all } }", json!({})).await;
    assert_eq!(counts["conversationCounts"], json!({ "mine": 2, "unassigned": 5, "assigned": 2, "all": 7 }));

    for sort in ["LAST_ACTIVITY", "CREATED_AT", "PRIORITY", "WAITING_SINCE"] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let data = app.ok(LIST, json!({ "s": sort, "first": 3, "after": after })).await;
            let page = &data["conversations"];
            seen.extend(page["edges"].as_array().unwrap().iter().map(|e| e["node"]["displayId"].as_i64().unwrap()));
            if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
                break;
            }
            after = page["pageInfo"]["endCursor"].as_str().map(String::from);
        }
        assert_eq!(seen.len(), 7, "{sort}: {seen:?}");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7, "{sort} repeats: {seen:?}");
        match sort {
            "CREATED_AT" => assert_eq!(seen, vec![7, 6, 5, 4, 3, 2, 1]),
            "PRIORITY" => assert_eq!(seen[0], 5, "urgent first"),
            "WAITING_SINCE" => assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 7], "longest waiting first"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn each_agent_has_their_own_unread_count_driven_by_read_markers() {
    let app = TestApp::spawn().await;
    let support = app.create_inbox("Support").await;
    let other = app.create_inbox("Other").await;
    let (bo, bo_token) = app.agent("bo@acme.test", "AGENT").await;
    let (_, outsider_token) = app.agent("cy@acme.test", "AGENT").await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": support, "u": bo }),
    )
    .await;
    let first = app.receive(&support, "dana", "m1", "hello").await;
    let conversation = first["conversation"]["id"].as_str().unwrap().to_string();
    app.receive(&support, "dana", "m2", "anyone there?").await;
    app.receive(&other, "erin", "m3", "elsewhere").await;
    let unread = |token: String| {
        let (app, conversation) = (&app, conversation.clone());
        async move {
            let answer = app
                .gql_as(
                    Some(&token),
                    "query($c: ID!) { conversation(id: $c) { unreadCount } }",
                    json!({ "c": conversation }),
                )
                .await;
            answer["data"]["conversation"]["unreadCount"].as_i64().unwrap_or_else(|| panic!("{answer}"))
        }
    };
    let read = "mutation($c: ID!) { markConversationRead(input: {conversationId: $c}) { unreadCount } }";
    assert_eq!(unread(app.token.clone()).await, 2);
    assert_eq!(unread(bo_token.clone()).await, 2);

    let marked = app.ok(read, json!({ "c": conversation })).await;
    assert_eq!(marked["markConversationRead"]["unreadCount"], 0);
    assert_eq!(unread(bo_token.clone()).await, 2, "one agent's reading is not another's");
    let events_before = app.event_count().await;
    app.ok(read, json!({ "c": conversation })).await;
    assert_eq!(app.event_count().await, events_before, "reading again what was read records nothing");

    // Replies and notes are not unread; the contact's next message is.
    app.ok(
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"on it\"}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    app.receive(&support, "dana", "m4", "thanks").await;
    assert_eq!(unread(app.token.clone()).await, 1);
    assert_eq!(unread(bo_token.clone()).await, 3);
    let answer = app.gql_as(Some(&bo_token), read, json!({ "c": conversation })).await;
    assert_eq!(answer["data"]["markConversationRead"]["unreadCount"], 0, "{answer}");

    // The list shows each caller their own count.
    let list = "{ conversations(first: 10) { edges { node { displayId unreadCount } } } }";
    let listed = app.ok(list, json!({})).await;
    let counts: Vec<(i64, i64)> = listed["conversations"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["node"]["displayId"].as_i64().unwrap(), e["node"]["unreadCount"].as_i64().unwrap()))
        .collect();
    assert_eq!(counts, vec![(1, 1), (2, 1)]);

    // Someone who may not see the conversation cannot mark it.
    let refused = app.gql_as(Some(&outsider_token), read, json!({ "c": conversation })).await;
    assert!(refused["errors"].is_array(), "{refused}");
    let markers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_conversation_reads").fetch_one(&app.pool).await.unwrap();
    assert_eq!(markers, 2);
}
