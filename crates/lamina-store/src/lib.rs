//! Lamina's state: metadata behind the [`MetadataStore`] trait (SQLite now, PostgreSQL in cluster
//! mode) and code packages in the content-addressed [`CodeStore`].
//!
//! Architecture invariant: SQL lives here and nowhere else, and this crate knows nothing of HTTP
//! or sandboxes. Every write to a function goes through one optimistic [`MetadataStore::commit`]
//! guarded by the function's generation, so a backend needs exactly one transactional primitive.
#![forbid(unsafe_code)]

pub mod archive;
pub mod code;
#[cfg(test)]
mod conformance;
pub mod queue;
#[cfg(test)]
mod queue_conformance;
pub mod sqlite;
pub mod sqlite_queue;

use std::collections::BTreeSet;

use async_trait::async_trait;
use lamina_core::concurrency::{Allocation, ProvisionedConfig};
use lamina_core::event_invoke::EventInvokeConfig;
use lamina_core::function::{Alias, Function, Version};
use lamina_core::policy::Policy;
use lamina_core::url::UrlConfig;

pub use code::CodeStore;
pub use queue::QueueStore;
pub use sqlite::SqliteStore;
pub use sqlite_queue::SqliteQueues;

/// The time now, in epoch milliseconds (the queue engine's clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The function's generation moved since it was read; read again and retry.
    #[error("the function was changed concurrently")]
    Conflict,
    /// A create found the function already there.
    #[error("the function exists already")]
    AlreadyExists,
    #[error("metadata store failure: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a commit requires of the function's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The function must not exist (a create).
    Absent,
    /// The function must be at this generation (every other write).
    Generation(u64),
}

/// One write inside a commit.
// A commit carries a handful of these for a moment; boxing versions would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Change {
    PutFunction(Function),
    PutVersion(Version),
    DeleteVersion(String),
    PutAlias(Alias),
    DeleteAlias(String),
    /// The policy of a qualifier; `""` is the unqualified function.
    PutPolicy(String, Policy),
    DeletePolicy(String),
    /// The provisioned concurrency configuration of a version or alias.
    PutProvisioned(ProvisionedConfig),
    /// Removes the provisioned concurrency configuration of this qualifier, if any.
    DeleteProvisioned(String),
    /// The URL configuration of the function (qualifier `None`) or an alias.
    PutUrl(UrlConfig),
    /// Removes the URL configuration of the function (`None`) or of this alias, if any.
    DeleteUrl(Option<String>),
    /// The asynchronous invocation configuration of a qualifier (`$LATEST` for the function).
    PutEventInvokeConfig(EventInvokeConfig),
    /// Removes the asynchronous invocation configuration of this qualifier, if any.
    DeleteEventInvokeConfig(String),
    /// Removes the function with all its versions, aliases, policies and provisioned
    /// concurrency configurations.
    DeleteFunction,
}

/// Account-wide figures for GetAccountSettings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub function_count: u64,
    /// Code size summed over every version, as Lambda counts storage.
    pub total_code_size: u64,
    pub reserved_concurrency: u64,
}

/// Where a page of versions across all functions starts: after this function and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCursor {
    pub function: String,
    /// 0 for `$LATEST`, else the version number.
    pub seq: u64,
}

/// The metadata of every function. Reads see committed state; writes are all-or-nothing.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// The function and its generation.
    async fn function(&self, name: &str) -> Result<Option<(Function, u64)>>;
    async fn version(&self, function: &str, version: &str) -> Result<Option<Version>>;
    /// Every version of a function, `$LATEST` first, then by number.
    async fn versions(&self, function: &str) -> Result<Vec<Version>>;
    /// Versions of all functions ordered by function name then version, after `cursor`.
    async fn versions_page(
        &self,
        after: Option<&VersionCursor>,
        latest_only: bool,
        limit: usize,
    ) -> Result<Vec<Version>>;
    async fn alias(&self, function: &str, name: &str) -> Result<Option<Alias>>;
    /// A function's aliases ordered by name.
    async fn aliases(&self, function: &str) -> Result<Vec<Alias>>;
    async fn policy(&self, function: &str, qualifier: &str) -> Result<Option<Policy>>;
    /// A function's provisioned concurrency configurations, ordered by qualifier.
    async fn provisioned(&self, function: &str) -> Result<Vec<ProvisionedConfig>>;
    /// Every function that holds concurrency: a reservation or provisioned concurrency.
    async fn allocations(&self) -> Result<Vec<Allocation>>;
    /// The URL configuration of the function (`None`) or of an alias.
    async fn url(&self, function: &str, qualifier: Option<&str>) -> Result<Option<UrlConfig>>;
    /// A function's URL configurations, the unqualified one first, then by alias.
    async fn urls(&self, function: &str) -> Result<Vec<UrlConfig>>;
    /// The function a URL id belongs to, and its configuration.
    async fn url_by_id(&self, url_id: &str) -> Result<Option<(String, UrlConfig)>>;
    /// The asynchronous invocation configuration of `qualifier` (`$LATEST`: the function's).
    async fn event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<EventInvokeConfig>>;
    /// A function's asynchronous invocation configurations, ordered by qualifier.
    async fn event_invoke_configs(&self, function: &str) -> Result<Vec<EventInvokeConfig>>;
    /// Applies `changes` atomically if the function is as `expect` says, and advances its
    /// generation. Durable when it returns `Ok`.
    async fn commit(&self, function: &str, expect: Expect, changes: Vec<Change>) -> Result<()>;
    async fn usage(&self) -> Result<Usage>;
    /// The code blobs (hex SHA-256) any version references.
    async fn code_in_use(&self) -> Result<BTreeSet<String>>;
}

/// A store that tells `observer` about every committed change, by function name. Whoever caches
/// what the store holds (the invoker) subscribes here: commits are the one way state changes.
pub struct Observed {
    inner: Box<dyn MetadataStore>,
    observers: std::sync::RwLock<Vec<Observer>>,
}

/// Called with a function's name after a commit to it.
type Observer = Box<dyn Fn(&str) + Send + Sync>;

impl Observed {
    pub fn new(inner: impl MetadataStore) -> Self {
        Self {
            inner: Box::new(inner),
            observers: Default::default(),
        }
    }

    /// Calls `observer` with the function's name after each successful commit to it.
    pub fn observe(&self, observer: impl Fn(&str) + Send + Sync + 'static) {
        self.observers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(observer));
    }
}

#[async_trait]
impl MetadataStore for Observed {
    async fn function(&self, name: &str) -> Result<Option<(Function, u64)>> {
        self.inner.function(name).await
    }
    async fn version(&self, function: &str, version: &str) -> Result<Option<Version>> {
        self.inner.version(function, version).await
    }
    async fn versions(&self, function: &str) -> Result<Vec<Version>> {
        self.inner.versions(function).await
    }
    async fn versions_page(
        &self,
        after: Option<&VersionCursor>,
        latest_only: bool,
        limit: usize,
    ) -> Result<Vec<Version>> {
        self.inner.versions_page(after, latest_only, limit).await
    }
    async fn alias(&self, function: &str, name: &str) -> Result<Option<Alias>> {
        self.inner.alias(function, name).await
    }
    async fn aliases(&self, function: &str) -> Result<Vec<Alias>> {
        self.inner.aliases(function).await
    }
    async fn policy(&self, function: &str, qualifier: &str) -> Result<Option<Policy>> {
        self.inner.policy(function, qualifier).await
    }
    async fn provisioned(&self, function: &str) -> Result<Vec<ProvisionedConfig>> {
        self.inner.provisioned(function).await
    }
    async fn allocations(&self) -> Result<Vec<Allocation>> {
        self.inner.allocations().await
    }
    async fn url(&self, function: &str, qualifier: Option<&str>) -> Result<Option<UrlConfig>> {
        self.inner.url(function, qualifier).await
    }
    async fn urls(&self, function: &str) -> Result<Vec<UrlConfig>> {
        self.inner.urls(function).await
    }
    async fn url_by_id(&self, url_id: &str) -> Result<Option<(String, UrlConfig)>> {
        self.inner.url_by_id(url_id).await
    }
    async fn event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<EventInvokeConfig>> {
        self.inner.event_invoke_config(function, qualifier).await
    }
    async fn event_invoke_configs(&self, function: &str) -> Result<Vec<EventInvokeConfig>> {
        self.inner.event_invoke_configs(function).await
    }
    async fn commit(&self, function: &str, expect: Expect, changes: Vec<Change>) -> Result<()> {
        self.inner.commit(function, expect, changes).await?;
        for observer in self
            .observers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            observer(function);
        }
        Ok(())
    }
    async fn usage(&self) -> Result<Usage> {
        self.inner.usage().await
    }
    async fn code_in_use(&self) -> Result<BTreeSet<String>> {
        self.inner.code_in_use().await
    }
}

/// `$LATEST` sorts first; published versions by number.
pub fn version_seq(version: &str) -> u64 {
    version.parse().unwrap_or(0)
}
