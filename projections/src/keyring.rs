//! The keys behind personal data in the log: a data key per data subject (a contact, a
//! member of an account, a login) wrapped by the master key, and keyed hashes for
//! identities that must be looked up but never stored in clear. The event envelope
//! (`envelope`) seals and opens fields with these keys.
//!
//! Lives on the read side because both sides need it: the store seals when it writes
//! and the feed opens when it reads. Erasing a subject deletes its wrapped key, after
//! which every sealed field of that subject opens to `null` — replays included.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
pub use aes_gcm::Aes256Gcm;
use aes_gcm::{AeadCore, Key, Nonce};
use anyhow::{anyhow, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use sqlx::PgExecutor;
use uuid::Uuid;

/// Unwrapped data keys kept in memory; the cache is cleared when it grows past this.
const CACHE_LIMIT: usize = 50_000;

type HmacSha256 = Hmac<Sha256>;

/// The master key and what derives from it.
pub struct Keyring {
    master: Aes256Gcm,
    master_bytes: [u8; 32],
    /// Keyed once: each hash starts from a clone instead of hashing the key again.
    routing: HmacSha256,
    data_keys: Mutex<DataKeys>,
}

/// Unwrapped keys, and the subjects erased since start: a key read from the database
/// just before its erasure committed must not come back into the cache after.
#[derive(Default)]
struct DataKeys {
    keys: HashMap<Uuid, Arc<Aes256Gcm>>,
    erased: HashSet<Uuid>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(..)")
    }
}

/// A fresh data key: the cipher to seal with now, and its wrapped form to store.
pub struct NewDataKey {
    pub cipher: Arc<Aes256Gcm>,
    pub wrapped: Vec<u8>,
}

impl Keyring {
    /// Parses `MASTER_KEY`: 32 bytes, base64.
    pub fn from_base64(master_key: &str) -> anyhow::Result<Self> {
        let bytes = BASE64.decode(master_key.trim()).context("MASTER_KEY is not valid base64")?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| anyhow!("MASTER_KEY must decode to exactly 32 bytes"))?;
        Ok(Self::new(bytes))
    }

    pub fn new(master_key: [u8; 32]) -> Self {
        let routing = derive(&master_key, "routing-hash");
        Self {
            master: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&master_key)),
            master_bytes: master_key,
            routing: <HmacSha256 as Mac>::new_from_slice(&routing).expect("HMAC takes any key length"),
            data_keys: Mutex::new(DataKeys::default()),
        }
    }

    /// A 32-byte secret for one purpose (session signing, widget tokens, hashing),
    /// derived from the master key so operators keep one secret.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        derive(&self.master_bytes, purpose)
    }

    /// A keyed hash of an identity (hex): the same input always maps to the same
    /// value, which cannot be reversed or recomputed without the master key.
    pub fn keyed_hash(&self, parts: &[&str]) -> String {
        let mut mac = self.routing.clone();
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Seals a setting's secret (a webhook's signing secret and URL, later channel
    /// tokens) for the settings tables: never in the log, never in clear at rest.
    /// `binding` ties it to its row (`webhook/<id>/secret`): moved elsewhere, it does
    /// not open.
    pub fn seal_setting(&self, binding: &str, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
        encrypt(&self.settings_cipher(), binding.as_bytes(), plain)
    }

    /// Opens what [`Keyring::seal_setting`] sealed with the same binding.
    pub fn open_setting(&self, binding: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        decrypt(&self.settings_cipher(), binding.as_bytes(), sealed).context("a sealed setting does not open")
    }

    fn settings_cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.derive("settings")))
    }

    /// Generates a data key for a new subject; the caller stores `wrapped` in
    /// `data_keys` in the same transaction as the subject's first sealed event.
    pub fn new_data_key(&self, subject: Uuid) -> anyhow::Result<NewDataKey> {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let wrapped = encrypt(&self.master, subject.as_bytes(), &key)?;
        let cipher = Arc::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)));
        self.remember(subject, cipher.clone());
        Ok(NewDataKey { cipher, wrapped })
    }

    /// The subject's data key, or `None` once it has been shredded.
    pub async fn data_key<'e>(&self, db: impl PgExecutor<'e>, subject: Uuid) -> anyhow::Result<Option<Arc<Aes256Gcm>>> {
        {
            let cache = self.data_keys.lock().expect("key cache lock");
            if cache.erased.contains(&subject) {
                return Ok(None);
            }
            if let Some(cipher) = cache.keys.get(&subject) {
                return Ok(Some(cipher.clone()));
            }
        }
        let wrapped: Option<Vec<u8>> = sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE subject_id = $1")
            .bind(subject)
            .fetch_optional(db)
            .await
            .context("failed to read a data key")?;
        let Some(wrapped) = wrapped else { return Ok(None) };
        let key = decrypt(&self.master, subject.as_bytes(), &wrapped).context("failed to unwrap a data key")?;
        let cipher =
            Arc::new(Aes256Gcm::new_from_slice(&key).map_err(|_| anyhow!("a stored data key has the wrong length"))?);
        self.remember(subject, cipher.clone());
        Ok(Some(cipher))
    }

    /// Drops a shredded key from memory (erasure, here or in another process).
    pub fn forget(&self, subject: Uuid) {
        let mut cache = self.data_keys.lock().expect("key cache lock");
        cache.keys.remove(&subject);
        cache.erased.insert(subject);
    }

    /// Drops every unwrapped key (they are read again from the database): after
    /// erasures may have been missed, e.g. while the erasure listener reconnected.
    pub fn clear_cache(&self) {
        self.data_keys.lock().expect("key cache lock").keys.clear();
    }

    fn remember(&self, subject: Uuid, cipher: Arc<Aes256Gcm>) {
        let mut cache = self.data_keys.lock().expect("key cache lock");
        if cache.erased.contains(&subject) {
            return;
        }
        if cache.keys.len() >= CACHE_LIMIT {
            cache.keys.clear();
        }
        cache.keys.insert(subject, cipher);
    }
}

/// A 32-byte secret for `purpose`, derived from the master key.
fn derive(master_key: &[u8; 32], purpose: &str) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master_key).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Seals `plain` with `cipher` (AES-256-GCM, a fresh nonce first), bound to `aad`.
pub fn encrypt(cipher: &Aes256Gcm, aad: &[u8], plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let mut out = nonce.to_vec();
    out.extend(cipher.encrypt(&nonce, Payload { msg: plain, aad }).map_err(|_| anyhow!("encryption failed"))?);
    Ok(out)
}

/// Opens what [`encrypt`] sealed with the same key and `aad`.
pub fn decrypt(cipher: &Aes256Gcm, aad: &[u8], bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    if bytes.len() < 12 {
        return Err(anyhow!("sealed value too short"));
    }
    let (nonce, body) = bytes.split_at(12);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .map_err(|_| anyhow!("sealed value does not open with this key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_key_is_not_cached_again_by_a_read_that_raced_the_erasure() {
        let keyring = Keyring::new([7; 32]);
        let subject = Uuid::from_u128(1);
        let key = keyring.new_data_key(subject).unwrap();
        keyring.remember(subject, key.cipher.clone());
        assert!(keyring.data_keys.lock().unwrap().keys.contains_key(&subject));
        keyring.forget(subject);
        keyring.remember(subject, key.cipher);
        assert!(!keyring.data_keys.lock().unwrap().keys.contains_key(&subject));
    }

    #[test]
    fn a_sealed_setting_opens_only_bound_to_its_row() {
        let keyring = Keyring::new([5; 32]);
        let sealed = keyring.seal_setting("webhook/1/secret", b"whsec_abc").unwrap();
        assert_eq!(keyring.open_setting("webhook/1/secret", &sealed).unwrap(), b"whsec_abc");
        assert!(keyring.open_setting("webhook/2/secret", &sealed).is_err());
        assert!(Keyring::new([6; 32]).open_setting("webhook/1/secret", &sealed).is_err());
    }

    #[test]
    fn keyed_hashes_depend_on_the_master_key_and_on_part_boundaries() {
        let a = Keyring::new([1; 32]);
        let b = Keyring::new([2; 32]);
        assert_eq!(a.keyed_hash(&["inbox", "+5511"]), a.keyed_hash(&["inbox", "+5511"]));
        assert_ne!(a.keyed_hash(&["inbox", "+5511"]), b.keyed_hash(&["inbox", "+5511"]));
        assert_ne!(a.keyed_hash(&["ab", "c"]), a.keyed_hash(&["a", "bc"]));
    }
}
