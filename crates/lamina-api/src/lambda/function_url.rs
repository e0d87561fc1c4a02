//! Function URLs: requests to `<url-id>.lambda-url.<region>.<domain>` (or to the path form
//! `/_lamina/urls/<url-id>/…` on the main address) become payload-format-2.0 events for the
//! function, and its result becomes the HTTP response.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use lamina_core::invoke::{InvokeRequest, ResponsePart};
use lamina_core::url::{AuthType, Cors, InvokeMode, UrlConfig};
use lamina_core::{Error, ErrorKind};
use lamina_store::MetadataStore;
use serde_json::{Map, Value, json};

use crate::ApiState;

/// Where the path form of a URL starts on the main address.
pub const PATH_PREFIX: &str = "/_lamina/urls/";
/// A function URL's largest request and response (Lambda's synchronous payload limit).
const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// What a URL invokes, and whether anyone may call it.
#[derive(Debug)]
pub struct UrlTarget {
    pub function: String,
    pub config: UrlConfig,
    /// The resource policy grants `lambda:InvokeFunctionUrl` to anyone (for `AuthType: NONE`).
    pub public: bool,
}

/// The addresses of function URLs, and a cache of what each URL invokes: its configuration and
/// policy are read from the store once, and dropped when the function changes.
pub struct UrlDirectory {
    addressing: Addressing,
    region: String,
    cache: RwLock<Cache>,
}

/// What each URL invokes, and how many commits have dropped entries: a lookup that began
/// before a commit must not cache what it read.
#[derive(Default)]
struct Cache {
    targets: HashMap<String, Arc<UrlTarget>>,
    generation: u64,
}

/// How the URLs the API hands out are written.
enum Addressing {
    /// `<origin>/_lamina/urls/<url-id>/`: the server's own address, which every HTTP client
    /// resolves (a name under `localhost` is resolved by curl and browsers, not by the
    /// system resolver Python or Node.js use).
    Path { origin: String },
    /// `<scheme>://<url-id>.lambda-url.<region>.<domain>/`, for a domain the operator points
    /// at the server (a wildcard record, or a proxy in front).
    Host { scheme: String, domain: String },
}

impl UrlDirectory {
    /// URLs in the path form on `listen`, the server's own address (`0.0.0.0` and `::` are
    /// written as loopback).
    pub fn on_address(listen: SocketAddr, region: &str) -> Self {
        let host = match listen.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        Self {
            addressing: Addressing::Path {
                origin: format!("http://{host}:{}", listen.port()),
            },
            region: region.to_owned(),
            cache: RwLock::default(),
        }
    }

    /// URLs under `base` (`https://lambda.example.com`, `http://localhost:9000`): a URL is
    /// `<scheme>://<url-id>.lambda-url.<region>.<host>/`.
    pub fn under_domain(base: &str, region: &str) -> Result<Self, String> {
        let (scheme, rest) = base
            .split_once("://")
            .ok_or_else(|| format!("{base:?} is not a URL such as https://lambda.example.com"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("{base:?}: the scheme must be http or https"));
        }
        let domain = rest.trim_end_matches('/');
        if domain.is_empty() || domain.contains('/') {
            return Err(format!("{base:?}: give only a scheme, a host and a port"));
        }
        Ok(Self {
            addressing: Addressing::Host {
                scheme: scheme.to_owned(),
                domain: domain.to_owned(),
            },
            region: region.to_owned(),
            cache: RwLock::default(),
        })
    }

    /// `FunctionUrl` of the URL `url_id`.
    pub fn url_of(&self, url_id: &str) -> String {
        match &self.addressing {
            Addressing::Path { origin } => format!("{origin}{PATH_PREFIX}{url_id}/"),
            Addressing::Host { scheme, domain } => {
                format!("{scheme}://{url_id}.lambda-url.{}.{domain}/", self.region)
            }
        }
    }

    /// The URL's host name as the function sees it (`requestContext.domainName`): Lambda's
    /// own form (`<url-id>.lambda-url.<region>.on.aws`) when URLs are path-addressed.
    fn host_of(&self, url_id: &str) -> String {
        let domain = match &self.addressing {
            Addressing::Path { .. } => "on.aws",
            Addressing::Host { domain, .. } => domain.split(':').next().unwrap_or(domain),
        };
        format!("{url_id}.lambda-url.{}.{domain}", self.region)
    }

    /// Forgets what is cached of `function` (after every commit to it).
    pub fn function_changed(&self, function: &str) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache
            .targets
            .retain(|_, target| target.function != function);
        cache.generation += 1;
    }

    async fn target(
        &self,
        store: &dyn MetadataStore,
        url_id: &str,
    ) -> Result<Option<Arc<UrlTarget>>, Error> {
        let generation = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some(target) = cache.targets.get(url_id) {
                return Ok(Some(target.clone()));
            }
            cache.generation
        };
        let store_error = |e: lamina_store::StoreError| Error::service(e.to_string());
        let Some((function, config)) = store.url_by_id(url_id).await.map_err(store_error)? else {
            return Ok(None);
        };
        let public = store
            .policy(&function, config.qualifier.as_deref().unwrap_or(""))
            .await
            .map_err(store_error)?
            .is_some_and(|policy| policy.grants_public_url());
        let target = Arc::new(UrlTarget {
            function,
            config,
            public,
        });
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        // A commit since the lookup began may have changed what was read: serve it, keep none.
        if cache.generation == generation {
            cache.targets.insert(url_id.to_owned(), target.clone());
        }
        Ok(Some(target))
    }
}

fn is_url_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The URL a request is addressed to, and its path there: by its `Host`
/// (`<url-id>.lambda-url.…`) or by the path form.
pub fn addressed_to(parts: &Parts) -> Option<(String, String)> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some((id, rest)) = host.split_once('.')
        && rest.starts_with("lambda-url.")
        && is_url_id(id)
    {
        return Some((id.to_owned(), parts.uri.path().to_owned()));
    }
    let rest = parts.uri.path().strip_prefix(PATH_PREFIX)?;
    let (id, path) = match rest.split_once('/') {
        Some((id, path)) => (id, format!("/{path}")),
        None => (rest, "/".to_owned()),
    };
    is_url_id(id).then(|| (id.to_owned(), path))
}

/// An error as function URLs answer them: a status, `x-amzn-ErrorType`, `{"Message": …}`.
fn refuse(status: StatusCode, error_type: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "Message": message }))).into_response();
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    response
}

/// Serves one request to the URL `url_id` at `path`.
pub async fn serve(
    state: &ApiState,
    request: Request,
    url_id: String,
    path: String,
    request_id: &str,
) -> Response {
    let (parts, body) = request.into_parts();
    let target = match state.urls.target(state.store.as_ref(), &url_id).await {
        Ok(Some(target)) => target,
        Ok(None) => return unknown_url(),
        Err(err) => {
            tracing::error!(%err, "looking up a function URL");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "Internal Server Error",
            );
        }
    };
    let cors = target.config.cors.as_ref();
    let origin = header_value(&parts.headers, "origin").map(str::to_owned);
    // A browser's preflight is the platform's to answer, signed or not.
    if parts.method == Method::OPTIONS
        && let (Some(cors), Some(origin)) = (cors, &origin)
        && parts.headers.contains_key("access-control-request-method")
    {
        let mut response = StatusCode::OK.into_response();
        preflight_headers(cors, origin, response.headers_mut());
        return response;
    }
    let body = match axum::body::to_bytes(body, MAX_PAYLOAD).await {
        Ok(body) => body,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                &format!(
                    "Request must be smaller than {MAX_PAYLOAD} bytes for the InvokeFunction operation"
                ),
            );
        }
    };
    let caller = match target.config.auth_type {
        AuthType::None if target.public => None,
        AuthType::None => {
            return refuse(StatusCode::FORBIDDEN, "AccessDeniedException", "Forbidden");
        }
        AuthType::AwsIam => {
            match crate::sigv4::verify_request(&parts, &body, &state.keyring, "lambda") {
                Ok(access_key) => Some(access_key),
                Err(err) => {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        "AccessDeniedException",
                        &err.to_string(),
                    );
                }
            }
        }
    };
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let domain = state.urls.host_of(&url_id);
    let event = event(EventParts {
        parts: &parts,
        path: &path,
        body: &body,
        url_id: &url_id,
        domain: &domain,
        source_ip: &peer,
        request_id,
        caller: caller.as_ref(),
        account: &state.account.account_id,
    });
    let request = InvokeRequest {
        function: target.function.clone(),
        qualifier: target.config.qualifier.clone(),
        payload: Bytes::from(event.to_string()),
        request_id: request_id.to_owned(),
        client_context: None,
        tail: false,
        stream: None,
    };
    let mut response = match target.config.invoke_mode {
        InvokeMode::Buffered => match state.invoker.invoke(request).await {
            Ok(result) if result.function_error.is_some() => function_failed(),
            Ok(result) => respond(&result.payload),
            Err(err) => invoke_failed(&err),
        },
        InvokeMode::ResponseStream => stream(state, request).await,
    };
    if let (Some(cors), Some(origin)) = (cors, &origin) {
        cors_headers(cors, origin, response.headers_mut());
    }
    response
}

/// A function that failed (or answered what cannot be an HTTP response): Lambda's 502 with a
/// plain-text body.
fn function_failed() -> Response {
    let mut response = (StatusCode::BAD_GATEWAY, "Internal Server Error").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A URL that names no function (never did, or its function or alias is deleted): Lambda
/// answers `403 {"Message":null}`, as for any host it does not serve.
fn unknown_url() -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "Message": null })),
    )
        .into_response();
    response.headers_mut().insert(
        "x-amzn-ErrorType",
        HeaderValue::from_static("AccessDeniedException"),
    );
    response
}

fn invoke_failed(err: &Error) -> Response {
    match err.kind {
        ErrorKind::TooManyRequests(_) => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate Exceeded.",
        ),
        // The alias (or function) behind the URL went away since it was looked up.
        ErrorKind::ResourceNotFound => unknown_url(),
        _ => {
            tracing::error!(%err, "invoking through a function URL");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "Internal Server Error",
            )
        }
    }
}

/// The content type with which a streaming runtime says its response begins with a prelude.
const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";
/// The most a prelude (status, headers, cookies) may take.
const MAX_PRELUDE: usize = 64 * 1024;

/// A `RESPONSE_STREAM` URL: the response's head as soon as the function has said what it is,
/// then its body as the function writes it.
async fn stream(state: &ApiState, request: InvokeRequest) -> Response {
    let (_, mut parts, running) = match crate::lambda::invoke::start_streaming(state, request).await
    {
        Ok(started) => started,
        Err(crate::ApiError::Lambda(err)) => return invoke_failed(&err),
        Err(err) => return err.into_response(),
    };
    let content_type = match parts.recv().await {
        Some(ResponsePart::ContentType(content_type)) => content_type,
        // A runtime that answers in one piece: mapped as a buffered URL maps it.
        Some(ResponsePart::Data(data)) => {
            return match running.await {
                Ok(Ok(result)) if result.function_error.is_none() => respond(&data),
                _ => function_failed(),
            };
        }
        _ => {
            return match running.await {
                Ok(Ok(result)) if result.function_error.is_none() => respond(&result.payload),
                Ok(Err(err)) => invoke_failed(&err),
                _ => function_failed(),
            };
        }
    };
    let mut head = Response::new(());
    let mut first = Bytes::new();
    if content_type == HTTP_INTEGRATION {
        // The prelude: JSON, then eight NUL bytes, then the body.
        let mut prelude = Vec::new();
        let split = loop {
            if let Some(at) = prelude.windows(8).position(|w| w == [0u8; 8]) {
                break Some(at);
            }
            if prelude.len() > MAX_PRELUDE {
                break None;
            }
            match parts.recv().await {
                Some(ResponsePart::Data(data)) => prelude.extend_from_slice(&data),
                _ => break None,
            }
        };
        let Some(at) = split else {
            running.abort();
            return function_failed();
        };
        first = Bytes::copy_from_slice(&prelude[at + 8..]);
        let prelude: Value = serde_json::from_slice(&prelude[..at]).unwrap_or_default();
        *head.status_mut() = prelude["statusCode"]
            .as_u64()
            .and_then(|code| StatusCode::from_u16(code as u16).ok())
            .unwrap_or(StatusCode::OK);
        apply_headers(&prelude, head.headers_mut());
    } else if let Ok(value) = HeaderValue::from_str(&content_type) {
        head.headers_mut().insert("content-type", value);
    }
    let (body, receiver) = tokio::sync::mpsc::channel::<Bytes>(32);
    tokio::spawn(async move {
        if !first.is_empty() && body.send(first).await.is_err() {
            return;
        }
        while let Some(part) = parts.recv().await {
            if let ResponsePart::Data(data) = part
                && body.send(data).await.is_err()
            {
                return;
            }
        }
        if let Ok(Ok(result)) = running.await
            && result.function_error.is_some()
        {
            tracing::debug!("a streamed function URL response ended in an error");
        }
    });
    let (parts, ()) = head.into_parts();
    Response::from_parts(
        parts,
        Body::new(crate::lambda::invoke::ChannelBody(receiver)),
    )
}

/// The `headers` and `cookies` of a result or a prelude, onto a response.
fn apply_headers(result: &Value, headers: &mut HeaderMap) {
    if let Some(Value::Object(given)) = result.get("headers") {
        for (name, value) in given {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value),
            ) {
                headers.insert(name, value);
            }
        }
    }
    for cookie in result
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Ok(value) = HeaderValue::try_from(cookie) {
            headers.append("set-cookie", value);
        }
    }
}

fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What one event is made of.
struct EventParts<'a> {
    parts: &'a Parts,
    path: &'a str,
    body: &'a [u8],
    url_id: &'a str,
    domain: &'a str,
    source_ip: &'a str,
    request_id: &'a str,
    /// The SigV4-signed caller (`AuthType: AWS_IAM`).
    caller: Option<&'a crate::sigv4::Caller>,
    account: &'a str,
}

/// Content types whose bodies the function gets as text rather than base64.
fn is_text(content_type: &str) -> bool {
    let content_type = content_type.to_ascii_lowercase();
    content_type.starts_with("text/")
        || [
            "json",
            "xml",
            "javascript",
            "x-www-form-urlencoded",
            "yaml",
            "csv",
        ]
        .iter()
        .any(|t| content_type.contains(t))
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The payload format 2.0 event of a request.
fn event(e: EventParts<'_>) -> Value {
    let parts = e.parts;
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == header::COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    headers.insert("x-forwarded-for".into(), e.source_ip.to_owned());
    headers
        .entry("x-forwarded-proto".into())
        .or_insert_with(|| "http".into());
    let raw_query = parts.uri.query().unwrap_or("");
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        query
            .entry(decode(key))
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&decode(value));
            })
            .or_insert_with(|| decode(value));
    }
    let now = time::OffsetDateTime::now_utc();
    let epoch_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let clf_time = now
        .format(time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    let mut context = json!({
        "accountId": if e.caller.is_some() { e.account } else { "anonymous" },
        "apiId": e.url_id,
        "domainName": e.domain,
        "domainPrefix": e.url_id,
        "http": {
            "method": parts.method.as_str(),
            "path": e.path,
            "protocol": format!("{:?}", parts.version),
            "sourceIp": e.source_ip,
            "userAgent": header_value(&parts.headers, "user-agent").unwrap_or(""),
        },
        "requestId": e.request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": clf_time,
        "timeEpoch": epoch_ms,
    });
    if let Some(caller) = e.caller {
        let user_id = caller.user_id(e.account);
        context["authorizer"] = json!({
            "iam": {
                "accessKey": caller.access_key_id,
                "accountId": e.account,
                "callerId": user_id,
                "cognitoIdentity": null,
                "principalOrgId": null,
                "userArn": caller.arn(e.account),
                "userId": user_id,
            }
        });
    }
    let mut event = Map::new();
    event.insert("version".into(), json!("2.0"));
    event.insert("routeKey".into(), json!("$default"));
    event.insert("rawPath".into(), json!(e.path));
    event.insert("rawQueryString".into(), json!(raw_query));
    if !cookies.is_empty() {
        event.insert("cookies".into(), json!(cookies));
    }
    event.insert("headers".into(), json!(headers));
    if !query.is_empty() {
        event.insert("queryStringParameters".into(), json!(query));
    }
    event.insert("requestContext".into(), context);
    let text = header_value(&parts.headers, "content-type").is_some_and(is_text);
    match std::str::from_utf8(e.body) {
        _ if e.body.is_empty() => {
            event.insert("isBase64Encoded".into(), json!(false));
        }
        Ok(body) if text => {
            event.insert("body".into(), json!(body));
            event.insert("isBase64Encoded".into(), json!(false));
        }
        _ => {
            event.insert(
                "body".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(e.body)),
            );
            event.insert("isBase64Encoded".into(), json!(true));
        }
    }
    Value::Object(event)
}

/// The HTTP response of a function's result: an object with `statusCode` says it all
/// (`headers`, `cookies`, `body`, `isBase64Encoded`); anything else is a 200 JSON body, as is.
fn respond(payload: &[u8]) -> Response {
    let result: Option<Value> = serde_json::from_slice(payload).ok();
    let Some(Value::Object(result)) = result.filter(|r| r.get("statusCode").is_some()) else {
        let mut response = (StatusCode::OK, Body::from(payload.to_vec())).into_response();
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return response;
    };
    let status = result["statusCode"]
        .as_u64()
        .or_else(|| result["statusCode"].as_str().and_then(|s| s.parse().ok()))
        .and_then(|code| StatusCode::from_u16(code as u16).ok());
    let Some(status) = status else {
        return function_failed();
    };
    let body = match result.get("body") {
        Some(Value::String(body)) if result.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            match base64::engine::general_purpose::STANDARD.decode(body) {
                Ok(bytes) => bytes,
                Err(_) => return function_failed(),
            }
        }
        Some(Value::String(body)) => body.clone().into_bytes(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut response = (status, Body::from(body)).into_response();
    let headers = response.headers_mut();
    if let Some(Value::Object(given)) = result.get("headers") {
        for (name, value) in given {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value),
            ) {
                headers.insert(name, value);
            }
        }
    }
    for cookie in result
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Ok(value) = HeaderValue::try_from(cookie) {
            headers.append("set-cookie", value);
        }
    }
    if !headers.contains_key("content-type") {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
    }
    response
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The CORS headers of every response to a browser from `origin`, overriding the function's.
fn cors_headers(cors: &Cors, origin: &str, headers: &mut HeaderMap) {
    if !cors.allows_origin(origin) {
        return;
    }
    let any = cors.allow_origins.iter().flatten().any(|o| o == "*");
    set(
        headers,
        "access-control-allow-origin",
        if any && cors.allow_credentials != Some(true) {
            "*"
        } else {
            origin
        },
    );
    if cors.allow_credentials == Some(true) {
        set(headers, "access-control-allow-credentials", "true");
    }
    if let Some(expose) = cors.expose_headers.as_ref().filter(|e| !e.is_empty()) {
        set(headers, "access-control-expose-headers", &expose.join(","));
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The answer to a preflight from `origin`.
fn preflight_headers(cors: &Cors, origin: &str, headers: &mut HeaderMap) {
    if !cors.allows_origin(origin) {
        return;
    }
    cors_headers(cors, origin, headers);
    if let Some(methods) = cors.allow_methods.as_ref().filter(|m| !m.is_empty()) {
        set(headers, "access-control-allow-methods", &methods.join(","));
    }
    if let Some(allowed) = cors.allow_headers.as_ref().filter(|h| !h.is_empty()) {
        set(headers, "access-control-allow-headers", &allowed.join(","));
    }
    if let Some(age) = cors.max_age {
        set(headers, "access-control-max-age", &age.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    const ID: &str = "abcdefghijklmnopqrstuvwxyz012345";

    #[test]
    fn requests_are_addressed_by_host_or_by_path() {
        let host = format!("{ID}.lambda-url.us-east-1.localhost:9000");
        assert_eq!(
            addressed_to(&parts("GET", "/a/b?x=1", &[("host", &host)])),
            Some((ID.into(), "/a/b".into()))
        );
        assert_eq!(
            addressed_to(&parts(
                "GET",
                &format!("/_lamina/urls/{ID}/a/b"),
                &[("host", "127.0.0.1:9000")]
            )),
            Some((ID.into(), "/a/b".into()))
        );
        assert_eq!(
            addressed_to(&parts("GET", &format!("/_lamina/urls/{ID}"), &[])),
            Some((ID.into(), "/".into()))
        );
        assert_eq!(
            addressed_to(&parts(
                "GET",
                "/2015-03-31/functions",
                &[("host", "localhost")]
            )),
            None
        );
        assert_eq!(
            addressed_to(&parts("GET", "/", &[("host", "short.lambda-url.x")])),
            None
        );
    }

    #[test]
    fn event_follows_payload_format_2() {
        let p = parts(
            "POST",
            "/my/path?p1=v1&p1=v2&p2=a%20b",
            &[
                ("host", "h"),
                ("Cookie", "c1=v1; c2=v2"),
                ("X-Multi", "a"),
                ("x-multi", "b"),
                ("content-type", "application/octet-stream"),
            ],
        );
        let e = event(EventParts {
            parts: &p,
            path: "/my/path",
            body: &[0, 1, 2],
            url_id: ID,
            domain: "d",
            source_ip: "10.0.0.1",
            request_id: "r",
            caller: None,
            account: "000000000000",
        });
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["rawQueryString"], "p1=v1&p1=v2&p2=a%20b");
        assert_eq!(
            e["queryStringParameters"],
            json!({"p1": "v1,v2", "p2": "a b"})
        );
        assert_eq!(e["cookies"], json!(["c1=v1", "c2=v2"]));
        assert_eq!(e["headers"]["x-multi"], "a,b");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!(e["requestContext"]["accountId"], "anonymous");
        assert!(e["requestContext"].get("authorizer").is_none());
        assert_eq!(
            (e["body"].as_str(), &e["isBase64Encoded"]),
            (Some("AAEC"), &json!(true))
        );
    }

    #[tokio::test]
    async fn results_map_to_responses() {
        let body = |r: Response| async {
            axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap()
        };
        let r = respond(br#"{"statusCode": 201, "headers": {"x-a": "1"}, "cookies": ["a=1", "b=2"], "body": "made"}"#);
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(body(r).await, "made");
        let r = respond(br#"{"statusCode": 200, "body": "aGk=", "isBase64Encoded": true}"#);
        assert_eq!(body(r).await, "hi");
        let r = respond(br#""Hello""#);
        assert_eq!(
            (r.status(), r.headers()["content-type"].clone()),
            (StatusCode::OK, HeaderValue::from_static("application/json"))
        );
        assert_eq!(body(r).await, "\"Hello\"");
        let r = respond(br#"{"message": "no status"}"#);
        assert_eq!(body(r).await, r#"{"message": "no status"}"#);
    }
}
