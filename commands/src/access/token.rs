//! Bearer credentials: login sessions and personal API tokens, stored as hashes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Prefix of every bearer credential, so leaked ones are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "ibx_";

/// The sha256 of a token, as stored: a leaked table does not leak tokens.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A fresh secret: `prefix` and 32 random bytes.
pub(crate) fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", BASE64.encode(bytes))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Api,
    Session,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Api => "api",
            TokenKind::Session => "session",
        }
    }
}

/// A bearer credential as stored: a personal API token or a login session.
#[derive(Clone)]
pub struct NewAccessToken {
    pub token: Uuid,
    pub token_hash: Vec<u8>,
    pub user: Uuid,
    pub account: Uuid,
    pub name: String,
    pub kind: TokenKind,
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewAccessToken {
    /// A fresh credential: the row to store, and the secret to show once.
    pub fn issue(
        user: Uuid,
        account: Uuid,
        name: impl Into<String>,
        kind: TokenKind,
        expires_at: Option<DateTime<Utc>>,
    ) -> (Self, String) {
        let secret = new_secret(TOKEN_PREFIX);
        let token = Self {
            token: Uuid::now_v7(),
            token_hash: token_hash(&secret),
            user,
            account,
            name: name.into(),
            kind,
            expires_at,
        };
        (token, secret)
    }
}
