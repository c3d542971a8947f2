//! Outgoing webhooks: one accepted delivery per event and webhook, signed so that the
//! Standard Webhooks library verifies it, retried with a stable id, guarded against
//! aiming inside, and never sent again by a rebuild.

use std::time::Duration;

use serde_json::{json, Value};
use tests::receiver::{Received, Receiver};
use tests::{test_config, TestApp, TestServer};

const CREATE: &str = "mutation($url: String!, $events: [String!]!) { \
    createWebhook(input: {name: \"CRM\", url: $url, events: $events}) { id secret webhook { active events } } }";

async fn create_webhook(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let created = app.ok(CREATE, json!({ "url": url, "events": events })).await;
    let id = created["createWebhook"]["id"].as_str().unwrap().to_string();
    let secret = created["createWebhook"]["secret"].as_str().unwrap().to_string();
    (id, secret)
}

/// Whether the `standardwebhooks` library (PyPI) accepts the request as signed with
/// `secret`. scripts/test.sh installs it in a virtualenv and names its python.
fn verified_by_the_standard_library(secret: &str, request: &Received) -> bool {
    let python = std::env::var("WEBHOOK_VERIFIER_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import sys, json\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  headers = json.loads(sys.argv[2])\n\
                  Webhook(sys.argv[1]).verify(sys.stdin.buffer.read(), headers)\n\
                  print('verified')";
    let headers = json!({
        "webhook-id": request.header("webhook-id"),
        "webhook-timestamp": request.header("webhook-timestamp"),
        "webhook-signature": request.header("webhook-signature"),
    });
    let mut child = std::process::Command::new(python)
        .args(["-c", script, secret, &headers.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs (scripts/test.sh sets WEBHOOK_VERIFIER_PYTHON)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &request.body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() || String::from_utf8_lossy(&output.stderr).contains("WebhookVerificationError"),
        "the verifier did not run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim() == "verified"
}

async fn deliveries(app: &TestApp, webhook: &str) -> Vec<Value> {
    let answer = app
        .ok(
            "query($w: ID!) { webhookDeliveries(webhookId: $w) { edges { node { id eventName webhookEventId status \
             attempts lastStatusCode lastError nextAttemptAt deliveredAt } } } }",
            json!({ "w": webhook }),
        )
        .await;
    answer["webhookDeliveries"]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect()
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_one_accepted_delivery_with_the_same_id_on_each_attempt_and_a_valid_signature() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[500, 500]).await;
    let (webhook, secret) = create_webhook(&app, &receiver.url, &["message_created"]).await;
    assert!(secret.starts_with("whsec_"));
    let inbox = app.create_inbox("Support").await;
    app.receive(&inbox, "c-1", "m-1", "Olá, meu pedido não chegou").await;

    let accepted = receiver.wait_for_accepted(1, Duration::from_secs(30)).await;
    assert_eq!(accepted.len(), 1, "one accepted delivery: {:?}", receiver.received());
    let attempts = receiver.received();
    assert_eq!(attempts.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 500, 200]);
    let id = attempts[0].header("webhook-id");
    assert!(id.starts_with("msg_"), "{id}");
    assert!(attempts.iter().all(|r| r.header("webhook-id") == id), "the same webhook-id on every attempt");
    for attempt in &attempts {
        assert!(verified_by_the_standard_library(&secret, attempt), "the library verifies every attempt");
    }
    let mut forged = accepted[0].clone();
    forged.body = axum::body::Bytes::from(forged.body.iter().rev().copied().collect::<Vec<u8>>());
    assert!(!verified_by_the_standard_library(&secret, &forged), "a changed body does not verify");

    let body = accepted[0].json();
    assert_eq!(body["event"], "message_created");
    assert_eq!(body["account_id"], app.account_id.to_string());
    assert_eq!(body["data"]["content"], "Olá, meu pedido não chegou");
    assert_eq!(body["data"]["messageType"], "incoming");
    assert!(body["timestamp"].is_string());

    let log = deliveries(&app, &webhook).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["status"], "DELIVERED");
    assert_eq!(log[0]["attempts"], 3);
    assert_eq!(log[0]["lastStatusCode"], 200);
    assert_eq!(log[0]["webhookEventId"], id.as_str());
    assert!(log[0]["deliveredAt"].is_string());
    let attempts_kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_delivery_attempts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(attempts_kept, 3, "the delivery log keeps every attempt");

    // Nothing more arrives: each event once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn each_subscribed_event_is_delivered_once_and_unsubscribed_ones_never() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[]).await;
    let (webhook, _) =
        create_webhook(&app, &receiver.url, &["conversation_created", "message_created", "contact_created"]).await;
    let inbox = app.create_inbox("Support").await;
    let first = app.receive(&inbox, "c-1", "m-1", "first").await;
    app.receive(&inbox, "c-1", "m-2", "second").await;
    // A redelivery of m-2 is no new event.
    app.receive(&inbox, "c-1", "m-2", "second").await;
    let conversation = first["conversation"]["id"].as_str().unwrap().to_string();
    app.ok(
        "mutation($c: ID!) { setConversationStatus(input: {conversationId: $c, status: RESOLVED}) { id } }",
        json!({ "c": conversation }),
    )
    .await;

    // contact_created, conversation_created, two message_created.
    let accepted = receiver.wait_for_accepted(4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted_now = receiver.accepted();
    assert_eq!(accepted_now.len(), 4, "{:?}", accepted.iter().map(|r| r.json()).collect::<Vec<_>>());
    let mut names: Vec<String> = accepted_now.iter().map(|r| r.json()["event"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["contact_created", "conversation_created", "message_created", "message_created"]);
    let created = accepted_now.iter().find(|r| r.json()["event"] == "conversation_created").unwrap().json();
    assert_eq!(created["data"]["id"], conversation.as_str());
    assert_eq!(created["data"]["inboxId"], inbox.as_str());
    let ids: std::collections::BTreeSet<String> = accepted_now.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 4, "one webhook-id per event");
    assert_eq!(deliveries(&app, &webhook).await.len(), 4);
}

#[tokio::test]
async fn a_receiver_that_answers_gone_disables_the_webhook_until_an_administrator_enables_it() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[410]).await;
    let (webhook, _) = create_webhook(&app, &receiver.url, &["message_created"]).await;
    let inbox = app.create_inbox("Support").await;
    app.receive(&inbox, "c-1", "m-1", "hello").await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let disabled = loop {
        let hooks = app.ok("{ webhooks { id active disabledReason } }", json!({})).await;
        let hook = hooks["webhooks"][0].clone();
        if hook["active"] == false || tokio::time::Instant::now() > deadline {
            break hook;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(disabled["active"], false, "{disabled}");
    assert!(disabled["disabledReason"].as_str().unwrap().contains("410"), "{disabled}");
    let log = deliveries(&app, &webhook).await;
    assert_eq!(log[0]["status"], "DEAD");
    assert_eq!(log[0]["lastStatusCode"], 410);
    // The disabling is in the log, by the policy, caused by the event delivered.
    let (actor, causation): (String, Option<String>) = sqlx::query_as(
        "SELECT metadata ->> 'actor', metadata ->> 'causation_id' FROM events WHERE event_type = 'WebhookDisabled'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(actor, "system:webhooks");
    let causation = causation.unwrap();
    assert!(causation.starts_with("conversation/"), "{causation}");
    // The auditor's view of the log shows it, in the causing event's correlation.
    let logged = app
        .ok("{ auditLog(filter: {eventTypes: [\"WebhookDisabled\"]}) { edges { node { eventType actor causationId correlationId } } } }", json!({}))
        .await;
    let disabled_event = logged["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .find(|e| e["eventType"] == "WebhookDisabled")
        .expect("WebhookDisabled in the audit log");
    assert_eq!(disabled_event["causationId"], causation.as_str());
    let (stream, sequence) = causation.rsplit_once('/').unwrap();
    let cause_correlation: String = sqlx::query_scalar(
        "SELECT metadata ->> 'correlation_id' FROM events WHERE aggregate_type || '/' || aggregate_id = $1 AND sequence = $2",
    )
    .bind(stream)
    .bind(sequence.parse::<i64>().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(disabled_event["correlationId"], cause_correlation.as_str());

    // Disabled: the next event is not sent.
    app.receive(&inbox, "c-1", "m-2", "anyone?").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 1);

    let enabled = app
        .ok(
            "mutation($w: ID!) { updateWebhook(input: {webhookId: $w, active: true}) { webhook { active disabledReason } } }",
            json!({ "w": webhook }),
        )
        .await;
    assert_eq!(enabled["updateWebhook"]["webhook"]["active"], true);
    assert_eq!(enabled["updateWebhook"]["webhook"]["disabledReason"], Value::Null);
    app.receive(&inbox, "c-1", "m-3", "back?").await;
    let accepted = receiver.wait_for_accepted(1, Duration::from_secs(20)).await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].json()["data"]["content"], "back?");
}

#[tokio::test]
async fn a_url_aimed_inside_or_nowhere_is_refused_unless_the_operator_allows_private_targets() {
    let app = TestApp::spawn().await;
    let guarded = TestServer::start_with(api::config::Config {
        outbound_allow_private_targets: false,
        ..test_config(&app.database_url)
    })
    .await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest",
        "http://localhost/x",
        "http://nowhere.invalid/x",
    ] {
        let answer = tests::gql_at(
            &app.client,
            &guarded.address,
            Some(&app.token),
            CREATE,
            json!({ "url": url, "events": ["message_created"] }),
        )
        .await;
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{url}: {answer}");
    }
    let unknown = app.gql(CREATE, json!({ "url": "https://example.com/x", "events": ["message_deleted"] })).await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{unknown}");
    assert!(unknown["errors"][0]["message"].as_str().unwrap().contains("message_deleted"));
    // Allowed by the operator (the test servers' setting).
    let receiver = Receiver::start(&[]).await;
    create_webhook(&app, &receiver.url, &["message_created"]).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, 1);
    // Secrets and URLs are not in the log, nor in clear in their table.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE payload::text LIKE '%whsec_%' OR payload::text LIKE '%/hook%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
    guarded.stop().await;
}

#[tokio::test]
async fn a_rebuild_sends_nothing_again() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[]).await;
    create_webhook(&app, &receiver.url, &["message_created", "conversation_created"]).await;
    let inbox = app.create_inbox("Support").await;
    app.receive(&inbox, "c-1", "m-1", "hello").await;
    assert_eq!(receiver.wait_for_accepted(2, Duration::from_secs(20)).await.len(), 2);
    let rebuilt = tests::inboxd(&app.database_url).args(["rebuild", "--all"]).output().await.unwrap();
    assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), 2, "a rebuild re-sends nothing");
}

#[tokio::test]
async fn two_servers_deliver_each_event_once() {
    let app = TestApp::spawn().await;
    let second = TestServer::start(&app.database_url).await;
    let receiver = Receiver::start(&[500]).await;
    create_webhook(&app, &receiver.url, &["message_created"]).await;
    let inbox = app.create_inbox("Support").await;
    for n in 0..20 {
        let address = if n % 2 == 0 { &app.server.address } else { &second.address };
        let variables = tests::receive_variables(&inbox, &format!("c-{}", n % 3), &format!("m-{n}"), "hi");
        let answer = tests::gql_at(&app.client, address, Some(&app.token), tests::RECEIVE, variables).await;
        assert!(answer["errors"].is_null(), "{answer}");
    }
    let accepted = receiver.wait_for_accepted(20, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let accepted_now = receiver.accepted();
    assert_eq!(accepted.len(), 20);
    let ids: std::collections::BTreeSet<String> = accepted_now.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!((accepted_now.len(), ids.len()), (20, 20), "each event accepted once");
    let jobs: Vec<(String, i32)> =
        sqlx::query_as("SELECT state, attempts FROM jobs").fetch_all(&app.pool).await.unwrap();
    assert_eq!(jobs.len(), 20);
    assert_eq!(jobs.iter().map(|(_, attempts)| attempts).sum::<i32>(), 21, "each job ran once, one retried");
    second.stop().await;
}

#[tokio::test]
async fn stopping_the_process_that_runs_the_policy_hands_it_to_the_other() {
    let app = TestApp::spawn().await;
    let second = TestServer::start(&app.database_url).await;
    let receiver = Receiver::start(&[]).await;
    create_webhook(&app, &receiver.url, &["message_created"]).await;
    let inbox = app.create_inbox("Support").await;
    app.receive(&inbox, "c-1", "m-1", "before").await;
    assert_eq!(receiver.wait_for_accepted(1, Duration::from_secs(20)).await.len(), 1);

    // Whichever runs the policy stops; the other takes it over.
    let runs_here = |state: &api::state::AppState| {
        state.policies.status().get("webhooks").is_some_and(|s| s.state != projections::policy::PolicyState::Standby)
    };
    let (survivor, stopped_first) = if runs_here(&app.server.state) { (&second, true) } else { (&app.server, false) };
    let survivor_address = survivor.address.clone();
    let survivor_state = survivor.state.clone();
    if stopped_first {
        let TestApp { server, token, client, .. } = app;
        server.stop().await;
        let variables = tests::receive_variables(&inbox, "c-1", "m-2", "after");
        let answer = tests::gql_at(&client, &survivor_address, Some(&token), tests::RECEIVE, variables).await;
        assert!(answer["errors"].is_null(), "{answer}");
    } else {
        second.stop().await;
        app.receive(&inbox, "c-1", "m-2", "after").await;
    }
    let accepted = receiver.wait_for_accepted(2, Duration::from_secs(20)).await;
    assert_eq!(accepted.len(), 2, "delivered after the takeover");
    assert_eq!(accepted[1].json()["data"]["content"], "after");
    assert!(runs_here(&survivor_state), "the survivor runs the policy");
}

#[tokio::test]
async fn a_server_killed_with_deliveries_pending_delivers_each_event_once_after_restart() {
    let app = TestApp::spawn().await;
    let TestApp { server, pool, database_url, token, client, .. } = app;
    server.stop().await;
    let receiver_port = tests::free_port();
    let receiver_url = format!("http://127.0.0.1:{receiver_port}/hook");
    let env = [("OUTBOUND_ALLOW_PRIVATE_TARGETS", "true"), ("JOB_LEASE_SECS", "2")];
    let (mut child, address) = tests::serve(&database_url, &env).await;
    let created = tests::gql_at(
        &client,
        &address,
        Some(&token),
        CREATE,
        json!({ "url": receiver_url, "events": ["message_created"] }),
    )
    .await;
    assert!(created["errors"].is_null(), "{created}");
    let inbox = tests::gql_at(
        &client,
        &address,
        Some(&token),
        "mutation { createInbox(input: {name: \"S\", channel: API}) { id } }",
        json!({}),
    )
    .await;
    let inbox = inbox["data"]["createInbox"]["id"].as_str().unwrap().to_string();
    let messages = 12;
    for n in 0..messages {
        let variables = tests::receive_variables(&inbox, &format!("c-{}", n % 3), &format!("m-{n}"), "hello");
        let answer = tests::gql_at(&client, &address, Some(&token), tests::RECEIVE, variables).await;
        assert!(answer["errors"].is_null(), "{answer}");
    }
    // The receiver is down: every delivery fails its first attempt, then the server dies.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let tried: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE attempts >= 1").fetch_one(&pool).await.unwrap();
        if tried == messages || tokio::time::Instant::now() > deadline {
            assert_eq!(tried, messages, "every delivery was tried while the receiver was down");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().expect("SIGKILL the server");
    child.wait().await.unwrap();

    let receiver = Receiver::start_on(receiver_port, &[]).await;
    let (mut restarted, _) = tests::serve(&database_url, &env).await;
    let accepted = receiver.wait_for_accepted(messages as usize, Duration::from_secs(45)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted_now = receiver.accepted();
    let ids: std::collections::BTreeSet<String> = accepted_now.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(accepted.len(), messages as usize, "every event delivered after the restart");
    assert_eq!((accepted_now.len(), ids.len()), (messages as usize, messages as usize), "none accepted twice");
    restarted.start_kill().unwrap();
    restarted.wait().await.unwrap();
}

#[tokio::test]
async fn a_contact_erased_before_the_delivery_succeeds_has_no_content_sent() {
    let app = TestApp::spawn().await;
    // Refused until the erasure has committed, however long it takes to get there.
    let receiver = Receiver::start(&[500; 8]).await;
    create_webhook(&app, &receiver.url, &["message_created"]).await;
    let inbox = app.create_inbox("Support").await;
    app.receive(&inbox, "c-1", "m-1", "meu CPF é 123.456.789-09").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.received().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(receiver.received()[0].json()["data"]["content"].as_str().unwrap().contains("CPF"));
    app.projected().await;
    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM rm_contacts").fetch_one(&app.pool).await.unwrap();
    app.ok(
        "mutation($k: ID!) { eraseContact(input: {contactId: $k, reason: \"LGPD request\"}) { erased } }",
        json!({ "k": contact }),
    )
    .await;
    receiver.accept_from_now();
    // The next attempt, on the job schedule (1 s, 3 s, then 30 s after the first).
    let accepted = receiver.wait_for_accepted(1, Duration::from_secs(45)).await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].json()["data"]["content"], Value::Null, "the retry sends no erased content");
    assert!(!String::from_utf8_lossy(&accepted[0].body).contains("CPF"));
}

/// A webhook whose deliveries keep failing: after the last attempt (a day of retries,
/// on an injected clock), the delivery is dead and the webhook disabled with why.
#[tokio::test]
async fn a_webhook_whose_deliveries_die_is_disabled_with_the_reason() {
    use commands::jobs::Jobs;
    use commands::webhook::delivery::WebhookDelivery;
    use std::sync::Arc;

    let database = tests::create_database().await;
    // This server runs no jobs: the test's worker, on its own clock, runs them.
    let server = TestServer::start_with(api::config::Config { job_workers: 0, ..test_config(&database) }).await;
    let state = server.state.clone();
    let created = state.commands.bootstrap("Acme", "admin@acme.test", "correct horse battery", None).await.unwrap();
    let client = reqwest::Client::new();
    let gql = |query: &'static str, variables: Value| {
        let (client, address, token) = (client.clone(), server.address.clone(), created.token.clone());
        async move { tests::gql_at(&client, &address, Some(&token), query, variables).await }
    };
    let receiver = Receiver::start(&[500; 20]).await;
    let hook = gql(CREATE, json!({ "url": receiver.url, "events": ["message_created"] })).await;
    let webhook = hook["data"]["createWebhook"]["id"].as_str().unwrap().to_string();
    let inbox = gql("mutation { createInbox(input: {name: \"S\", channel: API}) { id } }", json!({})).await;
    let inbox = inbox["data"]["createInbox"]["id"].as_str().unwrap().to_string();
    gql(tests::RECEIVE, tests::receive_variables(&inbox, "c-1", "m-1", "hello")).await;

    let clock = tests::ManualClock::new();
    let delivery = WebhookDelivery::new(state.commands.clone(), state.outbound.clone(), clock.clone());
    let jobs =
        Jobs::new(state.pool.clone(), clock.clone(), vec![Arc::new(delivery)], Duration::from_secs(60), Duration::ZERO);
    let mut ran = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ran < 8 && tokio::time::Instant::now() < deadline {
        ran += jobs.run_due().await.unwrap();
        clock.advance(Duration::from_secs(17 * 3600));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ran, 8, "eight attempts");
    assert_eq!(receiver.received().len(), 8);
    let hooks = gql("{ webhooks { active disabledReason } }", json!({})).await;
    assert_eq!(hooks["data"]["webhooks"][0]["active"], false);
    let reason = hooks["data"]["webhooks"][0]["disabledReason"].as_str().unwrap().to_string();
    assert!(reason.contains("failed 8 times") && reason.contains("500"), "{reason}");
    let log = gql(
        "query($w: ID!) { webhookDeliveries(webhookId: $w) { edges { node { status attempts lastStatusCode } } } }",
        json!({ "w": webhook }),
    )
    .await;
    let node = &log["data"]["webhookDeliveries"]["edges"][0]["node"];
    assert_eq!(
        (node["status"].as_str(), node["attempts"].as_i64(), node["lastStatusCode"].as_i64()),
        (Some("DEAD"), Some(8), Some(500))
    );
    server.stop().await;
}
