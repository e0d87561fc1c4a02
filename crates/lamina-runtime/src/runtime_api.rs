//! The Runtime API (2018-06-01) of one instance, served on the socket that listens inside the
//! instance's network namespace.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::MAX_RESPONSE_BYTES;

/// One event on its way to the function.
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    pub invoked_arn: String,
    /// The decoded client context JSON, passed on as `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    pub trace_id: String,
    pub timeout: Duration,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(Bytes),
    /// The runtime reported an error (`/error`); the body is its error JSON.
    FunctionError(Bytes),
    /// The runtime failed to initialise (`/init/error`).
    InitError(Bytes),
    /// The function did not answer within its timeout.
    Timeout,
    /// The runtime process ended without answering.
    Exited {
        code: i32,
        out_of_memory: bool,
    },
    /// The response exceeded Lambda's limit.
    ResponseTooLarge(usize),
}

/// The invocation an instance is serving.
pub(crate) struct Pending {
    pub request_id: String,
    pub reply: oneshot::Sender<Outcome>,
    /// Told when the runtime took the invocation from `/next`.
    pub delivered: Option<oneshot::Sender<std::time::Instant>>,
}

#[derive(Default)]
pub(crate) struct Slot {
    pub pending: Option<Pending>,
    /// An init error that arrived while no invocation was pending.
    pub init_failure: Option<Bytes>,
}

/// How far the runtime has come, as its calls to the Runtime API show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    Starting,
    /// It asked for an invocation: its initialisation is done.
    Waiting,
    /// It reported an init error.
    InitFailed,
}

/// What the Runtime API of one instance shares with the instance.
pub(crate) struct Channel {
    pub next: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    pub slot: Mutex<Slot>,
    pub progress: watch::Sender<Progress>,
}

impl Channel {
    pub fn new() -> (Arc<Self>, mpsc::Sender<Invocation>) {
        let (tx, rx) = mpsc::channel(1);
        (
            Arc::new(Self {
                next: tokio::sync::Mutex::new(rx),
                slot: Mutex::default(),
                progress: watch::Sender::new(Progress::Starting),
            }),
            tx,
        )
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Completes the pending invocation `request_id` with `outcome`; false when `request_id` is
    /// not the invocation in progress.
    fn complete(&self, request_id: &str, outcome: Outcome) -> bool {
        let mut slot = self.slot();
        match slot.pending.take() {
            Some(pending) if pending.request_id == request_id => {
                let _ = pending.reply.send(outcome);
                true
            }
            other => {
                slot.pending = other;
                false
            }
        }
    }
}

fn runtime_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errorType": error_type, "errorMessage": message })),
    )
        .into_response()
}

fn unknown_request() -> Response {
    runtime_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        "the request id is not the invocation in progress",
    )
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
}

pub(crate) fn router(channel: Arc<Channel>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .route("/2018-06-01/ping", get(|| async { "pong" }))
        // One byte over the limit is enough to know a response is too large.
        .layer(DefaultBodyLimit::max(MAX_RESPONSE_BYTES + 1))
        .with_state(channel)
}

fn epoch_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn next(State(channel): State<Arc<Channel>>) -> Response {
    channel.progress.send_if_modified(|progress| {
        let first = *progress == Progress::Starting;
        if first {
            *progress = Progress::Waiting;
        }
        first
    });
    // Waits as long as it takes: a runtime blocks here between invocations.
    let invocation = channel.next.lock().await.recv().await;
    let Some(invocation) = invocation else {
        return runtime_error(
            StatusCode::GONE,
            "InstanceStopping",
            "the instance is stopping",
        );
    };
    let deadline = epoch_ms(SystemTime::now() + invocation.timeout);
    if let Some(delivered) = channel
        .slot()
        .pending
        .as_mut()
        .and_then(|p| p.delivered.take())
    {
        let _ = delivered.send(std::time::Instant::now());
    }
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("content-type", "application/json");
    set("lambda-runtime-aws-request-id", &invocation.request_id);
    set("lambda-runtime-deadline-ms", &deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        &invocation.invoked_arn,
    );
    set("lambda-runtime-trace-id", &invocation.trace_id);
    if let Some(context) = &invocation.client_context {
        set("lambda-runtime-client-context", context);
    }
    (StatusCode::OK, headers, invocation.payload).into_response()
}

async fn response(
    State(channel): State<Arc<Channel>>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let outcome = match body {
        Ok(body) if body.len() <= MAX_RESPONSE_BYTES => Outcome::Success(body),
        Ok(body) => Outcome::ResponseTooLarge(body.len()),
        Err(_) => Outcome::ResponseTooLarge(MAX_RESPONSE_BYTES + 1),
    };
    let too_large = matches!(outcome, Outcome::ResponseTooLarge(_));
    if !channel.complete(&id, outcome) {
        return unknown_request();
    }
    if too_large {
        return runtime_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
        );
    }
    accepted()
}

async fn error(
    State(channel): State<Arc<Channel>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if channel.complete(&id, Outcome::FunctionError(body)) {
        accepted()
    } else {
        unknown_request()
    }
}

async fn init_error(State(channel): State<Arc<Channel>>, body: Bytes) -> Response {
    let mut slot = channel.slot();
    match slot.pending.take() {
        Some(pending) => {
            let _ = pending.reply.send(Outcome::InitError(body));
        }
        None => {
            slot.init_failure = Some(body);
            channel.progress.send_replace(Progress::InitFailed);
        }
    }
    accepted()
}
