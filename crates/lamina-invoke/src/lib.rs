//! The invoker every trigger calls: resolves a function and qualifier to a version (an alias's
//! weighted routing included), admits the invocation through the concurrency gate (account
//! limit, reserved concurrency, scaling rate), takes a provisioned instance, an idle one, or
//! starts one within the memory budget, runs the invocation, writes the platform's log lines,
//! and turns the outcome into what Lambda returns.
//!
//! Architecture invariant: knows nothing of HTTP framing. The warm path reads no store (resolved
//! versions are cached and dropped when the store reports a commit to the function), touches no
//! disk, and holds no lock across functions but read locks on the route and pool maps; the
//! store is read again only to reconcile after a commit, off the invocation path.
#![forbid(unsafe_code)]

pub mod asynchronous;
mod gate;
pub mod keep_alive;
mod outcome;
mod pool;
mod provisioned;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use lamina_core::arn::{Account, LATEST};
use lamina_core::concurrency::ConcurrencyLimits;
use lamina_core::function::Version;
use lamina_core::invoke::{
    Admission, FunctionMetrics, Invoke, InvokeRequest, InvokeResponse, Metrics, ProvisionedStatus,
    ResponsePart,
};
use lamina_core::session::SessionKey;
use lamina_core::{Error, Result, ThrottleReason};
use lamina_runtime::{Host, InitType, Instance, InstanceConfig, Invocation, Outcome};
use lamina_store::{CodeStore, MetadataStore};
use tokio::sync::Semaphore;

use gate::{FunctionState, Gate, Permit};
use keep_alive::KeepAlivePolicy;
use pool::{MemoryBudget, Pool, PoolKey};
use provisioned::ProvisionedSet;

pub use lamina_runtime::logs::TAIL_BYTES;
pub use pool::FREEZE_AFTER;

/// How the invoker scales.
pub struct Settings {
    pub limits: ConcurrencyLimits,
    /// New execution environments a function may gain per 10 seconds (Lambda: 1,000).
    pub scale_out_per_10s: u32,
    /// Memory that execution environments may be promised in all, in MB.
    pub memory_budget_mb: u64,
    pub keep_alive: Arc<dyn KeepAlivePolicy>,
    /// Temporary credentials for each execution environment's role, when the server issues
    /// them.
    pub credentials: Option<RoleCredentials>,
}

/// How execution environments get their role's temporary credentials.
pub struct RoleCredentials {
    pub key: SessionKey,
    /// How long a set stays valid from the start of its environment.
    pub lifetime: Duration,
}

/// A resolved qualifier: the primary version and, for a weighted alias, the other one.
#[derive(Clone)]
struct Route {
    function: Arc<FunctionState>,
    primary: Arc<Version>,
    additional: Option<(Arc<Version>, f64)>,
}

/// A qualifier's route, resolved once.
type RouteCell = tokio::sync::OnceCell<Route>;

/// Where an instance running an invocation goes back to.
enum Home {
    Pool(Arc<Pool>),
    Provisioned(Arc<ProvisionedSet>),
}

/// Provisioned instances initialise at most this many at a time, so a large configuration
/// does not starve invocations of CPU.
const PARALLEL_PROVISIONING: usize = 4;

pub struct Invoker {
    this: Weak<Invoker>,
    store: Arc<dyn MetadataStore>,
    code: CodeStore,
    host: Arc<Host>,
    account: Account,
    settings: Settings,
    gate: Arc<Gate>,
    budget: MemoryBudget,
    functions: RwLock<HashMap<String, Arc<FunctionState>>>,
    /// Resolved qualifiers. A cell is filled once by whoever misses first; the invocations
    /// arriving meanwhile (a burst at a new function) wait for that one load instead of all
    /// reading the store.
    routes: RwLock<HashMap<(String, String), Arc<RouteCell>>>,
    pools: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    provisioned: RwLock<HashMap<(String, String), Arc<ProvisionedSet>>>,
    provisioning: Arc<Semaphore>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn store_error(err: lamina_store::StoreError) -> Error {
    Error::service(err.to_string())
}

impl Invoker {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        code: CodeStore,
        host: Arc<Host>,
        account: Account,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            store,
            code,
            host,
            account,
            gate: Gate::new(settings.limits),
            budget: MemoryBudget::new(settings.memory_budget_mb),
            settings,
            functions: RwLock::default(),
            routes: RwLock::default(),
            pools: RwLock::default(),
            provisioned: RwLock::default(),
            provisioning: Arc::new(Semaphore::new(PARALLEL_PROVISIONING)),
        })
    }

    /// Takes up what the store holds at start: every reservation, and the provisioned
    /// concurrency to allocate.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let allocations = self.store.allocations().await.map_err(store_error)?;
        for allocation in &allocations {
            let function = self.function_state(&allocation.function);
            self.gate
                .set_allocation(&function, allocation.reserved, allocation.provisioned);
        }
        for allocation in allocations.into_iter().filter(|a| a.provisioned > 0) {
            self.reconcile(&allocation.function).await;
        }
        Ok(())
    }

    fn function_state(&self, name: &str) -> Arc<FunctionState> {
        if let Some(state) = read(&self.functions).get(name) {
            return state.clone();
        }
        write(&self.functions)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(FunctionState::new(name, self.settings.scale_out_per_10s)))
            .clone()
    }

    /// Called after every commit to `function`: forgets its resolved qualifiers at once, so the
    /// next invocation runs what was committed, then brings pools, reservations and provisioned
    /// concurrency in line with the store in the background.
    pub fn function_changed(self: &Arc<Self>, function: &str) {
        write(&self.routes).retain(|(f, _), _| f != function);
        let invoker = self.clone();
        let function = function.to_owned();
        tokio::spawn(async move { invoker.reconcile(&function).await });
    }

    /// Brings what the invoker holds of `function` in line with the store: its reservation,
    /// pools of versions that no longer exist (or changed), and its provisioned concurrency.
    async fn reconcile(self: &Arc<Self>, name: &str) {
        let function = self.function_state(name);
        let _serialised = function.reconciling.lock().await;
        let record = match self.store.function(name).await {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(%err, function = name, "reconciling a function");
                return;
            }
        };
        let Some((record, _)) = record else {
            self.gate.set_allocation(&function, None, 0);
            self.retire_pools(|key| key.function == name);
            self.retire_provisioned(|key| key.0 == name);
            self.settings.keep_alive.forget(name);
            write(&self.functions).remove(name);
            return;
        };
        let (versions, configs) = match (
            self.store.versions(name).await,
            self.store.provisioned(name).await,
        ) {
            (Ok(versions), Ok(configs)) => (versions, configs),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(%err, function = name, "reconciling a function");
                return;
            }
        };
        let current: HashSet<PoolKey> = versions.iter().map(PoolKey::of).collect();
        self.retire_pools(|key| key.function == name && !current.contains(key));
        let provisioned_total = configs.iter().map(|c| c.requested).sum();
        self.gate
            .set_allocation(&function, record.reserved_concurrency, provisioned_total);

        let mut wanted = HashSet::new();
        for config in configs {
            let version = match self.resolve_version(name, &config.qualifier).await {
                Ok(Some(version)) => version,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(%err, function = name, "reconciling provisioned concurrency");
                    continue;
                }
            };
            let key = (name.to_owned(), config.qualifier.clone());
            wanted.insert(key.clone());
            let existing = read(&self.provisioned).get(&key).cloned();
            let set = match existing {
                Some(set)
                    if PoolKey::of(&set.version) == PoolKey::of(&version) && !set.failed() =>
                {
                    set.set_requested(config.requested);
                    for instance in set.surplus() {
                        self.retire(&function, instance);
                    }
                    set
                }
                _ => {
                    let set = ProvisionedSet::new(
                        function.clone(),
                        &config.qualifier,
                        Arc::new(version),
                        config.requested,
                    );
                    if let Some(old) = write(&self.provisioned).insert(key, set.clone()) {
                        for instance in old.retire() {
                            self.retire(&function, instance);
                        }
                    }
                    set
                }
            };
            self.fill(&set);
        }
        self.retire_provisioned(|key| key.0 == name && !wanted.contains(key));
    }

    /// The version a version number or alias names now (an alias's primary version).
    async fn resolve_version(&self, function: &str, qualifier: &str) -> Result<Option<Version>> {
        let number = if qualifier.bytes().all(|b| b.is_ascii_digit()) {
            qualifier.to_owned()
        } else {
            match self.store.alias(function, qualifier).await {
                Ok(Some(alias)) => alias.function_version,
                Ok(None) => return Ok(None),
                Err(err) => return Err(store_error(err)),
            }
        };
        self.store
            .version(function, &number)
            .await
            .map_err(store_error)
    }

    fn retire_pools(&self, which: impl Fn(&PoolKey) -> bool) {
        let retired: Vec<Arc<Pool>> = {
            let mut pools = write(&self.pools);
            let keys: Vec<PoolKey> = pools.keys().filter(|k| which(k)).cloned().collect();
            keys.iter().filter_map(|k| pools.remove(k)).collect()
        };
        for pool in retired {
            for instance in pool.idle.drain() {
                self.retire(&pool.function, instance);
            }
        }
    }

    fn retire_provisioned(&self, which: impl Fn(&(String, String)) -> bool) {
        let retired: Vec<Arc<ProvisionedSet>> = {
            let mut sets = write(&self.provisioned);
            let keys: Vec<_> = sets.keys().filter(|k| which(k)).cloned().collect();
            keys.iter().filter_map(|k| sets.remove(k)).collect()
        };
        for set in retired {
            for instance in set.retire() {
                self.retire(&set.function, instance);
            }
        }
    }

    /// Destroys an instance in the background and gives its memory back.
    fn retire(&self, function: &FunctionState, instance: Instance) {
        function.instances.fetch_sub(1, Ordering::Relaxed);
        let memory = u64::from(instance.memory_mb);
        self.budget.releasing(memory);
        let invoker = self.this.clone();
        tokio::spawn(async move {
            instance.destroy().await;
            if let Some(invoker) = invoker.upgrade() {
                invoker.budget.released(memory);
            }
        });
    }

    /// Starts the instances `set` still lacks, in the background.
    fn fill(self: &Arc<Self>, set: &Arc<ProvisionedSet>) {
        for _ in 0..set.wanted() {
            set.starting();
            let (invoker, set) = (self.clone(), set.clone());
            tokio::spawn(async move { invoker.provision_one(&set).await });
        }
    }

    async fn provision_one(&self, set: &Arc<ProvisionedSet>) {
        let Ok(_turn) = self.provisioning.clone().acquire_owned().await else {
            return;
        };
        if set.is_retired() {
            set.init_failed("the configuration was replaced".into());
            return;
        }
        let memory = u64::from(set.version.memory_size);
        if !self.reserve_memory(memory).await {
            set.init_failed(format!(
                "INSUFFICIENT_MEMORY: the host's memory budget ({} MB) has no room for another \
                 {memory} MB execution environment",
                self.budget.limit_mb()
            ));
            return;
        }
        let config = self.instance_config(&set.version, InitType::Provisioned);
        let instance = match Instance::start(&self.host, &config).await {
            Ok(instance) => instance,
            Err(err) => {
                self.budget.release(memory);
                set.init_failed(format!("FUNCTION_ERROR_INIT_FAILURE: {err}"));
                return;
            }
        };
        set.function.instances.fetch_add(1, Ordering::Relaxed);
        match instance.initialise().await {
            Ok(took) => {
                tracing::debug!(
                    function = %set.function.name,
                    qualifier = %set.qualifier,
                    init_ms = took.as_secs_f64() * 1000.0,
                    "provisioned an execution environment"
                );
                if let Some(instance) = set.initialised(instance) {
                    self.retire(&set.function, instance);
                }
            }
            Err(outcome) => {
                instance.flush_output();
                set.init_failed(provisioned::failure_reason(&outcome));
                self.retire(&set.function, instance);
            }
        }
    }

    /// Reserves `mb` of the memory budget, evicting idle on-demand instances (longest idle
    /// first, any function) while that makes room. Fails when nothing is idle and nothing is
    /// on its way back.
    async fn reserve_memory(&self, mb: u64) -> bool {
        loop {
            if self.budget.try_reserve(mb) {
                return true;
            }
            if self.budget.releasing_mb() == 0 && !self.evict_one() {
                return false;
            }
            // An instance is being destroyed; its memory comes back within milliseconds.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Destroys the on-demand instance idle the longest; false when none is idle.
    fn evict_one(&self) -> bool {
        let oldest = read(&self.pools)
            .values()
            .filter_map(|pool| pool.idle.oldest().map(|since| (since, pool.clone())))
            .min_by_key(|(since, _)| *since)
            .map(|(_, pool)| pool);
        let Some(pool) = oldest else { return false };
        match pool.idle.take_oldest() {
            Some(instance) => {
                tracing::debug!(instance = %instance.id, "evicting an idle instance for memory");
                self.retire(&pool.function, instance);
                true
            }
            None => true,
        }
    }

    /// Freezes instances that have been idle for [`FREEZE_AFTER`]. Run every few milliseconds.
    pub fn freeze_idle(&self) {
        let now = Instant::now();
        for pool in read(&self.pools).values() {
            pool.idle.freeze_settled(now);
        }
        for set in read(&self.provisioned).values() {
            set.idle.freeze_settled(now);
        }
    }

    /// Destroys on-demand instances idle for longer than their function's keep-alive. Run
    /// periodically. Provisioned instances are kept for as long as their configuration.
    pub fn reap_idle(&self) {
        let now = Instant::now();
        let pools: Vec<Arc<Pool>> = read(&self.pools).values().cloned().collect();
        for pool in pools {
            let keep_alive = self.settings.keep_alive.keep_alive(&pool.function.name);
            for instance in pool.idle.expired(now, keep_alive) {
                tracing::debug!(instance = %instance.id, "reaping an idle instance");
                self.retire(&pool.function, instance);
            }
        }
    }

    /// Destroys every idle instance (shutdown). Busy ones are destroyed when they finish.
    pub async fn shutdown(&self) {
        let pools: Vec<Arc<Pool>> = write(&self.pools).drain().map(|(_, p)| p).collect();
        let sets: Vec<Arc<ProvisionedSet>> =
            write(&self.provisioned).drain().map(|(_, s)| s).collect();
        let idle = pools
            .iter()
            .flat_map(|pool| pool.idle.drain())
            .chain(sets.iter().flat_map(|set| set.retire()));
        let destroying: Vec<_> = idle.map(|instance| instance.destroy()).collect();
        for destroy in destroying {
            destroy.await;
        }
        let host = self.host.clone();
        let _ = tokio::task::spawn_blocking(move || host.sandboxes.clear()).await;
        self.host.logs.flush();
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
            Err(err) => Err(store_error(err)),
        }
    }

    async fn route(&self, function: &str, qualifier: Option<&str>) -> Result<Route> {
        let key = (function.to_owned(), qualifier.unwrap_or(LATEST).to_owned());
        if let Some(route) = read(&self.routes).get(&key).and_then(|cell| cell.get()) {
            return Ok(route.clone());
        }
        let cell = write(&self.routes).entry(key).or_default().clone();
        cell.get_or_try_init(|| self.load_route(function, qualifier))
            .await
            .cloned()
    }

    /// Reads what `function:qualifier` resolves to from the store.
    async fn load_route(&self, function: &str, qualifier: Option<&str>) -> Result<Route> {
        let record = match self.store.function(function).await {
            Ok(Some((record, _))) => record,
            Ok(None) => return Err(self.not_found(function, qualifier)),
            Err(err) => return Err(store_error(err)),
        };
        let state = self.function_state(function);
        self.gate.set_allocation(
            &state,
            record.reserved_concurrency,
            self.gate.provisioned_of(function),
        );
        let (primary, additional) = match qualifier {
            None | Some(LATEST) => (self.load_version(function, LATEST, qualifier).await?, None),
            Some(q) if q.bytes().all(|b| b.is_ascii_digit()) => {
                (self.load_version(function, q, qualifier).await?, None)
            }
            Some(alias) => {
                let alias = match self.store.alias(function, alias).await {
                    Ok(Some(a)) => a,
                    Ok(None) => return Err(self.not_found(function, qualifier)),
                    Err(err) => return Err(store_error(err)),
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
                (primary, additional)
            }
        };
        Ok(Route {
            function: state,
            primary,
            additional,
        })
    }

    fn pool(&self, version: &Arc<Version>, function: &Arc<FunctionState>) -> Arc<Pool> {
        let key = PoolKey::of(version);
        if let Some(pool) = read(&self.pools).get(&key) {
            return pool.clone();
        }
        write(&self.pools)
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Pool {
                    version: version.clone(),
                    function: function.clone(),
                    idle: Default::default(),
                })
            })
            .clone()
    }

    fn is_current(&self, pool: &Arc<Pool>) -> bool {
        read(&self.pools)
            .get(&PoolKey::of(&pool.version))
            .is_some_and(|current| Arc::ptr_eq(current, pool))
    }

    /// A free provisioned instance for an invocation of `qualifier` routed to `version`, and
    /// its set: from the qualifier's own set first, else from any other of the function's
    /// whose version that is — provisioned concurrency belongs to the version, so invoking
    /// version 1 directly uses what an alias of version 1 provisioned, as on Lambda. Lost
    /// instances found on the way are replaced, and ones whose credentials are expiring too.
    fn idle_provisioned(
        self: &Arc<Self>,
        function: &Arc<FunctionState>,
        qualifier: &str,
        version: &Version,
    ) -> Option<(Instance, Arc<ProvisionedSet>)> {
        let key = PoolKey::of(version);
        let take = |set: &Arc<ProvisionedSet>| -> Option<Instance> {
            let (instance, dead) = set.idle.take();
            for instance in dead {
                if let Some(instance) = set.put(instance, false) {
                    self.retire(function, instance);
                }
                self.fill(set);
            }
            let instance = instance?;
            if self.credentials_expiring(&instance) {
                if let Some(instance) = set.put(instance, false) {
                    self.retire(function, instance);
                }
                self.fill(set);
                return None;
            }
            Some(instance)
        };
        let own = (function.name.clone(), qualifier.to_owned());
        // The sets are cloned out of the map's lock: taking may retire and refill.
        let mine = {
            let sets = read(&self.provisioned);
            if sets.is_empty() {
                return None;
            }
            sets.get(&own)
                .filter(|set| PoolKey::of(&set.version) == key)
                .cloned()
        };
        if let Some(set) = mine
            && let Some(instance) = take(&set)
        {
            return Some((instance, set));
        }
        let others: Vec<Arc<ProvisionedSet>> = read(&self.provisioned)
            .iter()
            .filter(|(k, set)| {
                k.0 == function.name && **k != own && PoolKey::of(&set.version) == key
            })
            .map(|(_, set)| set.clone())
            .collect();
        others
            .into_iter()
            .find_map(|set| take(&set).map(|instance| (instance, set)))
    }

    /// Whether `instance`'s role credentials expire within a tenth of their lifetime (at most
    /// five minutes): it is replaced rather than reused, so a function never runs with
    /// credentials that run out under it.
    fn credentials_expiring(&self, instance: &Instance) -> bool {
        self.settings.credentials.as_ref().is_some_and(|issuer| {
            let margin = (issuer.lifetime / 10).min(Duration::from_secs(300));
            instance.age() + margin >= issuer.lifetime
        })
    }

    /// Fresh temporary credentials of `version`'s role for a new execution environment, as
    /// the variables the SDKs read (none when the server issues none).
    fn role_credentials(&self, version: &Version) -> Vec<(String, String)> {
        let Some(issuer) = &self.settings.credentials else {
            return Vec::new();
        };
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let lifetime_s = i64::try_from(issuer.lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        let issued = issuer.key.issue(
            &version.role,
            &version.function_name,
            now_s,
            lifetime_s,
            *uuid::Uuid::new_v4().as_bytes(),
        );
        vec![
            ("AWS_ACCESS_KEY_ID".into(), issued.access_key_id),
            ("AWS_SECRET_ACCESS_KEY".into(), issued.secret_access_key),
            ("AWS_SESSION_TOKEN".into(), issued.session_token),
        ]
    }

    fn instance_config(&self, version: &Version, init_type: InitType) -> InstanceConfig {
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
                .chain(self.role_credentials(version))
                .collect(),
            code_dir: self.code.unpacked_dir(&version.code.sha256),
            log_group: version.logging.log_group.clone(),
            region: self.account.region.clone(),
            init_type,
        }
    }

    /// An instance for an admitted on-demand invocation: an idle one, or a new one if the
    /// scaling rate and the memory budget allow.
    async fn on_demand(
        &self,
        pool: &Arc<Pool>,
        request: &InvokeRequest,
    ) -> Result<std::result::Result<Instance, InvokeResponse>> {
        loop {
            let (idle, dead) = pool.idle.take();
            for instance in dead {
                self.retire(&pool.function, instance);
            }
            match idle {
                Some(instance) if self.credentials_expiring(&instance) => {
                    self.retire(&pool.function, instance);
                }
                Some(instance) => return Ok(Ok(instance)),
                None => break,
            }
        }
        let function = &pool.function;
        if !function.may_scale_out() {
            let reason = self
                .gate
                .throttled(function, Gate::scaling_reason(function));
            return Err(Error::throttled(reason));
        }
        let memory = u64::from(pool.version.memory_size);
        if !self.reserve_memory(memory).await {
            tracing::warn!(
                function = %function.name,
                budget_mb = self.budget.limit_mb(),
                "no memory for another execution environment; throttling"
            );
            let reason = self
                .gate
                .throttled(function, ThrottleReason::ConcurrentInvocationLimitExceeded);
            return Err(Error::throttled(reason));
        }
        let config = self.instance_config(&pool.version, InitType::OnDemand);
        match Instance::start(&self.host, &config).await {
            Ok(instance) => {
                function.cold_starts.fetch_add(1, Ordering::Relaxed);
                function.instances.fetch_add(1, Ordering::Relaxed);
                Ok(Ok(instance))
            }
            Err(err) => {
                self.budget.release(memory);
                outcome::start_failure(request, &pool.version, err).map(Err)
            }
        }
    }

    /// Where `instance` goes after an invocation that ended with `outcome`.
    fn release(self: &Arc<Self>, home: Home, instance: Instance, outcome: &Outcome) {
        let reusable = matches!(outcome, Outcome::Success(_) | Outcome::FunctionError(_))
            && !self.credentials_expiring(&instance);
        match home {
            Home::Pool(pool) => {
                if reusable && self.is_current(&pool) {
                    pool.idle.put(instance);
                } else {
                    self.retire(&pool.function, instance);
                }
            }
            Home::Provisioned(set) => {
                if let Some(instance) = set.put(instance, reusable) {
                    self.retire(&set.function, instance);
                    // A lost provisioned instance is replaced, as in Lambda.
                    self.fill(&set);
                }
            }
        }
    }

    async fn run(
        &self,
        request: &InvokeRequest,
        version: &Version,
        instance: &Instance,
    ) -> (InvokeResponse, Outcome) {
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
            stream: request.stream.clone(),
        };
        if let Some(stream) = &request.stream {
            let started = ResponsePart::Started {
                executed_version: version.version.clone(),
            };
            let _ = stream.send(started).await;
        }
        let log = &instance.log;
        if request.tail {
            log.begin_capture();
        }
        log.line(&format!(
            "START RequestId: {} Version: {}",
            request.request_id, version.version
        ));
        let (result, timing) = instance.invoke(invocation).await;
        // A runtime that answered in one piece: its answer is the stream's one chunk.
        if let (Some(stream), Outcome::Success(payload)) = (&request.stream, &result)
            && !payload.is_empty()
        {
            let _ = stream.send(ResponsePart::Data(payload.clone())).await;
        }
        instance.flush_output();
        let mut response = outcome::respond(request, version, &result);
        if let Some(line) = outcome::log_line(request, version, &result) {
            log.line(&line);
        }
        log.line(&format!("END RequestId: {}", request.request_id));
        log.line(&outcome::report(&request.request_id, timing, instance));
        if request.tail {
            response.log_tail = Some(log.end_capture());
        }
        (response, result)
    }
}

/// An invocation let through the gate: its version, the permit it holds and, when one was free,
/// a provisioned instance of its qualifier. Dropped unused, it gives both back.
struct Admitted {
    invoker: Weak<Invoker>,
    version: Arc<Version>,
    function: Arc<FunctionState>,
    permit: Option<Permit>,
    provisioned: Option<(Instance, Arc<ProvisionedSet>)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((instance, set)) = self.provisioned.take() {
            match self.invoker.upgrade() {
                Some(invoker) => invoker.give_back(&set, instance),
                // The server is stopping: nothing will take the instance again.
                None => drop(tokio::spawn(instance.destroy())),
            }
        }
    }
}

impl Invoker {
    fn running(&self) -> Result<Arc<Self>> {
        self.this
            .upgrade()
            .ok_or_else(|| Error::service("the server is stopping"))
    }

    /// Returns an unused provisioned instance to its set, or destroys it if the set no longer
    /// wants it (retired, or shrunk meanwhile).
    fn give_back(&self, set: &ProvisionedSet, instance: Instance) {
        if let Some(instance) = set.put(instance, true) {
            self.retire(&set.function, instance);
        }
    }

    /// Lets one invocation of `route` through the gate, with a free provisioned instance of
    /// `qualifier` when there is one; or says why it is throttled (uncounted).
    fn try_admit(
        self: &Arc<Self>,
        route: &Route,
        qualifier: Option<&str>,
    ) -> std::result::Result<Admitted, ThrottleReason> {
        let version = choose(route);
        let function = &route.function;
        let provisioned = qualifier.and_then(|q| self.idle_provisioned(function, q, &version));
        match self.gate.try_admit(function, provisioned.is_some()) {
            Ok(permit) => Ok(Admitted {
                invoker: self.this.clone(),
                version,
                function: function.clone(),
                permit: Some(permit),
                provisioned,
            }),
            Err(reason) => {
                if let Some((instance, set)) = provisioned {
                    self.give_back(&set, instance);
                }
                Err(reason)
            }
        }
    }

    /// Runs an admitted invocation: on its provisioned instance, or an idle or new on-demand
    /// one.
    async fn run_admitted(
        self: &Arc<Self>,
        request: &InvokeRequest,
        mut admitted: Admitted,
    ) -> Result<InvokeResponse> {
        let permit = admitted.permit.take();
        let version = admitted.version.clone();
        let (instance, home) = match admitted.provisioned.take() {
            Some((instance, set)) => (instance, Home::Provisioned(set)),
            None => {
                let pool = self.pool(&version, &admitted.function);
                match self.on_demand(&pool, request).await? {
                    Ok(instance) => (instance, Home::Pool(pool)),
                    Err(response) => return Ok(response),
                }
            }
        };
        let (response, outcome) = self.run(request, &version, &instance).await;
        self.release(home, instance, &outcome);
        drop(permit);
        Ok(response)
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
        let this = self.running()?;
        let route = self
            .route(&request.function, request.qualifier.as_deref())
            .await?;
        self.settings
            .keep_alive
            .invoked(&route.function.name, Instant::now());
        let admitted = this
            .try_admit(&route, request.qualifier.as_deref())
            .map_err(|reason| Error::throttled(self.gate.throttled(&route.function, reason)))?;
        this.run_admitted(&request, admitted).await
    }

    async fn admit(
        &self,
        function: &str,
        qualifier: Option<&str>,
        patience: Duration,
    ) -> Result<Admission> {
        let this = self.running()?;
        let deadline = tokio::time::Instant::now() + patience;
        let _waiting = self.gate.waiting();
        loop {
            let freed = self.gate.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            // Resolved again on every attempt: the function may change while its events wait.
            let route = self.route(function, qualifier).await?;
            let reason = match this.try_admit(&route, qualifier) {
                Ok(admitted) => return Ok(Admission::holding(admitted)),
                Err(reason) => reason,
            };
            let now = tokio::time::Instant::now();
            if route.function.reserved() == Some(0) || now >= deadline {
                return Err(Error::throttled(
                    self.gate.throttled(&route.function, reason),
                ));
            }
            // Woken by a released place; the bound is only a safety net.
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_secs(1)), freed).await;
        }
    }

    async fn invoke_admitted(
        &self,
        request: InvokeRequest,
        admission: Admission,
    ) -> Result<InvokeResponse> {
        let Some(admitted) = admission.into_place::<Admitted>() else {
            return self.invoke(request).await;
        };
        let this = self.running()?;
        self.settings
            .keep_alive
            .invoked(&admitted.function.name, Instant::now());
        this.run_admitted(&request, admitted).await
    }

    fn provisioned(&self, function: &str, qualifier: &str) -> Option<ProvisionedStatus> {
        read(&self.provisioned)
            .get(&(function.to_owned(), qualifier.to_owned()))
            .map(|set| set.status())
    }

    fn metrics(&self) -> Metrics {
        let mut functions: HashMap<String, FunctionMetrics> = read(&self.functions)
            .values()
            .map(|f| {
                (
                    f.name.clone(),
                    FunctionMetrics {
                        function: f.name.clone(),
                        reserved: f.reserved(),
                        in_use: f.in_use(),
                        provisioned_requested: self.gate.provisioned_of(&f.name),
                        provisioned_allocated: 0,
                        invocations: f.invocations.load(Ordering::Relaxed),
                        throttles: f.throttles.load(Ordering::Relaxed),
                        cold_starts: f.cold_starts.load(Ordering::Relaxed),
                        instances: f.instances.load(Ordering::Relaxed),
                    },
                )
            })
            .collect();
        for ((function, _), set) in read(&self.provisioned).iter() {
            if let Some(metrics) = functions.get_mut(function) {
                metrics.provisioned_allocated += set.allocated();
            }
        }
        let mut functions: Vec<FunctionMetrics> = functions.into_values().collect();
        functions.sort_by(|a, b| a.function.cmp(&b.function));
        let limits = self.gate.limits();
        Metrics {
            account_limit: limits.account,
            unreserved_capacity: self.gate.unreserved_capacity(),
            in_use: self.gate.in_use(),
            unreserved_in_use: self.gate.unreserved_in_use(),
            throttles: self.gate.throttles(),
            sandboxes_ready: self.host.sandboxes.ready_count() as u32,
            memory_committed_mb: self.budget.committed_mb(),
            memory_budget_mb: self.budget.limit_mb(),
            functions,
        }
    }
}

/// The response body of a platform-detected failure.
pub(crate) fn platform_error(error_type: &str, message: String) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}
