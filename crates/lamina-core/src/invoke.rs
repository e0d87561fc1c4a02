//! The invoker port: what every trigger (the Invoke API now; function URLs, the async dispatcher
//! and event sources later) asks of the execution engine.

use crate::Result;

/// One synchronous invocation.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: bytes::Bytes,
    /// The id the caller and the function both see.
    pub request_id: String,
    /// The client context as JSON text (already decoded from base64 and validated).
    pub client_context: Option<String>,
    /// Return the last 4 KB of the invocation's log.
    pub tail: bool,
}

/// What the caller gets back. A function error is a success of the API with `function_error`.
#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub executed_version: String,
    pub payload: bytes::Bytes,
    /// `Unhandled` when the function failed.
    pub function_error: Option<String>,
    pub log_tail: Option<Vec<u8>>,
}

#[async_trait::async_trait]
pub trait Invoke: Send + Sync + 'static {
    /// Runs the function, or fails with the Lambda error for why it could not be run.
    async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse>;

    /// Checks that the function and qualifier exist without running anything (DryRun).
    async fn resolve(&self, function: &str, qualifier: Option<&str>) -> Result<String>;
}
