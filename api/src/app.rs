//! The composition root: wires the store, the commands, the projection engine and the
//! HTTP layer together. `main` and the tests build the same `Application`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use commands::attachments::{Attachments, LocalDirectory, UNSENT_RETENTION};
use commands::channel::delivery::{ChannelDelivery, DeliveryPolicy};
use commands::channel::media::{MediaFetch, MediaPolicy};
use commands::channel::templates::TemplateSync;
use commands::channel::GraphApi;
use commands::connection::CHECK_IDLE_AFTER;
use commands::digest::{DigestKey, Digests};
use commands::erasure::ERASURE_CHANNEL;
use commands::jobs::{Clock, Jobs, SystemClock};
use commands::mail::Mailer;
use commands::notification::delivery::NotificationDelivery;
use commands::notification::policy::NotificationsPolicy;
use commands::notification::vapid_key;
use commands::outbound::Outbound;
use commands::store::EventStore;
use commands::webhook::delivery::WebhookDelivery;
use commands::webhook::policy::WebhooksPolicy;
use commands::Commands;
use projections::engine::Engine;
use projections::envelope::chain::Chain;
use projections::keyring::Keyring;
use projections::policy::Policies;
use projections::shared_feed::Wake;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::fanout::RedisFanout;
use crate::graphql;
use crate::http;
use crate::live::dashboard::DashboardChanges;
use crate::live::feed::LiveFeed;
use crate::live::notices::NotificationFeed;
use crate::live::presence::{PgPresence, Presence, PresenceStore, RedisPresence};
use crate::live::viewers::Viewers;
use crate::rate_limit::RateLimiter;
use crate::state::{AppState, Shared};

/// The migrations in `migrations/`, embedded in the binary.
/// The longest a webhook delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects with the session settings every connection needs: a transaction left
/// idle is ended, since an open one holds back every projector's watermark.
///
/// sqlx pings every connection it hands out by default: one more round trip per
/// query, which under load cost as much as the queries. Only a connection that sat
/// idle (the server or the network may have dropped it meanwhile) is checked; a broken
/// one is discarded and the pool hands out another.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions =
        config.database_url.parse().context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let options = options.options([("idle_in_transaction_session_timeout", "30000"), ("application_name", "inboxd")]);
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > CHECK_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
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
        let mut engine =
            Engine::new(pool.clone(), keyring.clone(), projections::all_projectors(&keyring), config.projector_poll);
        let database = pool.connect_options().get_database().unwrap_or("postgres").to_string();
        let presence_store: Arc<dyn PresenceStore> = match &config.redis_url {
            Some(url) => {
                let fanout =
                    RedisFanout::connect(url, &database).await.context("failed to connect to Redis (REDIS_URL)")?;
                engine = engine.with_fanout(Arc::new(fanout));
                Arc::new(
                    RedisPresence::connect(url, &database).await.context("failed to connect to Redis (REDIS_URL)")?,
                )
            }
            None => Arc::new(PgPresence(pool.clone())),
        };
        let committed = Wake::default();
        let chain = Chain::new(keyring.clone(), config.chain_key_id)?;
        let store = Arc::new(EventStore::new(pool.clone(), chain, committed.clone(), config.aggregate_cache_size));
        let digest_key = match &config.digest_signing_key {
            Some(seed) => DigestKey::from_base64(seed)?,
            None => DigestKey::from_seed(keyring.derive("digest-signing")),
        };
        let commands = Commands::new(store.clone());
        let outbound = Outbound::new(config.outbound_allow_private_targets, DELIVERY_TIMEOUT)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mailer = config.smtp_url.as_deref().map(|url| Mailer::new(url, &config.smtp_from)).transpose()?;
        let policies = Policies::new(
            pool.clone(),
            keyring.clone(),
            vec![
                Arc::new(WebhooksPolicy::new(pool.clone(), clock.clone())),
                Arc::new(DeliveryPolicy::new(pool.clone(), clock.clone())),
                Arc::new(MediaPolicy::new(pool.clone(), clock.clone())),
                Arc::new(NotificationsPolicy::new(
                    pool.clone(),
                    clock.clone(),
                    mailer.is_some(),
                    engine.publisher().clone(),
                )),
            ],
            engine.feed().clone(),
            config.projector_poll,
        );
        let delivery = WebhookDelivery::new(commands.clone(), outbound.clone(), clock.clone());
        let notifying = NotificationDelivery::new(
            commands.clone(),
            outbound.clone(),
            mailer.map(Arc::new),
            vapid_key(&keyring)?,
            config.vapid_subject.clone(),
            clock.clone(),
        );
        let graph =
            GraphApi { base_url: config.meta_graph_api_url.clone(), version: config.meta_graph_api_version.clone() };
        let files = LocalDirectory::new(config.attachments_dir.clone());
        let attachments = Attachments::new(Arc::new(files), pool.clone(), keyring.clone());
        let replies = ChannelDelivery::new(commands.clone(), outbound.clone(), graph.clone(), attachments.clone());
        let templates = TemplateSync::new(commands.clone(), outbound.clone(), graph.clone());
        let fetches = MediaFetch::new(commands.clone(), outbound.clone(), graph.clone(), attachments.clone());
        let handlers: Vec<Arc<dyn commands::jobs::JobHandler>> =
            vec![Arc::new(delivery), Arc::new(notifying), Arc::new(replies), Arc::new(templates), Arc::new(fetches)];
        let jobs = Jobs::new(pool.clone(), clock, handlers, config.job_lease, config.projector_poll);
        let live = LiveFeed::new(pool.clone(), engine.clone());
        let notices = NotificationFeed::new(pool.clone(), engine.clone());
        let dashboard_changes = DashboardChanges::new(pool.clone(), engine.clone());
        let presence = Presence::new(presence_store, commands.clone(), pool.clone());
        let viewers = Viewers::new(pool.clone(), engine.publisher().clone());
        let state = AppState::new(Shared {
            authenticator: Arc::new(Authenticator::new(pool.clone(), store.access_changed())),
            rate_limiter: Arc::new(RateLimiter::connect(config.redis_url.as_deref(), keyring.clone()).await?),
            session_ttl: config.session_ttl,
            decided_again: Arc::default(),
            digests: Arc::new(Digests::new(pool.clone(), digest_key)),
            requests: Arc::default(),
            pool,
            commands,
            engine,
            outbound,
            graph,
            attachments,
            policies,
            jobs,
            live,
            notices,
            dashboard_changes,
            presence,
            viewers,
            keyring,
            read_your_writes_timeout: config.read_your_writes_timeout,
        });
        Ok(Self { state, committed })
    }
}

pub struct Application {
    listener: TcpListener,
    /// Terminate TLS here (else plain HTTP, e.g. behind a proxy that does).
    tls: Option<RustlsConfig>,
    services: Services,
    limits: graphql::Limits,
    http: http::HttpSettings,
    digests: DigestSchedule,
    jobs: JobSettings,
    shutdown: CancellationToken,
}

/// When digests of the log are recorded, and where they go.
#[derive(Clone, Copy)]
struct JobSettings {
    workers: usize,
    retention: Duration,
}

struct DigestSchedule {
    interval: Duration,
    push_url: Option<String>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let services = Services::build(&config).await?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("failed to listen on {} (LISTEN_ADDR)", config.listen_addr))?;
        let limits = graphql::Limits::from(&config);
        let http = http::HttpSettings {
            max_body_bytes: config.max_request_bytes,
            trust_forwarded_for: config.trust_forwarded_for,
            anonymous_introspection: config.graphql_anonymous_introspection,
            tls: config.tls.is_some(),
            cors_allowed_origins: config.cors_allowed_origins.clone(),
        };
        let tls = match &config.tls {
            None => None,
            Some(files) => {
                // One process-wide provider; a second install (tests) is harmless.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let tls = RustlsConfig::from_pem_file(&files.cert_path, &files.key_path).await.with_context(|| {
                    format!(
                        "failed to load the TLS certificate {} and key {} (TLS_CERT_PATH, TLS_KEY_PATH)",
                        files.cert_path.display(),
                        files.key_path.display()
                    )
                })?;
                Some(tls)
            }
        };
        let digests = DigestSchedule { interval: config.digest_interval, push_url: config.digest_push_url.clone() };
        let jobs = JobSettings { workers: config.job_workers, retention: config.job_retention };
        Ok(Self { listener, tls, services, limits, http, digests, jobs, shutdown: CancellationToken::new() })
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
        let Application { listener, tls, services, limits, http: settings, digests, jobs, shutdown } = self;
        let state = services.state;
        let engine = state.engine.clone();
        let engine_stop = shutdown.clone();
        let engine_task = tokio::spawn(async move { engine.run(engine_stop).await });
        let policies = state.policies.clone();
        let policies_stop = shutdown.clone();
        let policies_task = tokio::spawn(async move { policies.run(policies_stop).await });
        tokio::spawn(run_jobs(state.jobs.clone(), jobs, state.attachments.clone(), shutdown.clone()));
        let (live, live_stop) = (state.live.clone(), shutdown.clone());
        tokio::spawn(async move { live.run(live_stop).await });
        let (notices, notices_stop) = (state.notices.clone(), shutdown.clone());
        tokio::spawn(async move { notices.run(notices_stop).await });
        let (dashboard, dashboard_stop) = (state.dashboard_changes.clone(), shutdown.clone());
        tokio::spawn(async move { dashboard.run(dashboard_stop).await });
        let (presence, presence_stop) = (state.presence.clone(), shutdown.clone());
        tokio::spawn(async move { presence.run(presence_stop).await });
        let (viewers, viewers_stop) = (state.viewers.clone(), shutdown.clone());
        tokio::spawn(async move { viewers.run(viewers_stop).await });
        tokio::spawn(relay_commits(services.committed, state.engine.clone(), shutdown.clone()));
        tokio::spawn(relay_access_changes(state.clone(), shutdown.clone()));
        if !digests.interval.is_zero() {
            tokio::spawn(record_digests(state.digests.clone(), digests, shutdown.clone()));
        }
        let router = http::router(state.clone(), graphql::schema(state, limits), settings);
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let stop = shutdown.clone();
        let stopped = async move {
            tokio::select! { _ = stop.cancelled() => {}, _ = terminate_signal() => {} }
        };
        match tls {
            None => {
                tracing::info!(addr = %listener.local_addr()?, "serving GraphQL at http://…/graphql");
                axum::serve(listener, service)
                    .with_graceful_shutdown(stopped)
                    .await
                    .context("the HTTP server failed")?;
            }
            Some(tls) => {
                tracing::info!(addr = %listener.local_addr()?, "serving GraphQL at https://…/graphql");
                let handle = axum_server::Handle::new();
                let draining = handle.clone();
                tokio::spawn(async move {
                    stopped.await;
                    draining.graceful_shutdown(Some(Duration::from_secs(10)));
                });
                axum_server::from_tcp_rustls(listener.into_std()?, tls)
                    .handle(handle)
                    .serve(service)
                    .await
                    .context("the HTTPS server failed")?;
            }
        }
        shutdown.cancel();
        engine_task.await.context("the projection engine panicked")??;
        policies_task.await.context("the policy runner panicked")??;
        Ok(())
    }
}

/// Records a digest of the log on every beat when it moved, and pushes what is not yet
/// delivered (one process does, the others find the lock taken).
/// Runs jobs until shutdown; hourly, prunes finished ones past their retention and
/// sweeps agents' uploads never sent (`UNSENT_RETENTION`).
async fn run_jobs(jobs: Jobs, settings: JobSettings, attachments: Attachments, shutdown: CancellationToken) {
    let pruner = jobs.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! { _ = beat.tick() => {}, _ = stop.cancelled() => return }
            match pruner.prune(settings.retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned finished jobs past their retention"),
                Err(error) => tracing::warn!(error = format!("{error:#}"), "could not prune finished jobs"),
            }
            match attachments.sweep_unsent(UNSENT_RETENTION).await {
                Ok(0) => {}
                Ok(swept) => tracing::info!(swept, "removed uploads no message was sent with"),
                Err(error) => tracing::warn!(error = format!("{error:#}"), "could not sweep unsent uploads"),
            }
        }
    });
    jobs.run(settings.workers, shutdown).await;
}

async fn record_digests(digests: Arc<Digests>, schedule: DigestSchedule, shutdown: CancellationToken) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let mut beat = tokio::time::interval(schedule.interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let push = schedule.push_url.as_deref().map(|url| (&client, url));
        if let Err(error) = digests.tick(push).await {
            tracing::error!(error = format!("{error:#}"), "could not record or push a digest of the log");
        }
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

/// The NOTIFY channel that tells every process to drop its cached principals.
const ACCESS_CHANNEL: &str = "inbox_access";

/// Tells other processes of this one's access changes (its own cache sees them through
/// the access generation), and drops their changes from this one's cache, and the
/// keys of contacts they erased.
async fn relay_access_changes(state: AppState, shutdown: CancellationToken) {
    let mut changed = state.commands.store().access_changed().subscribe();
    let pool = state.pool.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                result = changed.changed() => if result.is_err() { return },
                _ = stop.cancelled() => return,
            }
            if let Err(error) = sqlx::query("SELECT pg_notify($1, '')").bind(ACCESS_CHANNEL).execute(&pool).await {
                tracing::warn!(%error, "could not notify other processes of an access change");
            }
        }
    });
    while !shutdown.is_cancelled() {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&state.pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "access-change listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen_all([ACCESS_CHANNEL, ERASURE_CHANNEL]).await {
            tracing::warn!(%error, "access-change listener cannot LISTEN; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Changes missed while not listening: start clean.
        state.authenticator.invalidate();
        state.keyring.clear_cache();
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(note) if note.channel() == ERASURE_CHANNEL => {
                        if let Ok(subject) = note.payload().parse() {
                            state.keyring.forget(subject);
                        }
                    }
                    Ok(_) => state.authenticator.invalidate(),
                    Err(error) => {
                        tracing::warn!(%error, "access-change listener lost its connection; reconnecting");
                        break;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
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
