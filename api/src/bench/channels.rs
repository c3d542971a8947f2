//! Case 9: provider webhooks in. Signed WhatsApp Cloud API payloads of several
//! messages each, POSTed through HTTP to the app-level webhook (signature checked,
//! routed by phone number id, every message stored before the 200), in alternating
//! rounds with the API channel's `receiveMessage` on the same server: the ratio says
//! what the provider path costs per message.

use std::sync::Arc;

use anyhow::{bail, Context};
use commands::channel::signature::sign;
use serde_json::json;

use super::harness::{self, Operation, Plan};
use super::lag::LagProbe;
use super::{receiving, Bench, Report, Sender, Served, CONCURRENCY};

/// Messages in each payload (Meta batches what arrives together).
const MESSAGES_PER_PAYLOAD: u64 = 5;
const APP_SECRET: &str = "bench-app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";

impl Bench {
    pub(super) async fn channels(&self, plan: Plan, report: &mut Report) -> anyhow::Result<()> {
        let Served { pool, token, server, client, inbox, .. } =
            self.served_account("inbox_bench_channels", &[]).await?;
        server
            .graphql(
                &client,
                &token,
                "mutation($s: WhatsappSettingsInput!) { createInbox(input: {name: \"WhatsApp\", channel: WHATSAPP, \
                 whatsapp: $s}) { id } }",
                json!({ "s": { "phoneNumberId": PHONE_NUMBER_ID, "businessAccountId": "102290129340398",
                               "accessToken": "bench-token", "appSecret": APP_SECRET, "verifyToken": "bench" } }),
            )
            .await?;
        let webhook = server.graphql.join("/webhooks/whatsapp")?;
        let (lag, watch) = LagProbe::start(pool.clone());
        let sender = Sender { client: client.clone(), endpoint: server.graphql.clone(), token, inbox, watch };
        let cases = vec![(CONCURRENCY, payloads(client, webhook)), (CONCURRENCY, receiving(sender))];
        let mut results = harness::run_alternating(plan, cases).await?.into_iter();
        let provider = results.next().context("no webhook measurement")?;
        let api = results.next().context("no API-channel measurement")?;
        lag.finish().await?;
        report.insert("whatsapp_webhook_messages_per_s", json!(provider.median_rate()));
        report.insert("api_ingest_beside_whatsapp_messages_per_s", json!(api.median_rate()));
        report.insert("whatsapp_webhook_to_api_ingest", json!(provider.median_rate() / api.median_rate()));
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE event_type = 'MessageReceived' AND metadata->>'channel' = 'whatsapp'",
        )
        .fetch_one(&pool)
        .await?;
        if stored == 0 {
            bail!("no WhatsApp message was stored");
        }
        server.stop().await;
        Ok(())
    }
}

/// One signed payload of [`MESSAGES_PER_PAYLOAD`] messages, each contact writing ten
/// messages over two payloads (as the API case's contacts write ten).
fn payloads(client: reqwest::Client, webhook: reqwest::Url) -> Operation {
    Arc::new(move |worker, i| {
        let (client, webhook) = (client.clone(), webhook.clone());
        Box::pin(async move {
            let from = format!("55{worker:03}{:08}", i / 2);
            let messages: Vec<serde_json::Value> = (0..MESSAGES_PER_PAYLOAD)
                .map(|k| {
                    json!({"from": from, "id": format!("wamid.{worker}.{i}.{k}"), "timestamp": "1765000000",
                           "type": "text", "text": {"body": "Olá, preciso de ajuda com o meu pedido"}})
                })
                .collect();
            let body = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1",
                "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
                    "contacts": [{"profile": {"name": "Cliente"}, "wa_id": from}], "messages": messages}}]}]}))?;
            let response = client
                .post(webhook)
                .header("content-type", "application/json")
                .header("x-hub-signature-256", sign(APP_SECRET, &body))
                .body(body)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("the webhook answered {}", response.status());
            }
            Ok(MESSAGES_PER_PAYLOAD)
        })
    })
}
