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
