//! Case 8: real time across processes. A subscriber on one server, ingest through
//! another (16 clients): how long after a message was sent the subscriber receives
//! its `MESSAGE_CREATED`, at p50 and p99.

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

/// What the subscriber measured: each message's time from sent to received, and how
/// often it was told to resync (it fell too far behind).
#[derive(Default)]
struct Heard {
    latencies: Vec<f64>,
    resyncs: u64,
}

impl Bench {
    pub(super) async fn live(&self, plan: Plan, report: &mut Report) -> anyhow::Result<()> {
        let Served { url, token, server, client, inbox, .. } = self.served_account("inbox_bench_live", &[]).await?;
        let other = Server::start(self.inboxd(&url)).await?;
        let origin = Instant::now();
        let heard: Arc<Mutex<Heard>> = Arc::default();
        let subscriber = subscribe(&other.graphql, &token, origin, heard.clone()).await?;

        let (endpoint, sent_inbox) = (server.graphql.clone(), inbox.clone());
        let send: harness::Operation = Arc::new(move |worker, i| {
            let (client, endpoint, token, inbox) =
                (client.clone(), endpoint.clone(), token.clone(), sent_inbox.clone());
            Box::pin(async move {
                let sent = origin.elapsed().as_micros();
                let variables = json!({ "input": {
                    "inboxId": inbox,
                    "contact": { "sourceId": format!("w{worker}-c{}", i / 10) },
                    "sourceId": format!("m{i}"),
                    "content": format!("sent at {sent}"),
                }});
                graphql_at(&client, &endpoint, &token, super::RECEIVE, variables).await?;
                Ok(1)
            })
        });
        // Two clients (a busy team), then the full 16 (the ingest load, which keeps
        // both cores busy).
        let loads = [
            (
                2,
                [
                    "subscription_latency_2_clients_p50_ms",
                    "subscription_latency_2_clients_p99_ms",
                    "subscription_resyncs_2_clients",
                ],
            ),
            (CONCURRENCY, ["subscription_latency_p50_ms", "subscription_latency_p99_ms", "subscription_resyncs"]),
        ];
        for (clients, [p50, p99, resyncs]) in loads {
            harness::run(plan, clients, send.clone()).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let measured = std::mem::take(&mut *heard.lock().expect("heard"));
            anyhow::ensure!(!measured.latencies.is_empty(), "the subscriber received nothing");
            report.insert(p50, json!(percentile(&measured.latencies, 50.0)));
            report.insert(p99, json!(percentile(&measured.latencies, 99.0)));
            report.insert(resyncs, json!(measured.resyncs));
        }
        subscriber.abort();
        other.stop().await;
        server.stop().await;
        Ok(())
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
            let Message::Text(text) = message else { continue };
            let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
            let event = &message["payload"]["data"]["conversationEvents"];
            if event["type"] == "RESYNC_REQUIRED" {
                heard.lock().expect("heard").resyncs += 1;
            }
            let content = event["message"]["content"].as_str();
            if let Some(sent) = content.and_then(|c| c.strip_prefix("sent at ")).and_then(|s| s.parse::<u128>().ok()) {
                let micros = origin.elapsed().as_micros().saturating_sub(sent);
                heard.lock().expect("heard").latencies.push(micros as f64 / 1000.0);
            }
        }
    }))
}
