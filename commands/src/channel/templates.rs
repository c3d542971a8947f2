//! A WhatsApp inbox's message templates: synced from the provider (a job when the inbox
//! is created, and `syncMessageTemplates`), listed, and rendered into the text agents
//! read in the timeline when one is sent.

use anyhow::Context;
use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::settings;
use super::{GraphApi, ProviderError};
use crate::jobs::{Job, JobHandler, NewJob, Outcome, DEFAULT_MAX_ATTEMPTS};
use crate::outbound::Outbound;
use crate::Commands;

/// The job kind of a sync.
pub const SYNC_JOB: &str = "template_sync";
/// Pages of templates followed at most (100 each).
const MAX_PAGES: usize = 50;

/// A template as the provider lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageTemplate {
    pub name: String,
    pub language: String,
    pub category: String,
    /// `APPROVED`, `PENDING`, `REJECTED`, …
    pub status: String,
    pub components: Json<Value>,
}

/// What a sync job carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncJob {
    pub inbox_id: Uuid,
    pub business_account_id: String,
}

impl SyncJob {
    /// The job that syncs a new inbox's templates (enqueued with its creation).
    pub fn enqueue(inbox_id: Uuid, account: Uuid, business_account_id: &str) -> anyhow::Result<NewJob> {
        let job = SyncJob { inbox_id, business_account_id: business_account_id.to_string() };
        Ok(NewJob {
            kind: SYNC_JOB,
            account: Some(account),
            key: format!("templates:{inbox_id}:{}", Uuid::now_v7()),
            payload: serde_json::to_value(job)?,
            run_at: Utc::now(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<Listed>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    name: String,
    language: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    components: Value,
}

impl Commands {
    /// Lists the inbox's templates from the provider (every page) and replaces the
    /// stored list with them.
    pub async fn sync_templates(
        &self,
        outbound: &Outbound,
        graph: &GraphApi,
        inbox_id: Uuid,
        business_account_id: &str,
    ) -> Result<Vec<MessageTemplate>, ProviderError> {
        let store = self.store();
        let found = settings::of_inbox(store.pool(), store.keyring(), domain::values::Channel::Whatsapp, inbox_id)
            .await
            .map_err(|e| ProviderError::transient(format!("{e:#}")))?;
        let inbox = found.ok_or_else(|| ProviderError::permanent("not a WhatsApp inbox".into()))?;
        let token = inbox.access_token().ok_or_else(|| ProviderError::permanent("no access token".into()))?;
        let headers = [("authorization", format!("Bearer {token}"))];
        let mut url = graph.url(&format!(
            "{business_account_id}/message_templates?limit=100&fields=name,language,category,status,components"
        ));
        let mut listed = Vec::new();
        for _ in 0..MAX_PAGES {
            let response = ProviderError::answered(outbound.get(&url, &headers).await).await?;
            let page: Page = response
                .json()
                .await
                .map_err(|e| ProviderError::transient(format!("the template list does not read: {e}")))?;
            listed.extend(page.data);
            // Only pages of the configured Graph API are followed.
            match page.paging.and_then(|p| p.next) {
                Some(next) if next.starts_with(graph.base_url.trim_end_matches('/')) => url = next,
                _ => break,
            }
        }
        let templates: Vec<MessageTemplate> = listed
            .into_iter()
            .map(|t| MessageTemplate {
                name: t.name,
                language: t.language,
                category: t.category,
                status: t.status,
                components: Json(t.components),
            })
            .collect();
        self.store_templates(inbox_id, &templates).await.map_err(|e| ProviderError::transient(format!("{e:#}")))?;
        Ok(templates)
    }

    async fn store_templates(&self, inbox_id: Uuid, templates: &[MessageTemplate]) -> anyhow::Result<()> {
        let mut tx = self.store().pool().begin().await.context("failed to begin")?;
        sqlx::query("DELETE FROM message_templates WHERE inbox_id = $1")
            .bind(inbox_id)
            .execute(&mut *tx)
            .await
            .context("failed to replace templates")?;
        for template in templates {
            sqlx::query(
                "INSERT INTO message_templates (inbox_id, name, language, category, status, components, synced_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT DO NOTHING",
            )
            .bind(inbox_id)
            .bind(&template.name)
            .bind(&template.language)
            .bind(&template.category)
            .bind(&template.status)
            .bind(&template.components)
            .execute(&mut *tx)
            .await
            .context("failed to store a template")?;
        }
        tx.commit().await.context("failed to commit templates")?;
        Ok(())
    }

    /// The inbox's templates as last synced.
    pub async fn templates(&self, inbox_id: Uuid) -> anyhow::Result<Vec<MessageTemplate>> {
        sqlx::query_as(
            "SELECT name, language, category, status, components FROM message_templates \
             WHERE inbox_id = $1 ORDER BY name, language",
        )
        .bind(inbox_id)
        .fetch_all(self.store().pool())
        .await
        .context("failed to list templates")
    }
}

/// The text of a template as sent: its body with the given body parameters in place
/// of `{{1}}`, `{{2}}`, …; the template's name when it has no body.
pub fn render(template: &MessageTemplate, components: &Value) -> String {
    let body =
        template.components.0.as_array().and_then(|parts| {
            parts.iter().find(|c| c["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("body")))
        });
    let Some(mut text) = body.and_then(|b| b["text"].as_str()).map(str::to_string) else {
        return format!("[{}]", template.name);
    };
    let given = components
        .as_array()
        .and_then(|parts| parts.iter().find(|c| c["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("body"))));
    let parameters = given.and_then(|b| b["parameters"].as_array()).cloned().unwrap_or_default();
    for (n, parameter) in parameters.iter().enumerate() {
        let value = parameter["text"]
            .as_str()
            .or_else(|| parameter.pointer("/currency/fallback_value").and_then(Value::as_str))
            .or_else(|| parameter.pointer("/date_time/fallback_value").and_then(Value::as_str))
            .unwrap_or_default();
        text = text.replace(&format!("{{{{{}}}}}", n + 1), value);
    }
    text
}

/// Syncs a new inbox's templates.
pub struct TemplateSync {
    commands: Commands,
    outbound: Outbound,
    graph: GraphApi,
}

impl TemplateSync {
    pub fn new(commands: Commands, outbound: Outbound, graph: GraphApi) -> Self {
        Self { commands, outbound, graph }
    }
}

#[async_trait]
impl JobHandler for TemplateSync {
    fn kind(&self) -> &'static str {
        SYNC_JOB
    }

    async fn run(&self, job: &Job) -> Outcome {
        let sync: SyncJob = match job.payload() {
            Ok(sync) => sync,
            Err(given_up) => return given_up,
        };
        let synced =
            self.commands.sync_templates(&self.outbound, &self.graph, sync.inbox_id, &sync.business_account_id).await;
        match synced {
            Ok(_) => Outcome::Done,
            Err(error) if error.transient => Outcome::Retry { error: error.to_string(), after: error.retry_after },
            Err(error) => Outcome::Give { error: error.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_reads_as_its_body_with_the_parameters_in_place() {
        let template = MessageTemplate {
            name: "order_update".into(),
            language: "en_US".into(),
            category: "UTILITY".into(),
            status: "APPROVED".into(),
            components: Json(json!([{"type": "HEADER", "format": "TEXT", "text": "Order"},
                                    {"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships today."}])),
        };
        let given = json!([{"type": "body", "parameters": [{"type": "text", "text": "John"}, {"type": "text", "text": "#42"}]}]);
        assert_eq!(render(&template, &given), "Hi John, your order #42 ships today.");
        assert_eq!(render(&template, &json!([])), "Hi {{1}}, your order {{2}} ships today.");
        let bare = MessageTemplate { components: Json(json!([])), ..template };
        assert_eq!(render(&bare, &json!([])), "[order_update]");
    }
}
