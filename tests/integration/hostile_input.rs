//! Input from strangers: text no read model can store, and requests built to cost
//! the server more than their size. Each is refused before it runs or is stored, and
//! stops nothing for anyone else.

use projections::envelope::{seal_value, variant_body, META_SUBJECT};
use serde_json::{json, Value};
use tests::{gql_at, receive_variables, TestApp, RECEIVE};
use uuid::Uuid;

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {answer}"))
}

/// Posts a raw body (to send JSON serde would not write, like a lone surrogate).
async fn post_raw(app: &TestApp, body: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/graphql", app.server.address))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// A GraphQL literal for an input type with `text` at every string leaf, or `None`
/// when the type holds no text at all.
fn literal(types: &[Value], ty: &Value, text: &str, depth: usize) -> Option<String> {
    match ty["kind"].as_str()? {
        "NON_NULL" => literal(types, &ty["ofType"], text, depth),
        "LIST" => literal(types, &ty["ofType"], text, depth).map(|item| format!("[{item}]")),
        "SCALAR" if matches!(ty["name"].as_str()?, "String" | "ID" | "JSON") => Some(format!("\"{text}\"")),
        "INPUT_OBJECT" if depth < 4 => {
            let name = ty["name"].as_str()?;
            let definition = types.iter().find(|t| t["name"] == name)?;
            let fields: Vec<String> = definition["inputFields"]
                .as_array()?
                .iter()
                .filter_map(|f| {
                    literal(types, &f["type"], text, depth + 1).map(|v| format!("{}: {v}", f["name"].as_str().unwrap()))
                })
                .collect();
            (!fields.is_empty()).then(|| format!("{{{}}}", fields.join(", ")))
        }
        _ => None,
    }
}

#[tokio::test]
async fn nul_in_any_text_input_of_the_schema_is_refused_before_anything_runs() {
    let app = TestApp::spawn().await;
    let schema = app
        .ok(
            "{ __schema { types { name kind inputFields { name type { ...T } } fields { name args { name type { ...T } } } } } } \
             fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }",
            json!({}),
        )
        .await;
    let types = schema["__schema"]["types"].as_array().unwrap().clone();
    let events_before = app.event_count().await;
    let mut probed = 0;
    for (root, keyword) in [("QueryRoot", "query"), ("MutationRoot", "mutation")] {
        let root = types.iter().find(|t| t["name"] == root).unwrap();
        for field in root["fields"].as_array().unwrap() {
            for arg in field["args"].as_array().unwrap() {
                // `\u0000` in the document: the GraphQL escape, decoded by the parser.
                let Some(value) = literal(&types, &arg["type"], r"a\u0000b", 0) else { continue };
                let query = format!(
                    "{keyword} {{ {}({}: {value}) {{ __typename }} }}",
                    field["name"].as_str().unwrap(),
                    arg["name"].as_str().unwrap()
                );
                let answer = app.gql(&query, json!({})).await;
                assert_eq!(code(&answer), "BAD_USER_INPUT", "{query}: {answer}");
                assert!(answer["errors"][0]["message"].as_str().unwrap().contains("NUL"), "{query}: {answer}");
                probed += 1;
            }
        }
    }
    assert!(probed >= 25, "every text argument is probed; only {probed} found");
    // Through variables, and in an object's key (custom attributes).
    let mut variables = receive_variables("x", "c", "m", "a\u{0}b");
    variables["input"]["inboxId"] = json!(Uuid::now_v7());
    assert_eq!(code(&app.gql(RECEIVE, variables).await), "BAD_USER_INPUT");
    let attributes = "mutation($a: JSON!) { setConversationCustomAttributes(input: {conversationId: \"x\", attributes: $a}) { id } }";
    assert_eq!(code(&app.gql(attributes, json!({ "a": { "k\u{0}": 1 } })).await), "BAD_USER_INPUT");
    assert_eq!(app.event_count().await, events_before, "nothing refused was stored");
}

#[tokio::test]
async fn lone_surrogates_are_refused_in_the_document_and_in_variables() {
    let app = TestApp::spawn().await;
    let events_before = app.event_count().await;
    let (status, answer) =
        post_raw(&app, r#"{"query": "{ conversations(filter: {label: \"\\ud800\"}) { totalCount } }"}"#).await;
    assert_eq!((status, code(&answer)), (200, "BAD_USER_INPUT"), "{answer}");
    let body = r#"{"query": "mutation($i: ReceiveMessageInput!) { receiveMessage(input: $i) { id } }",
        "variables": {"i": {"inboxId": "x", "contact": {"sourceId": "c"}, "sourceId": "m", "content": "a\ud800b"}}}"#;
    let (status, answer) = post_raw(&app, body).await;
    assert_eq!((status, code(&answer)), (400, "BAD_USER_INPUT"), "{answer}");
    assert_eq!(app.event_count().await, events_before, "nothing was stored");
}

#[tokio::test]
async fn nul_in_filters_is_bad_input_not_internal() {
    let app = TestApp::spawn().await;
    for query in [
        r#"{ conversations(filter: {label: "vip\u0000"}) { totalCount } }"#,
        r#"{ auditLog(filter: {eventTypes: ["InboxCreated\u0000"]}) { edges { cursor } } }"#,
    ] {
        assert_eq!(code(&app.gql(query, json!({})).await), "BAD_USER_INPUT", "{query}");
    }
}

#[tokio::test]
async fn text_in_the_log_that_no_read_model_can_store_stops_no_projector_for_any_account() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Hostile").await;
    let received = app.receive(&inbox, "c-1", "m-1", "hello").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    let reply = "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"template\"}) { id } }";
    app.ok(reply, json!({ "c": conversation })).await;
    app.projected().await;

    // An event as an earlier version accepted it: a reply whose sealed text holds a NUL.
    let (payload, metadata, event_version, sequence): (Value, Value, String, i64) = sqlx::query_as(
        "SELECT payload, metadata, event_version, (SELECT max(sequence) FROM events WHERE aggregate_id = $1) \
         FROM events WHERE aggregate_id = $1 AND event_type = 'MessageSent'",
    )
    .bind(&conversation)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let subject: Uuid = metadata[META_SUBJECT].as_str().unwrap().parse().unwrap();
    let cipher = app.server.state.keyring.data_key(&app.pool, subject).await.unwrap().expect("the contact's key");
    let mut payload = payload;
    let body = variant_body(&mut payload).unwrap();
    let message = Uuid::now_v7();
    body.insert("message_id".into(), json!(message));
    body.insert("content".into(), json!(seal_value(&cipher, subject, &json!("a\u{0}b")).unwrap()));
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, account_id) \
         VALUES ('conversation', $1, $2, 'MessageSent', $3, $4, $5, $6)",
    )
    .bind(&conversation)
    .bind(sequence + 1)
    .bind(&event_version)
    .bind(&payload)
    .bind(&metadata)
    .bind(app.account_id)
    .execute(&app.pool)
    .await
    .unwrap();

    // Another account's message after it is projected: nothing stopped.
    let other = app.other_account().await;
    let inbox_b = gql_at(
        &app.client,
        &app.server.address,
        Some(&other.token),
        "mutation { createInbox(input: {name: \"B\", channel: API}) { id } }",
        json!({}),
    )
    .await;
    let inbox_b = inbox_b["data"]["createInbox"]["id"].as_str().unwrap().to_string();
    let answer = gql_at(
        &app.client,
        &app.server.address,
        Some(&other.token),
        RECEIVE,
        receive_variables(&inbox_b, "b", "b-1", "still here"),
    )
    .await;
    assert!(answer.get("errors").is_none(), "{answer}");
    app.projected().await;
    let ready = app.client.get(format!("{}/readyz", app.server.address)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "{}", ready.text().await.unwrap());
    let stored: Option<String> = sqlx::query_scalar("SELECT content FROM rm_messages WHERE message_id = $1")
        .bind(message)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("a\u{FFFD}b"), "the unstorable character reads as U+FFFD");
    let theirs: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_messages WHERE account_id = $1")
        .bind(other.account_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(theirs, 1);
}

/// `fragment F{n} on QueryRoot { ...F{n-1} a{n}: __typename ...F{n-1} }`, 24 levels.
fn doubling_fragments(levels: usize, leaf: &str) -> String {
    let mut query = format!("fragment F0 on QueryRoot {{ {leaf} }}\n");
    for n in 1..=levels {
        query.push_str(&format!("fragment F{n} on QueryRoot {{ ...F{} a{n}: __typename ...F{} }}\n", n - 1, n - 1));
    }
    query + &format!("{{ ...F{levels} }}")
}

#[tokio::test]
async fn requests_built_to_cost_more_than_their_size_are_refused_before_they_run() {
    let app = TestApp::spawn().await;
    for leaf in ["__typename", "me { id name email }"] {
        let query = doubling_fragments(24, leaf);
        assert!(query.len() < 2_000);
        let answer = gql_at(&app.client, &app.server.address, None, &query, json!({})).await;
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
        assert!(answer["errors"][0]["message"].as_str().unwrap().contains("fragments expanded"), "{answer}");
    }
    let ordinary = app.gql("{ me { id } }", json!({})).await;
    assert!(ordinary.get("errors").is_none(), "{ordinary}");

    // `first:` multiplies what each item selects.
    let nested = "{ conversations(first: 100) { edges { node { messages(first: 1000) { edges { node { \
        conversation { messages(first: 1000) { edges { node { id content } } } } } } } } } } }";
    let answer = app.gql(nested, json!({})).await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("complex"), "{answer}");

    let logins: String = (0..6)
        .map(|n| {
            format!("l{n}: login(input: {{email: \"x{n}@acme.test\", password: \"wrong password\"}}) {{ token }} ")
        })
        .collect();
    let answer = gql_at(&app.client, &app.server.address, None, &format!("mutation {{ {logins} }}"), json!({})).await;
    assert_eq!(code(&answer), "BAD_USER_INPUT", "{answer}");
    assert!(answer["data"].is_null(), "no password was checked: {answer}");
}

#[tokio::test]
async fn only_callers_with_credentials_may_introspect_by_default() {
    let app = TestApp::spawn().await;
    let anonymous =
        gql_at(&app.client, &app.server.address, None, "{ __schema { queryType { name } } }", json!({})).await;
    assert!(anonymous["data"]["__schema"].is_null(), "the schema is not described: {anonymous}");
    let signed_in = app.gql("{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(signed_in["data"]["__schema"]["queryType"]["name"], "QueryRoot");
}
