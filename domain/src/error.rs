//! The one error type every aggregate refuses a command with.

/// Why a command was refused. The API maps each variant to a stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input breaks a rule of the value or of the aggregate's state (`BAD_USER_INPUT`).
    #[error("{0}")]
    Invalid(String),
    /// The command names something that does not exist (`NOT_FOUND`).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The thing to create exists already (`CONFLICT`).
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// A free-form reply outside the provider's customer-service window
    /// (`MESSAGING_WINDOW_CLOSED`): only a template may be sent.
    #[error("{0}")]
    WindowClosed(String),
}

impl DomainError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}
