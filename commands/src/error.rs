//! Why a write did not happen: the store's answers, and what a command tells its caller.

use domain::DomainError;

use crate::context::Staleness;

/// Why a command did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Still conflicting after retries with fresh state.
    #[error("the conversation was changed concurrently; try again")]
    Conflict,
    /// What the decision read moved on before it could commit; nothing was written.
    /// The context says why (`Reads::stale`): its caller decides again.
    #[error("what this change was decided on has just changed; try again")]
    Stale,
    /// Unknown e-mail, wrong password, or an unusable invitation: one answer for all,
    /// so a caller cannot probe which.
    #[error("the e-mail or password is not right")]
    BadCredentials,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to one of the streams first: reload and retry.
    #[error("a stream was changed concurrently")]
    Conflict,
    /// A uniqueness rule outside the log refused the write (e.g. an e-mail in use).
    #[error("{0} already exists")]
    Duplicate(&'static str),
    /// Personal data of an erased contact cannot be written: their key is gone.
    #[error("the contact has been erased")]
    Erased,
    /// What the decision read (another stream, or the caller's access) has moved on
    /// since: the caller decides again on current state.
    #[error("the state this decision was made on has changed")]
    Stale(Staleness),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl StoreError {
    /// The store's reading of an `assert_current` refusal (migrations `…0005`,
    /// `…0010`), if `error` is one.
    pub(crate) fn refusal(error: &sqlx::Error) -> Option<StoreError> {
        let sqlx::Error::Database(db) = error else { return None };
        match db.code().as_deref()? {
            "IX000" => Some(StoreError::Conflict),
            "IX001" => Some(StoreError::Stale(Staleness::Stream)),
            "IX002" => Some(StoreError::Stale(Staleness::Access)),
            _ => None,
        }
    }

    /// A database error of a write: a refusal as such, a unique violation on
    /// `constraint` (any, if empty) as `as_error`, anything else internal.
    pub(crate) fn of_write(error: sqlx::Error, constraint: &str, as_error: StoreError) -> StoreError {
        if let Some(refused) = Self::refusal(&error) {
            return refused;
        }
        match &error {
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some("23505")
                    && (constraint.is_empty() || db.constraint() == Some(constraint)) =>
            {
                as_error
            }
            _ => StoreError::Internal(anyhow::Error::new(error).context("failed to append events")),
        }
    }
}

impl From<StoreError> for CommandError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => CommandError::Conflict,
            StoreError::Stale(_) => CommandError::Stale,
            StoreError::Duplicate(what) => CommandError::Domain(DomainError::AlreadyExists(what)),
            StoreError::Erased => CommandError::Domain(DomainError::invalid(
                "the contact of this conversation has been erased; their next message starts a new one",
            )),
            StoreError::Internal(e) => CommandError::Internal(e),
        }
    }
}
