//! The errors a Lambda client can see, named by kind so that the HTTP layer maps each to
//! Lambda's exception name and status code in one place.

/// What went wrong, in Lambda's vocabulary. Each kind is one exception shape of the Lambda API
/// (or of the AWS protocol, for `Validation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A member broke a constraint of the API model itself: pattern, length, enum.
    Validation,
    /// A value is well-formed but not acceptable (a product limit, an unknown runtime, bad code).
    InvalidParameterValue,
    /// The request body is not what the operation takes (not JSON, wrong member types).
    InvalidRequestContent,
    ResourceNotFound,
    /// The resource exists already, or is being changed concurrently.
    ResourceConflict,
    /// A `RevisionId` or `CodeSha256` precondition did not hold.
    PreconditionFailed,
    RequestTooLarge,
    CodeStorageExceeded,
    PolicyLengthExceeded,
    /// The invocation was throttled: a concurrency limit or the scaling rate was reached.
    TooManyRequests(ThrottleReason),
    /// A provisioned concurrency configuration that does not exist.
    ProvisionedConcurrencyConfigNotFound,
    /// A fault of the platform, not of the request.
    Service,
}

impl ErrorKind {
    /// The HTTP status Lambda answers this error with (also the `ErrorCode` of a dead letter).
    pub fn status(self) -> u16 {
        match self {
            Self::Validation
            | Self::InvalidParameterValue
            | Self::InvalidRequestContent
            | Self::CodeStorageExceeded
            | Self::PolicyLengthExceeded => 400,
            Self::ResourceNotFound | Self::ProvisionedConcurrencyConfigNotFound => 404,
            Self::ResourceConflict => 409,
            Self::PreconditionFailed => 412,
            Self::RequestTooLarge => 413,
            Self::TooManyRequests(_) => 429,
            Self::Service => 500,
        }
    }
}

/// Why an invocation was throttled: `TooManyRequestsException.Reason` of the API model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleReason {
    /// The account's unreserved concurrency is in use (or cannot grow fast enough).
    ConcurrentInvocationLimitExceeded,
    /// The function's reserved concurrency is in use; reserved 0 throttles everything.
    ReservedFunctionConcurrentInvocationLimitExceeded,
    /// Asynchronous events arrive faster than they are run: the event queue is full.
    FunctionInvocationRateLimitExceeded,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConcurrentInvocationLimitExceeded => "ConcurrentInvocationLimitExceeded",
            Self::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
            Self::FunctionInvocationRateLimitExceeded => "FunctionInvocationRateLimitExceeded",
        }
    }
}

/// A domain error: its kind and a message for the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameterValue, message)
    }

    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequestContent, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceNotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceConflict, message)
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PreconditionFailed, message)
    }

    pub fn service(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Service, message)
    }

    /// A throttled invocation, worded as Lambda words it.
    pub fn throttled(reason: ThrottleReason) -> Self {
        Self::new(ErrorKind::TooManyRequests(reason), "Rate Exceeded.")
    }

    /// The message for a `RevisionId` that no longer matches, as Lambda words it.
    pub fn stale_revision() -> Self {
        Self::precondition(
            "The Revision Id provided does not match the latest Revision Id. Call the \
             GetFunction/GetAlias API to retrieve the latest Revision Id",
        )
    }
}
