//! Read models: equal to a replay, applied once across processes, failures visible.

use std::time::Duration;

use api::state::AppState;
use serde_json::json;
use tests::{gql_at, inboxd, read_models, receive_variables, wait_until_projected, TestApp, TestServer, RECEIVE};

/// A small but varied history: two inboxes, contacts, replies, notes, assignment,
/// labels, priority and status changes.
async fn varied_history(app: &TestApp) {
    let support = app.create_inbox("Support").await;
    let sales = app.create_inbox("Sales").await;
    app.ok(
        "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }",
        json!({ "i": support, "u": app.user_id.to_string() }),
    )
    .await;
    app.ok("mutation { createLabel(input: {title: \"vip\", color: \"#ff0000\"}) { id } }", json!({})).await;
    for n in 0..6 {
        let inbox = if n % 2 == 0 { &support } else { &sales };
        let answer =
            app.receive(inbox, &format!("contact-{}", n % 3), &format!("m-{n}"), &format!("question {n}")).await;
        let conversation = answer["conversation"]["id"].as_str().unwrap().to_string();
        app.ok(
            "mutation($c: ID!) { sendMessage(input: {conversationId: $c, content: \"answer\"}) { id } }",
            json!({ "c": conversation }),
        )
        .await;
        if n % 2 == 0 {
            app.ok(
                "mutation($c: ID!, $u: ID!) { assignConversation(input: {conversationId: $c, assigneeId: $u}) { id } }",
                json!({ "c": conversation, "u": app.user_id.to_string() }),
            )
            .await;
            app.ok(
                "mutation($c: ID!) { setConversationLabels(input: {conversationId: $c, labels: [\"vip\", \"billing\"]}) { id } }",
                json!({ "c": conversation }),
            )
            .await;
            app.ok(
                "mutation($c: ID!) { setConversationPriority(input: {conversationId: $c, priority: HIGH}) { id } }",
                json!({ "c": conversation }),
            )
            .await;
        } else {
            app.ok(
                "mutation($c: ID!) { setConversationStatus(input: {conversationId: $c, status: RESOLVED}) { id } }",
                json!({ "c": conversation }),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn rebuild_all_yields_read_models_identical_to_the_live_ones() {
    let app = TestApp::spawn().await;
    varied_history(&app).await;
    app.projected().await;
    let live = app.read_models().await;
    assert!(live["rm_conversations"].len() >= 4 && !live["rm_messages"].is_empty() && !live["rm_contacts"].is_empty());

    let output = inboxd(&app.database_url).args(["rebuild", "--all"]).output().await.expect("rebuild runs");
    assert!(output.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&output.stderr));
    app.projected().await;
    let rebuilt = app.read_models().await;
    for (table, rows) in &live {
        assert_eq!(&rebuilt[table], rows, "{table} differs after rebuild");
    }
}

#[tokio::test]
async fn two_servers_on_one_database_apply_each_event_to_each_read_model_once() {
    let app = TestApp::spawn().await;
    let second = TestServer::start(&app.database_url).await;
    let inbox = app.create_inbox("Shared").await;
    // Alternate servers: each one's commits must reach the projectors of whichever
    // process owns them.
    for n in 0..30 {
        let address = if n % 2 == 0 { &app.server.address } else { &second.address };
        let variables =
            receive_variables(&inbox, &format!("contact-{}", n % 5), &format!("m-{n}"), &format!("text {n}"));
        let answer = gql_at(&app.client, address, Some(&app.token), RECEIVE, variables).await;
        assert!(answer.get("errors").is_none(), "{answer}");
        assert!(answer["data"]["receiveMessage"]["conversation"]["messagesCount"].as_i64().unwrap() >= 1);
    }
    app.projected().await;
    // Each projector runs in exactly one of the two processes.
    for name in projections::all_projectors(&std::sync::Arc::new(projections::keyring::Keyring::new([0; 32])))
        .iter()
        .map(|p| p.name())
    {
        let running = [&app.server.state, &second.state]
            .iter()
            .filter(|s| {
                s.engine.status().get(name).is_some_and(|st| st.state == projections::engine::RunnerState::Running)
            })
            .count();
        assert_eq!(running, 1, "{name} runs in {running} processes");
    }
    let counts: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT c.messages_count, (SELECT count(*) FROM rm_messages m WHERE m.conversation_id = c.conversation_id) \
         FROM rm_conversations c",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(counts.len(), 5);
    assert!(counts.iter().all(|(counted, rows)| i64::from(*counted) == *rows && *rows == 6), "{counts:?}");
    let messages = app.read_models().await["rm_messages"].len();

    // The first server took every projector when it started; stop it, and the
    // second takes over and keeps projecting.
    let owner_state = app.server.state.clone();
    assert!(owner_state.engine.status().values().all(|s| s.state == projections::engine::RunnerState::Running));
    let TestApp { server, pool, client, token, .. } = app;
    server.stop().await;
    let variables = receive_variables(&inbox, "contact-0", "after-stop", "still flowing");
    let answer = gql_at(&client, &second.address, Some(&token), RECEIVE, variables).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    wait_until_projected(&pool).await;
    assert!(second.state.engine.status().values().all(|s| s.state == projections::engine::RunnerState::Running));
    let after = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rm_messages").fetch_one(&pool).await.unwrap();
    assert_eq!(after, messages as i64 + 1);
    second.stop().await;
}

#[tokio::test]
async fn a_projector_that_cannot_apply_an_event_stops_and_shows_in_readyz() {
    let app = TestApp::spawn().await;
    let ready = app.client.get(format!("{}/readyz", app.server.address)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // A row no projector version understands (the log accepts inserts from a superuser).
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, account_id) \
         VALUES ('conversation', gen_random_uuid()::text, 1, 'FromTheFuture', '9', '{\"FromTheFuture\": {}}', '{}', $1)",
    )
    .bind(app.account_id)
    .execute(&app.pool)
    .await
    .unwrap();
    app.server.state.engine.wake().wake();
    let mut failed = Vec::new();
    for _ in 0..100 {
        let ready = app.client.get(format!("{}/readyz", app.server.address)).send().await.unwrap();
        let status = ready.status().as_u16();
        let body: serde_json::Value = ready.json().await.unwrap();
        failed = body["failed_projectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["projector"].as_str().unwrap().to_string())
            .collect();
        if failed.len() == 3 {
            assert_eq!(status, 503, "{body}");
            assert!(!body.to_string().contains("FromTheFuture"), "a summary, the detail is in the log: {body}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    failed.sort();
    assert_eq!(
        failed,
        vec!["inbox_list", "live_metrics", "timeline"],
        "readyz names the stopped projectors; directory ignores the event"
    );
    let metrics = app.client.get(format!("{}/metrics", app.server.address)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("inbox_projector_up{projector=\"inbox_list\"} -1"), "{metrics}");
}

#[tokio::test]
async fn read_models_catch_up_from_the_checkpoint_after_a_restart() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Restart").await;
    app.receive(&inbox, "c", "1", "before").await;
    wait_until_projected(&app.pool).await;
    let before = read_models(&app.pool).await;
    let TestApp { server, pool, database_url, .. } = app;
    server.stop().await;
    let restarted = TestServer::start(&database_url).await;
    wait_until_projected(&pool).await;
    assert_eq!(read_models(&pool).await, before, "a restart re-applies nothing");
    restarted.stop().await;
}

#[tokio::test]
async fn the_head_of_the_log_is_its_last_event_found_through_the_feed_index_without_sorting_the_log() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Head").await;
    for n in 0..3 {
        app.receive(&inbox, "c", &n.to_string(), "hello").await;
    }
    let head = app.server.state.engine.head().await.unwrap();
    let last: (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events \
         ORDER BY transaction_id::text::bigint DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((head.transaction_id, head.global_position), last);
    // Redelivered messages ask for the head: it must not cost a sort of the whole log.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
    let plan: Vec<String> =
        sqlx::query_scalar(&format!("EXPLAIN {}", projections::engine::HEAD_QUERY)).fetch_all(&mut *tx).await.unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("events_feed_order") && !plan.contains("Sort"), "the head query sorts: {plan}");
}

/// Takes the shared feed after `after`, `batch` at a time, until it answers nothing.
async fn take_all(
    feed: &projections::shared_feed::SharedFeed,
    conn: &mut sqlx::PgConnection,
    mut after: projections::feed::FeedPosition,
    batch: i64,
    since: std::time::Instant,
) -> Vec<(projections::feed::FeedPosition, serde_json::Value)> {
    let mut taken = Vec::new();
    loop {
        let events = feed.read(conn, after, batch, since).await.unwrap();
        let Some(last) = events.last() else { return taken };
        after = last.position;
        taken.extend(events.iter().map(|e| (e.position, e.payload.clone())));
    }
}

#[tokio::test]
async fn the_shared_feed_hands_every_consumer_what_a_read_of_its_own_would() {
    use projections::feed::{read_sealed_after, FeedPosition};
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Shared").await;
    for n in 0..4 {
        app.receive(&inbox, &format!("c{n}"), "1", "hello").await;
    }
    let bodies = ["conversation", "contact"];
    let mut conn = app.pool.acquire().await.unwrap();
    let direct = |events: Vec<projections::feed::FeedEvent>| {
        events.into_iter().map(|e| (e.position, e.payload)).collect::<Vec<_>>()
    };
    let all = direct(read_sealed_after(&mut conn, None, Some(&bodies), FeedPosition::START, 1000).await.unwrap());
    assert!(all.len() > 6, "a history longer than two batches: {}", all.len());

    let feed = projections::shared_feed::SharedFeed::default();
    feed.carry_bodies_of(&bodies);
    let woken = std::time::Instant::now();
    // Three at a time: a batch that filled is read on from, not taken for the head.
    assert_eq!(take_all(&feed, &mut conn, FeedPosition::START, 3, woken).await, all);
    // A consumer woken before those reads takes them from memory, whole.
    assert_eq!(take_all(&feed, &mut conn, FeedPosition::START, 1000, woken).await, all);
    // One woken after a new message reads it, from where the others stopped.
    let last = all.last().unwrap().0;
    app.receive(&inbox, "c9", "1", "later").await;
    let woken = std::time::Instant::now();
    let new = direct(read_sealed_after(&mut conn, None, Some(&bodies), last, 1000).await.unwrap());
    assert!(!new.is_empty());
    assert_eq!(take_all(&feed, &mut conn, last, 3, woken).await, new);
    // From the start again: the old events and the new, in order.
    assert_eq!(take_all(&feed, &mut conn, FeedPosition::START, 1000, woken).await, [all, new].concat());
}

#[tokio::test]
async fn a_write_in_another_process_wakes_the_projectors_without_waiting_for_their_poll() {
    let database_url = tests::create_database().await;
    let config = api::config::Config { projector_poll: Duration::from_secs(120), ..tests::test_config(&database_url) };
    let server = TestServer::start_with(config).await;
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    // Let the runners start, catch up on the empty log and go to sleep, and the
    // server listen for other processes' NOTIFYs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listening: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
             AND query = 'LISTEN \"inbox_events\"')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if listening {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server never listened for wake-ups");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = inboxd(&database_url)
        .args([
            "bootstrap",
            "--account-name",
            "Elsewhere",
            "--email",
            "ops@elsewhere.test",
            "--password",
            "a long password",
        ])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Only the NOTIFY the other process sends after its commit can wake them this soon
    // (their poll is two minutes; a loaded suite's other transactions may hold the
    // watermark back a while, and the woken runners keep looking, at most a second
    // apart, as long as committed events wait above it).
    tests::wait_until_projected_within(&pool, Duration::from_secs(60)).await;
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_agents").fetch_one(&pool).await.unwrap();
    assert_eq!(agents, 1);
    server.stop().await;
}

/// Whether `server` runs the inbox list projector.
fn runs_inbox_list(server: &AppState) -> bool {
    server.engine.status().get("inbox_list").is_some_and(|s| s.state == projections::engine::RunnerState::Running)
}

/// Cuts the connections of whichever process runs the projectors (they hold their
/// advisory locks on them), until `to` runs the inbox list.
async fn move_projectors(app: &TestApp, to: &AppState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !runs_inbox_list(to) {
        assert!(tokio::time::Instant::now() < deadline, "the projectors did not move");
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .execute(&app.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

#[tokio::test]
async fn a_projector_that_takes_its_work_back_reads_what_another_process_wrote_meanwhile() {
    let app = TestApp::spawn().await;
    let second = TestServer::start(&app.database_url).await;
    let inbox = app.create_inbox("Shared").await;
    let deliver = |address: String, n: usize| {
        let (client, token, inbox) = (app.client.clone(), app.token.clone(), inbox.clone());
        async move {
            let variables = receive_variables(&inbox, "regular", &format!("m-{n}"), "hello again");
            let answer = gql_at(&client, &address, Some(&token), RECEIVE, variables).await;
            assert!(answer.get("errors").is_none(), "{answer}");
        }
    };
    // The first server projects the conversation's first messages (and remembers its row)…
    move_projectors(&app, &app.server.state).await;
    for n in 0..3 {
        deliver(app.server.address.clone(), n).await;
    }
    app.projected().await;
    // …the second projects the next ones…
    move_projectors(&app, &second.state).await;
    for n in 3..5 {
        deliver(second.address.clone(), n).await;
    }
    app.projected().await;
    // …and when the first takes the projector back, it counts from what is stored.
    move_projectors(&app, &app.server.state).await;
    deliver(app.server.address.clone(), 5).await;
    app.projected().await;
    let count: i32 =
        sqlx::query_scalar("SELECT messages_count FROM rm_conversations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 6);
    second.stop().await;
}

/// The indexes of the read models, by name: a rebuild keeps them as they were.
async fn read_model_indexes(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename LIKE 'rm\\_%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rebuild_switches_to_the_new_tables_without_a_moment_where_queries_answer_empty() {
    let app = TestApp::spawn().await;
    varied_history(&app).await;
    app.projected().await;
    let live = app.read_models().await;
    let indexes = read_model_indexes(&app.pool).await;
    let conversations = live["rm_conversations"].len();

    // Readers keep asking while the rebuild runs; every answer must be whole.
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (client, address, token, stop) =
            (app.client.clone(), app.server.address.clone(), app.token.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.is_cancelled() {
                let answer = gql_at(
                    &client,
                    &address,
                    Some(&token),
                    "{ conversations(first: 50) { edges { node { id messages { edges { node { id } } } } } } \
                     agents { id } }",
                    json!({}),
                )
                .await;
                answers.push(answer);
            }
            answers
        })
    };
    let output = inboxd(&app.database_url).args(["rebuild", "--all"]).output().await.expect("rebuild runs");
    assert!(output.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&output.stderr));
    stop.cancel();
    let answers = reader.await.unwrap();
    assert!(answers.len() > 1, "the reader asked during the rebuild");
    for answer in &answers {
        let edges = answer["data"]["conversations"]["edges"].as_array().unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(edges.len(), conversations, "a query during the rebuild saw a partial inbox: {answer}");
        assert!(edges.iter().all(|e| !e["node"]["messages"]["edges"].as_array().unwrap().is_empty()), "{answer}");
        assert!(!answer["data"]["agents"].as_array().unwrap().is_empty(), "{answer}");
    }
    app.projected().await;
    assert_eq!(app.read_models().await, live, "the rebuilt read models equal the live ones");
    assert_eq!(read_model_indexes(&app.pool).await, indexes, "the indexes keep their names");
    let shadows: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(shadows, 0, "no shadow schema is left behind");

    // The live runner follows the switch: new events land in the new tables once.
    let inbox = app.create_inbox("After").await;
    app.receive(&inbox, "late", "late-1", "after the rebuild").await;
    app.projected().await;
    assert_eq!(app.read_models().await["rm_conversations"].len(), conversations + 1);
}

#[tokio::test]
async fn a_rebuild_that_fails_midway_leaves_the_read_models_as_they_were_and_says_so() {
    let app = TestApp::spawn().await;
    varied_history(&app).await;
    app.projected().await;
    let before = app.read_models().await;
    // Damage (not input): an event already projected no longer opens.
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica").execute(&mut *conn).await.unwrap();
    sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload, '{MessageReceived,content}', '\"v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAA\"') \
         WHERE global_position = (SELECT min(global_position) FROM events WHERE event_type = 'MessageReceived')",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("SET session_replication_role = origin").execute(&mut *conn).await.unwrap();
    drop(conn);

    let output = inboxd(&app.database_url).args(["rebuild", "timeline"]).output().await.expect("rebuild runs");
    assert!(!output.status.success(), "a failed rebuild exits non-zero");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("failed to open"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(app.read_models().await, before, "the live read models answer exactly as before");
    let messages = app
        .ok("{ conversations(first: 50) { edges { node { messages { edges { node { id } } } } } } }", json!({}))
        .await;
    assert!(messages.to_string().contains("\"id\""), "{messages}");

    let ready = app.client.get(format!("{}/readyz", app.server.address)).send().await.unwrap();
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["failed_rebuilds"], json!([{ "projector": "timeline" }]), "{body}");
    assert_eq!(body["ready"], true, "the live read model still serves: {body}");
    let metrics = app.client.get(format!("{}/metrics", app.server.address)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("inbox_projector_rebuild_failed{projector=\"timeline\"} 1"), "{metrics}");
    assert!(metrics.contains("inbox_projector_rebuild_failed{projector=\"inbox_list\"} 0"), "{metrics}");
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT rebuild_error FROM projector_checkpoints WHERE projector = 'timeline'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(recorded.is_some_and(|e| e.contains("failed to open")), "the error is recorded");
}
