//! Presence and availability: shared by every process (PostgreSQL or Redis), an agent
//! whose socket drops shows OFFLINE within about 20 s, and each change of what others
//! see is one event.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{gql_at, TestApp, TestServer};

const AGENTS: &str = "{ agents { id availability { status chosen since } } }";

/// The agent's availability as `server` shows it.
async fn availability_at(app: &TestApp, server: &TestServer, agent: &str) -> Value {
    let answer = gql_at(&app.client, &server.address, Some(&app.token), AGENTS, json!({})).await;
    let agents = answer["data"]["agents"].as_array().unwrap_or_else(|| panic!("{answer}")).clone();
    agents.into_iter().find(|a| a["id"] == agent).expect("the agent is listed")["availability"].clone()
}

/// Waits (at most `within`) until `server` shows the agent `status`; answers how long it took.
async fn until_status(app: &TestApp, server: &TestServer, agent: &str, status: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let shown = availability_at(app, server, agent).await;
        if shown["status"] == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{agent} still {shown} after {within:?}, not {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn availability_events(app: &TestApp, agent: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT payload -> 'AvailabilityChanged' ->> 'effective' FROM events \
         WHERE aggregate_type = 'availability' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(agent)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Two processes on one database, presence kept in Redis or (None) in PostgreSQL.
async fn two_processes_see_presence_alike(redis: Option<String>) {
    let app = match &redis {
        Some(url) => TestApp::spawn_with(|config| config.redis_url = Some(url.clone())).await,
        None => TestApp::spawn().await,
    };
    let mut config = tests::test_config(&app.database_url);
    config.redis_url = redis;
    let second = TestServer::start_with(config).await;
    let (agent, token) = app.agent("ana@acme.test", "AGENT").await;
    assert_eq!(availability_at(&app, &second, &agent).await["status"], "OFFLINE", "never seen: offline");

    // A socket open on the first process: present, as the second one shows.
    let presence = "subscription { presenceChanged { agent { id } status } }";
    let socket = tests::socket::subscribe(&app.server.address, &token, presence, json!({})).await;
    until_status(&app, &second, &agent, "ONLINE", Duration::from_secs(10)).await;

    // A choice made through the second process shows on the first.
    let busy = gql_at(
        &app.client,
        &second.address,
        Some(&token),
        "mutation { setAvailability(input: {status: BUSY}) { status chosen since } }",
        json!({}),
    )
    .await;
    assert_eq!(busy["data"]["setAvailability"]["status"], "BUSY", "{busy}");
    assert_eq!(availability_at(&app, &app.server, &agent).await["status"], "BUSY");

    // The socket drops: offline within about 20 s (the lapse, and a sweep every 5 s).
    drop(socket);
    let took = until_status(&app, &second, &agent, "OFFLINE", Duration::from_secs(40)).await;
    assert!(took >= Duration::from_secs(10), "not before the lapse: {took:?}");
    let shown = availability_at(&app, &app.server, &agent).await;
    assert_eq!((shown["status"].as_str(), shown["chosen"].as_str()), (Some("OFFLINE"), Some("BUSY")), "{shown}");

    // A heartbeat brings the choice back; each change of what others see is one event,
    // though two processes watched.
    let beat = gql_at(&app.client, &second.address, Some(&token), "mutation { heartbeat { status } }", json!({})).await;
    assert_eq!(beat["data"]["heartbeat"]["status"], "BUSY", "{beat}");
    assert_eq!(availability_events(&app, &agent).await, vec!["online", "busy", "offline", "busy"]);
    second.stop().await;
}

#[tokio::test]
async fn presence_is_shared_through_postgres_and_a_dropped_socket_shows_offline_within_about_20_s() {
    two_processes_see_presence_alike(None).await;
}

#[tokio::test]
async fn presence_is_shared_through_redis_and_a_dropped_socket_shows_offline_within_about_20_s() {
    let redis = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (scripts/test.sh finds or starts a Redis)");
    two_processes_see_presence_alike(Some(redis)).await;
}

/// A conversation's viewers as `server` shows them to the administrator.
async fn viewers_at(app: &TestApp, server: &TestServer, conversation: &str) -> Vec<String> {
    let answer = gql_at(
        &app.client,
        &server.address,
        Some(&app.token),
        "query($c: ID!) { conversation(id: $c) { viewers { id name } } }",
        json!({ "c": conversation }),
    )
    .await;
    let viewers = answer["data"]["conversation"]["viewers"].as_array().unwrap_or_else(|| panic!("{answer}")).clone();
    let mut ids: Vec<String> = viewers.iter().map(|v| v["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// Pushes until a `VIEWERS_CHANGED` for the conversation (or the wait runs out).
async fn until_viewers_changed(socket: &mut tests::socket::Socket, conversation: &str) -> bool {
    while let Some(event) = tests::socket::next_data(socket, "conversationEvents", Duration::from_secs(5)).await {
        if event["type"] == "VIEWERS_CHANGED" {
            assert_eq!(event["conversationId"], conversation, "{event}");
            return true;
        }
    }
    false
}

#[tokio::test]
async fn two_agents_with_the_same_conversation_open_on_two_processes_see_each_other() {
    let app = TestApp::spawn().await;
    let second = TestServer::start(&app.database_url).await;
    let inbox = app.create_inbox("Support").await;
    let member = "mutation($i: ID!, $u: ID!) { addInboxMember(input: {inboxId: $i, userId: $u}) { id } }";
    let (ana, ana_token) = app.agent("ana@acme.test", "AGENT").await;
    let (bo, bo_token) = app.agent("bo@acme.test", "AGENT").await;
    let (_, outsider_token) = app.agent("cy@acme.test", "AGENT").await;
    for agent in [&ana, &bo] {
        app.ok(member, json!({ "i": inbox, "u": agent })).await;
    }
    let conversation =
        app.receive(&inbox, "c-1", "m-1", "hello").await["conversation"]["id"].as_str().unwrap().to_string();
    let events = "subscription($c: ID) { conversationEvents(conversationId: $c) { type conversationId } }";
    let variables = json!({ "c": conversation });

    let mut ana_screen = tests::socket::subscribe(&app.server.address, &ana_token, events, variables.clone()).await;
    assert!(until_viewers_changed(&mut ana_screen, &conversation).await, "Ana hears of her own arrival");
    let bo_screen = tests::socket::subscribe(&second.address, &bo_token, events, variables.clone()).await;
    assert!(until_viewers_changed(&mut ana_screen, &conversation).await, "Ana hears Bo arrive on the other process");
    let mut both = vec![ana.clone(), bo.clone()];
    both.sort();
    assert_eq!(viewers_at(&app, &app.server, &conversation).await, both);
    assert_eq!(viewers_at(&app, &second, &conversation).await, both);

    // Bo closes the conversation: Ana is told, and he is no longer listed.
    drop(bo_screen);
    assert!(until_viewers_changed(&mut ana_screen, &conversation).await, "Ana hears Bo leave");
    assert_eq!(viewers_at(&app, &second, &conversation).await, vec![ana.clone()]);

    // Someone who may not see the conversation cannot open it, nor show as viewing it.
    let mut refused = tests::socket::subscribe(&app.server.address, &outsider_token, events, variables).await;
    let answer = tests::socket::next_message(&mut refused, Duration::from_secs(5)).await.expect("an answer");
    assert_eq!(answer["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{answer}");
    assert_eq!(viewers_at(&app, &app.server, &conversation).await, vec![ana]);
    second.stop().await;
}
