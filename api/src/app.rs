//! The composition root: wires the store, the commands, the projection engine and the
//! HTTP layer together. `main` and the tests build the same `Application`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use commands::store::EventStore;
use commands::Commands;
use projections::engine::{Engine, Wake};
use projections::keyring::Keyring;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::graphql;
use crate::http;
use crate::state::AppState;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects with the session settings every connection needs: a transaction left
/// idle is ended, since an open one holds back every projector's watermark.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions =
        config.database_url.parse().context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let options = options.options([("idle_in_transaction_session_timeout", "30000"), ("application_name", "inboxd")]);
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("failed to connect to PostgreSQL (is DATABASE_URL right and the server up?)")
}

/// The services of one process, without the HTTP listener (the CLI uses these too).
pub struct Services {
    pub state: AppState,
    /// Signalled by the store after every commit.
    pub committed: Wake,
}

impl Services {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let pool = connect(config).await?;
        let keyring = Arc::new(Keyring::from_base64(&config.master_key)?);
        let engine = Engine::new(pool.clone(), keyring.clone(), projections::all_projectors(), config.projector_poll);
        let committed = Wake::default();
        let store =
            Arc::new(EventStore::new(pool.clone(), keyring.clone(), committed.clone(), config.aggregate_cache_size));
        let state = AppState {
            pool,
            commands: Commands::new(store),
            engine,
            keyring,
            read_your_writes_timeout: config.read_your_writes_timeout,
        };
        Ok(Self { state, committed })
    }
}

pub struct Application {
    listener: TcpListener,
    services: Services,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let services = Services::build(&config).await?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("failed to listen on {} (LISTEN_ADDR)", config.listen_addr))?;
        Ok(Self { listener, services, shutdown: CancellationToken::new() })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.services.state
    }

    /// Cancelling this token stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves HTTP and runs the projectors until SIGINT/SIGTERM or the token.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application { listener, services, shutdown } = self;
        let state = services.state;
        let engine = state.engine.clone();
        let engine_stop = shutdown.clone();
        let engine_task = tokio::spawn(async move { engine.run(engine_stop).await });
        tokio::spawn(relay_commits(services.committed, state.engine.clone(), shutdown.clone()));
        let router = http::router(state.clone(), graphql::schema(state));
        tracing::info!(addr = %listener.local_addr()?, "serving GraphQL at /graphql");
        let stop = shutdown.clone();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                tokio::select! { _ = stop.cancelled() => {}, _ = terminate_signal() => {} }
            })
            .await
            .context("the HTTP server failed")?;
        shutdown.cancel();
        engine_task.await.context("the projection engine panicked")??;
        Ok(())
    }
}

/// After each commit: wake this process's runners at once, and the other processes'
/// by a NOTIFY sent outside the write transaction, at most one per 5 ms.
async fn relay_commits(committed: Wake, engine: Engine, shutdown: CancellationToken) {
    let mut local = committed.subscribe();
    let mut remote = committed.subscribe();
    let local_engine = engine.clone();
    let local_stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = local.changed() => if changed.is_err() { return },
                _ = local_stop.cancelled() => return,
            }
            local_engine.wake().wake();
        }
    });
    loop {
        tokio::select! {
            changed = remote.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        engine.wake_remote().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn terminate_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
