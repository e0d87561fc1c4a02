//! Lamina's HTTP surfaces: the Lambda REST API (control plane), SigV4 verification and the one
//! mapping of errors to AWS error responses.
//!
//! Architecture invariant: this crate only *parses* and *renders*. A handler turns a request
//! into core commands and store calls, and their results into the Lambda API's JSON; it knows
//! nothing of Linux. Every request passes [`front`] first, which buffers the body, verifies the
//! signature, stamps the request id and normalises the path, so no handler repeats any of it.
#![forbid(unsafe_code)]

mod error;
mod lambda;
mod metrics;
pub mod sigv4;
mod sqs;
mod sts;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use lamina_core::arn::Account;
use lamina_core::concurrency::ConcurrencyLimits;
use lamina_core::function::Runtimes;
use lamina_core::{Error, ErrorKind};
use lamina_store::{CodeStore, MetadataStore, QueueStore};

pub use error::{ApiError, ApiResult};
pub use lambda::function_url::UrlDirectory;
use lambda::{
    aliases, code_location, event_invoke, function_url, functions, invoke, permissions,
    provisioned, settings, urls,
};

/// The largest request body accepted: a 50 MiB zip, base64-encoded, as Lambda allows for a
/// direct upload (`69905067` bytes), plus room for the JSON around it.
pub const MAX_REQUEST_BYTES: usize = 69_905_067 + 64 * 1024;

/// What every handler shares. Built once at start-up.
pub struct ApiState {
    pub store: Arc<dyn MetadataStore>,
    pub code: CodeStore,
    pub account: Account,
    pub runtimes: Runtimes,
    pub keyring: sigv4::Keyring,
    /// Signs `Code.Location` URLs, so they need no SigV4.
    pub url_key: Vec<u8>,
    pub concurrency: ConcurrencyLimits,
    /// Runs functions; the only way this crate reaches the execution engine.
    pub invoker: Arc<dyn lamina_core::invoke::Invoke>,
    /// Where function URLs live, and what each invokes.
    pub urls: UrlDirectory,
    /// Accepts asynchronous invocations, durably.
    pub events: Arc<dyn lamina_core::invoke::Enqueue>,
    /// The durable queues behind the SQS-compatible API.
    pub queues: Arc<dyn QueueStore>,
}

/// The request id of the current request, as the function and the client see it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub type SharedState = Arc<ApiState>;

/// The whole HTTP surface.
pub fn app(state: SharedState) -> Router {
    let api = Router::new()
        .route(
            "/2015-03-31/functions",
            post(functions::create).get(functions::list),
        )
        .route(
            "/2015-03-31/functions/{function}",
            get(functions::get).delete(functions::delete),
        )
        .route(
            "/2015-03-31/functions/{function}/configuration",
            get(functions::get_configuration).put(functions::update_configuration),
        )
        .route(
            "/2015-03-31/functions/{function}/code",
            put(functions::update_code),
        )
        .route(
            "/2015-03-31/functions/{function}/invocations",
            post(invoke::invoke),
        )
        .route(
            "/2014-11-13/functions/{function}/invoke-async",
            post(invoke::invoke_async),
        )
        .route(
            "/2021-11-15/functions/{function}/response-streaming-invocations",
            post(invoke::invoke_with_response_stream),
        )
        .route(
            "/2015-03-31/functions/{function}/versions",
            post(functions::publish_version).get(functions::list_versions),
        )
        .route(
            "/2015-03-31/functions/{function}/aliases",
            post(aliases::create).get(aliases::list),
        )
        .route(
            "/2015-03-31/functions/{function}/aliases/{alias}",
            get(aliases::get)
                .put(aliases::update)
                .delete(aliases::delete),
        )
        .route(
            "/2015-03-31/functions/{function}/policy",
            post(permissions::add).get(permissions::get),
        )
        .route(
            "/2015-03-31/functions/{function}/policy/{statement}",
            axum::routing::delete(permissions::remove),
        )
        .route(
            "/2017-03-31/tags/{resource}",
            get(settings::list_tags)
                .post(settings::tag)
                .delete(settings::untag),
        )
        .route(
            "/2016-08-19/account-settings",
            get(settings::account_settings),
        )
        .route(
            "/2017-10-31/functions/{function}/concurrency",
            put(settings::put_concurrency).delete(settings::delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{function}/concurrency",
            get(settings::get_concurrency),
        )
        .route(
            "/2024-08-31/functions/{function}/recursion-config",
            get(settings::get_recursion).put(settings::put_recursion),
        )
        .route(
            "/2019-09-30/functions/{function}/provisioned-concurrency",
            get(provisioned::get_or_list)
                .put(provisioned::put)
                .delete(provisioned::delete),
        )
        .route(
            "/2021-10-31/functions/{function}/url",
            post(urls::create)
                .get(urls::get)
                .put(urls::update)
                .delete(urls::delete),
        )
        .route("/2021-10-31/functions/{function}/urls", get(urls::list))
        .route(
            "/2019-09-25/functions/{function}/event-invoke-config",
            put(event_invoke::put)
                .post(event_invoke::update)
                .get(event_invoke::get)
                .delete(event_invoke::delete),
        )
        .route(
            "/2019-09-25/functions/{function}/event-invoke-config/list",
            get(event_invoke::list),
        )
        .route(code_location::ROUTE, get(code_location::download))
        .route("/_lamina/health", get(|| async { "ok" }))
        .route(metrics::ROUTE, get(metrics::metrics))
        .fallback(unknown_operation)
        .layer(DefaultBodyLimit::disable())
        .with_state(state.clone());
    // `front` must see the request before routing so that it can rewrite the path.
    Router::new()
        .fallback_service(api)
        .layer(middleware::from_fn_with_state(state, front))
}

async fn unknown_operation(request: Request) -> ApiError {
    ApiError::UnknownOperation(format!(
        "no operation at {} {}",
        request.method(),
        request.uri().path()
    ))
}

/// Paths that carry their own authorisation instead of SigV4.
fn is_unsigned(path: &str) -> bool {
    path.starts_with(code_location::PREFIX) || path == "/_lamina/health" || path == metrics::ROUTE
}

/// Assigns the request id; serves function URLs (which authorise by their own rules); for
/// the API, buffers the body (SigV4 hashes it), verifies the signature and strips a trailing
/// slash so `/functions/` routes like `/functions`.
async fn front(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    let mut response = match function_url::addressed_to(&parts) {
        Some((url_id, path)) => {
            let request = Request::from_parts(parts, body);
            function_url::serve(&state, request, url_id, path, &request_id).await
        }
        None if sts::addressed_to(&parts) => {
            sts::serve(&state, Request::from_parts(parts, body), &request_id).await
        }
        None => match sqs::protocol(&parts.method, &parts.uri, &parts.headers) {
            Some(protocol) => {
                queue_api(
                    &state,
                    protocol,
                    Request::from_parts(parts, body),
                    &request_id,
                )
                .await
            }
            None => match authenticate(&state, Request::from_parts(parts, body), &request_id).await
            {
                Ok(request) => next.run(request).await,
                Err(err) => err.into_response(),
            },
        },
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-RequestId", value);
    }
    response
}

/// Serves the SQS-compatible API (either protocol), signed for service `sqs`.
async fn queue_api(
    state: &ApiState,
    protocol: sqs::Protocol,
    request: Request,
    request_id: &str,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, sqs::MAX_REQUEST_BYTES).await else {
        return sqs::too_large().respond(protocol, request_id);
    };
    let caller = match sigv4::verify_request(&parts, &body, &state.keyring, "sqs") {
        Ok(caller) => caller,
        Err(err) => return sqs::SqsError::from(err).respond(protocol, request_id),
    };
    sqs::serve(state, protocol, &parts, &body, &caller, request_id).await
}

async fn authenticate(
    state: &ApiState,
    request: Request,
    request_id: &str,
) -> Result<Request, ApiError> {
    let (mut parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::RequestTooLarge,
                format!(
                    "Request must be smaller than {MAX_REQUEST_BYTES} bytes for this operation"
                ),
            )
        })?;
    if !is_unsigned(parts.uri.path()) {
        sigv4::verify_request(&parts, &body, &state.keyring, "lambda")?;
    }
    let path = parts.uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match parts.uri.query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        parts.uri = rebuilt.parse::<Uri>().map_err(|_| {
            ApiError::from(Error::invalid_content(
                "The request path is not a valid URI.",
            ))
        })?;
    }
    parts.extensions.insert(RequestId(request_id.to_owned()));
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// A JSON response with `status`.
fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Parses a request body as the operation's input shape. An empty body is `{}`.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        Error::invalid_content(format!("Could not parse request body into json: {e}")).into()
    })
}

/// The query string as ordered pairs (repeated keys kept, as `tagKeys` needs).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// `MaxItems` within the model's range 1..=10000, defaulting to 50.
fn max_items(query: &QueryPairs) -> ApiResult<usize> {
    max_items_up_to(query, 10_000)
}

/// `MaxItems` within 1..=`max`, defaulting to 50.
fn max_items_up_to(query: &QueryPairs, max: usize) -> ApiResult<usize> {
    match query.get("MaxItems") {
        None => Ok(50.min(max)),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Error::validation(format!(
                "1 validation error detected: Value '{raw}' at 'maxItems' failed to satisfy \
                 constraint: Member must have value between 1 and {max}"
            ))
            .into()),
        },
    }
}

/// Runs a read-modify-write block, again from the start if the function moved under it
/// (the store answered [`ApiError::Retry`]). The block may use `?` and `return`.
macro_rules! retrying {
    ($body:block) => {{
        let mut attempts = 0;
        loop {
            let result: $crate::ApiResult<_> = async $body.await;
            match result {
                Err($crate::ApiError::Retry) if attempts < 8 => {
                    attempts += 1;
                    tokio::task::yield_now().await;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retrying;
