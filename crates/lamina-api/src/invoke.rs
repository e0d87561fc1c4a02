//! Invoke: `POST /2015-03-31/functions/{name}/invocations`.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use lamina_core::arn::FunctionRef;
use lamina_core::invoke::InvokeRequest;
use lamina_core::{Error, ErrorKind};

use crate::{ApiResult, QueryPairs, RequestId, SharedState};

/// Lambda's payload limits: 6 MB synchronous, 1 MB asynchronous.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;
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

pub async fn invoke(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let function =
        FunctionRef::parse_with_qualifier(&function, query.get("Qualifier"), &state.account)?;
    let invocation_type = header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse");
    let tail = match header(&headers, "x-amz-log-type").unwrap_or("None") {
        "None" => false,
        "Tail" => true,
        other => return Err(enum_error("logType", other, "None, Tail").into()),
    };
    let limit = match invocation_type {
        "RequestResponse" | "DryRun" => MAX_SYNC_PAYLOAD,
        "Event" => MAX_ASYNC_PAYLOAD,
        other => {
            return Err(
                enum_error("invocationType", other, "Event, RequestResponse, DryRun").into(),
            );
        }
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
    let client_context = client_context(header(&headers, "x-amz-client-context"))?;
    let qualifier = function.qualifier.clone();
    if invocation_type == "DryRun" {
        state
            .invoker
            .resolve(&function.name, qualifier.as_deref())
            .await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Lambda hands a function `{}` when the caller sent no payload.
    let payload = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    let request = InvokeRequest {
        function: function.name,
        qualifier,
        payload,
        request_id,
        client_context,
        tail: tail && invocation_type == "RequestResponse",
    };
    if invocation_type == "Event" {
        // Accepted once the function is known to exist; durability comes with the async queue.
        state
            .invoker
            .resolve(&request.function, request.qualifier.as_deref())
            .await?;
        let invoker = state.invoker.clone();
        tokio::spawn(async move {
            if let Err(err) = invoker.invoke(request).await {
                tracing::warn!(%err, "asynchronous invocation failed");
            }
        });
        return Ok(StatusCode::ACCEPTED.into_response());
    }
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
