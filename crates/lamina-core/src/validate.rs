//! Lambda's limits. Two kinds of failure, as Lambda reports them: a value that breaks the API
//! model (pattern, length, enum) is a `ValidationException`; a well-formed value beyond what the
//! product allows (memory above 10,240 MB, a reserved environment key) is an
//! `InvalidParameterValueException`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex_lite::Regex;

use crate::function::{Alias, Runtimes, Version};
use crate::{Error, Result};

pub const MAX_MEMORY_SIZE: i64 = 10_240;
pub const MAX_TIMEOUT: i64 = 900;
pub const MAX_EPHEMERAL_STORAGE: i64 = 10_240;
/// Total size of the environment variables, measured as their JSON text.
pub const MAX_ENVIRONMENT_BYTES: usize = 4_096;
pub const MAX_LAYERS: usize = 5;
pub const MAX_TAGS: usize = 50;

/// Every runtime identifier of the API model; anything else is a validation error.
pub const LAMBDA_RUNTIMES: &[&str] = &[
    "nodejs",
    "nodejs4.3",
    "nodejs6.10",
    "nodejs8.10",
    "nodejs10.x",
    "nodejs12.x",
    "nodejs14.x",
    "nodejs16.x",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "nodejs26.x",
    "java8",
    "java8.al2",
    "java11",
    "java17",
    "java21",
    "java25",
    "java8.al2023",
    "java11.al2023",
    "java17.al2023",
    "python2.7",
    "python3.6",
    "python3.7",
    "python3.8",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "python3.15",
    "dotnetcore1.0",
    "dotnetcore2.0",
    "dotnetcore2.1",
    "dotnetcore3.1",
    "dotnet6",
    "dotnet8",
    "dotnet10",
    "nodejs4.3-edge",
    "go1.x",
    "ruby2.5",
    "ruby2.7",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "ruby4.0",
    "provided",
    "provided.al2",
    "provided.al2023",
    "custom",
];

/// Keys the platform sets itself; a function may not override them.
pub const RESERVED_ENVIRONMENT_KEYS: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// A pattern of the API model: the regex it is matched with, and the model's text, which is what
/// Lambda quotes. They differ only where the model uses look-ahead, which `regex_lite` lacks;
/// the look-ahead is then checked by the caller.
macro_rules! pattern {
    ($name:ident, $re:literal) => {
        pattern!($name, $re, $re);
    };
    ($name:ident, $re:literal, $quoted:literal) => {
        static $name: LazyLock<(Regex, &'static str)> = LazyLock::new(|| {
            (
                Regex::new(concat!("^(?:", $re, ")$")).expect("valid pattern"),
                $quoted,
            )
        });
    };
}

pattern!(
    ROLE,
    r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
);
pattern!(HANDLER, r"[^\s]+");
pattern!(ENV_KEY, r"[a-zA-Z]([a-zA-Z0-9_])+");
pattern!(ALIAS, r"[a-zA-Z0-9-_]+", r"(?!^[0-9]+$)([a-zA-Z0-9-_]+)");
pattern!(VERSION, r"(\$LATEST(\.PUBLISHED)?|[0-9]+)");
pattern!(RESOURCE_ARN, r"(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()");
pattern!(
    LAYER_ARN,
    r"((arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+))"
);
pattern!(LOG_GROUP, r"[\.\-_/#A-Za-z0-9]+");
pattern!(STATEMENT_ID, r"([a-zA-Z0-9-_]+)");
pattern!(ACTION, r"(lambda:[*]|lambda:[a-zA-Z]+|[*])");
pattern!(PRINCIPAL, r"[^\s]+");

fn matches(pattern: &LazyLock<(Regex, &'static str)>, member: &str, value: &str) -> Result<()> {
    if pattern.0.is_match(value) {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: {}",
            pattern.1
        )))
    }
}

fn max_length(member: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() <= max {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
             constraint: Member must have length less than or equal to {max}"
        )))
    }
}

fn one_of(member: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
             constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )))
    }
}

/// A number checked first against the model's range, then against the product's limit.
fn ranged(member: &str, value: i64, model: (i64, i64), product_max: i64) -> Result<u32> {
    let (min, max) = model;
    if value < min {
        return Err(Error::validation(format!(
            "1 validation error detected: Value '{value}' at '{}' failed to satisfy constraint: \
             Member must have value greater than or equal to {min}",
            lower_first(member)
        )));
    }
    if value > max || value > product_max {
        return Err(Error::invalid_parameter(format!(
            "'{member}' value failed to satisfy constraint: Member must have value less than or \
             equal to {product_max}"
        )));
    }
    Ok(u32::try_from(value).expect("within the product's range"))
}

fn lower_first(member: &str) -> String {
    let mut chars = member.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

pub fn memory_size(value: i64) -> Result<u32> {
    ranged("MemorySize", value, (128, 32_768), MAX_MEMORY_SIZE)
}

pub fn timeout(value: i64) -> Result<u32> {
    ranged("Timeout", value, (1, 5_400), MAX_TIMEOUT)
}

pub fn ephemeral_storage(value: i64) -> Result<u32> {
    ranged(
        "EphemeralStorage.Size",
        value,
        (512, 32_768),
        MAX_EPHEMERAL_STORAGE,
    )
}

/// One architecture, `x86_64` unless given.
pub fn architectures(value: Option<Vec<String>>) -> Result<Vec<String>> {
    let Some(list) = value else {
        return Ok(vec!["x86_64".to_owned()]);
    };
    if list.len() != 1 {
        return Err(Error::validation(
            "1 validation error detected: Value at 'architectures' failed to satisfy constraint: \
             Member must have length less than or equal to 1 and greater than or equal to 1",
        ));
    }
    one_of("architectures", &list[0], &["x86_64", "arm64"])?;
    Ok(list)
}

pub fn tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid_parameter(format!(
            "The number of tags exceeds the limit of {MAX_TAGS}."
        )));
    }
    let tag_char = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 || !key.chars().all(tag_char) {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{key}' at 'tags' failed to satisfy \
                 constraint: Map keys must satisfy constraint: [Member must have length less \
                 than or equal to 128, Member must have length greater than or equal to 1, \
                 Member must satisfy regular expression pattern: ([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)]"
            )));
        }
        if key.starts_with("aws:") {
            return Err(Error::invalid_parameter(format!(
                "Tag keys starting with 'aws:' are reserved for system use: {key}"
            )));
        }
        if value.chars().count() > 256 || !value.chars().all(tag_char) {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{value}' at 'tags' failed to satisfy \
                 constraint: Map values must satisfy constraint: [Member must have length less \
                 than or equal to 256, Member must satisfy regular expression pattern: \
                 ([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)]"
            )));
        }
    }
    Ok(())
}

fn environment(variables: &BTreeMap<String, String>) -> Result<()> {
    for key in variables.keys() {
        matches(&ENV_KEY, "environment.variables", key)?;
    }
    let reserved: Vec<&str> = variables
        .keys()
        .map(String::as_str)
        .filter(|key| RESERVED_ENVIRONMENT_KEYS.contains(key))
        .collect();
    if !reserved.is_empty() {
        return Err(Error::invalid_parameter(format!(
            "Lambda was unable to configure your environment variables because the environment \
             variables you have provided contains reserved keys that are currently not supported \
             for modification. Reserved keys used in this request: {}",
            reserved.join(", ")
        )));
    }
    let measured = serde_json::to_string(variables).expect("a string map serializes");
    if measured.len() > MAX_ENVIRONMENT_BYTES {
        return Err(Error::invalid_parameter(format!(
            "Lambda was unable to configure your environment variables because the environment \
             variables you have provided exceeded the 4KB limit. String measured: {measured}"
        )));
    }
    Ok(())
}

pub fn runtime(runtime: &str, available: &Runtimes) -> Result<()> {
    if available.contains(runtime) {
        return Ok(());
    }
    one_of("runtime", runtime, LAMBDA_RUNTIMES)?;
    Err(Error::invalid_parameter(format!(
        "The runtime parameter of {runtime} is not available on this host. Runtimes available \
         here: {}",
        available.list()
    )))
}

/// Every rule on a version's configuration, checked after a create or an update is applied.
pub fn version(v: &Version, runtimes: &Runtimes) -> Result<()> {
    matches(&ROLE, "role", &v.role)?;
    max_length("handler", &v.handler, 128)?;
    matches(&HANDLER, "handler", &v.handler)?;
    max_length("description", &v.description, 256)?;
    runtime(&v.runtime, runtimes)?;
    if let Some(variables) = &v.environment {
        environment(variables)?;
    }
    one_of(
        "tracingConfig.mode",
        &v.tracing_mode,
        &["Active", "PassThrough"],
    )?;
    if let Some(target) = &v.dead_letter_target {
        matches(&RESOURCE_ARN, "deadLetterConfig.targetArn", target)?;
        dead_letter_target(target)?;
    }
    if let Some(kms) = &v.kms_key_arn {
        matches(&RESOURCE_ARN, "kMSKeyArn", kms)?;
    }
    if v.layers.len() > MAX_LAYERS {
        return Err(Error::invalid_parameter(format!(
            "Cannot reference more than {MAX_LAYERS} layers."
        )));
    }
    for layer in &v.layers {
        matches(&LAYER_ARN, "layers", layer)?;
    }
    let logging = &v.logging;
    one_of(
        "loggingConfig.logFormat",
        &logging.log_format,
        &["JSON", "Text"],
    )?;
    if let Some(level) = &logging.application_log_level {
        one_of(
            "loggingConfig.applicationLogLevel",
            level,
            &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"],
        )?;
    }
    if let Some(level) = &logging.system_log_level {
        one_of(
            "loggingConfig.systemLogLevel",
            level,
            &["DEBUG", "INFO", "WARN"],
        )?;
    }
    if logging.log_format == "Text"
        && (logging.application_log_level.is_some() || logging.system_log_level.is_some())
    {
        return Err(Error::invalid_parameter(
            "ApplicationLogLevel and SystemLogLevel can only be set when LogFormat is JSON.",
        ));
    }
    max_length("loggingConfig.logGroup", &logging.log_group, 512)?;
    matches(&LOG_GROUP, "loggingConfig.logGroup", &logging.log_group)?;
    Ok(())
}

/// Dead letters go to a Lamina queue (SNS topics, which Lambda also takes, do not exist here).
fn dead_letter_target(target: &str) -> Result<()> {
    let parts: Vec<&str> = target.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", _, _, name] if crate::event_invoke::is_queue_name(name) => Ok(()),
        _ => Err(Error::invalid_parameter(format!(
            "The dead-letter target {target} is not a queue: Lamina sends dead letters to its \
             SQS-compatible queues (arn:aws:sqs:<region>:<account>:<name>)."
        ))),
    }
}

pub fn alias_name(name: &str) -> Result<()> {
    max_length("name", name, 128)?;
    matches(&ALIAS, "name", name)?;
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::validation(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: {}",
            ALIAS.1
        )));
    }
    Ok(())
}

/// The alias's own rules; that its versions exist is checked against the store by the caller.
pub fn alias(alias: &Alias) -> Result<()> {
    matches(&VERSION, "functionVersion", &alias.function_version)?;
    max_length("description", &alias.description, 256)?;
    if alias.routing.len() > 1 {
        return Err(Error::invalid_parameter(
            "Number of items in AdditionalVersionWeights cannot be greater than 1",
        ));
    }
    for (version, weight) in &alias.routing {
        if !version.bytes().all(|b| b.is_ascii_digit()) || version.is_empty() {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{version}' at \
                 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map keys \
                 must satisfy constraint: [Member must have length less than or equal to 1024, \
                 Member must have length greater than or equal to 1, Member must satisfy regular \
                 expression pattern: [0-9]+]"
            )));
        }
        if !(0.0..=1.0).contains(weight) {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{weight}' at \
                 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map values \
                 must satisfy constraint: [Member must have value less than or equal to 1.0, \
                 Member must have value greater than or equal to 0.0]"
            )));
        }
        if *version == alias.function_version {
            return Err(Error::invalid_parameter(format!(
                "Invalid function version {version}. Function version {version} is already \
                 included in routing configuration."
            )));
        }
        if alias.function_version == crate::arn::LATEST {
            return Err(Error::invalid_parameter(
                "$LATEST is not supported for an alias pointing to more than 1 version",
            ));
        }
    }
    Ok(())
}

pub fn statement_id(sid: &str) -> Result<()> {
    max_length("statementId", sid, 100)?;
    matches(&STATEMENT_ID, "statementId", sid)
}

pub fn action(action: &str) -> Result<()> {
    matches(&ACTION, "action", action)
}

pub fn principal(principal: &str) -> Result<()> {
    max_length("principal", principal, 2048)?;
    matches(&PRINCIPAL, "principal", principal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn kind<T: std::fmt::Debug>(r: Result<T>) -> ErrorKind {
        r.unwrap_err().kind
    }

    #[test]
    fn numeric_limits_split_model_and_product_errors() {
        assert_eq!(memory_size(128).unwrap(), 128);
        assert_eq!(memory_size(10_240).unwrap(), 10_240);
        assert_eq!(kind(memory_size(127)), ErrorKind::Validation);
        assert_eq!(kind(memory_size(10_241)), ErrorKind::InvalidParameterValue);
        assert_eq!(kind(memory_size(99_999)), ErrorKind::InvalidParameterValue);
        assert_eq!(timeout(900).unwrap(), 900);
        assert_eq!(kind(timeout(0)), ErrorKind::Validation);
        assert_eq!(kind(timeout(901)), ErrorKind::InvalidParameterValue);
        assert_eq!(kind(ephemeral_storage(511)), ErrorKind::Validation);
        assert_eq!(
            kind(ephemeral_storage(10_241)),
            ErrorKind::InvalidParameterValue
        );
    }

    #[test]
    fn product_limit_message_names_the_member() {
        let err = memory_size(20_000).unwrap_err();
        assert_eq!(
            err.message,
            "'MemorySize' value failed to satisfy constraint: Member must have value less than \
             or equal to 10240"
        );
    }

    #[test]
    fn environment_rules() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(environment(&env(&[("STAGE", "prod"), ("a1_b", "")])).is_ok());
        assert_eq!(
            kind(environment(&env(&[("1BAD", "x")]))),
            ErrorKind::Validation
        );
        assert_eq!(
            kind(environment(&env(&[("AWS_REGION", "x")]))),
            ErrorKind::InvalidParameterValue
        );
        let big = "x".repeat(4_100);
        assert_eq!(
            kind(environment(&env(&[("BIG", &big)]))),
            ErrorKind::InvalidParameterValue
        );
    }

    #[test]
    fn runtime_unknown_vs_unavailable() {
        let available = Runtimes(["python3.11".to_owned()].into());
        assert!(runtime("python3.11", &available).is_ok());
        assert_eq!(kind(runtime("cobol", &available)), ErrorKind::Validation);
        assert_eq!(
            kind(runtime("ruby3.3", &available)),
            ErrorKind::InvalidParameterValue
        );
    }

    #[test]
    fn alias_names_cannot_be_numbers() {
        assert!(alias_name("live").is_ok());
        assert_eq!(kind(alias_name("42")), ErrorKind::Validation);
        assert_eq!(kind(alias_name("a b")), ErrorKind::Validation);
    }

    #[test]
    fn tags_follow_the_model() {
        let ok: BTreeMap<_, _> = [("team".to_owned(), "a b/c=d".to_owned())].into();
        assert!(tags(&ok).is_ok());
        let bad: BTreeMap<_, _> = [("".to_owned(), "x".to_owned())].into();
        assert_eq!(kind(tags(&bad)), ErrorKind::Validation);
        let reserved: BTreeMap<_, _> = [("aws:x".to_owned(), "x".to_owned())].into();
        assert_eq!(kind(tags(&reserved)), ErrorKind::InvalidParameterValue);
    }
}
