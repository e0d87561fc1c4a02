//! Function URLs: a function's (or an alias's) own HTTP endpoint, its authorisation type, CORS
//! and invoke mode, as the Lambda API shapes them.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How callers of a URL are authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    /// Public, when the resource policy grants `lambda:InvokeFunctionUrl` to `*`.
    #[serde(rename = "NONE")]
    None,
    /// SigV4-signed requests (service `lambda`) only.
    #[serde(rename = "AWS_IAM")]
    AwsIam,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::AwsIam => "AWS_IAM",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        match value {
            "NONE" => Ok(Self::None),
            "AWS_IAM" => Ok(Self::AwsIam),
            other => Err(enum_error("authType", other, "NONE, AWS_IAM")),
        }
    }
}

/// Whether a URL's response is buffered (6 MB) or streamed as the function writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvokeMode {
    #[serde(rename = "BUFFERED")]
    Buffered,
    #[serde(rename = "RESPONSE_STREAM")]
    ResponseStream,
}

impl InvokeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buffered => "BUFFERED",
            Self::ResponseStream => "RESPONSE_STREAM",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        match value {
            "BUFFERED" => Ok(Self::Buffered),
            "RESPONSE_STREAM" => Ok(Self::ResponseStream),
            other => Err(enum_error("invokeMode", other, "BUFFERED, RESPONSE_STREAM")),
        }
    }
}

/// The `Cors` member, as the API takes and returns it (absent members stay absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cors {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
}

impl Cors {
    /// Checks the model's limits on each member.
    pub fn validate(&self) -> Result<()> {
        let list =
            |member: &str, items: &Option<Vec<String>>, max: usize, item_len: (usize, usize)| {
                let Some(items) = items else { return Ok(()) };
                if items.len() > max {
                    return Err(Error::validation(format!(
                        "1 validation error detected: Value at 'cors.{member}' failed to satisfy \
                     constraint: Member must have length less than or equal to {max}"
                    )));
                }
                if let Some(bad) = items
                    .iter()
                    .find(|i| i.len() < item_len.0 || i.len() > item_len.1)
                {
                    return Err(Error::validation(format!(
                        "1 validation error detected: Value '{bad}' at 'cors.{member}' failed to \
                     satisfy constraint: Member must have length between {} and {}",
                        item_len.0, item_len.1
                    )));
                }
                Ok(())
            };
        list("allowOrigins", &self.allow_origins, 100, (1, 253))?;
        list("allowMethods", &self.allow_methods, 6, (0, 6))?;
        list("allowHeaders", &self.allow_headers, 100, (0, 1024))?;
        list("exposeHeaders", &self.expose_headers, 100, (0, 1024))?;
        if let Some(age) = self.max_age
            && !(0..=86_400).contains(&age)
        {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{age}' at 'cors.maxAge' failed to satisfy \
                 constraint: Member must have value between 0 and 86400"
            )));
        }
        Ok(())
    }

    /// Whether a browser from `origin` may read the response.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .flatten()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }
}

/// The URL configuration of a function or of one of its aliases, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlConfig {
    /// The URL's own name: 32 lowercase letters and digits, unique across the server.
    pub url_id: String,
    /// The alias the URL invokes; `None` for the unqualified function (`$LATEST`).
    pub qualifier: Option<String>,
    pub auth_type: AuthType,
    pub cors: Option<Cors>,
    pub invoke_mode: InvokeMode,
    pub creation_time: String,
    pub last_modified_time: String,
}

/// CreateFunctionUrlConfig's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateUrl {
    pub auth_type: Option<String>,
    pub cors: Option<Cors>,
    pub invoke_mode: Option<String>,
}

/// UpdateFunctionUrlConfig's body: what is given replaces what was.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateUrl {
    pub auth_type: Option<String>,
    pub cors: Option<Cors>,
    pub invoke_mode: Option<String>,
}

impl UrlConfig {
    /// A new URL configuration from CreateFunctionUrlConfig.
    pub fn create(
        request: CreateUrl,
        url_id: String,
        qualifier: Option<String>,
        now: &str,
    ) -> Result<Self> {
        let auth_type = request.auth_type.ok_or_else(|| {
            Error::validation("1 validation error detected: AuthType is required")
        })?;
        if let Some(cors) = &request.cors {
            cors.validate()?;
        }
        Ok(Self {
            url_id,
            qualifier,
            auth_type: AuthType::parse(&auth_type)?,
            cors: request.cors,
            invoke_mode: request
                .invoke_mode
                .as_deref()
                .map(InvokeMode::parse)
                .transpose()?
                .unwrap_or(InvokeMode::Buffered),
            creation_time: now.to_owned(),
            last_modified_time: now.to_owned(),
        })
    }

    /// Applies UpdateFunctionUrlConfig.
    pub fn update(&mut self, request: UpdateUrl, now: &str) -> Result<()> {
        if let Some(auth_type) = request.auth_type {
            self.auth_type = AuthType::parse(&auth_type)?;
        }
        if let Some(cors) = request.cors {
            cors.validate()?;
            self.cors = Some(cors);
        }
        if let Some(mode) = request.invoke_mode {
            self.invoke_mode = InvokeMode::parse(&mode)?;
        }
        self.last_modified_time = now.to_owned();
        Ok(())
    }
}

/// A new URL id: 32 lowercase letters and digits, as Lambda's are.
pub fn new_url_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|u| *u.as_bytes())
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

fn enum_error(member: &str, value: &str, allowed: &str) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: \
         Member must satisfy enum value set: [{allowed}]"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(auth: &str, mode: Option<&str>, cors: Option<Cors>) -> Result<UrlConfig> {
        UrlConfig::create(
            CreateUrl {
                auth_type: Some(auth.into()),
                cors,
                invoke_mode: mode.map(Into::into),
            },
            new_url_id(),
            None,
            "t0",
        )
    }

    #[test]
    fn enums_and_defaults_follow_the_model() {
        let url = create("NONE", None, None).unwrap();
        assert_eq!(
            (url.auth_type, url.invoke_mode),
            (AuthType::None, InvokeMode::Buffered)
        );
        assert!(create("AWS_IAM", Some("RESPONSE_STREAM"), None).is_ok());
        assert!(create("OPEN", None, None).is_err());
        assert!(create("NONE", Some("STREAM"), None).is_err());
    }

    #[test]
    fn cors_limits_are_checked() {
        let too_many = Cors {
            allow_methods: Some(vec!["GET".into(); 7]),
            ..Default::default()
        };
        assert!(create("NONE", None, Some(too_many)).is_err());
        let old = Cors {
            max_age: Some(86_401),
            ..Default::default()
        };
        assert!(create("NONE", None, Some(old)).is_err());
        let cors = Cors {
            allow_origins: Some(vec!["https://example.com".into()]),
            ..Default::default()
        };
        assert!(cors.allows_origin("https://EXAMPLE.com"));
        assert!(!cors.allows_origin("https://evil.example"));
    }

    #[test]
    fn url_ids_are_32_lowercase_alphanumerics_and_differ() {
        let (a, b) = (new_url_id(), new_url_id());
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, b);
    }
}
