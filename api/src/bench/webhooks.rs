//! Case 7: ingest with one webhook subscribed to `message_created`, beside plain
//! postgres-es in alternating rounds; then how fast deliveries drain to a receiver on
//! loopback that answers at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use commands::webhook::policy::{enqueue_delivery, DeliveryJob};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::harness::{self, Plan};
use super::lag::LagProbe;
use super::{receiving, Bench, PlainLibrary, Report, Sender, Served, CONCURRENCY};

/// Test deliveries enqueued at once to measure delivery throughput.
const DRAIN_DELIVERIES: [usize; 2] = [2_000, 10_000];

impl Bench {
    pub(super) async fn webhooks(
        &self,
        plan: Plan,
        report: &mut Report,
        library: Option<&PlainLibrary>,
    ) -> anyhow::Result<()> {
        let (receiver_url, accepted) = loopback_receiver().await?;
        let env = [("OUTBOUND_ALLOW_PRIVATE_TARGETS", "true")];
        let Served { pool, token, account, server, client, inbox, .. } =
            self.served_account("inbox_bench_webhooks", &env).await?;
        let created = server
            .graphql(
                &client,
                &token,
                "mutation($url: String!) { createWebhook(input: {name: \"Bench\", url: $url, \
                 events: [\"message_created\"]}) { id } }",
                json!({ "url": receiver_url }),
            )
            .await?;
        let webhook: Uuid = created["createWebhook"]["id"].as_str().context("no webhook id")?.parse()?;

        let (lag, watch) = LagProbe::start(pool.clone());
        let sender = Sender { client, endpoint: server.graphql.clone(), token, inbox, watch };
        let mut cases = vec![(CONCURRENCY, receiving(sender))];
        cases.extend(library.map(|library| (CONCURRENCY, library.operation("hooked"))));
        let mut results = harness::run_alternating(plan, cases).await?.into_iter();
        let measured = results.next().context("no ingest measurement")?;
        report.insert("ingest_with_webhook_messages_per_s", json!(measured.median_rate()));
        if let Some(library) = results.next() {
            report.insert("postgres_es_commands_per_s_beside_webhook", json!(library.median_rate()));
        }
        lag.finish().await?;
        let started = Instant::now();
        drained(&pool).await?;
        report.insert("webhook_drain_after_ingest_s", json!(started.elapsed().as_secs_f64()));
        let delivered: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
            .fetch_one(&pool)
            .await?;
        if delivered as u64 != accepted.load(Ordering::SeqCst) {
            bail!("{delivered} deliveries recorded, {} accepted", accepted.load(Ordering::SeqCst));
        }

        // Throughput: a backlog enqueued at once, timed until delivered.
        let backlog = DRAIN_DELIVERIES[usize::from(!self.quick)];
        let mut tx = pool.begin().await?;
        for _ in 0..backlog {
            enqueue_delivery(&mut tx, &DeliveryJob::test(webhook), account, chrono::Utc::now()).await?;
        }
        tx.commit().await?;
        let started = Instant::now();
        drained(&pool).await?;
        report.insert("webhook_deliveries_per_s", json!(backlog as f64 / started.elapsed().as_secs_f64()));
        server.stop().await;
        Ok(())
    }
}

/// Waits until no delivery job is pending or running.
async fn drained(pool: &PgPool) -> anyhow::Result<()> {
    for _ in 0..6_000 {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')")
            .fetch_one(pool)
            .await?;
        if waiting == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("webhook deliveries did not drain within two minutes")
}

/// A receiver on loopback that accepts every POST at once; its URL and its count.
async fn loopback_receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let accepted = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let counter = accepted.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the bench's webhook receiver stopped");
        }
    });
    Ok((url, accepted))
}
