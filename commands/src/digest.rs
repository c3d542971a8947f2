//! Signed digests of the whole log, for auditors to keep outside the database.
//!
//! A digest commits, through a feed position, to every stream's head (its sequence
//! and chain hash): each stream is a leaf in one of 65,536 buckets (by a hash of its
//! key), a bucket hashes its leaves in key order, and a binary tree over the buckets
//! gives the root, which is signed with Ed25519. The tree as of the newest digest is
//! kept in the database, so a digest costs the streams that moved since the last one
//! and the buckets they fall in, not the whole log. Anything written before a digest
//! an auditor holds cannot be changed or removed without the root (or the signature)
//! failing to match; see ADR 0005.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use projections::feed::FeedPosition;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::{Connection, PgConnection, PgPool};

/// A stream's head as a digest committed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub sequence: i64,
    pub hash: Vec<u8>,
}

/// Buckets of the tree: a digest rewrites the buckets its moved streams fall in.
pub const BUCKETS: usize = 1 << 16;
/// Events one digest covers at most: a first digest of a large log is recorded as
/// several, each written in a short transaction (a long one would hold back the feed).
const MAX_EVENTS_PER_DIGEST: i64 = 100_000;
/// Only one process records digests at a time.
const DIGEST_LOCK: &str = "log-digest";

type Hash = [u8; 32];

/// The Ed25519 key digests are signed with, and its public id.
pub struct DigestKey {
    signing: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DigestKey({})", self.key_id)
    }
}

impl DigestKey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let key_id = hex::encode(&Sha256::digest(signing.verifying_key().as_bytes())[..8]);
        Self { signing, key_id }
    }

    /// `DIGEST_SIGNING_KEY`: base64 of a 32-byte Ed25519 seed.
    pub fn from_base64(seed: &str) -> anyhow::Result<Self> {
        let bytes = BASE64.decode(seed.trim()).context("DIGEST_SIGNING_KEY is not valid base64")?;
        let seed: [u8; 32] =
            bytes.try_into().map_err(|_| anyhow!("DIGEST_SIGNING_KEY must decode to exactly 32 bytes"))?;
        Ok(Self::from_seed(seed))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key (base64) an auditor pins to check digests with.
    pub fn public_key(&self) -> String {
        BASE64.encode(self.signing.verifying_key().as_bytes())
    }

    fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

/// One digest, as the JSON line `inboxd digest` prints and auditors keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub version: u32,
    pub digest: i64,
    pub through_transaction: i64,
    pub through_position: i64,
    /// Events in the log up to `through`.
    pub events: i64,
    /// The tree's root (hex).
    pub root: String,
    /// Rows up to this global position may carry the old unkeyed chain.
    pub chain_cutover: i64,
    pub signed_at: DateTime<Utc>,
    pub key_id: String,
    /// Ed25519 over [`Digest::signed_text`] (base64).
    pub signature: String,
}

impl Digest {
    /// What the signature covers: every field but the signature, one per line.
    pub fn signed_text(&self) -> String {
        format!(
            "inbox-log-digest/{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.version,
            self.digest,
            self.through_transaction,
            self.through_position,
            self.events,
            self.root,
            self.chain_cutover,
            self.signed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            self.key_id
        )
    }

    /// Parses a digest line and checks its signature with `key`.
    pub fn parse(line: &str, key: &DigestKey) -> anyhow::Result<Self> {
        let digest: Digest = serde_json::from_str(line.trim()).context("the digest is not a digest's JSON line")?;
        if digest.key_id != key.key_id {
            bail!("the digest was signed with key {}, not this server's key {}", digest.key_id, key.key_id);
        }
        let signature = BASE64.decode(&digest.signature).context("the digest's signature is not base64")?;
        let signature =
            Signature::from_slice(&signature).map_err(|_| anyhow!("the digest's signature is malformed"))?;
        key.verifying_key()
            .verify(digest.signed_text().as_bytes(), &signature)
            .map_err(|_| anyhow!("the digest's signature does not verify with this server's key"))?;
        Ok(digest)
    }

    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a digest serialises")
    }

    pub fn through(&self) -> FeedPosition {
        FeedPosition { transaction_id: self.through_transaction, global_position: self.through_position }
    }
}

/// The bucket a stream's leaf falls in.
pub fn bucket_of(aggregate_type: &str, aggregate_id: &str) -> usize {
    let hash = Sha256::new()
        .chain_update((aggregate_type.len() as u64).to_be_bytes())
        .chain_update(aggregate_type)
        .chain_update(aggregate_id)
        .finalize();
    usize::from(u16::from_be_bytes([hash[0], hash[1]]))
}

/// A stream's leaf: its key, head sequence and head hash.
pub fn leaf_hash(aggregate_type: &str, aggregate_id: &str, sequence: i64, hash: &[u8]) -> Hash {
    Sha256::new()
        .chain_update(b"leaf")
        .chain_update((aggregate_type.len() as u64).to_be_bytes())
        .chain_update(aggregate_type)
        .chain_update((aggregate_id.len() as u64).to_be_bytes())
        .chain_update(aggregate_id)
        .chain_update(sequence.to_be_bytes())
        .chain_update(hash)
        .finalize()
        .into()
}

/// A bucket's leaves in key order (type, then id, as bytes).
#[derive(Default)]
pub struct Bucket(BTreeMap<(String, String), Hash>);

impl Bucket {
    pub fn put(&mut self, aggregate_type: &str, aggregate_id: &str, leaf: Hash) {
        self.0.insert((aggregate_type.to_string(), aggregate_id.to_string()), leaf);
    }

    pub fn hash(&self) -> Hash {
        let mut hasher = Sha256::new().chain_update(b"bucket");
        for leaf in self.0.values() {
            hasher.update(leaf);
        }
        hasher.finalize().into()
    }
}

fn empty_bucket() -> Hash {
    Bucket::default().hash()
}

/// The root over every bucket's hash.
pub fn root(buckets: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = buckets.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                Sha256::new().chain_update(b"node").chain_update(pair[0]).chain_update(pair[1]).finalize().into()
            })
            .collect();
    }
    level[0]
}

/// Records digests and answers what a digest saw.
pub struct Digests {
    pool: PgPool,
    key: DigestKey,
    /// Bucket hashes as of a digest id: a digest built on another process's newer one
    /// reloads them (never a stale tree).
    buckets: Mutex<Option<(i64, Vec<Hash>)>>,
}

#[derive(sqlx::FromRow)]
struct NewHead {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    hash: Option<Vec<u8>>,
}

impl Digests {
    pub fn new(pool: PgPool, key: DigestKey) -> Self {
        Self { pool, key, buckets: Mutex::new(None) }
    }

    pub fn key(&self) -> &DigestKey {
        &self.key
    }

    /// Records digests until they cover the log (below the feed watermark), then, with
    /// `push`, sends those not yet delivered: all under one lock, so whichever process
    /// ticks, each digest is recorded once and pushed by one process at a time (a push
    /// that landed but was not marked, before a crash, is sent again: receivers key on
    /// the digest number). `None` if the log has not moved, or another process holds
    /// the lock.
    pub async fn tick(&self, push: Option<(&reqwest::Client, &str)>) -> anyhow::Result<Option<Digest>> {
        let mut conn = self.pool.acquire().await.context("failed to get a connection to record a digest")?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(DIGEST_LOCK)
            .fetch_one(&mut *conn)
            .await
            .context("failed to take the digest lock")?;
        if !locked {
            return Ok(None);
        }
        let mut recorded = None;
        let mut outcome = loop {
            match self.record_one(&mut conn).await {
                Ok(Some((digest, more))) => {
                    recorded = Some(digest);
                    if !more {
                        break Ok(recorded);
                    }
                }
                Ok(None) => break Ok(recorded),
                Err(error) => break Err(error),
            }
        };
        if let (Ok(_), Some((client, url))) = (&outcome, push) {
            if let Err(error) = self.push_pending(&mut conn, client, url).await {
                outcome = Err(error);
            }
        }
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(DIGEST_LOCK)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // The lock goes with the session: never return it to the pool holding it.
            conn.detach();
        }
        outcome
    }

    /// One digest after the last; with whether more events remain beyond it.
    async fn record_one(&self, conn: &mut PgConnection) -> anyhow::Result<Option<(Digest, bool)>> {
        let last: Option<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT digest_id, through_txid, through_position, events FROM log_digests ORDER BY digest_id DESC LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await
        .context("failed to read the last digest")?;
        let (last_id, after, events_before) = match last {
            Some((id, txid, position, events)) => {
                (id, FeedPosition { transaction_id: txid, global_position: position }, events)
            }
            None => (0, FeedPosition::START, 0),
        };
        let (count, through_txid, through_position): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT count(*), (array_agg(t ORDER BY t DESC, p DESC))[1], (array_agg(p ORDER BY t DESC, p DESC))[1] \
             FROM (SELECT transaction_id::text::bigint AS t, global_position AS p FROM events \
                   WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
                     AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                   ORDER BY transaction_id, global_position LIMIT $3) next",
        )
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .bind(MAX_EVENTS_PER_DIGEST)
        .fetch_one(&mut *conn)
        .await
        .context("failed to find what the next digest covers")?;
        let (Some(through_txid), Some(through_position)) = (through_txid, through_position) else { return Ok(None) };
        let heads: Vec<NewHead> = sqlx::query_as(
            "SELECT DISTINCT ON (aggregate_type, aggregate_id) aggregate_type, aggregate_id, sequence, hash FROM events \
             WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
               AND (transaction_id, global_position) <= ($3::text::xid8, $4) \
             ORDER BY aggregate_type, aggregate_id, sequence DESC",
        )
        .bind(after.transaction_id.to_string())
        .bind(after.global_position)
        .bind(through_txid.to_string())
        .bind(through_position)
        .fetch_all(&mut *conn)
        .await
        .context("failed to read the streams that moved")?;

        // The buckets the moved streams fall in, rebuilt from their current leaves.
        let mut touched: BTreeMap<usize, Bucket> = BTreeMap::new();
        for head in &heads {
            touched.entry(bucket_of(&head.aggregate_type, &head.aggregate_id)).or_default();
        }
        let ids: Vec<i32> = touched.keys().map(|b| *b as i32).collect();
        for chunk in ids.chunks(4096) {
            let leaves: Vec<(String, String, i32, i64, Vec<u8>)> = sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, bucket, sequence, hash FROM digest_leaves WHERE bucket = ANY($1)",
            )
            .bind(chunk)
            .fetch_all(&mut *conn)
            .await
            .context("failed to read the buckets that moved")?;
            for (kind, id, bucket, sequence, hash) in leaves {
                let leaf = leaf_hash(&kind, &id, sequence, &hash);
                touched.entry(bucket as usize).or_default().put(&kind, &id, leaf);
            }
        }
        for head in &heads {
            let leaf = leaf_hash(&head.aggregate_type, &head.aggregate_id, head.sequence, head_hash(head));
            let bucket = bucket_of(&head.aggregate_type, &head.aggregate_id);
            touched.entry(bucket).or_default().put(&head.aggregate_type, &head.aggregate_id, leaf);
        }
        let bucket_hashes: Vec<(i32, Vec<u8>)> =
            touched.iter().map(|(bucket, leaves)| (*bucket as i32, leaves.hash().to_vec())).collect();

        let mut tree = self.tree_as_of(conn, last_id).await?;
        for (bucket, hash) in &bucket_hashes {
            tree[*bucket as usize].copy_from_slice(hash);
        }
        let chain_cutover: i64 = sqlx::query_scalar("SELECT position FROM chain_cutover")
            .fetch_one(&mut *conn)
            .await
            .context("failed to read where the keyed chain began")?;
        let mut digest = Digest {
            version: 1,
            digest: last_id + 1,
            through_transaction: through_txid,
            through_position,
            events: events_before + count,
            root: hex::encode(root(&tree)),
            chain_cutover,
            signed_at: Utc::now().trunc_subsecs(3),
            key_id: self.key.key_id.clone(),
            signature: String::new(),
        };
        digest.signature = BASE64.encode(self.key.signing.sign(digest.signed_text().as_bytes()).to_bytes());

        let mut tx = conn.begin().await.context("failed to begin writing a digest")?;
        let (kinds, ids, sequences, hashes, buckets) = head_columns(&heads);
        sqlx::query(
            "INSERT INTO digest_heads (aggregate_type, aggregate_id, digest_id, sequence, hash) \
             SELECT t, i, $6, s, h FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::int[]) \
             AS u(t, i, s, h, b)",
        )
        .bind(&kinds)
        .bind(&ids)
        .bind(&sequences)
        .bind(&hashes)
        .bind(&buckets)
        .bind(digest.digest)
        .execute(&mut *tx)
        .await
        .context("failed to record the heads a digest saw")?;
        sqlx::query(
            "INSERT INTO digest_leaves (aggregate_type, aggregate_id, bucket, sequence, hash) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $5::int[], $3::bigint[], $4::bytea[]) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET sequence = EXCLUDED.sequence, hash = EXCLUDED.hash",
        )
        .bind(&kinds)
        .bind(&ids)
        .bind(&sequences)
        .bind(&hashes)
        .bind(&buckets)
        .execute(&mut *tx)
        .await
        .context("failed to update the digest tree's leaves")?;
        let (bucket_ids, bucket_values): (Vec<i32>, Vec<Vec<u8>>) = bucket_hashes.into_iter().unzip();
        sqlx::query(
            "INSERT INTO digest_buckets (bucket, hash) SELECT * FROM UNNEST($1::int[], $2::bytea[]) \
             ON CONFLICT (bucket) DO UPDATE SET hash = EXCLUDED.hash",
        )
        .bind(&bucket_ids)
        .bind(&bucket_values)
        .execute(&mut *tx)
        .await
        .context("failed to update the digest tree's buckets")?;
        sqlx::query(
            "INSERT INTO log_digests (digest_id, through_txid, through_position, events, root, line) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(digest.digest)
        .bind(through_txid)
        .bind(through_position)
        .bind(digest.events)
        .bind(root(&tree).to_vec())
        .bind(digest.line())
        .execute(&mut *tx)
        .await
        .context("failed to record a digest")?;
        tx.commit().await.context("failed to commit a digest")?;
        *self.buckets.lock().expect("digest tree lock") = Some((digest.digest, tree));
        tracing::info!(digest = digest.digest, events = digest.events, moved = heads.len(), "recorded a log digest");
        Ok(Some((digest, count == MAX_EVENTS_PER_DIGEST)))
    }

    /// Every bucket's hash as of digest `digest_id` (the newest): from memory if this
    /// process recorded it, else from the database.
    async fn tree_as_of(&self, conn: &mut PgConnection, digest_id: i64) -> anyhow::Result<Vec<Hash>> {
        if let Some((id, tree)) = self.buckets.lock().expect("digest tree lock").as_ref() {
            if *id == digest_id {
                return Ok(tree.clone());
            }
        }
        stored_tree(conn).await
    }

    /// The newest digest.
    pub async fn latest(&self) -> anyhow::Result<Option<Digest>> {
        let line: Option<String> = sqlx::query_scalar("SELECT line FROM log_digests ORDER BY digest_id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .context("failed to read the newest digest")?;
        line.map(|line| serde_json::from_str(&line).context("a stored digest is not a digest")).transpose()
    }

    /// What `digest` saw of one stream: its head then (`None` if the stream did not
    /// exist yet), or why the database cannot tell (its digest records were altered).
    /// Against the newest digest the head is proven by the tree up to the signed root;
    /// against an older one it is the head recorded then.
    pub async fn head_seen(
        &self,
        digest: &Digest,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> anyhow::Result<Result<Option<StreamHead>, String>> {
        let mut conn = self.pool.acquire().await.context("failed to get a connection to read a digest")?;
        let stored: Option<(Vec<u8>, bool)> = sqlx::query_as(
            "SELECT root, digest_id = (SELECT max(digest_id) FROM log_digests) FROM log_digests WHERE digest_id = $1",
        )
        .bind(digest.digest)
        .fetch_optional(&mut *conn)
        .await
        .context("failed to read a digest")?;
        let Some((stored_root, newest)) = stored.filter(|(root, _)| hex::encode(root) == digest.root) else {
            return Ok(Err("the database does not hold this digest as it was issued".into()));
        };
        if !newest {
            let head: Option<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT sequence, hash FROM digest_heads WHERE aggregate_type = $1 AND aggregate_id = $2 \
                 AND digest_id <= $3 ORDER BY digest_id DESC LIMIT 1",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(digest.digest)
            .fetch_optional(&mut *conn)
            .await
            .context("failed to read the head a digest saw")?;
            return Ok(Ok(head.map(|(sequence, hash)| StreamHead { sequence, hash })));
        }
        let bucket = bucket_of(aggregate_type, aggregate_id);
        let leaves: Vec<(String, String, i64, Vec<u8>)> =
            sqlx::query_as("SELECT aggregate_type, aggregate_id, sequence, hash FROM digest_leaves WHERE bucket = $1")
                .bind(bucket as i32)
                .fetch_all(&mut *conn)
                .await
                .context("failed to read a digest bucket")?;
        let mut proof = Bucket::default();
        let mut head = None;
        for (kind, id, sequence, hash) in leaves {
            proof.put(&kind, &id, leaf_hash(&kind, &id, sequence, &hash));
            if kind == aggregate_type && id == aggregate_id {
                head = Some(StreamHead { sequence, hash });
            }
        }
        let mut tree = self.tree_as_of(&mut conn, digest.digest).await?;
        tree[bucket] = proof.hash();
        if root(&tree).as_slice() != stored_root.as_slice() {
            return Ok(Err("the digest's records in the database were altered".into()));
        }
        Ok(Ok(head))
    }

    /// Every stream's head as `digest` recorded it (for the whole-log check).
    pub async fn heads_seen(&self, digest: &Digest) -> anyhow::Result<BTreeMap<(String, String), StreamHead>> {
        let rows: Vec<(String, String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT DISTINCT ON (aggregate_type, aggregate_id) aggregate_type, aggregate_id, sequence, hash \
             FROM digest_heads WHERE digest_id <= $1 ORDER BY aggregate_type, aggregate_id, digest_id DESC",
        )
        .bind(digest.digest)
        .fetch_all(&self.pool)
        .await
        .context("failed to read the heads a digest saw")?;
        Ok(rows.into_iter().map(|(kind, id, sequence, hash)| ((kind, id), StreamHead { sequence, hash })).collect())
    }

    /// Sends digests not yet delivered to `url`, oldest first, each until it is taken.
    async fn push_pending(&self, conn: &mut PgConnection, client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
        let pending: Vec<(i64, String)> = sqlx::query_as(
            "SELECT digest_id, line FROM log_digests WHERE pushed_at IS NULL ORDER BY digest_id LIMIT 100",
        )
        .fetch_all(&mut *conn)
        .await
        .context("failed to read the digests to push")?;
        for (id, line) in pending {
            let sent = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(line)
                .send()
                .await
                .and_then(|answer| answer.error_for_status());
            if let Err(error) = sent {
                tracing::warn!(digest = id, %error, "could not push a digest; trying again later");
                break;
            }
            sqlx::query("UPDATE log_digests SET pushed_at = now() WHERE digest_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await
                .context("failed to mark a digest pushed")?;
        }
        Ok(())
    }
}

fn head_hash(head: &NewHead) -> &[u8] {
    head.hash.as_deref().unwrap_or(&[])
}

type HeadColumns = (Vec<String>, Vec<String>, Vec<i64>, Vec<Vec<u8>>, Vec<i32>);

fn head_columns(heads: &[NewHead]) -> HeadColumns {
    let mut columns = HeadColumns::default();
    for head in heads {
        columns.0.push(head.aggregate_type.clone());
        columns.1.push(head.aggregate_id.clone());
        columns.2.push(head.sequence);
        columns.3.push(head_hash(head).to_vec());
        columns.4.push(bucket_of(&head.aggregate_type, &head.aggregate_id) as i32);
    }
    columns
}

/// Every bucket's hash as the database holds it (empty buckets have no row).
async fn stored_tree(conn: &mut PgConnection) -> anyhow::Result<Vec<Hash>> {
    let mut tree = vec![empty_bucket(); BUCKETS];
    let rows: Vec<(i32, Vec<u8>)> = sqlx::query_as("SELECT bucket, hash FROM digest_buckets")
        .fetch_all(&mut *conn)
        .await
        .context("failed to read the digest tree")?;
    for (bucket, hash) in rows {
        let slot = tree.get_mut(bucket as usize).context("a digest bucket out of range")?;
        *slot = hash.try_into().map_err(|_| anyhow!("a digest bucket hash has the wrong length"))?;
    }
    Ok(tree)
}

/// The root of the log as it stands through `through`, computed from the rows alone
/// (the whole-log check): streams' heads at that position, bucketed.
pub(crate) struct LogTree {
    buckets: Vec<Bucket>,
}

impl LogTree {
    pub fn new() -> Self {
        Self { buckets: (0..BUCKETS).map(|_| Bucket::default()).collect() }
    }

    pub fn add(&mut self, aggregate_type: &str, aggregate_id: &str, sequence: i64, hash: &[u8]) {
        let leaf = leaf_hash(aggregate_type, aggregate_id, sequence, hash);
        self.buckets[bucket_of(aggregate_type, aggregate_id)].put(aggregate_type, aggregate_id, leaf);
    }

    pub fn root(&self) -> String {
        let hashes: Vec<Hash> = self.buckets.iter().map(Bucket::hash).collect();
        hex::encode(root(&hashes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_line_verifies_with_its_key_and_nothing_in_it_can_change() {
        let key = DigestKey::from_seed([9; 32]);
        let mut digest = Digest {
            version: 1,
            digest: 3,
            through_transaction: 700,
            through_position: 41,
            events: 41,
            root: hex::encode([1u8; 32]),
            chain_cutover: 0,
            signed_at: Utc::now().trunc_subsecs(3),
            key_id: key.key_id().to_string(),
            signature: String::new(),
        };
        digest.signature = BASE64.encode(key.signing.sign(digest.signed_text().as_bytes()).to_bytes());
        assert_eq!(Digest::parse(&digest.line(), &key).unwrap(), digest);
        let moved = digest.line().replace("\"events\":41", "\"events\":40");
        assert!(Digest::parse(&moved, &key).is_err(), "a changed field breaks the signature");
        let other = DigestKey::from_seed([8; 32]);
        assert!(Digest::parse(&digest.line(), &other).is_err(), "another server's key does not verify it");
        assert!(Digest::parse("{not json", &key).is_err());
    }

    #[test]
    fn the_root_commits_to_every_head_and_buckets_order_their_leaves_by_key() {
        let mut a = LogTree::new();
        a.add("conversation", "c1", 3, &[1; 33]);
        a.add("contact", "k1", 1, &[2; 33]);
        let mut b = LogTree::new();
        b.add("contact", "k1", 1, &[2; 33]);
        b.add("conversation", "c1", 3, &[1; 33]);
        assert_eq!(a.root(), b.root(), "insertion order does not matter");
        let mut shorter = LogTree::new();
        shorter.add("contact", "k1", 1, &[2; 33]);
        shorter.add("conversation", "c1", 2, &[1; 33]);
        assert_ne!(a.root(), shorter.root());
        let mut missing = LogTree::new();
        missing.add("contact", "k1", 1, &[2; 33]);
        assert_ne!(a.root(), missing.root());
    }
}
