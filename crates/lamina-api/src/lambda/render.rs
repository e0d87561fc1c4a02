//! Domain records rendered as the Lambda API's output shapes.

use lamina_core::arn::Account;
use lamina_core::function::{Alias, Version};
use serde_json::{Map, Value, json};

/// `FunctionConfiguration`. `qualifier` is how the caller named the version: its ARN carries it,
/// as Lambda's does (an unqualified request for `$LATEST` gets the unqualified ARN).
pub fn configuration(v: &Version, account: &Account, qualifier: Option<&str>) -> Value {
    let arn = match qualifier {
        Some(q) => account.qualified_arn(&v.function_name, q),
        None if v.is_latest() => account.function_arn(&v.function_name),
        None => account.qualified_arn(&v.function_name, &v.version),
    };
    let mut logging = Map::new();
    logging.insert("LogFormat".into(), json!(v.logging.log_format));
    logging.insert("LogGroup".into(), json!(v.logging.log_group));
    if let Some(level) = &v.logging.application_log_level {
        logging.insert("ApplicationLogLevel".into(), json!(level));
    }
    if let Some(level) = &v.logging.system_log_level {
        logging.insert("SystemLogLevel".into(), json!(level));
    }
    let mut out = json!({
        "FunctionName": v.function_name,
        "FunctionArn": arn,
        "Runtime": v.runtime,
        "Role": v.role,
        "Handler": v.handler,
        "CodeSize": v.code.size,
        "Description": v.description,
        "Timeout": v.timeout,
        "MemorySize": v.memory_size,
        "LastModified": v.last_modified,
        "CodeSha256": v.code.code_sha256(),
        "Version": v.version,
        "TracingConfig": { "Mode": v.tracing_mode },
        "RevisionId": v.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": v.architectures,
        "EphemeralStorage": { "Size": v.ephemeral_storage },
        "SnapStart": { "ApplyOn": "None", "OptimizationStatus": "Off" },
        "LoggingConfig": logging,
        "RuntimeVersionConfig": { "RuntimeVersionArn": runtime_version_arn(&v.runtime, account) },
    });
    if let Some(variables) = &v.environment {
        out["Environment"] = json!({ "Variables": variables });
    }
    if !v.layers.is_empty() {
        out["Layers"] = v
            .layers
            .iter()
            .map(|arn| json!({ "Arn": arn, "CodeSize": 0 }))
            .collect();
    }
    if let Some(target) = &v.dead_letter_target {
        out["DeadLetterConfig"] = json!({ "TargetArn": target });
    }
    if let Some(kms) = &v.kms_key_arn {
        out["KMSKeyArn"] = json!(kms);
    }
    out
}

/// The ARN of the runtime version a function runs on, in Lambda's form
/// (`arn:aws:lambda:<region>::runtime:<64 hex digits>`). Lamina has one version of each
/// runtime, so the id is derived from the runtime's name: stable across calls and restarts.
fn runtime_version_arn(runtime: &str, account: &Account) -> String {
    use sha2::Digest;
    let id = hex::encode(sha2::Sha256::digest(runtime.as_bytes()));
    format!("arn:aws:lambda:{}::runtime:{id}", account.region)
}

/// `AliasConfiguration`.
pub fn alias(a: &Alias, function: &str, account: &Account) -> Value {
    let mut out = json!({
        "AliasArn": account.qualified_arn(function, &a.name),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if !a.routing.is_empty() {
        out["RoutingConfig"] = json!({ "AdditionalVersionWeights": a.routing });
    }
    out
}
