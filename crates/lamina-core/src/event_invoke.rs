//! Asynchronous invocation: the EventInvokeConfig of a function, version or alias (retries,
//! event age, destinations), the destinations Lamina delivers to, and the invocation record
//! it sends them.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::arn::{Account, FunctionRef};
use crate::{Error, Result};

/// Lambda's defaults: two retries after a function error, events kept for six hours.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
pub const DEFAULT_EVENT_AGE_S: u32 = 21_600;

/// How asynchronous invocations of one qualifier are handled, as the API sets it. Unset
/// members take Lambda's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    /// `$LATEST` (the unqualified function), a version number or an alias.
    pub qualifier: String,
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age: Option<u32>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    /// Epoch seconds with milliseconds, as the API shows `LastModified`.
    pub last_modified: f64,
}

/// The body of Put/UpdateFunctionEventInvokeConfig.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventInvokeInput {
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_in_seconds: Option<i64>,
    pub destination_config: Option<DestinationInput>,
}

impl EventInvokeInput {
    /// Whether the request sets none of the error handling and destination settings.
    pub fn is_empty(&self) -> bool {
        self.maximum_retry_attempts.is_none()
            && self.maximum_event_age_in_seconds.is_none()
            && self.destination_config.is_none()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DestinationInput {
    pub on_success: Option<OnDestination>,
    pub on_failure: Option<OnDestination>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OnDestination {
    pub destination: Option<String>,
}

fn ranged(member: &str, value: i64, min: i64, max: i64) -> Result<u32> {
    let bound = if value < min {
        format!("greater than or equal to {min}")
    } else if value > max {
        format!("less than or equal to {max}")
    } else {
        return Ok(value as u32);
    };
    Err(Error::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
         constraint: Member must have value {bound}"
    )))
}

/// An empty destination clears it, as in Lambda.
fn destination(input: Option<OnDestination>, account: &Account) -> Result<Option<String>> {
    match input.and_then(|d| d.destination).filter(|d| !d.is_empty()) {
        None => Ok(None),
        Some(target) => {
            Destination::parse(&target, account)?;
            Ok(Some(target))
        }
    }
}

impl EventInvokeConfig {
    /// PutFunctionEventInvokeConfig: the whole configuration, replacing any before it.
    pub fn put(
        input: EventInvokeInput,
        qualifier: &str,
        account: &Account,
        now_s: f64,
    ) -> Result<Self> {
        let mut config = Self {
            qualifier: qualifier.to_owned(),
            maximum_retry_attempts: None,
            maximum_event_age: None,
            on_success: None,
            on_failure: None,
            last_modified: now_s,
        };
        config.update(input, account, now_s)?;
        Ok(config)
    }

    /// UpdateFunctionEventInvokeConfig: the members given replace those set before.
    pub fn update(&mut self, input: EventInvokeInput, account: &Account, now_s: f64) -> Result<()> {
        if let Some(retries) = input.maximum_retry_attempts {
            self.maximum_retry_attempts = Some(ranged("maximumRetryAttempts", retries, 0, 2)?);
        }
        if let Some(age) = input.maximum_event_age_in_seconds {
            self.maximum_event_age = Some(ranged("maximumEventAgeInSeconds", age, 60, 21_600)?);
        }
        if let Some(destinations) = input.destination_config {
            if let Some(on_success) = destinations.on_success {
                self.on_success = destination(Some(on_success), account)?;
            }
            if let Some(on_failure) = destinations.on_failure {
                self.on_failure = destination(Some(on_failure), account)?;
            }
        }
        self.last_modified = now_s;
        Ok(())
    }

    pub fn retry_attempts(&self) -> u32 {
        self.maximum_retry_attempts
            .unwrap_or(DEFAULT_RETRY_ATTEMPTS)
    }

    pub fn event_age_s(&self) -> u32 {
        self.maximum_event_age.unwrap_or(DEFAULT_EVENT_AGE_S)
    }
}

/// Where Lamina can send an invocation record or a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A Lamina queue: `arn:aws:sqs:<region>:<account>:<name>`.
    Queue(String),
    /// A Lamina function, invoked asynchronously with the record:
    /// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
    Function {
        name: String,
        qualifier: Option<String>,
    },
    /// A Redis stream, appended to with `XADD`: `redis://[user:password@]host[:port]/<key>`.
    RedisStream {
        /// The server, as a `redis://` URL without the key.
        server: String,
        key: String,
    },
}

impl Destination {
    pub fn parse(target: &str, account: &Account) -> Result<Self> {
        let unsupported = || {
            Error::invalid_parameter(format!(
                "The destination {target} is not one Lamina can deliver to: use a queue \
                 (arn:aws:sqs:{region}:{id}:<name>), a function \
                 (arn:aws:lambda:{region}:{id}:function:<name>) or a Redis stream \
                 (redis://<host>:<port>/<stream key>).",
                region = account.region,
                id = account.account_id
            ))
        };
        if let Some(rest) = target.strip_prefix("redis://") {
            let (server, key) = rest.split_once('/').ok_or_else(unsupported)?;
            if server.is_empty() || key.is_empty() || key.contains('/') {
                return Err(unsupported());
            }
            return Ok(Self::RedisStream {
                server: format!("redis://{server}"),
                key: key.to_owned(),
            });
        }
        let parts: Vec<&str> = target.splitn(6, ':').collect();
        let ["arn", partition, service, _region, owner, resource] = parts.as_slice() else {
            return Err(unsupported());
        };
        if !partition.starts_with("aws") {
            return Err(unsupported());
        }
        if *owner != account.account_id {
            return Err(Error::invalid_parameter(format!(
                "The destination {target} belongs to another account; this server holds \
                 account {} only.",
                account.account_id
            )));
        }
        match *service {
            "sqs" if is_queue_name(resource) => Ok(Self::Queue((*resource).to_owned())),
            "lambda" => {
                let function = FunctionRef::parse(target, account)?;
                Ok(Self::Function {
                    name: function.name,
                    qualifier: function.qualifier,
                })
            }
            _ => Err(unsupported()),
        }
    }
}

/// An SQS queue name: 1 to 80 letters, digits, hyphens and underscores.
pub fn is_queue_name(name: &str) -> bool {
    (1..=80).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why an asynchronous invocation ended, as the record's `requestContext.condition` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    /// The function failed on every attempt allowed.
    RetriesExhausted,
    /// The event was older than `MaximumEventAgeInSeconds` before it could succeed.
    EventAgeExceeded,
    /// The function's reserved concurrency is 0: nothing can run it.
    ZeroReservedConcurrency,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::RetriesExhausted => "RetriesExhausted",
            Self::EventAgeExceeded => "EventAgeExceeded",
            Self::ZeroReservedConcurrency => "ZeroReservedConcurrency",
        }
    }
}

/// The response of the last attempt, for the record.
#[derive(Debug, Clone)]
pub struct RecordedResponse<'a> {
    pub executed_version: &'a str,
    pub function_error: Option<&'a str>,
    pub payload: &'a [u8],
}

/// A payload as the record embeds it: its JSON, or (not JSON) its text.
fn embedded(payload: &[u8]) -> Value {
    if payload.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

/// The invocation record sent to a destination.
pub fn invocation_record(
    timestamp: &str,
    request_id: &str,
    function_arn: &str,
    condition: Condition,
    invoke_count: u32,
    request_payload: &[u8],
    response: Option<RecordedResponse<'_>>,
) -> Value {
    let mut record = json!({
        "version": "1.0",
        "timestamp": timestamp,
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": embedded(request_payload),
    });
    if let Some(response) = response {
        let mut context = json!({
            "statusCode": 200,
            "executedVersion": response.executed_version,
        });
        if let Some(error) = response.function_error {
            context["functionError"] = json!(error);
        }
        record["responseContext"] = context;
        record["responsePayload"] = embedded(response.payload);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }

    #[test]
    fn destinations_parse_into_what_lamina_delivers_to() {
        let a = account();
        assert_eq!(
            Destination::parse("arn:aws:sqs:us-east-1:000000000000:results", &a).unwrap(),
            Destination::Queue("results".into())
        );
        assert_eq!(
            Destination::parse("arn:aws:lambda:us-east-1:000000000000:function:f:live", &a)
                .unwrap(),
            Destination::Function {
                name: "f".into(),
                qualifier: Some("live".into())
            }
        );
        assert_eq!(
            Destination::parse("redis://127.0.0.1:6379/lamina-results", &a).unwrap(),
            Destination::RedisStream {
                server: "redis://127.0.0.1:6379".into(),
                key: "lamina-results".into()
            }
        );
        for bad in [
            "arn:aws:sns:us-east-1:000000000000:topic",
            "arn:aws:sqs:us-east-1:111111111111:results",
            "arn:aws:sqs:us-east-1:000000000000:bad.name",
            "redis://127.0.0.1:6379",
            "kafka://topic",
            "nonsense",
        ] {
            let err = Destination::parse(bad, &a).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidParameterValue, "{bad}");
        }
    }

    #[test]
    fn put_replaces_and_update_merges() {
        let a = account();
        let input = |json: Value| serde_json::from_value::<EventInvokeInput>(json).unwrap();
        let mut config = EventInvokeConfig::put(
            input(json!({"MaximumRetryAttempts": 0, "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:dlq"}}})),
            "$LATEST",
            &a,
            1.5,
        )
        .unwrap();
        assert_eq!((config.retry_attempts(), config.event_age_s()), (0, 21_600));
        config
            .update(input(json!({"MaximumEventAgeInSeconds": 60})), &a, 2.0)
            .unwrap();
        assert_eq!((config.retry_attempts(), config.event_age_s()), (0, 60));
        assert_eq!(
            config.on_failure.as_deref(),
            Some("arn:aws:sqs:us-east-1:000000000000:dlq")
        );
        config
            .update(
                input(json!({"DestinationConfig": {"OnFailure": {}}})),
                &a,
                3.0,
            )
            .unwrap();
        assert_eq!(config.on_failure, None);
        for bad in [
            json!({"MaximumRetryAttempts": 3}),
            json!({"MaximumEventAgeInSeconds": 59}),
            json!({"MaximumEventAgeInSeconds": 21_601}),
        ] {
            let err = EventInvokeConfig::put(input(bad), "$LATEST", &a, 0.0).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::Validation);
        }
    }

    #[test]
    fn records_carry_the_response_only_when_there_was_one() {
        let record = invocation_record(
            "2026-01-01T00:00:00.000Z",
            "id",
            "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
            Condition::RetriesExhausted,
            3,
            br#"{"a":1}"#,
            Some(RecordedResponse {
                executed_version: "$LATEST",
                function_error: Some("Unhandled"),
                payload: br#"{"errorMessage":"boom"}"#,
            }),
        );
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(record["requestPayload"]["a"], 1);
        assert_eq!(record["responseContext"]["functionError"], "Unhandled");
        assert_eq!(record["responsePayload"]["errorMessage"], "boom");
        let aged = invocation_record("t", "id", "arn", Condition::EventAgeExceeded, 0, b"x", None);
        assert!(aged.get("responseContext").is_none());
        assert_eq!(aged["requestPayload"], "x");
    }
}
