//! Verifying AWS Signature Version 4 on incoming requests by signing them again with
//! `aws-sigv4`: the same headers the client signed (from `SignedHeaders`), the raw path and
//! query as received, the body hashed here, and the client's region from its credential scope.
//! The signature may be in the `Authorization` header or, for a presigned request, in the query
//! string; the latter is signed again without its own parameters, which the signer adds back.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use lamina_core::session::{Session, SessionKey, TokenError};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// How far a request's `X-Amz-Date` may be from the server's clock, as AWS allows.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The key pairs the server accepts, and the key of the temporary credentials it issues.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    secrets: HashMap<String, String>,
    sessions: Option<SessionKey>,
}

impl Keyring {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            secrets: pairs.into_iter().collect(),
            sessions: None,
        }
    }

    /// Accepts, besides the pairs, temporary credentials sealed with `key`.
    pub fn with_sessions(mut self, key: SessionKey) -> Self {
        self.sessions = Some(key);
        self
    }

    pub fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id).map(String::as_str)
    }
}

/// Who signed a request: a key pair of the server's, or temporary credentials of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub access_key_id: String,
    /// The role session, for temporary credentials.
    pub session: Option<Session>,
}

impl Caller {
    /// The caller's ARN: the account's root, or the assumed role.
    pub fn arn(&self, account_id: &str) -> String {
        match &self.session {
            Some(session) => session.assumed_role_arn(account_id),
            None => format!("arn:aws:iam::{account_id}:root"),
        }
    }

    /// The caller's unique id (`aws:userid`): the account for its root, `AROA…:<session>`
    /// for a role session.
    pub fn user_id(&self, account_id: &str) -> String {
        match &self.session {
            Some(session) => session.user_id(),
            None => account_id.to_owned(),
        }
    }
}

/// What a request's signature claims: from its `Authorization` header, or — for a presigned
/// request — from its `X-Amz-*` query parameters.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// The signature's own query parameters, which the signer adds to the canonical query itself.
const QUERY_AUTH_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// The longest a presigned request may stay valid, as AWS allows (seven days).
const MAX_PRESIGNED_EXPIRY: u64 = 7 * 24 * 3600;

/// The query parameters of `uri`, decoded.
fn query_params(uri: &Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn query_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether the request is signed in its query string (a presigned URL).
fn is_presigned(params: &[(String, String)]) -> bool {
    query_param(params, "X-Amz-Signature").is_some()
        || query_param(params, "X-Amz-Credential").is_some()
}

/// The service a request's signature is scoped to, from its `Authorization` header or its
/// `X-Amz-Credential` query parameter; `None` if it carries neither or they do not parse.
/// Routing uses it: a signature names the API it was made for.
pub fn signed_service(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let credential = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(header) => parse_authorization(header).ok()?.service.to_owned(),
        None => {
            let params = query_params(uri);
            let credential = query_param(&params, "X-Amz-Credential")?;
            parse_credential(credential).ok()?.3.to_owned()
        }
    };
    Some(credential)
}

/// The query protocol's name for an error of the signature check (AWS's common errors of
/// query APIs: SQS's older protocol, STS); JSON clients see the exception's name.
pub fn query_code(exception: &'static str) -> &'static str {
    match exception {
        "UnrecognizedClientException" => "InvalidClientTokenId",
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        "MissingAuthenticationTokenException" => "MissingAuthenticationToken",
        "IncompleteSignatureException" => "IncompleteSignature",
        "ExpiredTokenException" => "ExpiredToken",
        other => other,
    }
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
    Authorization::of(credential, signed_headers, signature)
}

impl<'a> Authorization<'a> {
    /// A signature's claims from its three parts, wherever they were carried.
    fn of(
        credential: &'a str,
        signed_headers: &'a str,
        signature: &'a str,
    ) -> Result<Self, ApiError> {
        let (access_key_id, date, region, service) = parse_credential(credential)?;
        Ok(Self {
            access_key_id,
            date,
            region,
            service,
            signed_headers: signed_headers.split(';').collect(),
            signature,
        })
    }
}

/// A credential scope: `<access key id>/<date>/<region>/<service>/aws4_request`.
fn parse_credential(credential: &str) -> Result<(&str, &str, &str, &str), ApiError> {
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(incomplete(format!(
            "Credential should be scoped correctly: {credential}"
        )));
    };
    Ok((access_key_id, date, region, service))
}

/// A presigned request's signature, from its query parameters.
fn parse_query_authorization(params: &[(String, String)]) -> Result<Authorization<'_>, ApiError> {
    let missing = |name: &str| {
        incomplete(format!(
            "AWS query-string parameters must include '{name}'. Re-examine the query-string \
             parameters."
        ))
    };
    let algorithm =
        query_param(params, "X-Amz-Algorithm").ok_or_else(|| missing("X-Amz-Algorithm"))?;
    if algorithm != "AWS4-HMAC-SHA256" {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'"
        )));
    }
    let credential =
        query_param(params, "X-Amz-Credential").ok_or_else(|| missing("X-Amz-Credential"))?;
    let signed_headers =
        query_param(params, "X-Amz-SignedHeaders").ok_or_else(|| missing("X-Amz-SignedHeaders"))?;
    let signature =
        query_param(params, "X-Amz-Signature").ok_or_else(|| missing("X-Amz-Signature"))?;
    Authorization::of(credential, signed_headers, signature)
}

fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    Some(SystemTime::from(at))
}

/// [`verify`] of a request as received (its head and buffered body), at the server's time.
pub fn verify_request(
    parts: &http::request::Parts,
    body: &[u8],
    keyring: &Keyring,
    service: &str,
) -> Result<Caller, ApiError> {
    verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        body,
        keyring,
        service,
        SystemTime::now(),
    )
}

/// Verifies the request's signature for `service` and returns who made it. The
/// signature is taken from the `Authorization` header or, for a presigned request, from the
/// query string (`X-Amz-Signature` and its companions), which is then valid for `X-Amz-Expires`.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    keyring: &Keyring,
    service: &str,
    now: SystemTime,
) -> Result<Caller, ApiError> {
    let params = query_params(uri);
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    let presigned = header.is_none() && is_presigned(&params);
    let auth = match header {
        Some(header) => parse_authorization(header)?,
        None if presigned => parse_query_authorization(&params)?,
        None => {
            return Err(auth_error(
                "MissingAuthenticationTokenException",
                StatusCode::FORBIDDEN,
                "Missing Authentication Token",
            ));
        }
    };
    let token = if presigned {
        query_param(&params, "X-Amz-Security-Token").map(str::to_owned)
    } else {
        headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let unrecognized = || {
        auth_error(
            "UnrecognizedClientException",
            StatusCode::FORBIDDEN,
            "The security token included in the request is invalid.",
        )
    };
    let (secret, session) = match keyring.secret(auth.access_key_id) {
        Some(secret) => (secret.to_owned(), None),
        None => {
            let (Some(key), Some(token)) = (&keyring.sessions, &token) else {
                return Err(unrecognized());
            };
            let now_s = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            match key.open(auth.access_key_id, token, now_s) {
                Ok((session, secret)) => (secret, Some(session)),
                Err(TokenError::Expired) => {
                    return Err(auth_error(
                        "ExpiredTokenException",
                        StatusCode::FORBIDDEN,
                        "The security token included in the request is expired",
                    ));
                }
                Err(TokenError::Invalid) => return Err(unrecognized()),
            }
        }
    };
    let secret = secret.as_str();
    if auth.service != service {
        return Err(bad_signature(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    let amz_date = if presigned {
        query_param(&params, "X-Amz-Date").ok_or_else(|| {
            incomplete(
                "AWS query-string parameters must include 'X-Amz-Date'. Re-examine the \
                 query-string parameters.",
            )
        })?
    } else {
        headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| incomplete("Authorization header requires existence of X-Amz-Date."))?
    };
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
    let expires = if presigned {
        let raw = query_param(&params, "X-Amz-Expires").unwrap_or("");
        let seconds = raw
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_PRESIGNED_EXPIRY)
            .ok_or_else(|| {
                incomplete(format!(
                    "X-Amz-Expires must be an integer from 0 to {MAX_PRESIGNED_EXPIRY}: '{raw}'"
                ))
            })?;
        Some(Duration::from_secs(seconds))
    } else {
        None
    };
    match (now.duration_since(signed_at), expires) {
        // Signed in the future: only as far as the clock skew allows.
        (Err(ahead), _) if ahead.duration() > MAX_CLOCK_SKEW => {
            return Err(bad_signature(format!(
                "Signature not yet current: {amz_date} is still later than the server's time."
            )));
        }
        (Ok(age), Some(expires)) if age > expires => {
            return Err(bad_signature(format!(
                "Signature expired: {amz_date} is more than X-Amz-Expires={} seconds ago.",
                expires.as_secs()
            )));
        }
        (Ok(age), None) if age > MAX_CLOCK_SKEW => {
            return Err(bad_signature(format!(
                "Signature expired: {amz_date} is outside the allowed clock skew of {} minutes.",
                MAX_CLOCK_SKEW.as_secs() / 60
            )));
        }
        _ => {}
    }

    // The JSON protocols name the operation in `X-Amz-Target`: a presigned URL that does not
    // sign it would let its holder choose another operation.
    if presigned
        && headers.contains_key("x-amz-target")
        && !auth.signed_headers.contains(&"x-amz-target")
    {
        return Err(bad_signature(
            "X-Amz-Target must be among the signed headers of a presigned request.",
        ));
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
    // A presigned request is signed again without its signature's parameters: the signer puts
    // them into the canonical query itself.
    let path_and_query = if presigned {
        let rest: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| !QUERY_AUTH_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(rest)
            .finish();
        if query.is_empty() {
            uri.path().to_owned()
        } else {
            format!("{}?{query}", uri.path())
        }
    } else {
        uri.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned()
    };
    let url = format!("http://{host}{path_and_query}");

    let identity =
        aws_credential_types::Credentials::new(auth.access_key_id, secret, token, None, "lamina")
            .into();
    let mut settings = SigningSettings::default();
    if let Some(expires) = expires {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|e| incomplete(format!("cannot verify this signature: {e}")))?
        .into();
    // A presigned URL may have been signed without knowing its body (`UNSIGNED-PAYLOAD`); it
    // then covers no body at all, or anyone holding it could send one of their own.
    let bodies: &[SignableBody<'_>] = if presigned && body.is_empty() {
        &[SignableBody::Bytes(body), SignableBody::UnsignedPayload]
    } else {
        &[SignableBody::Bytes(body)]
    };
    for signable in bodies {
        let request = SignableRequest::new(
            method.as_str(),
            url.as_str(),
            signed.iter().copied(),
            signable.clone(),
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
            return Ok(Caller {
                access_key_id: auth.access_key_id.to_owned(),
                session,
            });
        }
    }
    Err(bad_signature(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service \
         documentation for details.",
    ))
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

    /// A request presigned with `aws-sigv4` (the signature in its query string).
    fn presigned(uri: &str, signed_at: SystemTime, expires: u64) -> (Uri, HeaderMap) {
        let identity =
            aws_credential_types::Credentials::new("AKID", "secret", None, None, "t").into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("sqs")
            .time(signed_at)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let url = format!("http://example.com{uri}");
        let request =
            SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(b""))
                .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in instructions.params() {
            query.append_pair(name, value);
        }
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.com".parse().unwrap());
        let path_and_query = format!("{uri}&{}", query.finish());
        (path_and_query.parse().unwrap(), headers)
    }

    #[test]
    fn verifies_presigned_requests_until_they_expire() {
        let keyring = Keyring::new([("AKID".to_owned(), "secret".to_owned())]);
        let signed_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (uri, headers) = presigned("/?Action=ListQueues&QueueNamePrefix=a%20b", signed_at, 600);
        assert_eq!(signed_service(&uri, &headers).as_deref(), Some("sqs"));
        let check = |service: &str, now: SystemTime| {
            verify(&Method::GET, &uri, &headers, b"", &keyring, service, now)
        };
        assert_eq!(
            check("sqs", signed_at + Duration::from_secs(599))
                .unwrap()
                .access_key_id,
            "AKID"
        );
        assert!(check("sqs", signed_at + Duration::from_secs(601)).is_err());
        assert!(check("lambda", signed_at).is_err());
        let tampered: Uri = uri.to_string().replace("a%20b", "a%20c").parse().unwrap();
        assert!(
            verify(
                &Method::GET,
                &tampered,
                &headers,
                b"",
                &keyring,
                "sqs",
                signed_at
            )
            .is_err()
        );
    }
}
