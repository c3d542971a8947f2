//! Tamper evidence: what someone with every database privilege does to the log is
//! detected and named by `verifyConversationHistory` and `inboxd verify`, never
//! answered INTERNAL; digests kept outside the database pin what they covered.

use std::sync::Arc;

use projections::envelope::chain::{unkeyed, Chain, Hashed};
use projections::keyring::Keyring;
use serde_json::{json, Value};
use sqlx::PgPool;
use tests::TestApp;

const VERIFY: &str = "query($c: ID!, $d: String) { verifyConversationHistory(id: $c, digest: $d) { intact events \
                      firstBrokenSequence truncated reason } }";

/// A conversation of five events: started, a message, a reply, resolved, reopened.
async fn conversation(app: &TestApp) -> String {
    let inbox = app.create_inbox("Support").await;
    let received = app.receive(&inbox, "maria", "m1", "my order is late").await;
    let conversation = received["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"on its way\"}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    for status in ["RESOLVED", "OPEN"] {
        app.ok(
            "mutation($c: ID!, $s: ConversationStatus!) { setConversationStatus(input: {conversationId: $c, status: $s}) { id } }",
            json!({ "c": conversation, "s": status }),
        )
        .await;
    }
    conversation
}

async fn verify(app: &TestApp, conversation: &str, digest: Option<&str>) -> Value {
    let answer = app.ok(VERIFY, json!({ "c": conversation, "d": digest })).await;
    answer["verifyConversationHistory"].clone()
}

/// `inboxd digest`: records one and prints the newest line.
async fn digest(app: &TestApp) -> String {
    let out = tests::inboxd(&app.database_url).arg("digest").output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `inboxd verify [--digest]`: (exit success, printed lines).
async fn verify_log(app: &TestApp, digest: Option<&str>) -> (bool, String) {
    let mut command = tests::inboxd(&app.database_url);
    command.arg("verify");
    let file = tempfile_with(digest.unwrap_or_default());
    if digest.is_some() {
        command.arg("--digest").arg(&file);
    }
    let out = command.output().await.unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), printed)
}

fn tempfile_with(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("digest-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs statements as a superuser would, with the log's triggers off.
async fn as_superuser(pool: &PgPool, statements: &[&str], bind: &str) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica").execute(&mut *conn).await.unwrap();
    for statement in statements {
        sqlx::query(statement).bind(bind).execute(&mut *conn).await.unwrap();
    }
    sqlx::query("SET session_replication_role = origin").execute(&mut *conn).await.unwrap();
}

#[derive(sqlx::FromRow)]
struct Row {
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

/// Rewrites the stream's hashes from `from` on, each by `rule`, as a forger would.
async fn rechain(pool: &PgPool, conversation: &str, from: i64, rule: impl Fn(Option<&[u8]>, &Hashed<'_>) -> Vec<u8>) {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT sequence, event_type, event_version, payload, metadata FROM events \
         WHERE aggregate_type = 'conversation' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut previous: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT hash FROM events WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND sequence = $2",
    )
    .bind(conversation)
    .bind(from - 1)
    .fetch_optional(pool)
    .await
    .unwrap()
    .flatten();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica").execute(&mut *conn).await.unwrap();
    for row in rows.iter().filter(|r| r.sequence >= from) {
        let (payload, metadata) = (row.payload.to_string(), row.metadata.to_string());
        let hashed = Hashed {
            aggregate_type: "conversation",
            aggregate_id: conversation,
            sequence: row.sequence,
            event_type: &row.event_type,
            event_version: &row.event_version,
            payload: &payload,
            metadata: &metadata,
        };
        let hash = rule(previous.as_deref(), &hashed);
        sqlx::query(
            "UPDATE events SET hash = $3 WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND sequence = $2",
        )
        .bind(conversation)
        .bind(row.sequence)
        .bind(&hash)
        .execute(&mut *conn)
        .await
        .unwrap();
        previous = Some(hash);
    }
    sqlx::query("SET session_replication_role = origin").execute(&mut *conn).await.unwrap();
}

#[tokio::test]
async fn a_rewritten_event_with_the_chain_recomputed_without_the_key_is_named() {
    let app = TestApp::spawn().await;
    let conversation = conversation(&app).await;
    assert_eq!(verify(&app, &conversation, None).await["intact"], true);
    assert!(verify_log(&app, None).await.0, "an untouched log verifies");

    // Resolved becomes pending, and every hash from there is recomputed by the rule
    // a forger can compute: with a key of their own, or with the old unkeyed rule.
    as_superuser(
        &app.pool,
        &["UPDATE events SET payload = jsonb_set(payload, '{StatusChanged,to}', '\"pending\"') \
           WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND sequence = 4"],
        &conversation,
    )
    .await;
    let forger = Chain::new(Arc::new(Keyring::new([42; 32])), 1).unwrap();
    rechain(&app.pool, &conversation, 4, |previous, event| forger.hash(previous, event)).await;
    let answer = verify(&app, &conversation, None).await;
    assert_eq!(answer["intact"], false, "{answer}");
    assert_eq!(answer["firstBrokenSequence"], 4, "{answer}");
    assert_eq!(answer["reason"], "event 4 does not match its hash");
    let (ok, printed) = verify_log(&app, None).await;
    assert!(!ok, "inboxd verify exits non-zero");
    assert!(printed.contains(&format!("conversation {conversation}: event 4 does not match its hash")), "{printed}");

    rechain(&app.pool, &conversation, 4, unkeyed).await;
    let answer = verify(&app, &conversation, None).await;
    assert_eq!(answer["firstBrokenSequence"], 4, "the old rule is refused after the keyed chain began: {answer}");
    assert!(answer["reason"].as_str().unwrap().contains("old unkeyed rule"), "{answer}");
}

#[tokio::test]
async fn a_deleted_newest_event_is_detected_against_a_digest_taken_before() {
    let app = TestApp::spawn().await;
    let conversation = conversation(&app).await;
    let line = digest(&app).await;
    let pinned: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(pinned["digest"], 1);
    assert_eq!(digest(&app).await, line, "nothing moved: no new digest");
    let with_digest = verify(&app, &conversation, Some(&line)).await;
    assert_eq!(with_digest["intact"], true, "{with_digest}");

    as_superuser(
        &app.pool,
        &["DELETE FROM events WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND sequence = 5"],
        &conversation,
    )
    .await;
    assert_eq!(verify(&app, &conversation, None).await["intact"], true, "the chain alone cannot tell");
    let answer = verify(&app, &conversation, Some(&line)).await;
    assert_eq!(
        answer,
        json!({ "intact": false, "events": 4, "firstBrokenSequence": 5, "truncated": true,
                "reason": "the stream ends at event 4; the digest saw it at event 5" })
    );
    let (ok, printed) = verify_log(&app, Some(&line)).await;
    assert!(!ok);
    assert!(printed.contains(&format!("conversation {conversation}: the stream ends at event 4")), "{printed}");
}

#[tokio::test]
async fn a_deleted_middle_event_is_named_at_its_own_sequence() {
    let app = TestApp::spawn().await;
    let conversation = conversation(&app).await;
    as_superuser(
        &app.pool,
        &["DELETE FROM events WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND sequence = 3"],
        &conversation,
    )
    .await;
    let answer = verify(&app, &conversation, None).await;
    assert_eq!(answer["firstBrokenSequence"], 3, "{answer}");
    assert_eq!(answer["reason"], "event 3 is missing");
    let (ok, printed) = verify_log(&app, None).await;
    assert!(!ok && printed.contains("event 3 is missing"), "{printed}");
}

#[tokio::test]
async fn a_flipped_byte_inside_a_sealed_field_is_named_and_nothing_answers_internal() {
    let app = TestApp::spawn().await;
    let conversation = conversation(&app).await;
    // The message's sealed text: change one base64 character of the ciphertext.
    as_superuser(
        &app.pool,
        &["UPDATE events SET payload = jsonb_set(payload, '{MessageReceived,content}', to_jsonb( \
             overlay(payload -> 'MessageReceived' ->> 'content' placing \
                     CASE WHEN substr(payload -> 'MessageReceived' ->> 'content', 20, 1) = 'A' THEN 'B' ELSE 'A' END \
                     from 20 for 1))) \
           WHERE aggregate_type = 'conversation' AND aggregate_id = $1 AND sequence = 2"],
        &conversation,
    )
    .await;
    let answer = verify(&app, &conversation, None).await;
    assert_eq!(answer["intact"], false, "{answer}");
    assert_eq!(answer["firstBrokenSequence"], 2, "{answer}");
    let history = app
        .gql(
            "query($c: ID!) { conversationHistory(id: $c) { sequence eventType payload } }",
            json!({ "c": conversation }),
        )
        .await;
    assert!(history["errors"].is_null(), "the auditor's timeline still reads: {history}");
    assert_eq!(history["data"]["conversationHistory"][1]["payload"]["content"], Value::Null);
    let (ok, printed) = verify_log(&app, None).await;
    assert!(!ok && printed.contains("event 2 does not match its hash"), "{printed}");
}

#[tokio::test]
async fn a_whole_stream_removed_after_a_digest_is_named_by_both_checks() {
    let app = TestApp::spawn().await;
    let conversation = conversation(&app).await;
    let line = digest(&app).await;
    as_superuser(
        &app.pool,
        &["DELETE FROM events WHERE aggregate_type = 'conversation' AND aggregate_id = $1"],
        &conversation,
    )
    .await;
    let answer = verify(&app, &conversation, Some(&line)).await;
    assert_eq!(
        (answer["intact"].clone(), answer["truncated"].clone(), answer["events"].clone()),
        (json!(false), json!(true), json!(0))
    );
    let (ok, printed) = verify_log(&app, Some(&line)).await;
    assert!(!ok);
    assert!(
        printed.contains(&format!("conversation {conversation}: removed (the digest saw it at event 5)")),
        "{printed}"
    );
}

#[tokio::test]
async fn a_digest_that_was_altered_or_signed_by_another_key_is_refused() {
    let app = TestApp::spawn().await;
    let conversation = conversation(&app).await;
    let line = digest(&app).await;
    let mut altered: Value = serde_json::from_str(&line).unwrap();
    altered["events"] = json!(1);
    let answer = app.gql(VERIFY, json!({ "c": conversation, "d": altered.to_string() })).await;
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{answer}");
    let key = tests::inboxd(&app.database_url).args(["digest", "--public-key"]).output().await.unwrap();
    let key: Value = serde_json::from_slice(&key.stdout).unwrap();
    assert_eq!(key["key_id"], serde_json::from_str::<Value>(&line).unwrap()["key_id"], "the line names the key");
    assert_eq!(key["public_key"].as_str().map(str::len), Some(44), "{key}");

    // The database's copy of the tree changed: the newest digest can no longer be
    // proven from it, and the answer says so rather than trusting it.
    sqlx::query("UPDATE digest_leaves SET sequence = 9 WHERE aggregate_id = $1")
        .bind(&conversation)
        .execute(&app.pool)
        .await
        .unwrap();
    let answer = verify(&app, &conversation, Some(&line)).await;
    assert_eq!(answer["intact"], false, "{answer}");
    assert_eq!(answer["reason"], "the digest's records in the database were altered");
}

#[tokio::test]
async fn old_unkeyed_rows_and_new_keyed_rows_in_one_log_both_verify() {
    let app = TestApp::spawn().await;
    let conversation = conversation(&app).await;
    // As an earlier release wrote them: the whole stream by the unkeyed rule, at or
    // below the cut-over the migration records.
    rechain(&app.pool, &conversation, 1, unkeyed).await;
    sqlx::query("UPDATE chain_cutover SET position = (SELECT max(global_position) FROM events)")
        .execute(&app.pool)
        .await
        .unwrap();
    // A server that has not cached the stream appends to it, keyed.
    let server = tests::TestServer::start(&app.database_url).await;
    let answer = tests::gql_at(
        &app.client,
        &server.address,
        Some(&app.token),
        "mutation($c: ID!) { setConversationPriority(input: {conversationId: $c, priority: HIGH}) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    assert!(answer["errors"].is_null(), "{answer}");
    let lengths: Vec<i32> = sqlx::query_scalar(
        "SELECT length(hash) FROM events WHERE aggregate_type = 'conversation' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&conversation)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(lengths, [32, 32, 32, 32, 32, 33], "five old rows, one keyed");
    let answer = verify(&app, &conversation, None).await;
    assert_eq!(answer["intact"], true, "{answer}");
    assert_eq!(answer["events"], 6);
    let line = digest(&app).await;
    let (ok, printed) = verify_log(&app, Some(&line)).await;
    assert!(ok, "{printed}");
    server.stop().await;
}

/// A receiver for pushed digests: answers 200 to every POST and keeps the bodies.
async fn digest_receiver() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/digests", listener.local_addr().unwrap());
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let n = socket.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        bodies.lock().unwrap().push(body[..length].to_string());
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

#[tokio::test]
async fn two_servers_on_a_schedule_record_each_digest_once_and_push_each_once() {
    let app = TestApp::spawn().await;
    let (url, received) = digest_receiver().await;
    let scheduled = api::config::Config {
        digest_interval: std::time::Duration::from_millis(100),
        digest_push_url: Some(url),
        ..tests::test_config(&app.database_url)
    };
    let first = tests::TestServer::start_with(scheduled.clone()).await;
    let second = tests::TestServer::start_with(scheduled).await;
    let digests = first.state.digests.clone();
    let key = digests.key();
    for round in 0..3 {
        let inbox = app.create_inbox(&format!("Round {round}")).await;
        app.receive(&inbox, "maria", &format!("m{round}"), "hello").await;
        let events = app.event_count().await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let covered = received
                .lock()
                .unwrap()
                .iter()
                .filter_map(|line| commands::digest::Digest::parse(line, key).ok())
                .any(|digest| digest.events == events);
            if covered {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no pushed digest covers the log's {events} events");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    first.stop().await;
    second.stop().await;
    let ids: Vec<i64> = received
        .lock()
        .unwrap()
        .iter()
        .map(|line| commands::digest::Digest::parse(line, key).expect("a pushed line is a signed digest").digest)
        .collect();
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM log_digests").fetch_one(&app.pool).await.unwrap();
    assert_eq!(ids, (1..=recorded).collect::<Vec<_>>(), "each digest recorded once and pushed once, in order");
    let unpushed: i64 = sqlx::query_scalar("SELECT count(*) FROM log_digests WHERE pushed_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(unpushed, 0);
}
