//! The Runtime API (2018-06-01) of one instance, served on the socket that listens inside the
//! instance's network namespace.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Limited};
use lamina_core::invoke::ResponsePart;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{MAX_RESPONSE_BYTES, MAX_STREAMED_BYTES};

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
    /// Where a streamed response goes as the runtime writes it; without it a streamed
    /// response is collected into the outcome like a buffered one.
    pub stream: Option<mpsc::Sender<ResponsePart>>,
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
    pub stream: Option<mpsc::Sender<ResponsePart>>,
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

    /// The stream of the pending invocation `request_id`, if it is the one in progress.
    fn stream_of(&self, request_id: &str) -> Result<Option<mpsc::Sender<ResponsePart>>, ()> {
        match &self.slot().pending {
            Some(pending) if pending.request_id == request_id => Ok(pending.stream.clone()),
            _ => Err(()),
        }
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
        // Error reports are read whole; responses are read frame by frame, within their limits.
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
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(stream) = channel.stream_of(&id) else {
        return unknown_request();
    };
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"streaming"));
    if streaming {
        let outcome = read_stream(&headers, body, stream.as_ref()).await;
        return if channel.complete(&id, outcome) {
            accepted()
        } else {
            unknown_request()
        };
    }
    let outcome = match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(body) => Outcome::Success(body.to_bytes()),
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

/// An error a streaming runtime reports after its response began, in HTTP trailers or, as
/// `lambda_runtime` 1.5 does, in a body chunk of the same form:
/// `Lambda-Runtime-Function-Error-Type: T` and `Lambda-Runtime-Function-Error-Body: <base64>`.
fn stream_error<'a>(fields: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Bytes> {
    let (mut error_type, mut body) = (None, None);
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("lambda-runtime-function-error-type") {
            error_type = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("lambda-runtime-function-error-body") {
            body = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok();
        }
    }
    let error_type = error_type?;
    Some(match body {
        Some(body) if serde_json::from_slice::<serde_json::Value>(&body).is_ok() => Bytes::from(body),
        _ => Bytes::from(
            json!({ "errorType": error_type, "errorMessage": "the function failed while streaming its response" })
                .to_string(),
        ),
    })
}

/// Reads a streamed response frame by frame: into `stream` as it arrives, or collected (within
/// the buffered limit) when the caller did not ask for a stream.
async fn read_stream(
    headers: &HeaderMap,
    mut body: Body,
    stream: Option<&mpsc::Sender<ResponsePart>>,
) -> Outcome {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let mut listening = match stream {
        Some(stream) => stream
            .send(ResponsePart::ContentType(content_type))
            .await
            .is_ok(),
        None => false,
    };
    let (mut collected, mut total) = (Vec::new(), 0usize);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Outcome::FunctionError(crate::platform_error(
                "Runtime.TruncatedResponse",
                "the runtime's streamed response ended abruptly",
            ));
        };
        let frame = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                let Some(trailers) = frame.trailers_ref() else {
                    continue;
                };
                let fields = trailers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
                if let Some(error) = stream_error(fields) {
                    return Outcome::FunctionError(error);
                }
                continue;
            }
        };
        if frame.starts_with(b"Lambda-Runtime-Function-Error-Type:") {
            let text = String::from_utf8_lossy(&frame);
            let fields = text.lines().filter_map(|line| line.split_once(':'));
            if let Some(error) = stream_error(fields) {
                return Outcome::FunctionError(error);
            }
        }
        total += frame.len();
        if total > MAX_STREAMED_BYTES || (stream.is_none() && total > MAX_RESPONSE_BYTES) {
            return Outcome::ResponseTooLarge(total);
        }
        match stream {
            // A caller that went away does not stop the function: the rest is read and dropped.
            Some(stream) if listening => {
                listening = stream.send(ResponsePart::Data(frame)).await.is_ok();
            }
            Some(_) => {}
            None => collected.extend_from_slice(&frame),
        }
    }
    Outcome::Success(Bytes::from(collected))
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
