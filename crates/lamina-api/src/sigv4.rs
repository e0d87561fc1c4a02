//! Verifying AWS Signature Version 4 on incoming requests by signing them again with
//! `aws-sigv4`: the same headers the client signed (from `SignedHeaders`), the raw path and
//! query as received, the body hashed here, and the client's region from its credential scope.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// How far a request's `X-Amz-Date` may be from the server's clock, as AWS allows.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The key pairs the server accepts.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    secrets: HashMap<String, String>,
}

impl Keyring {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            secrets: pairs.into_iter().collect(),
        }
    }

    pub fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id).map(String::as_str)
    }
}

/// The parsed `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn auth_error(exception: &'static str, status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::Auth {
        exception,
        status,
        message: message.into(),
    }
}

fn incomplete(message: impl Into<String>) -> ApiError {
    auth_error(
        "IncompleteSignatureException",
        StatusCode::BAD_REQUEST,
        message,
    )
}

fn bad_signature(message: impl Into<String>) -> ApiError {
    auth_error("InvalidSignatureException", StatusCode::FORBIDDEN, message)
}

fn parse_authorization(header: &str) -> Result<Authorization<'_>, ApiError> {
    let rest = header
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("Authorization header requires the AWS4-HMAC-SHA256 scheme."))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(incomplete(format!(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' \
             parameters. Authorization={header}"
        )));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(incomplete(format!(
            "Credential should be scoped correctly: {credential}"
        )));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed_headers.split(';').collect(),
        signature,
    })
}

fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    Some(SystemTime::from(at))
}

/// Verifies the request's signature for `service` and returns the access key id it used.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    keyring: &Keyring,
    service: &str,
    now: SystemTime,
) -> Result<String, ApiError> {
    let header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            auth_error(
                "MissingAuthenticationTokenException",
                StatusCode::FORBIDDEN,
                "Missing Authentication Token",
            )
        })?;
    let auth = parse_authorization(header)?;
    let Some(secret) = keyring.secret(auth.access_key_id) else {
        return Err(auth_error(
            "UnrecognizedClientException",
            StatusCode::FORBIDDEN,
            "The security token included in the request is invalid.",
        ));
    };
    if auth.service != service {
        return Err(bad_signature(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("Authorization header requires existence of X-Amz-Date."))?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| incomplete(format!("Invalid X-Amz-Date: {amz_date}")))?;
    if !amz_date.starts_with(auth.date) {
        return Err(bad_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '{}' != '{}'",
            auth.date,
            &amz_date[..amz_date.len().min(8)]
        )));
    }
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if skew > MAX_CLOCK_SKEW {
        return Err(bad_signature(format!(
            "Signature expired: {amz_date} is outside the allowed clock skew of {} minutes.",
            MAX_CLOCK_SKEW.as_secs() / 60
        )));
    }

    let mut signed: Vec<(&str, &str)> = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                bad_signature(format!(
                    "Signed header '{name}' is missing from the request."
                ))
            })?;
        signed.push((name, value));
    }
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://{host}{path_and_query}");
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());

    let identity = aws_credential_types::Credentials::new(
        auth.access_key_id,
        secret,
        token.map(str::to_owned),
        None,
        "lamina",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(signed_at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| incomplete(format!("cannot verify this signature: {e}")))?
        .into();
    let request = SignableRequest::new(
        method.as_str(),
        url,
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| incomplete(format!("cannot verify this request: {e}")))?;
    let expected = sign(request, &params)
        .map_err(|e| incomplete(format!("cannot verify this signature: {e}")))?;
    if expected
        .signature()
        .as_bytes()
        .ct_eq(auth.signature.as_bytes())
        .into()
    {
        Ok(auth.access_key_id.to_owned())
    } else {
        Err(bad_signature(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_authorization_header() {
        let header = "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/lambda/aws4_request, \
                      SignedHeaders=host;x-amz-date, Signature=abc";
        let auth = parse_authorization(header).unwrap();
        assert_eq!(auth.access_key_id, "AKID");
        assert_eq!(auth.region, "eu-west-1");
        assert_eq!(auth.signed_headers, ["host", "x-amz-date"]);
        assert_eq!(auth.signature, "abc");
        assert!(parse_authorization("Basic xyz").is_err());
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=a/b").is_err());
    }
}
