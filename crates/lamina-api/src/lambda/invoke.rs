//! Invoke: `POST /2015-03-31/functions/{name}/invocations`, its streaming form, and the
//! deprecated InvokeAsync.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use lamina_core::arn::FunctionRef;
use lamina_core::invoke::{InvokeRequest, InvokeResponse, ResponsePart};
use lamina_core::{Error, ErrorKind};

use super::event_stream;
use crate::{ApiResult, ApiState, QueryPairs, RequestId, SharedState};

pub use lamina_core::invoke::{MAX_ASYNC_PAYLOAD, MAX_SYNC_PAYLOAD};
/// The largest `X-Amz-Client-Context` (base64) Lambda accepts.
pub const MAX_CLIENT_CONTEXT: usize = 3583;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

fn enum_error(member: &str, value: &str, allowed: &str) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: \
         Member must satisfy enum value set: [{allowed}]"
    ))
}

/// Decodes and checks the client context: a runtime client that cannot parse it would crash,
/// so only a base64 JSON object whose `custom` and `env` are string maps and whose `client` has
/// string members gets through.
fn client_context(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    let invalid =
        || Error::invalid_content("Client context must be a valid Base64-encoded JSON object.");
    if raw.len() > MAX_CLIENT_CONTEXT {
        return Err(Error::invalid_parameter(format!(
            "Client context must be smaller than {MAX_CLIENT_CONTEXT} bytes."
        ))
        .into());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| invalid())?;
    let value: serde_json::Value = serde_json::from_slice(&decoded).map_err(|_| invalid())?;
    let object = value.as_object().ok_or_else(invalid)?;
    let string_map = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Object(map)) => map.values().all(|v| v.is_string()),
        Some(_) => false,
    };
    if !string_map(object.get("custom"))
        || !string_map(object.get("env"))
        || !string_map(object.get("client"))
    {
        return Err(invalid().into());
    }
    Ok(Some(String::from_utf8(decoded).map_err(|_| invalid())?))
}

/// What an invocation request asks for, checked.
struct Invocation {
    invocation_type: String,
    request: InvokeRequest,
}

/// Parses and checks an invocation request; `types` are the invocation types the operation
/// takes (the first is listed first in the error). Without `X-Amz-Invocation-Type` a request
/// is `RequestResponse` if the operation takes that, else its only type.
fn parse(
    state: &ApiState,
    function: &str,
    query: &QueryPairs,
    headers: &HeaderMap,
    body: Bytes,
    request_id: String,
    types: &[&str],
) -> ApiResult<Invocation> {
    let function =
        FunctionRef::parse_with_qualifier(function, query.get("Qualifier"), &state.account)?;
    let default = if types.contains(&"RequestResponse") {
        "RequestResponse"
    } else {
        types[0]
    };
    let invocation_type = header(headers, "x-amz-invocation-type").unwrap_or(default);
    if !types.contains(&invocation_type) {
        return Err(enum_error("invocationType", invocation_type, &types.join(", ")).into());
    }
    let tail = match header(headers, "x-amz-log-type").unwrap_or("None") {
        "None" => false,
        "Tail" => true,
        other => return Err(enum_error("logType", other, "None, Tail").into()),
    };
    let limit = match invocation_type {
        "Event" => MAX_ASYNC_PAYLOAD,
        _ => MAX_SYNC_PAYLOAD,
    };
    if body.len() > limit {
        return Err(Error::new(
            ErrorKind::RequestTooLarge,
            format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
        )
        .into());
    }
    if !body.is_empty() {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(|e| {
            Error::invalid_content(format!("Could not parse request body into json: {e}"))
        })?;
    }
    let client_context = client_context(header(headers, "x-amz-client-context"))?;
    // Lambda hands a function `{}` when the caller sent no payload.
    let payload = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    Ok(Invocation {
        invocation_type: invocation_type.to_owned(),
        request: InvokeRequest {
            function: function.name,
            qualifier: function.qualifier,
            payload,
            request_id,
            client_context,
            tail: tail && invocation_type == "RequestResponse",
            stream: None,
        },
    })
}

pub async fn invoke(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let Invocation {
        invocation_type,
        request,
    } = parse(
        &state,
        &function,
        &query,
        &headers,
        body,
        request_id,
        &["Event", "RequestResponse", "DryRun"],
    )?;
    match invocation_type.as_str() {
        "DryRun" => {
            state
                .invoker
                .resolve(&request.function, request.qualifier.as_deref())
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "Event" => {
            accept_event(&state, request).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        _ => {
            let response = state.invoker.invoke(request).await?;
            let mut out = (StatusCode::OK, response.payload).into_response();
            let headers = out.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            if let Ok(version) = HeaderValue::from_str(&response.executed_version) {
                headers.insert("x-amz-executed-version", version);
            }
            if let Some(error) = response
                .function_error
                .and_then(|e| HeaderValue::from_str(&e).ok())
            {
                headers.insert("x-amz-function-error", error);
            }
            if let Some(tail) = response.log_tail {
                let encoded = base64::engine::general_purpose::STANDARD.encode(tail);
                if let Ok(value) = HeaderValue::from_str(&encoded) {
                    headers.insert("x-amz-log-result", value);
                }
            }
            Ok(out)
        }
    }
}

/// Accepts an asynchronous invocation once its function and qualifier are known to exist and
/// the event is durable.
async fn accept_event(state: &ApiState, request: InvokeRequest) -> ApiResult<()> {
    state
        .invoker
        .resolve(&request.function, request.qualifier.as_deref())
        .await?;
    state.events.enqueue(request).await?;
    Ok(())
}

/// InvokeAsync (`POST /2014-11-13/functions/{name}/invoke-async`), deprecated but still sent by
/// `aws lambda invoke-async`: an `Event` invocation answered `202 {"Status": 202}`.
pub async fn invoke_async(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let Invocation { request, .. } = parse(
        &state,
        &function,
        &query,
        &headers,
        body,
        request_id,
        &["Event"],
    )?;
    accept_event(&state, request).await?;
    let mut out = (StatusCode::ACCEPTED, r#"{"Status":202}"#).into_response();
    out.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    Ok(out)
}

/// The `(ErrorCode, ErrorDetails)` of a failed invocation: the error's type and message.
pub(crate) fn error_of(payload: &[u8]) -> (String, String) {
    let error: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let text = |key: &str| error[key].as_str().unwrap_or_default().to_owned();
    (text("errorType"), text("errorMessage"))
}

/// The body of a response that is being written while the function runs.
pub(crate) struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(http_body::Frame::data(data))))
    }
}

/// Runs `request` with a stream and waits for the invocation to begin. A failure before it
/// began (unknown function, throttle) is the error; otherwise the parts of the response
/// follow on the receiver, and the task ends with the invocation's final response.
pub(crate) async fn start_streaming(
    state: &ApiState,
    mut request: InvokeRequest,
) -> ApiResult<(
    Option<String>,
    tokio::sync::mpsc::Receiver<ResponsePart>,
    tokio::task::JoinHandle<lamina_core::Result<InvokeResponse>>,
)> {
    let (tx, mut parts) = tokio::sync::mpsc::channel(32);
    request.stream = Some(tx);
    let invoker = state.invoker.clone();
    let running = tokio::spawn(async move { invoker.invoke(request).await });
    // The invocation says `Started` before anything else; the channel closes only when the
    // invocation is over (its request, holding the sender, is gone).
    if let Some(ResponsePart::Started { executed_version }) = parts.recv().await {
        return Ok((Some(executed_version), parts, running));
    }
    match running.await {
        Ok(Err(err)) => Err(err.into()),
        // Over before it began: an answer the platform gave (no bootstrap, ...), complete in
        // the final response.
        Ok(Ok(response)) => Ok((
            Some(response.executed_version.clone()),
            parts,
            tokio::spawn(async move { Ok(response) }),
        )),
        Err(_) => Err(Error::service("the invocation was lost").into()),
    }
}

/// InvokeWithResponseStream: `POST /2021-11-15/functions/{name}/response-streaming-invocations`.
pub async fn invoke_with_response_stream(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let Invocation {
        invocation_type,
        request,
    } = parse(
        &state,
        &function,
        &query,
        &headers,
        body,
        request_id,
        &["RequestResponse", "DryRun"],
    )?;
    if invocation_type == "DryRun" {
        state
            .invoker
            .resolve(&request.function, request.qualifier.as_deref())
            .await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (executed_version, mut parts, running) = start_streaming(&state, request).await?;
    let (events, body) = tokio::sync::mpsc::channel(32);
    tokio::spawn(async move {
        while let Some(part) = parts.recv().await {
            if let ResponsePart::Data(data) = part
                && events
                    .send(event_stream::payload_chunk(&data))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let complete = match running.await {
            Ok(Ok(response)) => {
                let error = response
                    .function_error
                    .as_ref()
                    .map(|_| error_of(&response.payload));
                let log = response
                    .log_tail
                    .map(|tail| base64::engine::general_purpose::STANDARD.encode(tail));
                event_stream::invoke_complete(
                    error
                        .as_ref()
                        .map(|(code, details)| (code.as_str(), details.as_str())),
                    log.as_deref(),
                )
            }
            Ok(Err(err)) => {
                event_stream::invoke_complete(Some(("ServiceException", &err.message)), None)
            }
            Err(_) => event_stream::invoke_complete(
                Some(("ServiceException", "the invocation was lost")),
                None,
            ),
        };
        let _ = events.send(complete).await;
    });
    let mut out = Response::new(axum::body::Body::new(ChannelBody(body)));
    let headers = out.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    if let Some(version) = executed_version.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert("x-amz-executed-version", version);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn client_context_is_validated() {
        assert!(client_context(None).unwrap().is_none());
        let ok = encode(r#"{"custom": {"a": "b"}, "env": {}, "client": {"app_title": "x"}}"#);
        assert!(client_context(Some(&ok)).unwrap().is_some());
        for bad in [
            "not base64!",
            &encode("not json"),
            &encode("[1]"),
            &encode(r#"{"custom": {"a": 1}}"#),
            &encode(r#"{"custom": "x"}"#),
        ] {
            assert!(client_context(Some(bad)).is_err(), "{bad}");
        }
    }
}
