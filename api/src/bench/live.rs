//! Case 8: real time. Across processes: a subscriber on one server, ingest through
//! another (2, then 16 clients): how long after a message was sent the subscriber
//! receives its `MESSAGE_CREATED`, at p50 and p99. Fan-out: 1,000 subscribers on one
//! server each receive every message of a broadcast (none lost), how long each
//! delivery took, and the server's memory meanwhile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::harness::{self, percentile, Plan};
use super::{graphql_at, Bench, Report, Served, Server, CONCURRENCY};

const EVENTS: &str = "subscription { conversationEvents { type message { content } } }";

/// Subscribers of the fan-out case.
const BROADCAST_SOCKETS: usize = 1_000;
/// Messages sent to them, one at a time.
const BROADCAST_MESSAGES: usize = 20;

/// What subscribers measured: each message's time from sent to received (ms), with
/// when it was sent, and how many sockets were closed for falling too far behind.
#[derive(Default)]
struct Heard {
    latencies: Vec<(Instant, f64)>,
    dropped: u64,
}

impl Heard {
    fn latencies(&self) -> Vec<f64> {
        self.latencies.iter().map(|(_, ms)| *ms).collect()
    }
}

impl Bench {
    pub(super) async fn live(&self, plan: Plan, report: &mut Report) -> anyhow::Result<()> {
        let Served { url, token, server, client, inbox, .. } = self.served_account("inbox_bench_live", &[]).await?;
        let other = Server::start(self.inboxd(&url)).await?;
        let origin = Instant::now();
        let heard: Arc<Mutex<Heard>> = Arc::default();
        let subscriber = Dedicated::subscribe(other.graphql.clone(), token.clone(), origin, heard.clone()).await?;

        // Each load's messages are its own (a run's iterations start again at 0: the
        // same ids would be redeliveries, answered without being written).
        let send = |clients: usize| -> harness::Operation {
            let (client, endpoint, inbox, token) =
                (client.clone(), server.graphql.clone(), inbox.clone(), token.clone());
            Arc::new(move |worker, i| {
                let (client, endpoint, token, inbox) = (client.clone(), endpoint.clone(), token.clone(), inbox.clone());
                Box::pin(async move {
                    let sent = origin.elapsed().as_micros();
                    let variables = json!({ "input": {
                        "inboxId": inbox,
                        "contact": { "sourceId": format!("l{clients}-w{worker}-c{}", i / 10) },
                        "sourceId": format!("m{i}"),
                        "content": format!("sent at {sent}"),
                    }});
                    graphql_at(&client, &endpoint, &token, super::RECEIVE, variables).await?;
                    Ok(1)
                })
            })
        };
        // Two clients (a busy team), then the full 16 (the ingest load, which keeps
        // both cores busy).
        let loads = [
            (
                2,
                [
                    "subscription_load_2_clients_messages_per_s",
                    "subscription_latency_2_clients_p50_ms",
                    "subscription_latency_2_clients_p99_ms",
                    "subscription_dropped_2_clients",
                ],
            ),
            (
                CONCURRENCY,
                [
                    "subscription_load_messages_per_s",
                    "subscription_latency_p50_ms",
                    "subscription_latency_p99_ms",
                    "subscription_dropped",
                ],
            ),
        ];
        for (clients, [rate, p50, p99, dropped]) in loads {
            let rounds = harness::run(plan, clients, send(clients)).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let heard = std::mem::take(&mut *heard.lock().expect("heard"));
            // Messages sent in the measured rounds, as ingest latency counts them (the
            // warm-up's new connections and the rounds' restarts left out).
            let latencies: Vec<f64> =
                heard.latencies.iter().filter(|(sent, _)| rounds.measured_at(*sent)).map(|(_, ms)| *ms).collect();
            anyhow::ensure!(!latencies.is_empty(), "the subscriber received nothing");
            report.insert(rate, json!(rounds.median_rate()));
            report.insert(p50, json!(percentile(&latencies, 50.0)));
            report.insert(p99, json!(percentile(&latencies, 99.0)));
            report.insert(dropped, json!(heard.dropped));
        }
        subscriber.stop();
        other.stop().await;

        self.broadcast(&server, &token, &inbox, report).await?;
        server.stop().await;
        Ok(())
    }

    /// 1,000 subscribers on one server; messages sent one at a time: every socket
    /// must receive every one.
    async fn broadcast(&self, server: &Server, token: &str, inbox: &str, report: &mut Report) -> anyhow::Result<()> {
        let origin = Instant::now();
        let heard: Arc<Mutex<Heard>> = Arc::default();
        report.insert("broadcast_server_rss_before_mb", json!(server.rss_mb()));
        let mut sockets = Vec::with_capacity(BROADCAST_SOCKETS);
        for _ in 0..BROADCAST_SOCKETS {
            sockets.push(subscribe(&server.graphql, token, origin, heard.clone()).await?);
        }
        // Every subscription started (they start at the feed's position when subscribed).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let client = reqwest::Client::new();
        for n in 0..BROADCAST_MESSAGES {
            let sent = origin.elapsed().as_micros();
            let variables = json!({ "input": {
                "inboxId": inbox,
                "contact": { "sourceId": "broadcast" },
                "sourceId": format!("broadcast-{n}"),
                "content": format!("sent at {sent}"),
            }});
            graphql_at(&client, &server.graphql, token, super::RECEIVE, variables).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let expected = BROADCAST_SOCKETS * BROADCAST_MESSAGES;
        let deadline = Instant::now() + Duration::from_secs(60);
        while heard.lock().expect("heard").latencies.len() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let measured = std::mem::take(&mut *heard.lock().expect("heard"));
        report.insert("broadcast_sockets", json!(BROADCAST_SOCKETS));
        report.insert("broadcast_lost_deliveries", json!(expected.saturating_sub(measured.latencies.len())));
        report.insert("broadcast_dropped_sockets", json!(measured.dropped));
        let latencies = measured.latencies();
        report.insert("broadcast_delivery_p50_ms", json!(percentile(&latencies, 50.0)));
        report.insert("broadcast_delivery_p99_ms", json!(percentile(&latencies, 99.0)));
        // With the 1,000 sockets still open.
        report.insert("broadcast_server_rss_mb", json!(server.rss_mb()));
        for socket in sockets {
            socket.abort();
        }
        Ok(())
    }
}

/// The measured subscriber, on a thread and runtime of its own: a real client is not
/// queued behind the bench's load generators in one scheduler, and what it measures
/// should be the servers' latency, not the load generators' backlog.
struct Dedicated {
    stop: tokio_util::sync::CancellationToken,
}

impl Dedicated {
    async fn subscribe(
        endpoint: reqwest::Url,
        token: String,
        origin: Instant,
        heard: Arc<Mutex<Heard>>,
    ) -> anyhow::Result<Self> {
        let stop = tokio_util::sync::CancellationToken::new();
        let (subscribed, on_subscribed) = tokio::sync::oneshot::channel();
        let until = stop.clone();
        std::thread::Builder::new().name("bench-subscriber".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = subscribed.send(Err(anyhow::Error::new(error)));
                    return;
                }
            };
            runtime.block_on(async move {
                match subscribe(&endpoint, &token, origin, heard).await {
                    Ok(reader) => {
                        let _ = subscribed.send(Ok(()));
                        tokio::select! { _ = reader => {}, _ = until.cancelled() => {} }
                    }
                    Err(error) => {
                        let _ = subscribed.send(Err(error));
                    }
                }
            });
        })?;
        on_subscribed.await.context("the subscriber's thread ended")??;
        Ok(Self { stop })
    }

    fn stop(&self) {
        self.stop.cancel();
    }
}

/// Subscribes on `endpoint`'s server and records, for each message received, the time
/// since it was sent.
async fn subscribe(
    endpoint: &reqwest::Url,
    token: &str,
    origin: Instant,
    heard: Arc<Mutex<Heard>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let url = format!("{}/ws", endpoint.as_str().replacen("http://", "ws://", 1));
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.context("the subscription socket")?;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(Message::text(init.to_string())).await?;
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": EVENTS } });
    socket.send(Message::text(subscribe.to_string())).await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => {
                    heard.lock().expect("heard").dropped += 1;
                    return;
                }
                _ => continue,
            };
            let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
            let event = &message["payload"]["data"]["conversationEvents"];
            let content = event["message"]["content"].as_str();
            if let Some(sent) = content.and_then(|c| c.strip_prefix("sent at ")).and_then(|s| s.parse::<u128>().ok()) {
                let micros = origin.elapsed().as_micros().saturating_sub(sent);
                let sent_at = origin + Duration::from_micros(u64::try_from(sent).unwrap_or(u64::MAX));
                heard.lock().expect("heard").latencies.push((sent_at, micros as f64 / 1000.0));
            }
        }
    }))
}
