//! The invoker every trigger calls: resolves a function and qualifier to a version (an alias's
//! weighted routing included), takes an idle instance of that version or starts one, runs the
//! invocation, writes the platform's log lines, and turns the outcome into what Lambda returns.
//!
//! Architecture invariant: knows nothing of HTTP framing. The warm path reads no store (resolved
//! versions are cached and dropped when the store reports a commit to the function) and holds no
//! lock across functions but a read lock on the pool map.
#![forbid(unsafe_code)]

mod outcome;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use lamina_core::arn::{Account, LATEST};
use lamina_core::function::Version;
use lamina_core::invoke::{Invoke, InvokeRequest, InvokeResponse};
use lamina_core::{Error, Result};
use lamina_runtime::{Host, Instance, InstanceConfig, Invocation, Outcome};
use lamina_store::{CodeStore, MetadataStore};

/// The instances of one version of one function, at one configuration revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    function: String,
    version: String,
    revision: String,
}

struct Pool {
    version: Arc<Version>,
    idle: Mutex<Vec<(Instance, Instant)>>,
}

/// A resolved qualifier: the primary version and, for a weighted alias, the other one.
#[derive(Clone)]
struct Route {
    primary: Arc<Version>,
    additional: Option<(Arc<Version>, f64)>,
}

pub struct Invoker {
    store: Arc<dyn MetadataStore>,
    code: CodeStore,
    host: Arc<Host>,
    account: Account,
    routes: RwLock<HashMap<(String, String), Route>>,
    pools: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    keep_alive: Duration,
}

impl Invoker {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        code: CodeStore,
        host: Arc<Host>,
        account: Account,
        keep_alive: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            code,
            host,
            account,
            routes: RwLock::default(),
            pools: RwLock::default(),
            keep_alive,
        })
    }

    /// Forgets what is cached of `function` and retires its idle instances: called after every
    /// commit to it, so a changed configuration or code never runs on an old instance.
    pub fn function_changed(self: &Arc<Self>, function: &str) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(f, _), _| f != function);
        let retired: Vec<Arc<Pool>> = {
            let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<PoolKey> = pools
                .keys()
                .filter(|k| k.function == function)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| pools.remove(k)).collect()
        };
        for pool in retired {
            let idle: Vec<_> = pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .collect();
            for (instance, _) in idle {
                tokio::spawn(instance.destroy());
            }
        }
    }

    /// Destroys idle instances unused for longer than the keep-alive. Run periodically.
    pub async fn reap_idle(&self) {
        let pools: Vec<Arc<Pool>> = self
            .pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for pool in pools {
            let expired: Vec<Instance> = {
                let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                let (keep, expired): (Vec<_>, Vec<_>) = idle
                    .drain(..)
                    .partition(|(_, since)| since.elapsed() < self.keep_alive);
                *idle = keep;
                expired.into_iter().map(|(i, _)| i).collect()
            };
            for instance in expired {
                tracing::debug!(instance = %instance.id, "reaping an idle instance");
                instance.destroy().await;
            }
        }
    }

    /// Destroys every idle instance (shutdown). Busy ones are destroyed when they finish.
    pub async fn shutdown(&self) {
        let pools: Vec<Arc<Pool>> = self
            .pools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect();
        for pool in pools {
            let idle: Vec<_> = pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .collect();
            for (instance, _) in idle {
                instance.destroy().await;
            }
        }
    }

    fn not_found(&self, function: &str, qualifier: Option<&str>) -> Error {
        let arn = match qualifier {
            Some(q) => self.account.qualified_arn(function, q),
            None => self.account.function_arn(function),
        };
        Error::not_found(format!("Function not found: {arn}"))
    }

    async fn load_version(
        &self,
        function: &str,
        version: &str,
        named: Option<&str>,
    ) -> Result<Arc<Version>> {
        match self.store.version(function, version).await {
            Ok(Some(v)) => Ok(Arc::new(v)),
            Ok(None) => Err(self.not_found(function, named)),
            Err(err) => Err(Error::service(err.to_string())),
        }
    }

    async fn route(&self, function: &str, qualifier: Option<&str>) -> Result<Route> {
        let key = (function.to_owned(), qualifier.unwrap_or(LATEST).to_owned());
        if let Some(route) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(route.clone());
        }
        let route = match qualifier {
            None | Some(LATEST) => Route {
                primary: self.load_version(function, LATEST, qualifier).await?,
                additional: None,
            },
            Some(q) if q.bytes().all(|b| b.is_ascii_digit()) => Route {
                primary: self.load_version(function, q, qualifier).await?,
                additional: None,
            },
            Some(alias) => {
                let alias = match self.store.alias(function, alias).await {
                    Ok(Some(a)) => a,
                    Ok(None) => return Err(self.not_found(function, qualifier)),
                    Err(err) => return Err(Error::service(err.to_string())),
                };
                let primary = self
                    .load_version(function, &alias.function_version, qualifier)
                    .await?;
                let mut additional = None;
                if let Some((version, weight)) = alias.routing.iter().next() {
                    additional = Some((
                        self.load_version(function, version, qualifier).await?,
                        *weight,
                    ));
                }
                Route {
                    primary,
                    additional,
                }
            }
        };
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, route.clone());
        Ok(route)
    }

    fn pool(&self, version: &Arc<Version>) -> Arc<Pool> {
        let key = PoolKey {
            function: version.function_name.clone(),
            version: version.version.clone(),
            revision: version.revision_id.clone(),
        };
        if let Some(pool) = self
            .pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return pool.clone();
        }
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        pools
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Pool {
                    version: version.clone(),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    fn is_current(&self, pool: &Arc<Pool>) -> bool {
        let key = PoolKey {
            function: pool.version.function_name.clone(),
            version: pool.version.version.clone(),
            revision: pool.version.revision_id.clone(),
        };
        self.pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, pool))
    }

    fn instance_config(&self, version: &Version) -> InstanceConfig {
        InstanceConfig {
            function_name: version.function_name.clone(),
            version: version.version.clone(),
            runtime: version.runtime.clone(),
            handler: version.handler.clone(),
            memory_mb: version.memory_size,
            ephemeral_storage_mb: version.ephemeral_storage,
            environment: version
                .environment
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            code_dir: self.code.unpacked_dir(&version.code.sha256),
            log_group: version.logging.log_group.clone(),
            region: self.account.region.clone(),
        }
    }
}

/// Picks the alias's additional version with its weight's probability.
fn choose(route: &Route) -> Arc<Version> {
    match &route.additional {
        Some((version, weight))
            if uuid::Uuid::new_v4().as_u128() as f64 / u128::MAX as f64 <= *weight =>
        {
            version.clone()
        }
        _ => route.primary.clone(),
    }
}

fn trace_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("Root=1-{now:08x}-{};Sampled=0", &random[..24])
}

#[async_trait]
impl Invoke for Invoker {
    async fn resolve(&self, function: &str, qualifier: Option<&str>) -> Result<String> {
        Ok(choose(&self.route(function, qualifier).await?)
            .version
            .clone())
    }

    async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse> {
        let route = self
            .route(&request.function, request.qualifier.as_deref())
            .await?;
        let version = choose(&route);
        let pool = self.pool(&version);
        let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let instance = match idle {
            Some((instance, _)) if instance.is_alive() => {
                instance.thaw();
                instance
            }
            other => {
                if let Some((dead, _)) = other {
                    tokio::spawn(dead.destroy());
                }
                match Instance::start(&self.host, &self.instance_config(&version)).await {
                    Ok(instance) => instance,
                    Err(err) => return outcome::start_failure(&request, &version, err),
                }
            }
        };
        let invoked_arn = match &request.qualifier {
            Some(q) => self.account.qualified_arn(&request.function, q),
            None => self.account.function_arn(&request.function),
        };
        let invocation = Invocation {
            request_id: request.request_id.clone(),
            payload: request.payload.clone(),
            invoked_arn,
            client_context: request.client_context.clone(),
            trace_id: trace_id(),
            timeout: Duration::from_secs(u64::from(version.timeout)),
        };
        let log = instance.log.clone();
        if request.tail {
            log.begin_capture();
        }
        log.line(&format!(
            "START RequestId: {} Version: {}",
            request.request_id, version.version
        ));
        let started = Instant::now();
        let (result, init) = instance.invoke(invocation).await;
        let duration = started.elapsed().saturating_sub(init.unwrap_or_default());
        instance.flush_output();
        let response = outcome::respond(&request, &version, &result);
        if let Some(line) = outcome::log_line(&request, &version, &result) {
            log.line(&line);
        }
        log.line(&format!("END RequestId: {}", request.request_id));
        log.line(&outcome::report(
            &request.request_id,
            duration,
            init,
            &instance,
        ));
        let reusable = matches!(result, Outcome::Success(_) | Outcome::FunctionError(_));
        if reusable && self.is_current(&pool) {
            instance.freeze();
            pool.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((instance, Instant::now()));
        } else {
            tokio::spawn(instance.destroy());
        }
        let mut response = response;
        if request.tail {
            response.log_tail = Some(log.end_capture());
        }
        Ok(response)
    }
}

pub use lamina_runtime::logs::TAIL_BYTES;

/// The response body of a platform-detected failure.
pub(crate) fn platform_error(error_type: &str, message: String) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}
