//! Provisioned concurrency: for a version or alias, execution environments initialised before
//! any invocation (`AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency`), kept for as long
//! as the configuration stands, replaced when one is lost.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use lamina_core::function::Version;
use lamina_core::invoke::{ProvisionedState, ProvisionedStatus};
use lamina_runtime::{Instance, Outcome};

use crate::gate::FunctionState;
use crate::pool::IdleList;

pub(crate) struct ProvisionedSet {
    pub function: Arc<FunctionState>,
    pub qualifier: String,
    /// The version the qualifier resolved to when the set was made.
    pub version: Arc<Version>,
    requested: AtomicU32,
    /// Initialised instances the set owns, busy or idle.
    allocated: AtomicU32,
    /// Instances being initialised for it.
    starting: AtomicU32,
    pub idle: IdleList,
    failure: Mutex<Option<String>>,
    retired: AtomicBool,
}

impl ProvisionedSet {
    pub fn new(
        function: Arc<FunctionState>,
        qualifier: &str,
        version: Arc<Version>,
        requested: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            function,
            qualifier: qualifier.to_owned(),
            version,
            requested: AtomicU32::new(requested),
            allocated: AtomicU32::new(0),
            starting: AtomicU32::new(0),
            idle: IdleList::default(),
            failure: Mutex::default(),
            retired: AtomicBool::new(false),
        })
    }

    pub fn requested(&self) -> u32 {
        self.requested.load(Ordering::Relaxed)
    }

    pub fn set_requested(&self, requested: u32) {
        self.requested.store(requested, Ordering::Relaxed);
    }

    pub fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Stops the set: no more allocations, and instances coming back are not kept. Returns the
    /// idle ones, to be destroyed.
    pub fn retire(&self) -> Vec<Instance> {
        self.retired.store(true, Ordering::Relaxed);
        let idle = self.idle.drain();
        self.allocated
            .fetch_sub(idle.len() as u32, Ordering::Relaxed);
        idle
    }

    /// How many more instances to start now.
    pub fn wanted(&self) -> u32 {
        if self.is_retired() || self.failed() {
            return 0;
        }
        let have = self.allocated.load(Ordering::Relaxed) + self.starting.load(Ordering::Relaxed);
        self.requested().saturating_sub(have)
    }

    pub fn starting(&self) {
        self.starting.fetch_add(1, Ordering::Relaxed);
    }

    /// An instance started for the set finished initialising: the set keeps it, or hands it
    /// back (to be destroyed) when it no longer wants it.
    #[must_use]
    pub fn initialised(&self, instance: Instance) -> Option<Instance> {
        self.starting.fetch_sub(1, Ordering::Relaxed);
        let admitted = self
            .allocated
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |a| {
                (!self.is_retired() && a < self.requested()).then_some(a + 1)
            })
            .is_ok();
        if !admitted {
            return Some(instance);
        }
        // Idle from now on: the freezer tick freezes it, as it does every idle instance (and
        // records that it did, so that taking it thaws it).
        self.idle.put(instance);
        None
    }

    /// An instance started for the set failed to initialise: the allocation has failed, as in
    /// Lambda, until the configuration is put again.
    pub fn init_failed(&self, reason: String) {
        self.starting.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(
            function = %self.function.name,
            qualifier = %self.qualifier,
            %reason,
            "provisioned concurrency allocation failed"
        );
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
    }

    /// An instance comes back from an invocation; the set keeps it, or hands it back to be
    /// destroyed (then it no longer counts as allocated).
    #[must_use]
    pub fn put(&self, instance: Instance, reusable: bool) -> Option<Instance> {
        let keep = reusable
            && !self.is_retired()
            && self.allocated.load(Ordering::Relaxed) <= self.requested();
        if keep {
            self.idle.put(instance);
            None
        } else {
            self.allocated.fetch_sub(1, Ordering::Relaxed);
            Some(instance)
        }
    }

    /// Gives back idle instances beyond what is requested (after the request shrank).
    pub fn surplus(&self) -> Vec<Instance> {
        let mut surplus = Vec::new();
        while self.allocated.load(Ordering::Relaxed) > self.requested() {
            match self.idle.take_oldest() {
                Some(instance) => {
                    self.allocated.fetch_sub(1, Ordering::Relaxed);
                    surplus.push(instance);
                }
                None => break,
            }
        }
        surplus
    }

    pub fn allocated(&self) -> u32 {
        self.allocated.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> ProvisionedStatus {
        let allocated = self.allocated();
        let reason = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let state = if reason.is_some() {
            ProvisionedState::Failed
        } else if allocated >= self.requested() {
            ProvisionedState::Ready
        } else {
            ProvisionedState::InProgress
        };
        ProvisionedStatus {
            requested: self.requested(),
            allocated,
            available: allocated,
            state,
            reason,
        }
    }
}

/// `StatusReason` for an instance that failed to initialise.
pub(crate) fn failure_reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::InitError(body) => {
            let error: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let text = |key: &str| error.get(key).and_then(|v| v.as_str()).unwrap_or("");
            format!(
                "FUNCTION_ERROR_INIT_FAILURE: {}: {}",
                text("errorType"),
                text("errorMessage")
            )
        }
        Outcome::Timeout => {
            "FUNCTION_ERROR_INIT_FAILURE: the function's initialisation timed out".into()
        }
        Outcome::Exited {
            out_of_memory: true,
            ..
        } => "FUNCTION_ERROR_INIT_FAILURE: Runtime.OutOfMemory during initialisation".into(),
        Outcome::Exited { code, .. } => {
            format!("FUNCTION_ERROR_INIT_FAILURE: Runtime exited with error: exit status {code}")
        }
        other => format!("FUNCTION_ERROR_INIT_FAILURE: {other:?}"),
    }
}
