//! Authentication: who is calling, in which account. Checked per operation (each
//! resolver asks for the principal), so public operations (login) sit beside the rest.
//!
//! Resolving a bearer token costs a query; principals are cached per process and
//! dropped whenever credentials, roles or memberships change: at once for this
//! process's own commits (an access generation), by NOTIFY for other processes'.
//! [`CACHE_TTL`] bounds staleness should a notification be missed.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use commands::access::TokenKind;
use commands::access::{token_hash, TOKEN_PREFIX};
use domain::values::{Permission, Role};
use lru::LruCache;
use projections::shared_feed::Wake;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::ApiError;

/// How long a resolved principal is reused without asking the database.
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_ENTRIES: usize = 10_000;
/// The header that picks the account a session acts in.
pub const ACCOUNT_HEADER: &str = "x-account-id";

/// The caller: a user acting in one account with that account's role. The account
/// comes from the credential (or, for a session, a header naming one of the user's
/// accounts), never from operation input.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
    /// The session or API token the request came with.
    pub credential_id: Uuid,
    pub credential: TokenKind,
    /// The inboxes the user works in (what an agent may see).
    pub inboxes: Arc<[Uuid]>,
    /// A custom role's permissions, which narrow an agent's.
    pub custom_permissions: Option<Arc<[Permission]>>,
    /// The user's access version this was resolved at: a command commits only while
    /// it is still current (so a principal cached before a change never acts).
    pub access_version: i64,
}

/// The request's credentials as resolved once per request, and what they were
/// resolved from (to resolve them again, bypassing the cache).
#[derive(Debug, Clone)]
pub struct Auth(pub Result<Principal, Refusal>, Option<CacheKey>);

/// Why a request has no principal; reported when an operation needs one.
#[derive(Debug, Clone, Default)]
pub enum Refusal {
    #[default]
    NoCredentials,
    /// Valid credentials, but not for the account the header names.
    NotAMember,
}

impl Default for Auth {
    fn default() -> Self {
        Auth(Err(Refusal::NoCredentials), None)
    }
}

impl Auth {
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        match &self.0 {
            Ok(principal) => Ok(principal),
            Err(Refusal::NoCredentials) => Err(ApiError::unauthenticated()),
            Err(Refusal::NotAMember) => Err(ApiError::forbidden("you are not a member of that account")),
        }
    }
}

type CacheKey = (Vec<u8>, Option<Uuid>);

pub struct Authenticator {
    pool: PgPool,
    /// Each principal with when it was resolved and the access generation it saw.
    cache: Mutex<LruCache<CacheKey, (Principal, Instant, u64)>>,
    /// Moves on with every commit in this process that changes access, before the
    /// command returns: a cached principal older than it is never served.
    generation: watch::Receiver<u64>,
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    token_id: Uuid,
    kind: String,
    user_id: Uuid,
    account_id: Uuid,
    role: String,
    permissions: Option<Vec<String>>,
    inboxes: Vec<Uuid>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    access_version: i64,
}

impl Authenticator {
    /// `access_changed`: the store's signal after commits that change access.
    pub fn new(pool: PgPool, access_changed: &Wake) -> Self {
        let capacity = NonZeroUsize::new(CACHE_ENTRIES).expect("non-zero cache size");
        Self { pool, cache: Mutex::new(LruCache::new(capacity)), generation: access_changed.subscribe() }
    }

    /// Forgets every cached principal: access changed somewhere.
    pub fn invalidate(&self) {
        self.cache.lock().expect("principal cache").clear();
    }

    /// The request's credentials resolved from the database, not the cache: after a
    /// commit found the cached principal's access out of date.
    pub async fn reauthenticate(&self, auth: &Auth) -> Result<Auth, ApiError> {
        let Some(key) = auth.1.clone() else { return Ok(Auth::default()) };
        self.cache.lock().expect("principal cache").pop(&key);
        self.resolve(key).await
    }

    /// Resolves `Authorization: Bearer <token>` (and `X-Account-Id` for a session).
    /// A missing, malformed, unknown, expired or revoked token gives no principal.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Auth, ApiError> {
        let Some(token) = bearer_token(headers) else { return Ok(Auth::default()) };
        let account = match headers.get(ACCOUNT_HEADER) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<Uuid>().ok())
                    .ok_or_else(|| ApiError::bad_input("X-Account-Id must be an account id"))?,
            ),
        };
        self.cached_or_resolved((token_hash(token), account)).await
    }

    /// The same credentials as `auth`, as they stand now (a long-lived subscription
    /// asks before each push: a revoked token or a changed membership shows at once).
    pub async fn refresh(&self, auth: &Auth) -> Result<Auth, ApiError> {
        match auth.1.clone() {
            Some(key) => self.cached_or_resolved(key).await,
            None => Ok(Auth::default()),
        }
    }

    async fn cached_or_resolved(&self, key: CacheKey) -> Result<Auth, ApiError> {
        let generation = *self.generation.borrow();
        if let Some((principal, at, seen)) = self.cache.lock().expect("principal cache").get(&key) {
            if at.elapsed() < CACHE_TTL && *seen == generation {
                return Ok(Auth(Ok(principal.clone()), Some(key.clone())));
            }
        }
        self.resolve(key).await
    }

    async fn resolve(&self, key: CacheKey) -> Result<Auth, ApiError> {
        let (account, generation) = (key.1, *self.generation.borrow());
        let row: Option<PrincipalRow> = sqlx::query_as(
            "SELECT t.token_id, t.kind, t.user_id, m.account_id, m.role, r.permissions, t.expires_at, \
                    coalesce(v.version, 0) AS access_version, \
                    ARRAY(SELECT i.inbox_id FROM inbox_memberships i \
                          WHERE i.account_id = m.account_id AND i.user_id = t.user_id) AS inboxes \
             FROM access_tokens t \
             JOIN account_memberships m ON m.user_id = t.user_id \
              AND m.account_id = CASE WHEN t.kind = 'session' THEN coalesce($2, t.account_id) ELSE t.account_id END \
             LEFT JOIN custom_roles r ON r.role_id = m.custom_role_id \
             LEFT JOIN access_versions v ON v.user_id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
        )
        .bind(&key.0)
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Auth(Err(self.why_refused(&key.0, account).await?), Some(key)));
        };
        if account.is_some_and(|a| a != row.account_id) {
            // An API token acts in the account it was issued for, only.
            return Ok(Auth(Err(Refusal::NotAMember), Some(key)));
        }
        let principal = Principal {
            account_id: row.account_id,
            user_id: row.user_id,
            role: row.role.parse().unwrap_or(Role::Agent),
            credential_id: row.token_id,
            credential: if row.kind == "session" { TokenKind::Session } else { TokenKind::Api },
            inboxes: row.inboxes.into(),
            custom_permissions: row
                .permissions
                .map(|p| p.iter().filter_map(|p| p.parse().ok()).collect::<Vec<Permission>>().into()),
            access_version: row.access_version,
        };
        // A session about to expire is not served from the cache past its end.
        let cacheable = row.expires_at.is_none_or(|end| end > chrono::Utc::now() + CACHE_TTL);
        if cacheable {
            self.cache
                .lock()
                .expect("principal cache")
                .put(key.clone(), (principal.clone(), Instant::now(), generation));
        }
        Ok(Auth(Ok(principal), Some(key)))
    }

    /// A live token naming an account its user is not in is FORBIDDEN, not unknown.
    async fn why_refused(&self, hash: &[u8], account: Option<Uuid>) -> Result<Refusal, ApiError> {
        if account.is_none() {
            return Ok(Refusal::NoCredentials);
        }
        let live: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM access_tokens WHERE token_hash = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > now()))",
        )
        .bind(hash)
        .fetch_one(&self.pool)
        .await?;
        Ok(if live { Refusal::NotAMember } else { Refusal::NoCredentials })
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() < 200)
}
