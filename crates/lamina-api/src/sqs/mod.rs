//! The SQS-compatible queue API over Lamina's queue engine, in both protocols SDKs speak to SQS
//! (signed for service `sqs`): JSON 1.0 (`POST /` with `X-Amz-Target: AmazonSQS.<Operation>`),
//! which current SDKs use, and the query protocol of older ones (`Action=…` in a form or the
//! query string, answered in XML; [`query`] translates). Messages are checked and
//! digested by [`message`]. Queue URLs are
//! `http://<host>/<account>/<name>`; ARNs `arn:aws:sqs:<region>:<account>:<name>`.

use std::collections::{BTreeMap, HashSet};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lamina_core::event_invoke::is_queue_name;
use lamina_store::queue::{NewMessage, QueueSettings, Receipt, Received, Redrive};
use lamina_store::{QueueStore, StoreError, now_ms};
use serde_json::{Map, Value, json};

mod message;
mod query;

use self::message::{Refusal, attributes_md5, body_md5};
use crate::ApiState;

/// The largest request taken: a batch of ten messages of 1 MiB at most in all, encoded (JSON
/// escaping or the query protocol's percent-encoding may triple it), with room for attributes.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The answer to a request larger than [`MAX_REQUEST_BYTES`].
pub fn too_large() -> SqsError {
    error(
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        format!("Requests must be smaller than {MAX_REQUEST_BYTES} bytes."),
    )
}

/// The operation a JSON protocol request asks for, if it is for this API.
fn target(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("AmazonSQS."))
        .map(str::to_owned)
}

/// The two protocols of SQS. An answer goes back in the protocol of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Json,
    Query,
}

/// The path of a queue URL: `/<12-digit account>/<name>`.
fn is_queue_path(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let account = parts.next().unwrap_or("");
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && parts.next().is_some_and(is_queue_name)
}

/// The protocol of a request for this API, if it is one: a `POST` with `X-Amz-Target:
/// AmazonSQS.*` (JSON), or a request to `/` or to a queue URL in the query protocol — a form
/// `POST`, or any method whose query string names the `Action` or whose signature (in the
/// `Authorization` header or presigned in the query string) is scoped to service `sqs`. No
/// Lambda operation lives at those paths or takes a form.
pub fn protocol(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> Option<Protocol> {
    if method == http::Method::POST && target(headers).is_some() {
        return Some(Protocol::Json);
    }
    if uri.path() != "/" && !is_queue_path(uri.path()) {
        return None;
    }
    let form = method == http::Method::POST
        && headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let names_action = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(name, _)| name == "Action");
    let for_sqs = crate::sigv4::signed_service(uri, headers).is_some_and(|s| s == "sqs");
    (form || names_action || for_sqs).then_some(Protocol::Query)
}

/// An SQS error: the modeled shape, the query-protocol code older clients check, the status.
#[derive(Debug)]
pub struct SqsError {
    shape: &'static str,
    query_code: &'static str,
    status: StatusCode,
    message: String,
    /// Refused by the signature check, before SQS: the JSON answer names the shape in AWS's
    /// common namespace and carries no query code (SQS's own errors do, `x-amzn-query-error`).
    unsigned: bool,
}

type SqsResult<T> = Result<T, SqsError>;

fn error(shape: &'static str, query_code: &'static str, message: impl Into<String>) -> SqsError {
    SqsError {
        shape,
        query_code,
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
        unsigned: false,
    }
}

fn no_queue() -> SqsError {
    error(
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "The specified queue does not exist.",
    )
}

fn invalid_parameter(message: impl Into<String>) -> SqsError {
    error("InvalidParameterValue", "InvalidParameterValue", message)
}

impl From<StoreError> for SqsError {
    fn from(err: StoreError) -> Self {
        tracing::error!(%err, "queue store failure");
        SqsError {
            shape: "InternalError",
            query_code: "InternalError",
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "The service encountered an internal error.".into(),
            unsigned: false,
        }
    }
}

impl From<crate::ApiError> for SqsError {
    /// A signature that does not verify, in this protocol's error form.
    fn from(err: crate::ApiError) -> Self {
        match err {
            crate::ApiError::Auth {
                exception,
                status,
                message,
            } => SqsError {
                shape: exception,
                query_code: crate::sigv4::query_code(exception),
                status,
                message,
                unsigned: true,
            },
            other => SqsError {
                shape: "InternalError",
                query_code: "InternalError",
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: other.to_string(),
                unsigned: false,
            },
        }
    }
}

impl SqsError {
    /// The error as a batch answer's failed entry `id`.
    fn entry(&self, id: &str) -> Value {
        json!({ "Id": id, "SenderFault": !self.status.is_server_error(), "Code": self.query_code, "Message": self.message })
    }

    /// The error as the client's protocol answers it.
    pub fn respond(self, protocol: Protocol, request_id: &str) -> Response {
        let (content_type, body) = match protocol {
            Protocol::Json => ("application/x-amz-json-1.0", {
                let namespace = if self.unsigned {
                    "com.amazon.coral.service"
                } else {
                    "com.amazonaws.sqs"
                };
                json!({ "__type": format!("{namespace}#{}", self.shape), "message": self.message })
                    .to_string()
            }),
            Protocol::Query => (
                "text/xml",
                query::error(
                    self.query_code,
                    &self.message,
                    !self.status.is_server_error(),
                    request_id,
                ),
            ),
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(content_type));
        let fault = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        if !self.unsigned
            && let Ok(value) = HeaderValue::from_str(&format!("{};{fault}", self.query_code))
        {
            headers.insert("x-amzn-query-error", value);
        }
        response
    }
}

/// A request's operation and its members in the JSON protocol's shape.
fn parse(
    protocol: Protocol,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    host: &str,
) -> SqsResult<(String, Value)> {
    match protocol {
        Protocol::Json => {
            let operation = target(headers).unwrap_or_default();
            if body.is_empty() {
                return Ok((operation, json!({})));
            }
            serde_json::from_slice(body)
                .map(|request| (operation, request))
                .map_err(|e| invalid_parameter(format!("the request is not JSON: {e}")))
        }
        Protocol::Query => {
            // The body holds parameters only as a form; any other body is no part of the
            // request (and may not be covered by a presigned URL's signature).
            let form = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
            let body: &[u8] = if form { body } else { b"" };
            let params = uri
                .query()
                .map(str::as_bytes)
                .into_iter()
                .chain([body])
                .flat_map(form_urlencoded::parse)
                .map(|(k, v)| (k.into_owned(), v.into_owned()));
            let (action, mut request) = query::request(params).map_err(|action| {
                invalid_parameter(format!(
                    "The request names more than one Action ({action} among them)."
                ))
            })?;
            let action = action.ok_or_else(|| {
                error(
                    "MissingAction",
                    "MissingAction",
                    "The request must contain the parameter Action.",
                )
            })?;
            // SDKs that send a request to its queue's URL may leave `QueueUrl` out.
            if request.get("QueueUrl").is_none() && is_queue_path(uri.path()) {
                request["QueueUrl"] = json!(format!("http://{host}{}", uri.path()));
            }
            Ok((action, request))
        }
    }
}

/// Serves one SQS request whose signature has been verified.
pub async fn serve(
    state: &ApiState,
    protocol: Protocol,
    parts: &http::request::Parts,
    body: &[u8],
    caller: &crate::sigv4::Caller,
    request_id: &str,
) -> Response {
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let (operation, request) = match parse(protocol, &parts.uri, &parts.headers, body, host) {
        Ok(parsed) => parsed,
        Err(err) => return err.respond(protocol, request_id),
    };
    let request = &request;
    let sender = caller.user_id(&state.account.account_id);
    let api = Sqs {
        queues: state.queues.as_ref(),
        region: &state.account.region,
        account: &state.account.account_id,
        host,
        sender: &sender,
    };
    let result = match operation.as_str() {
        "CreateQueue" => api.create_queue(request).await,
        "GetQueueUrl" => api.get_queue_url(request).await,
        "ListQueues" => api.list_queues(request).await,
        "DeleteQueue" => api.delete_queue(request).await,
        "PurgeQueue" => api.purge_queue(request).await,
        "GetQueueAttributes" => api.get_attributes(request).await,
        "SetQueueAttributes" => api.set_attributes(request).await,
        "SendMessage" => api.send_message(request).await,
        "SendMessageBatch" => api.send_message_batch(request).await,
        "ReceiveMessage" => api.receive_message(request).await,
        "DeleteMessage" => api.delete_message(request).await,
        "DeleteMessageBatch" => api.delete_message_batch(request).await,
        "ChangeMessageVisibility" => api.change_visibility(request).await,
        "ChangeMessageVisibilityBatch" => api.change_visibility_batch(request).await,
        "TagQueue" => api.tag_queue(request).await,
        "UntagQueue" => api.untag_queue(request).await,
        "ListQueueTags" => api.list_queue_tags(request).await,
        "ListDeadLetterSourceQueues" => api.list_dead_letter_source_queues(request).await,
        other if UNSUPPORTED.contains(&other) => Err(error(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            format!("The action {other} is not supported."),
        )),
        other => Err(error(
            "InvalidAction",
            "InvalidAction",
            format!("The action {other} is not valid for this endpoint."),
        )),
    };
    let result = match result {
        Ok(result) => result,
        Err(err) => return err.respond(protocol, request_id),
    };
    let (content_type, body) = match protocol {
        Protocol::Json => ("application/x-amz-json-1.0", result.to_string()),
        Protocol::Query => ("text/xml", query::response(&operation, &result, request_id)),
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

struct Sqs<'a> {
    queues: &'a dyn QueueStore,
    region: &'a str,
    account: &'a str,
    host: &'a str,
    /// Who signed the request, as `SenderId` names them: the account for its root key,
    /// `AROA…:<session>` for a function's role.
    sender: &'a str,
}

fn missing(member: &str) -> SqsError {
    error(
        "MissingParameter",
        "MissingParameter",
        format!("The request must contain the parameter {member}."),
    )
}

fn string<'a>(request: &'a Value, member: &str) -> SqsResult<&'a str> {
    request[member].as_str().ok_or_else(|| missing(member))
}

/// An integer request member within `range`, if given; otherwise SQS's answer, which quotes
/// the value: `Value 11 for parameter MaxNumberOfMessages is invalid. Reason: <reason>`.
fn optional_integer(
    value: &Value,
    member: &str,
    range: std::ops::RangeInclusive<u32>,
    reason: &str,
) -> SqsResult<Option<u32>> {
    if value.is_null() {
        return Ok(None);
    }
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| range.contains(v))
        .map(Some)
        .ok_or_else(|| {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            invalid_parameter(format!(
                "Value {shown} for parameter {member} is invalid. Reason: {reason}"
            ))
        })
}

/// The queue attributes of SQS's model (`QueueAttributeName`).
const QUEUE_ATTRIBUTES: &[&str] = &[
    "All",
    "Policy",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "ApproximateNumberOfMessagesDelayed",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "RedriveAllowPolicy",
    "SqsManagedSseEnabled",
];

/// The attributes of FIFO queues, which Lamina does not have.
const FIFO_ATTRIBUTES: &[&str] = &[
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];

/// Operations of SQS's model that Lamina does not serve.
const UNSUPPORTED: &[&str] = &[
    "AddPermission",
    "RemovePermission",
    "StartMessageMoveTask",
    "CancelMessageMoveTask",
    "ListMessageMoveTasks",
];

fn invalid_attribute_value(name: &str) -> SqsError {
    error(
        "InvalidAttributeValue",
        "InvalidAttributeValue",
        format!("Invalid value for the parameter {name}."),
    )
}

/// Records an attribute the engine keeps but does not act on; an empty value clears it.
fn record(settings: &mut QueueSettings, name: &str, value: String) {
    if value.is_empty() {
        settings.recorded.remove(name);
    } else {
        settings.recorded.insert(name.to_owned(), value);
    }
}

/// SQS's largest message, and the largest total of a batch.
const MAX_MESSAGE_BYTES: usize = 1_048_576;

/// A checked message of a send, its size as SQS counts it, and the digests its answer reports.
struct Sending {
    message: NewMessage,
    size: usize,
    report: Value,
}

/// SQS's limits on a queue's tags.
const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

/// Adds the tags of a request (a map of strings) to `tags`, within SQS's limits.
fn tag(tags: &mut BTreeMap<String, String>, given: &Value) -> SqsResult<()> {
    let given = given
        .as_object()
        .ok_or_else(|| invalid_parameter("Tags must be a map of tag keys to values."))?;
    for (key, value) in given {
        let value = value.as_str().unwrap_or_default();
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY {
            return Err(invalid_parameter(format!(
                "Tag keys must be 1 to {MAX_TAG_KEY} characters long."
            )));
        }
        if key.starts_with("aws:") {
            return Err(invalid_parameter(
                "Tag keys may not begin with the reserved prefix aws:.",
            ));
        }
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(invalid_parameter(format!(
                "Tag values must be at most {MAX_TAG_VALUE} characters long."
            )));
        }
        tags.insert(key.clone(), value.to_owned());
    }
    if tags.len() > MAX_TAGS {
        return Err(invalid_parameter(format!(
            "A queue may have at most {MAX_TAGS} tags."
        )));
    }
    Ok(())
}

/// A queue attribute given as a string (as the API carries them all) parsed within bounds.
fn bounded(name: &str, value: &Value, range: std::ops::RangeInclusive<u32>) -> SqsResult<u32> {
    value
        .as_str()
        .and_then(|v| v.parse::<u32>().ok())
        .or_else(|| value.as_u64().and_then(|v| u32::try_from(v).ok()))
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            error(
                "InvalidAttributeValue",
                "InvalidAttributeValue",
                format!("Invalid value for the parameter {name}."),
            )
        })
}

impl Sqs<'_> {
    fn url(&self, name: &str) -> String {
        format!("http://{}/{}/{}", self.host, self.account, name)
    }

    fn arn(&self, name: &str) -> String {
        format!("arn:aws:sqs:{}:{}:{}", self.region, self.account, name)
    }

    /// The queue a `QueueUrl` names, if it exists.
    async fn named(&self, request: &Value) -> SqsResult<(String, QueueSettings)> {
        let url = string(request, "QueueUrl")?;
        let mut segments = url.trim_end_matches('/').rsplit('/');
        let name = segments.next().unwrap_or("");
        if !is_queue_name(name) {
            return Err(error(
                "InvalidAddress",
                "InvalidAddress",
                format!("The address {url} is not valid for this endpoint."),
            ));
        }
        // A URL of another account's queue names no queue here, whatever its name.
        let account = segments.next().unwrap_or("");
        if account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && account != self.account
        {
            return Err(no_queue());
        }
        match self.queues.queue(name).await? {
            Some(settings) => Ok((name.to_owned(), settings)),
            None => Err(no_queue()),
        }
    }

    /// Applies the `Attributes` of a request to `settings`.
    async fn apply(&self, settings: &mut QueueSettings, attributes: &Value) -> SqsResult<()> {
        let Some(attributes) = attributes.as_object() else {
            return Ok(());
        };
        for (name, value) in attributes {
            let text = || {
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            };
            match name.as_str() {
                "VisibilityTimeout" => {
                    settings.visibility_timeout = bounded(name, value, 0..=43_200)?
                }
                "MessageRetentionPeriod" => {
                    settings.retention = bounded(name, value, 60..=1_209_600)?
                }
                "DelaySeconds" => settings.delay = bounded(name, value, 0..=900)?,
                "ReceiveMessageWaitTimeSeconds" => {
                    settings.receive_wait = bounded(name, value, 0..=20)?
                }
                "MaximumMessageSize" => {
                    settings.max_message_size = bounded(name, value, 1_024..=1_048_576)?
                }
                "RedrivePolicy" => settings.redrive = self.redrive(value).await?,
                // Recorded, not enforced: they read back as set ("" clears them).
                "Policy" | "RedriveAllowPolicy" => {
                    let text = text();
                    let is_object =
                        serde_json::from_str::<Value>(&text).is_ok_and(|p| p.is_object());
                    if !text.is_empty() && !is_object {
                        return Err(invalid_attribute_value(name));
                    }
                    record(settings, name, text);
                }
                "KmsMasterKeyId" => {
                    let key = text();
                    // SQS encrypts with either a KMS key or its own keys, not both.
                    if !key.is_empty() {
                        settings.recorded.remove("SqsManagedSseEnabled");
                    }
                    record(settings, name, key);
                }
                "KmsDataKeyReusePeriodSeconds" => {
                    let seconds = bounded(name, value, 60..=86_400)?;
                    record(settings, name, seconds.to_string());
                }
                "SqsManagedSseEnabled" => {
                    let enabled = match text().to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid_attribute_value(name)),
                    };
                    if enabled {
                        settings.recorded.remove("KmsMasterKeyId");
                    }
                    record(settings, name, enabled.to_string());
                }
                // Lamina's queues are standard queues, for which SQS knows no FIFO attribute.
                other => {
                    return Err(error(
                        "InvalidAttributeName",
                        "InvalidAttributeName",
                        format!("Unknown Attribute {other}."),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The attributes of a queue a client sets and reads back, as GetQueueAttributes reports
    /// them (absent ones are not set).
    fn configured(&self, settings: &QueueSettings) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("VisibilityTimeout", settings.visibility_timeout.to_string()),
            ("MessageRetentionPeriod", settings.retention.to_string()),
            ("DelaySeconds", settings.delay.to_string()),
            (
                "ReceiveMessageWaitTimeSeconds",
                settings.receive_wait.to_string(),
            ),
            ("MaximumMessageSize", settings.max_message_size.to_string()),
        ];
        if let Some(redrive) = &settings.redrive {
            out.push((
                "RedrivePolicy",
                json!({ "deadLetterTargetArn": self.arn(&redrive.dead_letter_queue), "maxReceiveCount": redrive.max_receive_count }).to_string(),
            ));
        }
        let recorded = |name: &str| settings.recorded.get(name).filter(|v| !v.is_empty());
        for name in ["Policy", "RedriveAllowPolicy"] {
            if let Some(value) = recorded(name) {
                out.push((name, value.clone()));
            }
        }
        // A KMS key comes with its data key reuse period, 300 seconds unless set; SQS's own
        // encryption (SSE-SQS) is on for every queue without one, unless turned off.
        let key = recorded("KmsMasterKeyId");
        if let Some(key) = key {
            out.push(("KmsMasterKeyId", key.clone()));
        }
        match recorded("KmsDataKeyReusePeriodSeconds") {
            Some(period) => out.push(("KmsDataKeyReusePeriodSeconds", period.clone())),
            None if key.is_some() => out.push(("KmsDataKeyReusePeriodSeconds", "300".into())),
            None => {}
        }
        let managed = key.is_none() && recorded("SqsManagedSseEnabled").is_none_or(|v| v == "true");
        out.push(("SqsManagedSseEnabled", managed.to_string()));
        out
    }

    async fn redrive(&self, value: &Value) -> SqsResult<Option<Redrive>> {
        let text = value.as_str().unwrap_or("");
        if text.is_empty() {
            return Ok(None);
        }
        let policy: Value = serde_json::from_str(text).map_err(|_| {
            error(
                "InvalidAttributeValue",
                "InvalidAttributeValue",
                "Invalid value for the parameter RedrivePolicy. Reason: the policy is not JSON.",
            )
        })?;
        let target = policy["deadLetterTargetArn"].as_str().unwrap_or("");
        let count = policy["maxReceiveCount"]
            .as_u64()
            .or_else(|| {
                policy["maxReceiveCount"]
                    .as_str()
                    .and_then(|c| c.parse().ok())
            })
            .filter(|c| (1..=1000).contains(c));
        let dead_letter =
            target.strip_prefix(&format!("arn:aws:sqs:{}:{}:", self.region, self.account));
        match (dead_letter, count) {
            (Some(name), Some(count)) if self.queues.queue(name).await?.is_some() => {
                Ok(Some(Redrive {
                    dead_letter_queue: name.to_owned(),
                    max_receive_count: count as u32,
                }))
            }
            (Some(_), Some(_)) => Err(error(
                "InvalidAttributeValue",
                "InvalidAttributeValue",
                "Value for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.",
            )),
            _ => Err(error(
                "InvalidAttributeValue",
                "InvalidAttributeValue",
                "Value for parameter RedrivePolicy is invalid. Reason: it needs deadLetterTargetArn (a queue of this account) and maxReceiveCount (1 to 1000).",
            )),
        }
    }

    async fn create_queue(&self, request: &Value) -> SqsResult<Value> {
        let name = string(request, "QueueName")?;
        let attributes = &request["Attributes"];
        let given: Vec<&String> = attributes
            .as_object()
            .map(|a| a.keys().collect())
            .unwrap_or_default();
        // A FIFO attribute is refused as SQS refuses it for a standard queue, before the name
        // (a `.fifo` name is not a standard queue's).
        if let Some(fifo) = given.iter().find(|n| FIFO_ATTRIBUTES.contains(&n.as_str())) {
            return Err(error(
                "InvalidAttributeName",
                "InvalidAttributeName",
                format!("Unknown Attribute {fifo}."),
            ));
        }
        if !is_queue_name(name) {
            return Err(invalid_parameter(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
            ));
        }
        let now = now_ms() / 1000;
        let mut settings = QueueSettings::new(now);
        self.apply(&mut settings, attributes).await?;
        // The JSON protocol names the member `tags`, the query protocol `Tag.N`.
        let tags = [&request["tags"], &request["Tags"]];
        if let Some(tags) = tags.into_iter().find(|t| !t.is_null()) {
            tag(&mut settings.tags, tags)?;
        }
        if !self.queues.create_queue(name, settings).await? {
            // It exists: the same queue if every attribute given has its value there (those
            // left out are not compared, nor are tags).
            let existing = self.queues.queue(name).await?.ok_or_else(no_queue)?;
            let mut wanted = existing.clone();
            self.apply(&mut wanted, attributes).await?;
            let (before, after) = (self.configured(&existing), self.configured(&wanted));
            let value = |reported: &[(&str, String)], name: &str| {
                reported
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
            };
            let differing: Vec<&str> = given
                .iter()
                .map(|g| g.as_str())
                .filter(|g| value(&before, g) != value(&after, g))
                .collect();
            if !differing.is_empty() {
                return Err(error(
                    "QueueNameExists",
                    "QueueAlreadyExists",
                    format!(
                        "A queue already exists with the same name and a different value for attribute(s) {}",
                        differing.join(", ")
                    ),
                ));
            }
        }
        Ok(json!({ "QueueUrl": self.url(name) }))
    }

    async fn get_queue_url(&self, request: &Value) -> SqsResult<Value> {
        let name = string(request, "QueueName")?;
        if !is_queue_name(name) || self.queues.queue(name).await?.is_none() {
            return Err(no_queue());
        }
        Ok(json!({ "QueueUrl": self.url(name) }))
    }

    async fn list_queues(&self, request: &Value) -> SqsResult<Value> {
        let prefix = request["QueueNamePrefix"].as_str().unwrap_or("");
        // Lamina's own queues have names no SQS queue can have.
        let names: Vec<String> = self
            .queues
            .queues(prefix)
            .await?
            .into_iter()
            .filter(|n| is_queue_name(n))
            .collect();
        let mut page = self.page_of_urls("QueueUrls", &names, request)?;
        // SQS leaves the member out when no queue matches.
        if page["QueueUrls"].as_array().is_some_and(Vec::is_empty) {
            page.as_object_mut().map(|p| p.remove("QueueUrls"));
        }
        Ok(page)
    }

    async fn list_dead_letter_source_queues(&self, request: &Value) -> SqsResult<Value> {
        let (dead_letter, _) = self.named(request).await?;
        let mut sources = Vec::new();
        for name in self.queues.queues("").await? {
            let redrive = self.queues.queue(&name).await?.and_then(|s| s.redrive);
            if redrive.is_some_and(|r| r.dead_letter_queue == dead_letter) {
                sources.push(name);
            }
        }
        self.page_of_urls("queueUrls", &sources, request)
    }

    /// One page of the URLs of `names` (in order) as `member`, by `MaxResults` and `NextToken`
    /// (the last name of the page before).
    fn page_of_urls(&self, member: &str, names: &[String], request: &Value) -> SqsResult<Value> {
        let after = request["NextToken"].as_str();
        let names: Vec<&String> = names
            .iter()
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .collect();
        let limit = optional_integer(
            &request["MaxResults"],
            "MaxResults",
            1..=1000,
            "MaxResults must be an integer between 1 and 1000.",
        )?
        .map(|m| m as usize);
        let page = &names[..names.len().min(limit.unwrap_or(1000))];
        let mut out = json!({ member: page.iter().map(|n| self.url(n)).collect::<Vec<_>>() });
        if let Some(limit) = limit
            && names.len() > limit
        {
            out["NextToken"] = json!(page[limit - 1]);
        }
        Ok(out)
    }

    async fn tag_queue(&self, request: &Value) -> SqsResult<Value> {
        let (name, mut settings) = self.named(request).await?;
        tag(&mut settings.tags, &request["Tags"])?;
        self.queues.set_queue(&name, settings).await?;
        Ok(json!({}))
    }

    async fn untag_queue(&self, request: &Value) -> SqsResult<Value> {
        let (name, mut settings) = self.named(request).await?;
        for key in request["TagKeys"].as_array().into_iter().flatten() {
            settings.tags.remove(key.as_str().unwrap_or_default());
        }
        self.queues.set_queue(&name, settings).await?;
        Ok(json!({}))
    }

    async fn list_queue_tags(&self, request: &Value) -> SqsResult<Value> {
        let (_, settings) = self.named(request).await?;
        Ok(if settings.tags.is_empty() {
            json!({})
        } else {
            json!({ "Tags": settings.tags })
        })
    }

    async fn delete_queue(&self, request: &Value) -> SqsResult<Value> {
        let (name, _) = self.named(request).await?;
        self.queues.delete_queue(&name).await?;
        Ok(json!({}))
    }

    async fn purge_queue(&self, request: &Value) -> SqsResult<Value> {
        let (name, _) = self.named(request).await?;
        self.queues.purge(&name).await?;
        Ok(json!({}))
    }

    async fn get_attributes(&self, request: &Value) -> SqsResult<Value> {
        let (name, settings) = self.named(request).await?;
        let wanted: HashSet<&str> = request["AttributeNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // Every name SQS's model knows is valid; those a standard queue does not have (FIFO
        // ones) or that are not set are left out of the answer.
        if let Some(unknown) = wanted.iter().find(|w| !QUEUE_ATTRIBUTES.contains(w)) {
            return Err(error(
                "InvalidAttributeName",
                "InvalidAttributeName",
                format!("Unknown Attribute {unknown}."),
            ));
        }
        let all = wanted.contains("All");
        let counts = self.queues.counts(&name, now_ms()).await?;
        let mut available: Vec<(&str, String)> = vec![
            ("QueueArn", self.arn(&name)),
            ("ApproximateNumberOfMessages", counts.visible.to_string()),
            (
                "ApproximateNumberOfMessagesNotVisible",
                counts.in_flight.to_string(),
            ),
            (
                "ApproximateNumberOfMessagesDelayed",
                counts.delayed.to_string(),
            ),
            ("CreatedTimestamp", settings.created.to_string()),
            ("LastModifiedTimestamp", settings.modified.to_string()),
        ];
        available.extend(self.configured(&settings));
        let attributes: Map<String, Value> = available
            .into_iter()
            .filter(|(n, _)| all || wanted.contains(n))
            .map(|(n, v)| (n.to_owned(), json!(v)))
            .collect();
        Ok(if attributes.is_empty() {
            json!({})
        } else {
            json!({ "Attributes": attributes })
        })
    }

    async fn set_attributes(&self, request: &Value) -> SqsResult<Value> {
        let (name, mut settings) = self.named(request).await?;
        self.apply(&mut settings, &request["Attributes"]).await?;
        settings.modified = now_ms() / 1000;
        self.queues.set_queue(&name, settings).await?;
        Ok(json!({}))
    }

    /// A message of a send, checked as SQS checks it (see [`message`]) and against the
    /// queue's limits, with what the answer reports of it.
    fn message(&self, settings: &QueueSettings, entry: &Value) -> SqsResult<Sending> {
        let body = string(entry, "MessageBody")?;
        if body.is_empty() {
            return Err(error(
                "MissingParameter",
                "MissingParameter",
                "The request must contain the parameter MessageBody.",
            ));
        }
        let checked = message::check(body, entry).map_err(|refusal| match refusal {
            Refusal::InvalidParameterValue(message) => invalid_parameter(message),
            Refusal::InvalidMessageContents(message) => {
                error("InvalidMessageContents", "InvalidMessageContents", message)
            }
        })?;
        if checked.size > settings.max_message_size as usize {
            return Err(invalid_parameter(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
                settings.max_message_size
            )));
        }
        let delay = optional_integer(
            &entry["DelaySeconds"],
            "DelaySeconds",
            0..=900,
            "DelaySeconds must be >= 0 and <= 900.",
        )?;
        let mut report = json!({ "MD5OfMessageBody": body_md5(body.as_bytes()) });
        if let Some(md5) = attributes_md5(&checked.attributes) {
            report["MD5OfMessageAttributes"] = json!(md5);
        }
        if let Some(md5) = attributes_md5(&checked.system) {
            report["MD5OfMessageSystemAttributes"] = json!(md5);
        }
        Ok(Sending {
            message: NewMessage {
                body: body.as_bytes().to_vec(),
                attributes: message::stored(&checked, self.sender),
                delay,
            },
            size: checked.size,
            report,
        })
    }

    async fn send_message(&self, request: &Value) -> SqsResult<Value> {
        let (name, settings) = self.named(request).await?;
        let Sending {
            message,
            mut report,
            ..
        } = self.message(&settings, request)?;
        let ids = self
            .queues
            .send(&name, vec![message], now_ms())
            .await?
            .ok_or_else(no_queue)?;
        report["MessageId"] = json!(ids[0]);
        Ok(report)
    }

    /// The entries of a batch request, checked as SQS checks them.
    /// `kind` is the entry's shape, as SQS names it in its messages.
    fn entries<'r>(&self, request: &'r Value, kind: &str) -> SqsResult<&'r Vec<Value>> {
        let entries = request["Entries"]
            .as_array()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                error(
                    "EmptyBatchRequest",
                    "AWS.SimpleQueueService.EmptyBatchRequest",
                    format!("There should be at least one {kind} in the request."),
                )
            })?;
        if entries.len() > lamina_store::queue::MAX_BATCH {
            return Err(error(
                "TooManyEntriesInBatchRequest",
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                format!(
                    "Maximum number of entries per request are 10. You have sent {}.",
                    entries.len()
                ),
            ));
        }
        let mut ids = HashSet::new();
        for entry in entries {
            let id = entry["Id"].as_str().unwrap_or("");
            if !is_queue_name(id) {
                return Err(error(
                    "InvalidBatchEntryId",
                    "AWS.SimpleQueueService.InvalidBatchEntryId",
                    "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
                ));
            }
            if !ids.insert(id) {
                return Err(error(
                    "BatchEntryIdsNotDistinct",
                    "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                    format!("Id {id} repeated."),
                ));
            }
        }
        Ok(entries)
    }

    async fn send_message_batch(&self, request: &Value) -> SqsResult<Value> {
        let (name, settings) = self.named(request).await?;
        let entries = self.entries(request, "SendMessageBatchRequestEntry")?;
        let (mut accepted, mut failed, mut reports) = (Vec::new(), Vec::new(), Vec::new());
        let mut total = 0usize;
        for entry in entries {
            let id = entry["Id"].as_str().unwrap_or("").to_owned();
            match self.message(&settings, entry) {
                Ok(Sending {
                    message,
                    size,
                    mut report,
                }) => {
                    total += size;
                    accepted.push(message);
                    report["Id"] = json!(id);
                    reports.push(report);
                }
                Err(err) => failed.push(err.entry(&id)),
            }
        }
        // The batch as a whole is held to SQS's largest message, whatever the queue's limit.
        if total > MAX_MESSAGE_BYTES {
            return Err(error(
                "BatchRequestTooLong",
                "AWS.SimpleQueueService.BatchRequestTooLong",
                format!(
                    "Batch requests cannot be longer than {MAX_MESSAGE_BYTES} bytes. You have sent {total} bytes."
                ),
            ));
        }
        let ids = if accepted.is_empty() {
            Vec::new()
        } else {
            self.queues
                .send(&name, accepted, now_ms())
                .await?
                .ok_or_else(no_queue)?
        };
        let successful: Vec<Value> = reports
            .into_iter()
            .zip(ids)
            .map(|(mut report, message_id)| {
                report["MessageId"] = json!(message_id);
                report
            })
            .collect();
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    fn render(&self, message: &Received, request: &Value) -> Value {
        let names = |member: &str| -> Vec<String> {
            request[member]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        let system: Vec<String> = [
            names("AttributeNames"),
            names("MessageSystemAttributeNames"),
        ]
        .concat();
        let all = system.iter().any(|n| n == "All");
        let (stored, system_attributes) = message::read_stored(&message.attributes);
        let mut attributes = Map::new();
        let mut put = |name: &str, value: String| {
            if all || system.iter().any(|n| n == name) {
                attributes.insert(name.to_owned(), json!(value));
            }
        };
        put("SenderId", self.account.to_owned());
        put("SentTimestamp", message.sent_ms.to_string());
        put("ApproximateReceiveCount", message.receive_count.to_string());
        put(
            "ApproximateFirstReceiveTimestamp",
            message.first_received_ms.to_string(),
        );
        if let Some(source) = &message.dead_letter_source {
            put("DeadLetterQueueSourceArn", self.arn(source));
        }
        for (name, value) in system_attributes {
            put(&name, value);
        }
        let body = String::from_utf8_lossy(&message.body).into_owned();
        let mut out = json!({
            "MessageId": message.message_id,
            "ReceiptHandle": message.receipt,
            "MD5OfBody": body_md5(&message.body),
            "Body": body,
        });
        if !attributes.is_empty() {
            out["Attributes"] = Value::Object(attributes);
        }
        let wanted = names("MessageAttributeNames");
        let chosen: Map<String, Value> = stored
            .into_iter()
            .filter(|(name, _)| message::chosen(&wanted, name))
            .collect();
        if let Some(md5) = attributes_md5(&chosen) {
            out["MD5OfMessageAttributes"] = json!(md5);
            out["MessageAttributes"] = Value::Object(chosen);
        }
        out
    }

    async fn receive_message(&self, request: &Value) -> SqsResult<Value> {
        let (name, settings) = self.named(request).await?;
        let max = optional_integer(
            &request["MaxNumberOfMessages"],
            "MaxNumberOfMessages",
            1..=10,
            "Must be between 1 and 10, if provided.",
        )?
        .unwrap_or(1) as usize;
        let visibility = optional_integer(
            &request["VisibilityTimeout"],
            "VisibilityTimeout",
            0..=43_200,
            "Must be >= 0 and <= 43200, if provided.",
        )?;
        let wait = optional_integer(
            &request["WaitTimeSeconds"],
            "WaitTimeSeconds",
            0..=20,
            "Must be >= 0 and <= 20, if provided.",
        )?
        .unwrap_or(settings.receive_wait);
        let deadline = now_ms() + i64::from(wait) * 1000;
        let messages = self
            .queues
            .receive_waiting(&name, max, visibility, deadline)
            .await?
            .ok_or_else(no_queue)?;
        let rendered: Vec<Value> = messages.iter().map(|m| self.render(m, request)).collect();
        Ok(if rendered.is_empty() {
            json!({})
        } else {
            json!({ "Messages": rendered })
        })
    }

    async fn delete_one(&self, name: &str, receipt: &str) -> SqsResult<()> {
        match self.queues.delete(name, receipt).await? {
            // A receipt of an earlier delivery: SQS answers success without deleting.
            Receipt::Done | Receipt::Stale => Ok(()),
            Receipt::Invalid => Err(error(
                "ReceiptHandleIsInvalid",
                "ReceiptHandleIsInvalid",
                format!("The input receipt handle \"{receipt}\" is not a valid receipt handle."),
            )),
        }
    }

    async fn delete_message(&self, request: &Value) -> SqsResult<Value> {
        let (name, _) = self.named(request).await?;
        self.delete_one(&name, string(request, "ReceiptHandle")?)
            .await?;
        Ok(json!({}))
    }

    async fn delete_message_batch(&self, request: &Value) -> SqsResult<Value> {
        let (name, _) = self.named(request).await?;
        let (mut successful, mut failed) = (Vec::new(), Vec::new());
        for entry in self.entries(request, "DeleteMessageBatchRequestEntry")? {
            let id = entry["Id"].as_str().unwrap_or("");
            match self
                .delete_one(&name, entry["ReceiptHandle"].as_str().unwrap_or(""))
                .await
            {
                Ok(()) => successful.push(json!({ "Id": id })),
                Err(err) => failed.push(err.entry(id)),
            }
        }
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    async fn change_one(&self, name: &str, receipt: &str, timeout: &Value) -> SqsResult<()> {
        let timeout = optional_integer(
            timeout,
            "VisibilityTimeout",
            0..=43_200,
            "VisibilityTimeout must be an integer between 0 and 43200.",
        )?
        .ok_or_else(|| missing("VisibilityTimeout"))?;
        match self
            .queues
            .change_visibility(name, receipt, timeout, now_ms())
            .await?
        {
            Receipt::Done => Ok(()),
            Receipt::Stale => Err(error(
                "MessageNotInflight",
                "AWS.SimpleQueueService.MessageNotInflight",
                "Message does not exist or is not available for visibility timeout change.",
            )),
            Receipt::Invalid => Err(error(
                "ReceiptHandleIsInvalid",
                "ReceiptHandleIsInvalid",
                format!("The input receipt handle \"{receipt}\" is not a valid receipt handle."),
            )),
        }
    }

    async fn change_visibility(&self, request: &Value) -> SqsResult<Value> {
        let (name, _) = self.named(request).await?;
        self.change_one(
            &name,
            string(request, "ReceiptHandle")?,
            &request["VisibilityTimeout"],
        )
        .await?;
        Ok(json!({}))
    }

    async fn change_visibility_batch(&self, request: &Value) -> SqsResult<Value> {
        let (name, _) = self.named(request).await?;
        let (mut successful, mut failed) = (Vec::new(), Vec::new());
        for entry in self.entries(request, "ChangeMessageVisibilityBatchRequestEntry")? {
            let id = entry["Id"].as_str().unwrap_or("");
            match self
                .change_one(
                    &name,
                    entry["ReceiptHandle"].as_str().unwrap_or(""),
                    &entry["VisibilityTimeout"],
                )
                .await
            {
                Ok(()) => successful.push(json!({ "Id": id })),
                Err(err) => failed.push(err.entry(id)),
            }
        }
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_target_form_action_or_signed_service() {
        let scoped = |service: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/{service}/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=abc"
            )
        };
        let sqs = scoped("sqs");
        let lambda = scoped("lambda");
        let form = "application/x-www-form-urlencoded; charset=utf-8";
        let presigned =
            "/?Action=ListQueues&X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Fsqs%2Faws4_request";
        // Method, URI, headers, the protocol it is routed to (`None`: the Lambda API).
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<Protocol>);
        let cases: &[Case] = &[
            (
                "POST",
                "/",
                &[("x-amz-target", "AmazonSQS.ListQueues")],
                Some(Protocol::Json),
            ),
            (
                "POST",
                "/",
                &[("content-type", form)],
                Some(Protocol::Query),
            ),
            (
                "POST",
                "/000000000000/q",
                &[("content-type", form)],
                Some(Protocol::Query),
            ),
            ("GET", "/?Action=ListQueues", &[], Some(Protocol::Query)),
            (
                "GET",
                "/000000000000/q?Action=ReceiveMessage",
                &[],
                Some(Protocol::Query),
            ),
            (
                "GET",
                "/",
                &[("authorization", &sqs)],
                Some(Protocol::Query),
            ),
            (
                "POST",
                "/",
                &[("authorization", &sqs)],
                Some(Protocol::Query),
            ),
            ("GET", presigned, &[], Some(Protocol::Query)),
            ("GET", "/", &[("authorization", &lambda)], None),
            ("GET", "/", &[], None),
            (
                "GET",
                "/2015-03-31/functions",
                &[("authorization", &sqs)],
                None,
            ),
            ("GET", "/2015-03-31/functions?Action=x", &[], None),
            (
                "POST",
                "/2015-03-31/functions",
                &[("content-type", "application/json")],
                None,
            ),
            ("GET", "/000000000000/not.a.queue?Action=x", &[], None),
        ];
        for (method, uri, headers, expected) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in *headers {
                let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
                map.insert(name, value.parse().unwrap());
            }
            let method: http::Method = method.parse().unwrap();
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(
                protocol(&method, &uri, &map),
                *expected,
                "{method} {uri} {headers:?}"
            );
        }
    }
}
