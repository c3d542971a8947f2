//! A server killed mid-ingest loses nothing it acknowledged; one whose database
//! connections are cut recovers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tests::{gql_at, inboxd, read_models, receive_variables, serve, wait_until_projected, TestApp, RECEIVE};

async fn start_server(database_url: &str) -> (tokio::process::Child, String) {
    serve(database_url, &[]).await
}

#[tokio::test]
async fn killing_the_server_mid_ingest_loses_no_acknowledged_message_and_projections_equal_a_replay() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Crash").await;
    let TestApp { server, pool, database_url, token, client, .. } = app;
    server.stop().await;

    let (mut child, address) = start_server(&database_url).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..4 {
        let (client, address, token, inbox, acknowledged) =
            (client.clone(), address.clone(), token.clone(), inbox.clone(), acknowledged.clone());
        senders.spawn(async move {
            for n in 0.. {
                let variables =
                    receive_variables(&inbox, &format!("contact-{}", n % 7), &format!("s{sender}-{n}"), "payload");
                let request = client
                    .post(format!("{address}/graphql"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "query": RECEIVE, "variables": variables }));
                let Ok(response) = request.send().await else { return };
                let Ok(answer) = response.json::<serde_json::Value>().await else { return };
                match answer["data"]["receiveMessage"]["id"].as_str() {
                    Some(id) => acknowledged.lock().unwrap().push(id.to_string()),
                    None => return,
                }
            }
        });
    }
    while acknowledged.lock().unwrap().len() < 120 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().expect("SIGKILL the server");
    child.wait().await.expect("the server exits");
    while senders.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().unwrap().clone();

    let (mut restarted, address) = start_server(&database_url).await;
    wait_until_projected(&pool).await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT message_id::text FROM rm_messages").fetch_all(&pool).await.unwrap();
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "{} acknowledged messages were lost: {missing:?}", missing.len());

    // The restarted server takes traffic, and the read models equal a full replay.
    let answer =
        gql_at(&client, &address, Some(&token), RECEIVE, receive_variables(&inbox, "after", "x", "after restart"))
            .await;
    assert!(answer.get("errors").is_none(), "{answer}");
    wait_until_projected(&pool).await;
    let live = read_models(&pool).await;
    restarted.start_kill().unwrap();
    restarted.wait().await.unwrap();
    let output = inboxd(&database_url).args(["rebuild", "--all"]).output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(read_models(&pool).await, live);
}

/// The database ending the server's sessions (a restart, a failover, an administrator)
/// costs at most the requests that meet a dead connection, each refused as UNAVAILABLE
/// (retryable, not a defect) with nothing stored; the server reconnects, and what follows lands and is projected.
#[tokio::test]
async fn the_server_recovers_when_the_database_ends_its_connections() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Failover").await;
    // Every connection the write path and the projectors keep is open by now.
    app.receive(&inbox, "before", "m-0", "before").await;
    app.projected().await;
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'inboxd' AND datname = current_database()) AS ended",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(ended >= 5, "the committer, numbering and three runners were connected: {ended}");

    let mut outcomes = Vec::new();
    for n in 0..20 {
        let answer = app.gql(RECEIVE, receive_variables(&inbox, &format!("after-{n}"), "m-1", "after")).await;
        let code = answer["errors"][0]["extensions"]["code"].as_str().map(str::to_string);
        if let Some(code) = &code {
            assert_eq!(code, "UNAVAILABLE", "{answer}");
        }
        outcomes.push(code.is_none());
    }
    let landed = outcomes.iter().filter(|ok| **ok).count();
    assert!(outcomes[10..].iter().all(|ok| *ok), "the server recovered within ten requests: {outcomes:?}");
    app.projected().await;
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_messages").fetch_one(&app.pool).await.unwrap();
    assert_eq!(messages, 1 + landed as i64, "every message that landed is projected, and no refused one");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageReceived'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 1 + landed as i64, "a refused message left nothing in the log");
}

/// Ends every connection of the server's, as a failover would.
async fn end_server_connections(pool: &sqlx::PgPool) {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'inboxd' AND datname = current_database()",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Replies sent while the database ends the server's connections again and again: a
/// failure is UNAVAILABLE (with a 503 and Retry-After), a client retrying with its
/// `clientMessageId` gets one reply per key, and every acknowledged reply is kept.
#[tokio::test]
async fn replies_retried_with_their_client_message_id_through_failovers_land_once() {
    let app = TestApp::spawn().await;
    let inbox = app.create_inbox("Failover").await;
    let conversation =
        app.receive(&inbox, "c", "m-0", "hello").await["conversation"]["id"].as_str().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let killer = {
        let (pool, stop) = (app.pool.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                end_server_connections(&pool).await;
            }
        })
    };
    let mut senders = tokio::task::JoinSet::new();
    for agent in 0..4 {
        let (client, address, token, conversation) =
            (app.client.clone(), app.server.address.clone(), app.token.clone(), conversation.clone());
        senders.spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refusals = Vec::new();
            for n in 0..10 {
                let key = format!("reply-{agent}-{n}");
                loop {
                    let response = client
                        .post(format!("{address}/graphql"))
                        .bearer_auth(&token)
                        .json(&json!({
                            "query": "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
                            "variables": { "i": { "conversationId": conversation, "content": key, "clientMessageId": key } },
                        }))
                        .send()
                        .await
                        .unwrap();
                    let (status, retry_after) = (response.status().as_u16(), response.headers().get("retry-after").cloned());
                    let answer: serde_json::Value = response.json().await.unwrap();
                    match answer["errors"][0]["extensions"]["code"].as_str() {
                        None => {
                            acknowledged.push((key.clone(), answer["data"]["sendMessage"]["id"].as_str().unwrap().to_string()));
                            break;
                        }
                        Some(code) => refusals.push((code.to_string(), status, retry_after.is_some())),
                    }
                }
            }
            (acknowledged, refusals)
        });
    }
    let mut acknowledged = Vec::new();
    let mut refusals = Vec::new();
    while let Some(done) = senders.join_next().await {
        let (a, r) = done.unwrap();
        acknowledged.extend(a);
        refusals.extend(r);
    }
    stop.cancel();
    killer.await.unwrap();
    for (code, status, retry_after) in &refusals {
        assert_eq!(
            (code.as_str(), *status, *retry_after),
            ("UNAVAILABLE", 503, true),
            "every failure says it is retryable"
        );
    }
    println!("{} refusals while connections were ended", refusals.len());
    assert_eq!(acknowledged.len(), 40);
    app.projected().await;
    let replies: Vec<(String, i64)> =
        sqlx::query_as("SELECT content, count(*) FROM rm_messages WHERE message_type = 'outgoing' GROUP BY content")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(replies.len(), 40, "every acknowledged reply is kept ({} refusals met)", refusals.len());
    assert!(replies.iter().all(|(_, n)| *n == 1), "one reply per client message id: {replies:?}");
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MessageSent'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sent, 40);
}

/// A TCP link between the server and PostgreSQL that a test can cut (every live
/// connection reset, new ones refused) and mend: the database gone, as an outage or
/// a network partition looks to the server.
struct Link {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    live: Arc<Mutex<tokio::task::JoinSet<()>>>,
}

impl Link {
    async fn to(target: &str) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let live = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
        let (target, accepting, tasks) = (target.to_string(), up.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the server sees its connection fail
                }
                let target = target.clone();
                tasks.lock().unwrap().spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Link { port, up, live }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.live.lock().unwrap().abort_all();
    }

    fn mend(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// While the database cannot be reached, a token the server has not seen cannot be
/// looked up: that is UNAVAILABLE (503, Retry-After), never UNAUTHENTICATED; and the
/// same token works once the database is back.
#[tokio::test]
async fn authentication_during_an_outage_is_unavailable_not_unauthenticated() {
    let database_url = tests::create_database().await;
    let link = Link::to("127.0.0.1:5432").await;
    let through_link = database_url.replacen(":5432/", &format!(":{}/", link.port), 1);
    assert_ne!(through_link, database_url, "the test database is on 127.0.0.1:5432");
    let server = tests::TestServer::start(&through_link).await;
    let created =
        server.state.commands.bootstrap("Outage Co", "ops@outage.test", "a long password", None).await.unwrap();
    let client = reqwest::Client::new();
    let fresh = gql_at(
        &client,
        &server.address,
        Some(&created.token),
        "mutation { createApiToken(input: {name: \"fresh\"}) { token } }",
        json!({}),
    )
    .await;
    let fresh = fresh["data"]["createApiToken"]["token"].as_str().expect("a token").to_string();

    link.cut();
    let response = client
        .post(format!("{}/graphql", server.address))
        .bearer_auth(&fresh)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    let (status, retry_after) = (response.status().as_u16(), response.headers().get("retry-after").is_some());
    let answer: serde_json::Value = response.json().await.unwrap();
    link.mend();
    assert_eq!(answer["errors"][0]["extensions"]["code"], "UNAVAILABLE", "{answer}");
    assert_eq!((status, retry_after), (503, true));
    // `me` reads the directory: once the projectors, reconnected, have caught up.
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    wait_until_projected(&pool).await;
    let me = gql_at(&client, &server.address, Some(&fresh), "{ me { id } }", json!({})).await;
    assert_eq!(me["data"]["me"]["id"], created.user_id.to_string(), "{me}");
    server.stop().await;
}
