//! Functions, their versions and aliases: the records Lamina keeps, and the commands that change
//! them, as the Lambda API shapes them. Commands deserialize straight from request bodies (member
//! names as in the API model; unknown members are ignored, as new SDKs add them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::arn::LATEST;
use crate::validate;
use crate::{Error, Result};

pub const DEFAULT_TIMEOUT: u32 = 3;
pub const DEFAULT_MEMORY_SIZE: u32 = 128;
pub const DEFAULT_EPHEMERAL_STORAGE: u32 = 512;

/// What a function is apart from its versions: settings that apply to all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub reserved_concurrency: Option<u32>,
    /// The number of the newest published version ever; numbers are never reused, even after
    /// that version is deleted.
    pub last_published: u64,
    #[serde(default)]
    pub recursive_loop: RecursiveLoop,
}

/// Whether a function may be invoked by a chain of invocations longer than
/// [`MAX_CHAIN_INVOCATIONS`] (Lambda's `RecursiveLoop`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecursiveLoop {
    Allow,
    /// The default: such an invocation is not made.
    #[default]
    Terminate,
}

impl RecursiveLoop {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Terminate => "Terminate",
        }
    }

    /// The API's value (`Allow` or `Terminate`).
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "Allow" => Ok(Self::Allow),
            "Terminate" => Ok(Self::Terminate),
            other => Err(Error::validation(format!(
                "1 validation error detected: Value '{other}' at 'recursiveLoop' failed to \
                 satisfy constraint: Member must satisfy enum value set: [Allow, Terminate]"
            ))),
        }
    }
}

/// Invocations one chain of events may make (an event, the record of its run sent to a
/// function, that function's record, …) before the next is stopped, as in Lambda.
pub const MAX_CHAIN_INVOCATIONS: u32 = 16;

/// The stored code package of a version. `sha256` is the hex digest that names the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRef {
    pub sha256: String,
    pub size: u64,
    pub unzipped_size: u64,
}

impl CodeRef {
    /// `CodeSha256` as the API reports it: base64 of the digest.
    pub fn code_sha256(&self) -> String {
        use base64::Engine as _;
        let digest: Vec<u8> = (0..self.sha256.len() / 2)
            .map(|i| u8::from_str_radix(&self.sha256[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    pub log_format: String,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: String,
}

/// One version of a function: `$LATEST` (mutable) or a published, immutable snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub function_name: String,
    pub version: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub environment: Option<BTreeMap<String, String>>,
    pub ephemeral_storage: u32,
    pub architectures: Vec<String>,
    pub layers: Vec<String>,
    pub dead_letter_target: Option<String>,
    pub tracing_mode: String,
    pub kms_key_arn: Option<String>,
    pub logging: Logging,
    pub code: CodeRef,
    pub last_modified: String,
    pub revision_id: String,
}

impl Version {
    pub fn is_latest(&self) -> bool {
        self.version == LATEST
    }

    /// True when publishing `self` ($LATEST) would snapshot nothing new compared with the
    /// published version `other`: Lambda then returns that version instead of a new one.
    pub fn same_content_as(&self, other: &Version) -> bool {
        let strip = |v: &Version| Version {
            version: String::new(),
            description: String::new(),
            last_modified: String::new(),
            revision_id: String::new(),
            ..v.clone()
        };
        strip(self) == strip(other)
    }

    /// The immutable snapshot of `$LATEST` published as `number`.
    pub fn publish(&self, number: u64, description: Option<String>, now: OffsetDateTime) -> Self {
        Version {
            version: number.to_string(),
            description: description.unwrap_or_else(|| self.description.clone()),
            last_modified: crate::time::lambda_timestamp(now),
            revision_id: new_revision_id(),
            ..self.clone()
        }
    }

    /// Applies a configuration change to `$LATEST`, validating the result as a whole.
    pub fn apply(&mut self, changes: ConfigChanges, runtimes: &Runtimes) -> Result<()> {
        if let Some(role) = changes.role {
            self.role = role;
        }
        if let Some(handler) = changes.handler {
            self.handler = handler;
        }
        if let Some(description) = changes.description {
            self.description = description;
        }
        if let Some(timeout) = changes.timeout {
            self.timeout = validate::timeout(timeout)?;
        }
        if let Some(memory) = changes.memory_size {
            self.memory_size = validate::memory_size(memory)?;
        }
        if let Some(environment) = changes.environment {
            let variables = environment.variables.unwrap_or_default();
            self.environment = Some(variables);
        }
        if let Some(runtime) = changes.runtime {
            self.runtime = runtime;
        }
        if let Some(dlq) = changes.dead_letter_config {
            self.dead_letter_target = dlq.target_arn.filter(|arn| !arn.is_empty());
        }
        if let Some(kms) = changes.kms_key_arn {
            self.kms_key_arn = Some(kms).filter(|arn| !arn.is_empty());
        }
        if let Some(tracing) = changes.tracing_config
            && let Some(mode) = tracing.mode
        {
            self.tracing_mode = mode;
        }
        if let Some(layers) = changes.layers {
            self.layers = layers;
        }
        if let Some(storage) = changes.ephemeral_storage {
            self.ephemeral_storage = validate::ephemeral_storage(storage.size)?;
        }
        if let Some(logging) = changes.logging_config {
            if let Some(format) = logging.log_format {
                self.logging.log_format = format;
            }
            if logging.application_log_level.is_some() {
                self.logging.application_log_level = logging.application_log_level;
            }
            if logging.system_log_level.is_some() {
                self.logging.system_log_level = logging.system_log_level;
            }
            if let Some(group) = logging.log_group {
                self.logging.log_group = group;
            }
        }
        validate::version(self, runtimes)
    }
}

/// A new revision identifier; every change to a function, version or alias takes one.
pub fn new_revision_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The runtimes this host can run, by Lambda identifier (`python3.11`, `nodejs20.x`, `provided`).
#[derive(Debug, Clone, Default)]
pub struct Runtimes(pub std::collections::BTreeSet<String>);

impl Runtimes {
    pub fn contains(&self, runtime: &str) -> bool {
        self.0.contains(runtime)
    }

    pub fn list(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Configuration members shared by CreateFunction and UpdateFunctionConfiguration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigChanges {
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<EnvironmentInput>,
    pub runtime: Option<String>,
    pub dead_letter_config: Option<DeadLetterInput>,
    #[serde(rename = "KMSKeyArn")]
    pub kms_key_arn: Option<String>,
    pub tracing_config: Option<TracingInput>,
    pub layers: Option<Vec<String>>,
    pub ephemeral_storage: Option<EphemeralStorageInput>,
    pub logging_config: Option<LoggingInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentInput {
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeadLetterInput {
    pub target_arn: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingInput {
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorageInput {
    pub size: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingInput {
    pub log_format: Option<String>,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
}

/// The code members of CreateFunction (`Code`) and UpdateFunctionCode (top level).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeInput {
    /// Base64, as the JSON protocol carries blobs.
    pub zip_file: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
}

impl CodeInput {
    /// The zip bytes, or why there are none Lamina can take.
    pub fn zip_bytes(&self) -> Result<Vec<u8>> {
        use base64::Engine as _;
        if self.image_uri.is_some() {
            return Err(Error::invalid_parameter(
                "Container images are not supported by this platform; upload a .zip package \
                 with ZipFile.",
            ));
        }
        if self.s3_bucket.is_some() || self.s3_key.is_some() {
            return Err(Error::invalid_parameter(
                "S3 code locations are not supported by this platform; upload the .zip package \
                 inline with ZipFile.",
            ));
        }
        let Some(zip) = &self.zip_file else {
            return Err(Error::invalid_parameter(
                "Please provide a source for function code (ZipFile).",
            ));
        };
        base64::engine::general_purpose::STANDARD
            .decode(zip.as_bytes())
            .map_err(|_| Error::invalid_content("Code.ZipFile is not valid base64."))
    }
}

/// The CreateFunction request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunction {
    pub function_name: String,
    pub code: CodeInput,
    #[serde(default)]
    pub publish: bool,
    pub package_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub config: ConfigChanges,
}

impl CreateFunction {
    /// Validates everything but the code and builds `$LATEST` around the stored `code`.
    pub fn latest_version(
        self,
        name: &str,
        code: CodeRef,
        runtimes: &Runtimes,
        now: OffsetDateTime,
    ) -> Result<Version> {
        let config = self.config;
        let role = config.role.clone().ok_or_else(|| missing("Role"))?;
        let (Some(runtime), Some(handler)) = (config.runtime.clone(), config.handler.clone())
        else {
            return Err(Error::invalid_parameter(
                "Runtime and Handler are mandatory parameters for functions created with \
                 deployment packages.",
            ));
        };
        let mut version = Version {
            function_name: name.to_owned(),
            version: LATEST.to_owned(),
            runtime,
            role,
            handler,
            description: String::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_size: DEFAULT_MEMORY_SIZE,
            environment: None,
            ephemeral_storage: DEFAULT_EPHEMERAL_STORAGE,
            architectures: validate::architectures(self.architectures)?,
            layers: Vec::new(),
            dead_letter_target: None,
            tracing_mode: "PassThrough".to_owned(),
            kms_key_arn: None,
            logging: Logging {
                log_format: "Text".to_owned(),
                application_log_level: None,
                system_log_level: None,
                log_group: format!("/aws/lambda/{name}"),
            },
            code,
            last_modified: crate::time::lambda_timestamp(now),
            revision_id: new_revision_id(),
        };
        version.apply(config, runtimes)?;
        Ok(version)
    }

    /// The checks that need no code and no store: run them before reading the upload.
    pub fn precheck(&self) -> Result<()> {
        if let Some(package_type) = &self.package_type
            && package_type != "Zip"
        {
            return Err(Error::invalid_parameter(
                "Container images are not supported by this platform; use PackageType Zip.",
            ));
        }
        if let Some(tags) = &self.tags {
            validate::tags(tags)?;
        }
        Ok(())
    }
}

/// The UpdateFunctionConfiguration request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionConfiguration {
    pub revision_id: Option<String>,
    #[serde(flatten)]
    pub config: ConfigChanges,
}

/// The UpdateFunctionCode request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionCode {
    #[serde(flatten)]
    pub code: CodeInput,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub dry_run: bool,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
}

/// The PublishVersion request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishVersion {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

/// A named pointer to a published version, optionally splitting traffic with a second one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    pub name: String,
    pub function_version: String,
    pub description: String,
    /// Additional version → share of traffic in `[0, 1]`.
    pub routing: BTreeMap<String, f64>,
    pub revision_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoutingInput {
    pub additional_version_weights: Option<BTreeMap<String, f64>>,
}

/// The CreateAlias request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateAlias {
    pub name: String,
    pub function_version: String,
    pub description: Option<String>,
    pub routing_config: Option<RoutingInput>,
}

/// The UpdateAlias request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateAlias {
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingInput>,
    pub revision_id: Option<String>,
}

impl Alias {
    pub fn create(request: CreateAlias) -> Result<Self> {
        validate::alias_name(&request.name)?;
        let alias = Alias {
            name: request.name,
            function_version: request.function_version,
            description: request.description.unwrap_or_default(),
            routing: request
                .routing_config
                .and_then(|r| r.additional_version_weights)
                .unwrap_or_default(),
            revision_id: new_revision_id(),
        };
        validate::alias(&alias)?;
        Ok(alias)
    }

    pub fn update(&mut self, request: UpdateAlias) -> Result<()> {
        if let Some(version) = request.function_version {
            self.function_version = version;
        }
        if let Some(description) = request.description {
            self.description = description;
        }
        if let Some(routing) = request.routing_config {
            self.routing = routing.additional_version_weights.unwrap_or_default();
        }
        self.revision_id = new_revision_id();
        validate::alias(self)
    }

    /// Every version this alias can route to.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.function_version.as_str())
            .chain(self.routing.keys().map(String::as_str))
    }
}

fn missing(member: &str) -> Error {
    Error::validation(format!("1 validation error detected: {member} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_sha256_is_base64_of_the_digest() {
        let code = CodeRef {
            sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            size: 0,
            unzipped_size: 0,
        };
        assert_eq!(
            code.code_sha256(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
