//! Execution environments: one sandboxed runtime process per instance, the Runtime API it talks
//! to, the catalogue of managed runtimes, and the function's logs.
//!
//! Architecture invariant: knows nothing of the HTTP front or the store. An [`Instance`] takes an
//! [`Invocation`] and returns an [`Outcome`]; the hand-off is in memory (a one-slot channel the
//! runtime's pending `GET /next` waits on, and a per-instance slot for the reply), with no lock
//! shared between instances and no disk on the way.

pub mod catalogue;
mod instance;
pub mod logs;
mod runtime_api;
pub mod sandboxes;
pub mod sdk;

pub use catalogue::Catalogue;
pub use instance::{Host, InitType, Instance, InstanceConfig, StartError, Timing};
pub use runtime_api::{Invocation, Outcome};
pub use sandboxes::SandboxPool;

/// The largest response a function may return (Lambda: 6 MB, plus the runtime's framing slack).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024 + 100;
/// The largest response a function may stream (Lambda's default quota: 20 MB).
pub const MAX_STREAMED_BYTES: usize = 20 * 1024 * 1024;

/// The body of a failure the platform (not the function) reports.
pub(crate) fn platform_error(error_type: &str, message: &str) -> bytes::Bytes {
    bytes::Bytes::from(
        serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string(),
    )
}
