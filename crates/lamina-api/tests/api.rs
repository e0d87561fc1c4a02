//! The API in-process: requests signed as an SDK signs them, through the whole router.

use std::sync::Arc;
use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use lamina_api::{ApiState, sigv4::Keyring};
use lamina_core::arn::Account;
use lamina_core::concurrency::ConcurrencyLimits;
use lamina_core::function::Runtimes;
use lamina_store::{CodeStore, SqliteQueues, SqliteStore};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const KEY: &str = "LKIATEST";

/// These tests cover the control plane; invocations are tested through the real binary.
struct NoEngine;

#[async_trait::async_trait]
impl lamina_core::invoke::Invoke for NoEngine {
    async fn invoke(
        &self,
        _: lamina_core::invoke::InvokeRequest,
    ) -> lamina_core::Result<lamina_core::invoke::InvokeResponse> {
        Err(lamina_core::Error::service(
            "no execution engine in this test",
        ))
    }

    async fn resolve(&self, _: &str, _: Option<&str>) -> lamina_core::Result<String> {
        Err(lamina_core::Error::service(
            "no execution engine in this test",
        ))
    }
}
#[async_trait::async_trait]
impl lamina_core::invoke::Enqueue for NoEngine {
    async fn enqueue(&self, _: lamina_core::invoke::InvokeRequest) -> lamina_core::Result<()> {
        Err(lamina_core::Error::service(
            "no execution engine in this test",
        ))
    }
}

const SECRET: &str = "secret";

struct Harness {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let state = ApiState {
        store: Arc::new(SqliteStore::in_memory().unwrap()),
        code: CodeStore::open(&dir.path().join("code")).unwrap(),
        account: Account {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        },
        runtimes: Runtimes(["python3.11".to_owned()].into()),
        keyring: Keyring::new([(KEY.to_owned(), SECRET.to_owned())]),
        url_key: b"k".to_vec(),
        concurrency: ConcurrencyLimits {
            account: 1000,
            min_unreserved: 100,
        },
        invoker: Arc::new(NoEngine),
        urls: lamina_api::UrlDirectory::on_address("127.0.0.1:9000".parse().unwrap(), "us-east-1"),
        events: Arc::new(NoEngine),
        queues: Arc::new(SqliteQueues::in_memory().unwrap()),
    };
    Harness {
        app: lamina_api::app(Arc::new(state)),
        _dir: dir,
    }
}

fn signed(method: &str, path: &str, body: Vec<u8>, secret: &str, at: SystemTime) -> Request<Body> {
    let url = format!("http://localhost:9000{path}");
    let identity = aws_credential_types::Credentials::new(KEY, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("lambda")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("host", "localhost:9000")];
    let signable = SignableRequest::new(
        method,
        &url,
        headers.into_iter(),
        SignableBody::Bytes(&body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost:9000")
        .body(Body::from(body))
        .unwrap();
    instructions.apply_to_request_http1x(&mut request);
    request
}

async fn call(h: &Harness, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = h.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let error_type = response
        .headers()
        .get("x-amzn-ErrorType")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(response.headers().contains_key("x-amzn-RequestId"));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, error_type, body)
}

fn zip() -> String {
    use base64::Engine as _;
    // A one-file zip: index.py containing "x".
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .start_file("index.py", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut writer, b"x").unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn create_body(name: &str) -> Vec<u8> {
    json!({
        "FunctionName": name, "Runtime": "python3.11", "Handler": "index.handler",
        "Role": "arn:aws:iam::000000000000:role/r", "Code": {"ZipFile": zip()},
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn signed_create_then_get_round_trips() {
    let h = harness();
    let now = SystemTime::now();
    let (status, _, body) = call(
        &h,
        signed(
            "POST",
            "/2015-03-31/functions",
            create_body("f"),
            SECRET,
            now,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:f"
    );
    let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/configuration";
    let (status, _, body) = call(&h, signed("GET", path, vec![], SECRET, now)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["State"], "Active");
}

#[tokio::test]
async fn signature_failures_map_to_aws_errors() {
    let h = harness();
    let now = SystemTime::now();
    let cases = [
        (
            signed("GET", "/2015-03-31/functions", vec![], "wrong", now),
            "InvalidSignatureException",
        ),
        (
            signed(
                "GET",
                "/2015-03-31/functions",
                vec![],
                SECRET,
                now - std::time::Duration::from_secs(900),
            ),
            "InvalidSignatureException",
        ),
        (
            Request::get("/2015-03-31/functions")
                .body(Body::empty())
                .unwrap(),
            "MissingAuthenticationTokenException",
        ),
    ];
    for (request, expected) in cases {
        let (status, error_type, body) = call(&h, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error_type.as_deref(), Some(expected));
        assert_eq!(body["Type"], "User");
    }
}

#[tokio::test]
async fn errors_carry_the_model_member_casing() {
    let h = harness();
    let now = SystemTime::now();
    let (status, error_type, body) = call(
        &h,
        signed("GET", "/2015-03-31/functions/missing", vec![], SECRET, now),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_type.as_deref(), Some("ResourceNotFoundException"));
    assert!(body["Message"].as_str().unwrap().contains("missing"));
    let bad = br#"{"FunctionName": "f", "Code": {}, "Role": "r"}"#.to_vec();
    let (status, error_type, body) = call(
        &h,
        signed("POST", "/2015-03-31/functions", bad, SECRET, now),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_type.as_deref(),
        Some("InvalidParameterValueException")
    );
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn trailing_slash_routes_like_no_slash() {
    let h = harness();
    let (status, _, body) = call(
        &h,
        signed(
            "GET",
            "/2015-03-31/functions/",
            vec![],
            SECRET,
            SystemTime::now(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["Functions"], json!([]));
}
