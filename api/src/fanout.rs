//! Publications between processes through Redis pub/sub, when `REDIS_URL` is set
//! (PostgreSQL NOTIFY otherwise): the fan-out the real-time layer rides on.

use async_trait::async_trait;
use futures_util::StreamExt;
use projections::publication::{Fanout, PUBLICATION_CHANNEL};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

pub struct RedisFanout {
    client: redis::Client,
    publisher: ConnectionManager,
    channel: String,
}

impl RedisFanout {
    /// `database`: the database the processes share; its name scopes the channel, so
    /// deployments sharing a Redis do not hear each other.
    pub async fn connect(url: &str, database: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let publisher = ConnectionManager::new(client.clone()).await?;
        Ok(Self { client, publisher, channel: format!("{PUBLICATION_CHANNEL}:{database}") })
    }
}

#[async_trait]
impl Fanout for RedisFanout {
    async fn send(&self, payload: String) -> anyhow::Result<()> {
        let mut publisher = self.publisher.clone();
        redis::cmd("PUBLISH").arg(&self.channel).arg(payload).query_async::<i64>(&mut publisher).await?;
        Ok(())
    }

    async fn receive(
        &self,
        deliver: &(dyn Fn(String) + Send + Sync),
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => deliver(message.get_payload::<String>()?),
                    None => anyhow::bail!("the Redis subscription ended"),
                },
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}
