//! Files of messages (a contact's, copied from their provider; an agent's, uploaded),
//! kept outside the database: each sealed with its contact's data key (erasing the
//! contact shreds their files with the rest of their data), stored behind
//! [`AttachmentStore`] (a local directory by default, `ATTACHMENTS_DIR`), and served
//! through short-lived signed links an `<img>` can load.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::attachment::Attachment;
use domain::values::FileType;
use hmac::{Hmac, Mac};
use projections::keyring::{decrypt, encrypt, Aes256Gcm, Keyring};
use sha2::Sha256;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::StoreError;
use crate::side_write::SideWrite;

/// How long a link to a file works.
pub const LINK_TTL: Duration = Duration::from_secs(10 * 60);
/// The largest file kept (WhatsApp documents go to 100 MB; more is refused, not kept).
pub const MAX_FILE_BYTES: usize = 25 * 1024 * 1024;

/// Where sealed files live.
#[async_trait]
pub trait AttachmentStore: Send + Sync {
    async fn put(&self, id: Uuid, sealed: &[u8]) -> anyhow::Result<()>;
    /// `None`: no such file.
    async fn get(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>>;
    /// Removes a file (one already gone is no error).
    async fn delete(&self, id: Uuid) -> anyhow::Result<()>;
}

/// Files in a local directory (`<root>/<first two hex digits>/<id>`), written whole
/// under a temporary name and renamed, so a reader never sees half a file.
pub struct LocalDirectory {
    root: PathBuf,
}

impl LocalDirectory {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, id: Uuid) -> PathBuf {
        let name = id.simple().to_string();
        self.root.join(&name[..2]).join(name)
    }
}

#[async_trait]
impl AttachmentStore for LocalDirectory {
    async fn put(&self, id: Uuid, sealed: &[u8]) -> anyhow::Result<()> {
        let path = self.path(id);
        let dir = path.parent().context("a file path without a directory")?;
        tokio::fs::create_dir_all(dir).await.with_context(|| format!("failed to create {}", dir.display()))?;
        let temporary = path.with_extension(format!("part-{}", Uuid::now_v7().simple()));
        tokio::fs::write(&temporary, sealed)
            .await
            .with_context(|| format!("failed to write {}", temporary.display()))?;
        tokio::fs::rename(&temporary, &path).await.with_context(|| format!("failed to keep {}", path.display()))?;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path(id)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context("failed to read a file")),
        }
    }

    async fn delete(&self, id: Uuid) -> anyhow::Result<()> {
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("failed to remove a file")),
        }
    }
}

/// A kept file as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeptFile {
    pub attachment_id: Uuid,
    pub account_id: Uuid,
    pub mime_type: String,
    pub file_size: i64,
}

/// Agents' uploads held in memory at once (each up to [`MAX_FILE_BYTES`], twice: read
/// and sealed): the memory they take stays bounded however many arrive.
const CONCURRENT_UPLOADS: usize = 4;

/// The files of messages: sealing, keeping, opening, and their links.
#[derive(Clone)]
pub struct Attachments {
    store: Arc<dyn AttachmentStore>,
    pool: PgPool,
    keyring: Arc<Keyring>,
    uploads: Arc<tokio::sync::Semaphore>,
}

impl Attachments {
    pub fn new(store: Arc<dyn AttachmentStore>, pool: PgPool, keyring: Arc<Keyring>) -> Self {
        Self { store, pool, keyring, uploads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_UPLOADS)) }
    }

    /// A turn to hold an upload in memory; others wait for it.
    pub async fn admit_upload(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.uploads.acquire().await.expect("the upload semaphore is never closed")
    }

    /// Seals `bytes` with the contact's key and keeps them; a file kept before stays.
    pub async fn keep(
        &self,
        id: Uuid,
        account: Uuid,
        contact: Uuid,
        mime_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<KeepOutcome> {
        if self.put_sealed(id, contact, bytes).await?.is_none() {
            return Ok(KeepOutcome::Erased);
        }
        sqlx::query(
            "INSERT INTO attachment_files (attachment_id, account_id, contact_id, mime_type, file_size) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(account)
        .bind(contact)
        .bind(mime_type)
        .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .context("failed to record a kept file")?;
        Ok(KeepOutcome::Kept)
    }

    /// Seals `bytes` with the contact's key and puts them in the store; answers the
    /// key (`None`, nothing put: the contact was erased).
    async fn put_sealed(&self, id: Uuid, contact: Uuid, bytes: &[u8]) -> anyhow::Result<Option<Arc<Aes256Gcm>>> {
        let Some(cipher) = self.keyring.data_key(&self.pool, contact).await? else { return Ok(None) };
        self.store.put(id, &encrypt(&cipher, id.as_bytes(), bytes)?).await?;
        Ok(Some(cipher))
    }

    /// Keeps a file an agent uploads to a conversation, sealed with the contact's key;
    /// `None` when the contact was erased.
    pub async fn upload(&self, upload: Upload<'_>) -> anyhow::Result<Option<Attachment>> {
        let id = Uuid::now_v7();
        let Some(cipher) = self.put_sealed(id, upload.contact, upload.bytes).await? else {
            return Ok(None);
        };
        let file_type = FileType::of_mime(upload.mime_type);
        sqlx::query(
            "INSERT INTO attachment_files (attachment_id, account_id, contact_id, mime_type, file_size, \
             conversation_id, uploaded_by, file_type, file_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(upload.account)
        .bind(upload.contact)
        .bind(upload.mime_type)
        .bind(i64::try_from(upload.bytes.len()).unwrap_or(i64::MAX))
        .bind(upload.conversation)
        .bind(upload.uploaded_by)
        .bind(file_type.as_str())
        .bind(encrypt(&cipher, id.as_bytes(), upload.file_name.as_bytes())?)
        .execute(&self.pool)
        .await
        .context("failed to record an uploaded file")?;
        Ok(Some(Attachment {
            attachment_id: id,
            file_type,
            mime_type: Some(upload.mime_type.to_string()),
            file_name: Some(upload.file_name.to_string()),
            source: UPLOADED.to_string(),
        }))
    }

    /// The files uploaded to a conversation among `ids`, as a message records them, in
    /// the order asked; `None` if any of them is not one (or its contact was erased).
    pub async fn uploaded(
        &self,
        account: Uuid,
        conversation: Uuid,
        ids: &[Uuid],
    ) -> anyhow::Result<Option<Vec<Attachment>>> {
        let rows: Vec<UploadedRow> = sqlx::query_as(
            "SELECT attachment_id, contact_id, mime_type, file_type, file_name FROM attachment_files \
             WHERE attachment_id = ANY($1) AND account_id = $2 AND conversation_id = $3",
        )
        .bind(ids)
        .bind(account)
        .bind(conversation)
        .fetch_all(&self.pool)
        .await
        .context("failed to read uploaded files")?;
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(row) = rows.iter().find(|r| r.attachment_id == *id) else { return Ok(None) };
            let Some(cipher) = self.keyring.data_key(&self.pool, row.contact_id).await? else { return Ok(None) };
            let file_name = match &row.file_name {
                Some(sealed) => Some(String::from_utf8(decrypt(&cipher, id.as_bytes(), sealed)?)?),
                None => None,
            };
            found.push(Attachment {
                attachment_id: *id,
                file_type: row.file_type.as_deref().and_then(|t| t.parse().ok()).unwrap_or(FileType::File),
                mime_type: Some(row.mime_type.clone()),
                file_name,
                source: UPLOADED.to_string(),
            });
        }
        Ok(Some(found))
    }

    /// Removes the uploads no message was sent with that are older than `older_than`
    /// (rows first, then their files: a file without a row is never served); answers
    /// how many. Every process may run it: each row is removed by one.
    pub async fn sweep_unsent(&self, older_than: Duration) -> anyhow::Result<usize> {
        let swept: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM attachment_files WHERE conversation_id IS NOT NULL AND sent_at IS NULL \
             AND stored_at < now() - make_interval(secs => $1) RETURNING attachment_id",
        )
        .bind(older_than.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .context("failed to sweep unsent uploads")?;
        for id in &swept {
            self.store.delete(*id).await?;
        }
        Ok(swept.len())
    }

    /// Which of these files are kept.
    pub async fn kept(&self, ids: &[Uuid]) -> anyhow::Result<Vec<KeptFile>> {
        sqlx::query_as(
            "SELECT attachment_id, account_id, mime_type, file_size FROM attachment_files WHERE attachment_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .context("failed to read kept files")
    }

    /// A kept file's type and bytes, opened; `None` if it is not kept or its contact
    /// was erased.
    pub async fn open(&self, id: Uuid) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        let row: Option<(Uuid, String)> =
            sqlx::query_as("SELECT contact_id, mime_type FROM attachment_files WHERE attachment_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .context("failed to find a file")?;
        let Some((contact, mime_type)) = row else { return Ok(None) };
        let Some(cipher) = self.keyring.data_key(&self.pool, contact).await? else { return Ok(None) };
        let Some(sealed) = self.store.get(id).await? else { return Ok(None) };
        Ok(Some((mime_type, decrypt(&cipher, id.as_bytes(), &sealed)?)))
    }

    /// The link's MAC over the file and its expiry, keyed from the master key.
    fn mac(&self, id: Uuid, expires: i64) -> Hmac<Sha256> {
        let key = self.keyring.derive("attachment-links");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{expires}").as_bytes());
        mac
    }

    /// A link to the file that works until `expires` (a path on this server).
    pub fn link(&self, id: Uuid, expires: DateTime<Utc>) -> String {
        let expires = expires.timestamp();
        let signature = hex::encode(self.mac(id, expires).finalize().into_bytes());
        format!("/attachments/{id}?expires={expires}&signature={signature}")
    }

    /// Whether a link's `expires` and `signature` are ours and it has not expired.
    pub fn link_works(&self, id: Uuid, expires: i64, signature: &str, now: DateTime<Utc>) -> bool {
        let Ok(given) = hex::decode(signature) else { return false };
        // `verify_slice` compares in constant time.
        self.mac(id, expires).verify_slice(&given).is_ok() && now.timestamp() <= expires
    }
}

/// How long an upload no message was sent with is kept.
pub const UNSENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The uploads a message is sent with, marked sent in its transaction (so the sweep
/// leaves them); one swept meanwhile makes the command decide again.
pub struct UploadsSent {
    pub conversation: Uuid,
    pub attachments: Vec<Uuid>,
}

#[async_trait]
impl SideWrite for UploadsSent {
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let marked = sqlx::query(
            "UPDATE attachment_files SET sent_at = coalesce(sent_at, now()) \
             WHERE attachment_id = ANY($1) AND conversation_id = $2",
        )
        .bind(&self.attachments)
        .bind(self.conversation)
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::Internal(anyhow::Error::new(e).context("failed to mark uploads sent")))?;
        if marked.rows_affected() != self.attachments.len() as u64 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }
}

/// A file an agent uploads to a conversation (checked: a storable name, a MIME type).
pub struct Upload<'a> {
    pub account: Uuid,
    pub contact: Uuid,
    pub conversation: Uuid,
    pub uploaded_by: Uuid,
    pub file_name: &'a str,
    pub mime_type: &'a str,
    pub bytes: &'a [u8],
}

#[derive(sqlx::FromRow)]
struct UploadedRow {
    attachment_id: Uuid,
    contact_id: Uuid,
    mime_type: String,
    file_type: Option<String>,
    /// Sealed with the contact's key.
    file_name: Option<Vec<u8>>,
}

/// The [`Attachment::source`] of an agent's upload: kept already, nothing to fetch.
pub const UPLOADED: &str = "upload";

/// What keeping a file did.
#[derive(Debug, PartialEq, Eq)]
pub enum KeepOutcome {
    Kept,
    /// The contact was erased meanwhile: nothing is kept.
    Erased,
}
