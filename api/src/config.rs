//! Configuration from the environment (12-factor); `.env.example` documents each
//! variable. Secrets are never logged: `Debug` shows that they are set, not what.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};

/// Where the process runs: development tolerates missing secrets, production not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone)]
pub struct Config {
    pub environment: Environment,
    pub database_url: String,
    pub database_max_connections: u32,
    pub listen_addr: SocketAddr,
    /// `MASTER_KEY`, base64 of 32 bytes.
    pub master_key: String,
    pub read_your_writes_timeout: Duration,
    pub projector_poll: Duration,
    /// Streams (conversations, routes…) kept in memory between commands.
    pub aggregate_cache_size: usize,
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// Rate limits are shared through Redis when set, kept per process otherwise.
    pub redis_url: Option<String>,
    /// Take the client's address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Largest request body accepted.
    pub max_request_bytes: usize,
    /// Whether the schema answers introspection queries.
    pub graphql_introspection: bool,
    pub graphql_depth_limit: usize,
    pub graphql_complexity_limit: usize,
    pub graphql_max_fields: u64,
    pub graphql_max_aliases: u64,
    /// Introspection for callers without credentials (off: the schema is for users).
    pub graphql_anonymous_introspection: bool,
    /// Serve HTTPS with this certificate chain and key (PEM), else plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The key id new events are chained with (1..=255); see ADR 0005.
    pub chain_key_id: u8,
    /// `DIGEST_SIGNING_KEY`: base64 Ed25519 seed; derived from the master key if unset.
    pub digest_signing_key: Option<String>,
    /// How often a digest of the log is recorded when it moved; zero: never by itself.
    pub digest_interval: Duration,
    /// Where each digest is POSTed as it is recorded.
    pub digest_push_url: Option<String>,
    /// Origins whose pages may call `/graphql` from a browser (CORS).
    pub cors_allowed_origins: Vec<String>,
    /// Whether tenants' settings may aim requests at private, loopback or link-local
    /// addresses (tests, on-premise receivers).
    pub outbound_allow_private_targets: bool,
    /// Jobs this process runs at once.
    pub job_workers: usize,
    /// How long finished and dead jobs are kept.
    pub job_retention: Duration,
    /// How long an attempt may run before another worker may take its job (a worker
    /// that died is noticed after this).
    pub job_lease: Duration,
    /// The relay notification e-mails go through (`smtp://host:port`); none: no e-mail.
    pub smtp_url: Option<String>,
    /// The sender of notification e-mails.
    pub smtp_from: String,
    /// The operator's contact push services are given (`mailto:` or `https:`).
    pub vapid_subject: String,
    /// `META_GRAPH_API_URL`: where WhatsApp and Messenger sends go (the Graph API;
    /// a loopback fake in tests). Operator configuration, never a tenant's.
    pub meta_graph_api_url: String,
    /// `META_GRAPH_API_VERSION`: the Graph API version the paths name.
    pub meta_graph_api_version: String,
    /// `ATTACHMENTS_DIR`: where files of messages are kept (sealed).
    pub attachments_dir: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("environment", &self.environment)
            .field("database_max_connections", &self.database_max_connections)
            .field("listen_addr", &self.listen_addr)
            .field("master_key", &"<set>")
            .field("read_your_writes_timeout", &self.read_your_writes_timeout)
            .field("projector_poll", &self.projector_poll)
            .field("aggregate_cache_size", &self.aggregate_cache_size)
            .field("session_ttl", &self.session_ttl)
            .field("redis", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("trust_forwarded_for", &self.trust_forwarded_for)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("graphql_introspection", &self.graphql_introspection)
            .field("graphql_depth_limit", &self.graphql_depth_limit)
            .field("graphql_complexity_limit", &self.graphql_complexity_limit)
            .field("graphql_max_fields", &self.graphql_max_fields)
            .field("graphql_max_aliases", &self.graphql_max_aliases)
            .field("graphql_anonymous_introspection", &self.graphql_anonymous_introspection)
            .field("tls", &self.tls)
            .field("chain_key_id", &self.chain_key_id)
            .field("digest_signing_key", &self.digest_signing_key.as_ref().map(|_| "<set>"))
            .field("digest_interval", &self.digest_interval)
            .field("digest_push_url", &self.digest_push_url)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("smtp", &self.smtp_url.as_ref().map(|_| "<set>"))
            .field("meta_graph_api_url", &self.meta_graph_api_url)
            .field("attachments_dir", &self.attachments_dir)
            .finish_non_exhaustive()
    }
}

/// A fixed development key, used only when APP_ENV=development and no MASTER_KEY is
/// set, so a first run works; production refuses to start without a real one.
const DEVELOPMENT_MASTER_KEY: &str = "ZGV2ZWxvcG1lbnQtb25seS1tYXN0ZXIta2V5LTMyYiE=";

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let environment = match var("APP_ENV").as_deref().unwrap_or("production") {
            "development" | "dev" | "test" => Environment::Development,
            "production" | "prod" => Environment::Production,
            other => bail!("APP_ENV must be development or production, not '{other}'"),
        };
        let master_key = match (var("MASTER_KEY"), environment) {
            (Some(key), _) => key,
            (None, Environment::Development) => {
                tracing::warn!("MASTER_KEY is not set; using the development key (never do this in production)");
                DEVELOPMENT_MASTER_KEY.to_string()
            }
            (None, Environment::Production) => {
                bail!("MASTER_KEY is required in production: generate one with `head -c32 /dev/urandom | base64`")
            }
        };
        Ok(Self {
            environment,
            database_url: var("DATABASE_URL")
                .context("DATABASE_URL is required, e.g. postgres://postgres@127.0.0.1/inbox")?,
            database_max_connections: parse("DATABASE_MAX_CONNECTIONS", 8)?,
            listen_addr: parse("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            master_key,
            read_your_writes_timeout: Duration::from_millis(parse("READ_YOUR_WRITES_TIMEOUT_MS", 2000)?),
            projector_poll: Duration::from_millis(parse("PROJECTOR_POLL_MS", 200)?),
            aggregate_cache_size: parse("AGGREGATE_CACHE_SIZE", 10_000)?,
            session_ttl: Duration::from_secs(3600 * parse::<u64>("SESSION_TTL_HOURS", 24 * 30)?),
            redis_url: var("REDIS_URL"),
            trust_forwarded_for: parse("TRUST_FORWARDED_FOR", false)?,
            max_request_bytes: parse("MAX_REQUEST_BYTES", 1024 * 1024)?,
            graphql_introspection: parse("GRAPHQL_INTROSPECTION", true)?,
            graphql_depth_limit: parse("GRAPHQL_DEPTH_LIMIT", 20)?,
            graphql_complexity_limit: parse("GRAPHQL_COMPLEXITY_LIMIT", 100_000)?,
            graphql_max_fields: parse("GRAPHQL_MAX_FIELDS", 2_000)?,
            graphql_max_aliases: parse("GRAPHQL_MAX_ALIASES", 50)?,
            graphql_anonymous_introspection: parse("GRAPHQL_ANONYMOUS_INTROSPECTION", false)?,
            tls: match (var("TLS_CERT_PATH"), var("TLS_KEY_PATH")) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert_path: cert.into(), key_path: key.into() }),
                (None, None) => None,
                _ => bail!("TLS_CERT_PATH and TLS_KEY_PATH are set together or not at all"),
            },
            chain_key_id: parse("CHAIN_KEY_ID", 1)?,
            digest_signing_key: var("DIGEST_SIGNING_KEY"),
            digest_interval: Duration::from_secs(parse("DIGEST_INTERVAL_SECS", 60)?),
            digest_push_url: var("DIGEST_PUSH_URL"),
            cors_allowed_origins: var("CORS_ALLOWED_ORIGINS")
                .map(|list| list.split(',').map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect())
                .unwrap_or_default(),
            outbound_allow_private_targets: parse("OUTBOUND_ALLOW_PRIVATE_TARGETS", false)?,
            job_workers: parse("JOB_WORKERS", 4)?,
            job_retention: Duration::from_secs(24 * 3600 * parse::<u64>("JOB_RETENTION_DAYS", 14)?),
            job_lease: Duration::from_secs(parse("JOB_LEASE_SECS", 60)?),
            smtp_url: var("SMTP_URL"),
            smtp_from: var("SMTP_FROM").unwrap_or_else(|| "inboxd <notifications@localhost>".into()),
            vapid_subject: var("VAPID_SUBJECT").unwrap_or_else(|| "mailto:notifications@localhost".into()),
            meta_graph_api_url: var("META_GRAPH_API_URL").unwrap_or_else(|| "https://graph.facebook.com".into()),
            meta_graph_api_version: var("META_GRAPH_API_VERSION").unwrap_or_else(|| "v21.0".into()),
            attachments_dir: var("ATTACHMENTS_DIR").unwrap_or_else(|| "data/attachments".into()).into(),
        })
    }
}

/// The same server and credentials as `url`, another database: tests and the
/// benchmark make databases of their own next to the configured one.
pub fn database_url_with_name(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|e| anyhow::anyhow!("{name}='{value}' is invalid: {e}")),
    }
}
