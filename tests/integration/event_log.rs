//! The log itself: immutable, sealed, exportable.

use serde_json::json;
use tests::{inboxd, TestApp};

#[tokio::test]
async fn update_delete_and_truncate_on_events_are_refused() {
    let app = TestApp::spawn().await;
    let before = app.event_count().await;
    assert!(before > 0);
    for statement in ["UPDATE events SET event_type = 'Forged'", "DELETE FROM events", "TRUNCATE events"] {
        let error = sqlx::query(statement).execute(&app.pool).await.expect_err(statement);
        assert!(error.to_string().contains("events are immutable"), "{statement}: {error}");
    }
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn message_text_and_contact_details_are_never_in_clear_in_the_log() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Private").await;
    let variables = json!({ "input": {
        "inboxId": inbox,
        "contact": { "sourceId": "+5511987654321", "name": "Joana Pereira", "email": "joana.pereira@example.org", "phone": "+55 11 98765-4321" },
        "sourceId": "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFjNFQjBDNzA2",
        "content": "Meu cartão final 4242 foi recusado",
    }});
    let answer = app.ok(tests::RECEIVE, variables).await;
    let conversation = answer["receiveMessage"]["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"Joana, vamos verificar o cartão\"}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    let attributes = app
        .ok(
            "mutation($c: ID!) { setConversationCustomAttributes(input: {conversationId: $c, attributes: {order_ref: \"ZX-998877\", vip: true}}) { customAttributes } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(
        attributes["setConversationCustomAttributes"]["customAttributes"],
        json!({ "order_ref": "ZX-998877", "vip": true })
    );
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', aggregate_type, aggregate_id, event_type, payload::text, metadata::text) FROM events",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let log = rows.join("\n");
    // Only strings that random ids, hashes and base64 ciphertext cannot contain by chance.
    for secret in [
        "Joana",
        "Pereira",
        "joana.pereira",
        "98765-4321",
        "5511987654321",
        "cartão",
        "final 4242",
        "wamid",
        "ZX-998877",
    ] {
        assert!(!log.contains(secret), "'{secret}' is in clear in the events table");
    }
    // …while the API opens them for the account.
    let contact =
        app.ok("query($c: ID!) { conversation(id: $c) { contact { name } } }", json!({ "c": conversation })).await;
    assert_eq!(contact["conversation"]["contact"]["name"], "Joana Pereira");
}

#[tokio::test]
async fn export_writes_the_log_as_ndjson_in_feed_order_with_personal_fields_opened() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Export").await;
    app.receive(&inbox, "c-1", "m-1", "first message").await;
    app.receive(&inbox, "c-1", "m-2", "second message").await;
    let output = inboxd(&app.database_url).arg("export").output().await.expect("export runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    assert_eq!(lines.len() as i64, app.event_count().await);
    let positions: Vec<&str> = lines.iter().map(|l| l["position"].as_str().unwrap()).collect();
    let feed = app.ok("{ events(first: 1000) { edges { node { position } } } }", json!({})).await;
    let api_positions: Vec<&str> =
        feed["events"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["position"].as_str().unwrap()).collect();
    assert_eq!(positions, api_positions, "export and the events query agree on the feed order");
    let contents: Vec<&str> = lines
        .iter()
        .filter(|l| l["event_type"] == "MessageReceived")
        .map(|l| l["payload"]["MessageReceived"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, vec!["first message", "second message"]);

    // A range: everything after the third event, up to the fifth.
    let output = inboxd(&app.database_url)
        .args(["export", "--after", positions[2], "--until", positions[4]])
        .output()
        .await
        .expect("export runs");
    let ranged: Vec<serde_json::Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(ranged.iter().map(|l| l["position"].as_str().unwrap()).collect::<Vec<_>>(), positions[3..5].to_vec());
}

#[tokio::test]
async fn every_event_records_its_actor_time_and_the_requests_correlation_id() {
    let app = TestApp::spawn().await;
    let request_id = uuid::Uuid::new_v4();
    let response = app
        .client
        .post(format!("{}/graphql", app.server.address))
        .bearer_auth(&app.token)
        .header("x-request-id", request_id.to_string())
        .json(&json!({ "query": "mutation { createInbox(input: {name: \"Traced\", channel: API}) { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], request_id.to_string().as_str());
    let answer: serde_json::Value = response.json().await.unwrap();
    let inbox = answer["data"]["createInbox"]["id"].as_str().unwrap().to_string();
    let metadata: serde_json::Value = sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1")
        .bind(&inbox)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(metadata["correlation_id"], request_id.to_string().as_str());
    assert_eq!(metadata["actor"], format!("user:{}", app.user_id).as_str());
    assert!(chrono::DateTime::parse_from_rfc3339(metadata["occurred_at"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn the_server_refuses_to_start_in_production_without_a_master_key() {
    let app = TestApp::spawn().await;
    let run = inboxd(&app.database_url)
        .arg("serve")
        .env("APP_ENV", "production")
        .env_remove("MASTER_KEY")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("inboxd must exit, not serve")
        .expect("inboxd runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MASTER_KEY is required in production"));
}

#[tokio::test]
async fn bootstrap_prints_one_json_line_whose_token_works_and_the_console_is_served() {
    let app = TestApp::spawn().await;
    let output = inboxd(&app.database_url)
        .args([
            "bootstrap",
            "--account-name",
            "Second Co",
            "--email",
            "owner@second.test",
            "--password",
            "a long password",
            "--demo",
        ])
        .output()
        .await
        .expect("bootstrap runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let created: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let token = created["token"].as_str().unwrap();
    app.projected().await;
    let me = app.gql_as(Some(token), "{ me { id role } }", json!({})).await;
    assert_eq!(me["data"]["me"]["id"], created["user_id"]);
    assert_eq!(me["data"]["me"]["role"], "ADMINISTRATOR");
    // The demo's first look finds an inbox and conversations, one answered.
    let first_look = app
        .gql_as(
            Some(token),
            "{ inboxes { name channel } conversations { edges { node { messagesCount contact { name } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(first_look["data"]["inboxes"], json!([{ "name": "Website", "channel": "API" }]), "{first_look}");
    let conversations = first_look["data"]["conversations"]["edges"].as_array().unwrap();
    assert_eq!(conversations.len(), 3, "{first_look}");
    assert!(conversations.iter().any(|c| c["node"]["messagesCount"] == 2), "{first_look}");

    let page = app.client.get(format!("{}/graphql", app.server.address)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("GraphQL console"));
}

/// An account stream as an earlier release wrote it: `AccountCreated` at version 1,
/// whose time was `created_at` (now `at`), chained by the rule of its day.
async fn old_account(app: &TestApp) -> uuid::Uuid {
    let account = uuid::Uuid::now_v7();
    let payload = r#"{"AccountCreated":{"created_at":"2026-11-02T08:00:00Z","name":"Old Co"}}"#;
    let metadata = r#"{"actor":"system"}"#;
    let hashed = projections::envelope::chain::Hashed {
        aggregate_type: "account",
        aggregate_id: &account.to_string(),
        sequence: 1,
        event_type: "AccountCreated",
        event_version: "1",
        payload,
        metadata,
    };
    let hash = projections::envelope::chain::unkeyed(None, &hashed);
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
         account_id, hash) VALUES ('account', $1, 1, 'AccountCreated', '1', $2::jsonb, $3::jsonb, $4, $5)",
    )
    .bind(account.to_string())
    .bind(payload)
    .bind(metadata)
    .bind(account)
    .bind(hash)
    .execute(&app.pool)
    .await
    .unwrap();
    // Written before the keyed chain began, as the cut-over records.
    sqlx::query("UPDATE chain_cutover SET position = (SELECT max(global_position) FROM events)")
        .execute(&app.pool)
        .await
        .unwrap();
    account
}

#[tokio::test]
async fn an_event_stored_at_an_old_version_reads_in_its_current_shape_everywhere() {
    let app = TestApp::spawn().await;
    let account = old_account(&app).await;
    app.projected().await;

    // Every projector that reads it: the directory has the account with its time.
    let (name, created): (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT name, created_at FROM rm_accounts WHERE account_id = $1")
            .bind(account)
            .fetch_one(&app.pool)
            .await
            .expect("the directory projected the old event");
    assert_eq!((name.as_str(), created.to_rfc3339()), ("Old Co", "2026-11-02T08:00:00+00:00".to_string()));

    // Replay: the account exists for a command on it, which appends at the new version.
    let context = commands::context::CommandContext::now(account, domain::actor::Actor::System);
    app.server
        .state
        .commands
        .create_inbox(&context, "Old inbox", domain::values::Channel::Api, None)
        .await
        .expect("the replayed account exists");
    let export = inboxd(&app.database_url).args(["export", "--account", &account.to_string()]).output().await.unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8(export.stdout).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["event_version"], "2", "the export hands out the current shape: {first}");
    assert_eq!(first["payload"], json!({ "AccountCreated": { "name": "Old Co", "at": "2026-11-02T08:00:00Z" } }));

    // The stored row is as it was written, and its chain still holds.
    let stored: String =
        sqlx::query_scalar("SELECT event_version FROM events WHERE aggregate_id = $1 AND sequence = 1")
            .bind(account.to_string())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, "1");
    let check = app.server.state.commands.store().verify_stream("account", &account.to_string(), None).await.unwrap();
    assert!(check.intact(), "{check:?}");
}
