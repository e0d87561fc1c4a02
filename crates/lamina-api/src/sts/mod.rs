//! The STS API (query protocol: `Action=…` in a form or the query string, XML answers), as far
//! as Lamina has identities: `GetCallerIdentity` names who signed the request — the account's
//! root, or a function's role session with the temporary credentials its execution
//! environment was given. `front` sends it every request signed for service `sts`.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ApiState;
use crate::sigv4::{self, Caller};

const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Whether `front` should hand the request to STS: it is signed for `sts`.
pub fn addressed_to(parts: &http::request::Parts) -> bool {
    sigv4::signed_service(&parts.uri, &parts.headers).as_deref() == Some("sts")
}

pub async fn serve(state: &ApiState, request: Request, request_id: &str) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request is too large.",
            request_id,
        );
    };
    let caller = match sigv4::verify_request(&parts, &body, &state.keyring, "sts") {
        Ok(caller) => caller,
        Err(crate::ApiError::Auth {
            exception,
            status,
            message,
        }) => return error(status, sigv4::query_code(exception), &message, request_id),
        Err(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                &other.to_string(),
                request_id,
            );
        }
    };
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let body: Bytes = if form { body } else { Bytes::new() };
    let action = parts
        .uri
        .query()
        .map(str::as_bytes)
        .into_iter()
        .chain([body.as_ref()])
        .flat_map(form_urlencoded::parse)
        .find(|(name, _)| name == "Action")
        .map(|(_, value)| value.into_owned());
    match action.as_deref() {
        Some("GetCallerIdentity") => get_caller_identity(state, &caller, request_id),
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Could not find operation {other} for version 2011-06-15"),
            request_id,
        ),
        None => error(
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "The request must contain the parameter Action.",
            request_id,
        ),
    }
}

fn get_caller_identity(state: &ApiState, caller: &Caller, request_id: &str) -> Response {
    let account = &state.account.account_id;
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\"><GetCallerIdentityResult>\
         <Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account></GetCallerIdentityResult>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
         </GetCallerIdentityResponse>",
        escape(&caller.arn(account)),
        escape(&caller.user_id(account)),
        escape(account),
        escape(request_id),
    );
    xml(StatusCode::OK, body)
}

/// An error as query APIs answer them: `ErrorResponse` with a `Sender` or `Receiver` fault.
fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let fault = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{fault}</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(code),
        escape(message),
        escape(request_id),
    );
    xml(status, body)
}

fn xml(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
