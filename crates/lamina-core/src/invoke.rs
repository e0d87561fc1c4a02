//! The invoker port: what every trigger (the Invoke API, function URLs, the async dispatcher,
//! event sources later) asks of the execution engine.

use crate::Result;

/// Lambda's payload limits: 6 MB synchronous, 1 MB asynchronous.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;

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
    /// Where to stream the response as the function writes it (InvokeWithResponseStream,
    /// function URLs in `RESPONSE_STREAM` mode); `None` buffers it into the response.
    pub stream: Option<tokio::sync::mpsc::Sender<ResponsePart>>,
}

/// A piece of a streamed response, in order: `Started`, then (for a runtime that streams)
/// `ContentType`, then the data. A runtime that answers in one piece sends one `Data`. Errors
/// and the log tail come with the invocation's final [`InvokeResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsePart {
    /// The invocation runs on this version: nothing failed before it began.
    Started {
        executed_version: String,
    },
    /// The runtime began a streamed response of this content type.
    ContentType(String),
    Data(bytes::Bytes),
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

/// A place held for one invocation of a function, taken by an event source before it runs an
/// event it holds ([`Invoke::admit`]). Dropping it gives the place back.
pub struct Admission(Option<Box<dyn std::any::Any + Send>>);

impl Admission {
    /// An admission holding `place`, the engine's own record of it.
    pub fn holding<T: std::any::Any + Send>(place: T) -> Self {
        Self(Some(Box::new(place)))
    }

    /// An admission that holds nothing: the invocation is admitted when it runs.
    pub fn deferred() -> Self {
        Self(None)
    }

    /// The engine's record of the place, if this admission holds one of type `T`.
    pub fn into_place<T: std::any::Any>(self) -> Option<T> {
        self.0?.downcast::<T>().ok().map(|place| *place)
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Admission(held)"
        } else {
            "Admission(deferred)"
        })
    }
}

#[async_trait::async_trait]
pub trait Invoke: Send + Sync + 'static {
    /// Runs the function, or fails with the Lambda error for why it could not be run.
    async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse>;

    /// Waits until `function:qualifier` may run one more invocation, and holds that place.
    /// Every event source (the asynchronous dispatcher, event source mappings) asks before
    /// it runs an event, so a function's backlog flows at the function's concurrency instead
    /// of into throttles. Fails at once when waiting cannot help (the function is gone, its
    /// reserved concurrency is 0), and after `patience` with the throttle it still meets.
    async fn admit(
        &self,
        _function: &str,
        _qualifier: Option<&str>,
        _patience: std::time::Duration,
    ) -> Result<Admission> {
        Ok(Admission::deferred())
    }

    /// Runs `request` in the place `admission` holds (one [`admit`](Self::admit) gave for
    /// the request's function and qualifier).
    async fn invoke_admitted(
        &self,
        request: InvokeRequest,
        _admission: Admission,
    ) -> Result<InvokeResponse> {
        self.invoke(request).await
    }

    /// Checks that the function and qualifier exist without running anything (DryRun).
    async fn resolve(&self, function: &str, qualifier: Option<&str>) -> Result<String>;

    /// The allocation of `function:qualifier`'s provisioned concurrency, once the engine has
    /// taken up its configuration.
    fn provisioned(&self, _function: &str, _qualifier: &str) -> Option<ProvisionedStatus> {
        None
    }

    fn metrics(&self) -> Metrics {
        Metrics::default()
    }
}

/// The asynchronous side of the engine: accepting events durably, and how they fare.
#[async_trait::async_trait]
pub trait Enqueue: Send + Sync + 'static {
    /// Accepts an asynchronous invocation (`InvocationType=Event`). When this returns `Ok` the
    /// event is durable and will be run at least once; a full queue refuses it with a throttle.
    async fn enqueue(&self, request: InvokeRequest) -> Result<()>;

    fn metrics(&self) -> AsyncMetrics {
        AsyncMetrics::default()
    }
}

/// Counters of asynchronous invocation since the server started (the depth is current).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsyncMetrics {
    /// Events accepted and not yet finished (waiting, running or waiting for a retry).
    pub depth: u64,
    pub max_depth: u64,
    pub accepted: u64,
    /// Events refused because the queue was full.
    pub refused: u64,
    /// Attempts to run an event, first tries and retries.
    pub attempts: u64,
    pub succeeded: u64,
    /// Events that ended in failure (retries exhausted, too old, reserved concurrency 0).
    pub failed: u64,
    /// Events whose function (or qualifier) was deleted before they ran.
    pub dropped: u64,
    pub dead_letter_failures: u64,
    pub destination_failures: u64,
    /// Records to function destinations not delivered: a recursive loop was stopped.
    pub recursive_dropped: u64,
}

/// Delivery to a broker outside Lamina (a destination such as a Redis stream).
#[async_trait::async_trait]
pub trait Publish: Send + Sync + 'static {
    /// Appends `record` to the stream `key` of the Redis server at `server` (a `redis://` URL),
    /// with `fields` beside it.
    async fn redis_stream(
        &self,
        server: &str,
        key: &str,
        record: &[u8],
        fields: &[(&str, &str)],
    ) -> std::result::Result<(), String>;
}

/// Where a provisioned concurrency configuration's allocation stands (`Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionedState {
    InProgress,
    Ready,
    Failed,
}

impl ProvisionedState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
        }
    }
}

/// The live side of a provisioned concurrency configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedStatus {
    /// The request the engine is working to: it may lag the stored configuration briefly.
    pub requested: u32,
    /// Execution environments initialised for it (busy or idle).
    pub allocated: u32,
    /// Of those, how many are ready to take an invocation now.
    pub available: u32,
    pub state: ProvisionedState,
    /// Why the allocation failed.
    pub reason: Option<String>,
}

/// Concurrency figures of one function, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionMetrics {
    pub function: String,
    pub reserved: Option<u32>,
    /// Invocations running now.
    pub in_use: u32,
    pub provisioned_requested: u32,
    pub provisioned_allocated: u32,
    pub invocations: u64,
    pub throttles: u64,
    pub cold_starts: u64,
    /// Execution environments alive, busy or idle.
    pub instances: u32,
}

/// Concurrency figures of the account and each function that has run or holds concurrency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub account_limit: u32,
    /// What on-demand invocations of unreserved functions may use now.
    pub unreserved_capacity: u32,
    pub in_use: u32,
    pub unreserved_in_use: u32,
    pub throttles: u64,
    /// Pre-built sandboxes waiting for a function.
    pub sandboxes_ready: u32,
    /// Memory promised to execution environments, against the budget, in MB.
    pub memory_committed_mb: u64,
    pub memory_budget_mb: u64,
    pub functions: Vec<FunctionMetrics>,
}
