//! `Code.Location` of GetFunction: a URL on this server that serves the stored zip to anyone
//! holding it for ten minutes, like the presigned S3 URL Lambda returns. The URL carries an
//! expiry and an HMAC of (blob, expiry) under a key only the server knows.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{ApiState, QueryPairs, SharedState};

pub const PREFIX: &str = "/_lamina/code/";
pub const ROUTE: &str = "/_lamina/code/{blob}";
const VALID_FOR_SECONDS: u64 = 600;

fn signature(key: &[u8], blob: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{blob}\n{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The download URL for `blob`, on the host and port the client used to reach us.
pub fn url(state: &ApiState, headers: &HeaderMap, blob: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let expires = unix_now() + VALID_FOR_SECONDS;
    let signature = signature(&state.url_key, blob, expires);
    format!("http://{host}{PREFIX}{blob}?expires={expires}&signature={signature}")
}

pub async fn download(
    State(state): State<SharedState>,
    Path(blob): Path<String>,
    Query(query): Query<QueryPairs>,
) -> Response {
    let denied = |reason: &str| (StatusCode::FORBIDDEN, reason.to_owned()).into_response();
    let Some(expires) = query.get("expires").and_then(|e| e.parse::<u64>().ok()) else {
        return denied("missing expiry");
    };
    let given = query.get("signature").unwrap_or_default();
    let expected = signature(&state.url_key, &blob, expires);
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return denied("bad signature");
    }
    if expires < unix_now() {
        return denied("this link has expired");
    }
    let code = state.code.clone();
    match tokio::task::spawn_blocking(move || code.read_zip(&blob)).await {
        Ok(Ok(zip)) => ([(header::CONTENT_TYPE, "application/zip")], zip).into_response(),
        _ => (StatusCode::NOT_FOUND, "no such code package").into_response(),
    }
}
