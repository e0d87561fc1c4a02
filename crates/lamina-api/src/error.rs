//! The one mapping from errors to AWS error responses: status, `x-amzn-ErrorType`, and the JSON
//! body `{"Type": …, "message"|"Message": …}` with the member casing of the model's shape.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lamina_core::{Error, ErrorKind};
use lamina_store::StoreError;
use serde_json::json;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Lambda(#[from] Error),
    /// SigV4 verification failed; carries the AWS exception name and status.
    #[error("{message}")]
    Auth {
        exception: &'static str,
        status: StatusCode,
        message: String,
    },
    /// The function moved under a read-modify-write; the caller retries the whole operation.
    #[error("the function was changed concurrently")]
    Retry,
    #[error("{0}")]
    UnknownOperation(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => ApiError::Retry,
            StoreError::AlreadyExists => Error::conflict("The resource already exists.").into(),
            StoreError::Backend(message) => {
                tracing::error!(%message, "metadata store failure");
                Error::service("The service encountered an internal error.").into()
            }
        }
    }
}

/// Exception name, status, and whether the model spells the message member `Message`.
fn shape(kind: ErrorKind) -> (&'static str, StatusCode, bool) {
    let (exception, capitalised) = match kind {
        ErrorKind::Validation => ("ValidationException", false),
        ErrorKind::InvalidParameterValue => ("InvalidParameterValueException", false),
        ErrorKind::InvalidRequestContent => ("InvalidRequestContentException", false),
        ErrorKind::ResourceNotFound => ("ResourceNotFoundException", true),
        ErrorKind::ResourceConflict => ("ResourceConflictException", false),
        ErrorKind::PreconditionFailed => ("PreconditionFailedException", false),
        ErrorKind::RequestTooLarge => ("RequestTooLargeException", false),
        ErrorKind::CodeStorageExceeded => ("CodeStorageExceededException", false),
        ErrorKind::PolicyLengthExceeded => ("PolicyLengthExceededException", false),
        ErrorKind::TooManyRequests(_) => ("TooManyRequestsException", false),
        ErrorKind::ProvisionedConcurrencyConfigNotFound => {
            ("ProvisionedConcurrencyConfigNotFoundException", false)
        }
        ErrorKind::Service => ("ServiceException", true),
    };
    let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (exception, status, capitalised)
}

pub fn error_response(
    exception: &str,
    status: StatusCode,
    message: &str,
    capitalised: bool,
) -> Response {
    let kind = if status.is_server_error() {
        "Service"
    } else {
        "User"
    };
    let key = if capitalised { "Message" } else { "message" };
    let body = json!({ "Type": kind, key: message });
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(exception) {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            // Lambda's throttle carries `Reason` beside `Type` and `message`, and no
            // `Retry-After` header: the model's `retryAfterSeconds` is bound to that header, so
            // sending one would add a member Lambda's answers lack.
            ApiError::Lambda(Error {
                kind: ErrorKind::TooManyRequests(reason),
                message,
            }) => {
                let body = json!({ "Type": "User", "message": message, "Reason": reason.as_str() });
                let mut response =
                    (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
                response.headers_mut().insert(
                    "x-amzn-ErrorType",
                    HeaderValue::from_static("TooManyRequestsException"),
                );
                response
            }
            ApiError::Lambda(err) => {
                let (exception, status, capitalised) = shape(err.kind);
                error_response(exception, status, &err.message, capitalised)
            }
            ApiError::Auth {
                exception,
                status,
                message,
            } => error_response(exception, status, &message, false),
            ApiError::Retry => ApiError::Lambda(Error::conflict(
                "The operation cannot be performed at this time. An update is in progress \
                     for resource; retry the request.",
            ))
            .into_response(),
            ApiError::UnknownOperation(message) => error_response(
                "UnknownOperationException",
                StatusCode::NOT_FOUND,
                &message,
                false,
            ),
        }
    }
}
