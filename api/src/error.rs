//! The API's errors and their stable codes, shared by GraphQL `extensions.code` and
//! HTTP bodies. Internal causes are logged, never sent.

use async_graphql::ErrorExtensions;
use commands::CommandError;
use domain::DomainError;

/// Stable error codes: clients match on these, so they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No valid credentials for an operation that needs them.
    Unauthenticated,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// The thing does not exist in the caller's account.
    NotFound,
    /// Malformed or invalid input; nothing was changed.
    BadUserInput,
    /// A concurrent change won, or the thing exists already.
    Conflict,
    /// Too many attempts; try again after the window.
    RateLimited,
    /// A free-form reply outside the provider's customer-service window (24 hours
    /// after the contact's last message on WhatsApp): only a template may be sent.
    MessagingWindowClosed,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// The database (or Redis) cannot be reached right now; nothing was changed, or
    /// what was is reported as such. Safe to retry after a moment.
    Unavailable,
    /// Our fault; the cause is in the logs under the request's id.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::BadUserInput,
        ErrorCode::Conflict,
        ErrorCode::RateLimited,
        ErrorCode::MessagingWindowClosed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::MessagingWindowClosed => "MESSAGING_WINDOW_CLOSED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// What resolvers answer: an [`ApiError`] converts into a GraphQL error with its code,
/// and any other failure converts into an [`ApiError`] (INTERNAL, cause logged) first.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// An error as the client sees it. Not `Display`: async-graphql converts any
/// `Display` type into an error without a code, and every error here has one.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    pub fn unauthenticated() -> Self {
        Self::new(
            ErrorCode::Unauthenticated,
            "a valid session or API token is required (Authorization: Bearer <token>)",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadUserInput, message)
    }
    /// An uploaded file larger than the attachment store keeps.
    pub fn file_too_large() -> Self {
        let mb = commands::attachments::MAX_FILE_BYTES / (1024 * 1024);
        Self::new(ErrorCode::PayloadTooLarge, format!("a file is at most {mb} MB"))
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    /// Logs the cause and hides it from the client: UNAVAILABLE when the cause is
    /// the database's state (connection lost, pool exhausted, serialization), else
    /// INTERNAL, a defect.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let cause = cause.into();
        if projections::transient::is_transient(&cause) {
            return Self::unavailable(cause);
        }
        tracing::error!(error = format!("{cause:#}"), "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// A dependency is unavailable for now; logged, hidden from the client.
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        let cause = cause.into();
        tracing::warn!(error = format!("{cause:#}"), "unavailable");
        Self::new(ErrorCode::Unavailable, "the service is unavailable for a moment; try again")
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Domain(DomainError::Invalid(message)) => Self::bad_input(message),
            CommandError::Domain(e @ DomainError::NotFound(_)) => Self::new(ErrorCode::NotFound, e.to_string()),
            CommandError::Domain(e @ DomainError::AlreadyExists(_)) => Self::new(ErrorCode::Conflict, e.to_string()),
            CommandError::Domain(DomainError::WindowClosed(message)) => {
                Self::new(ErrorCode::MessagingWindowClosed, message)
            }
            CommandError::Conflict => Self::new(ErrorCode::Conflict, CommandError::Conflict.to_string()),
            // Only after every attempt the mutation makes found its state moved on.
            CommandError::Stale => Self::new(ErrorCode::Conflict, CommandError::Stale.to_string()),
            CommandError::BadCredentials => {
                Self::new(ErrorCode::Unauthenticated, CommandError::BadCredentials.to_string())
            }
            CommandError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        CommandError::Domain(error).into()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::internal(error)
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        async_graphql::Error::new(error.message).extend_with(|_, e| e.set("code", error.code.as_str()))
    }
}

/// Gives every error without a code one. Outside any field (parsing, validation, the
/// variables) or where an argument did not parse, the request was wrong:
/// BAD_USER_INPUT. Raised in a resolver without a code, it is a defect whose text (a
/// database's, a library's) is for the log, not the client: INTERNAL.
pub fn ensure_codes(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let has_code = error.extensions.as_ref().is_some_and(|e| e.get("code").is_some());
        if has_code {
            continue;
        }
        let code = if error.path.is_empty() || error.message.starts_with("Failed to parse") {
            ErrorCode::BadUserInput
        } else {
            tracing::error!(error = %error.message, path = ?error.path, "a resolver failed without an error code");
            error.message = "internal error".into();
            ErrorCode::Internal
        };
        error.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
    }
}
