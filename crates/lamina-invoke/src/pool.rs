//! Idle execution environments: the on-demand pool of each function version, the lists that
//! provisioned concurrency keeps, and the memory budget every environment is charged to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lamina_core::function::Version;
use lamina_runtime::Instance;

use crate::gate::FunctionState;

/// How long an instance stays idle before it is frozen. Freezing right after each response
/// would put two cgroup writes on every warm invocation; a short grace keeps a busy instance
/// out of the freezer, and an idle one stops using CPU within a few milliseconds.
pub const FREEZE_AFTER: Duration = Duration::from_millis(20);

struct Idle {
    instance: Instance,
    since: Instant,
    frozen: bool,
}

/// Idle instances, most recently used last: taking the newest keeps the older ones idle long
/// enough to expire, so a pool shrinks back when traffic falls.
#[derive(Default)]
pub(crate) struct IdleList(Mutex<Vec<Idle>>);

impl IdleList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used live instance, thawed; and the dead ones met on the way.
    pub fn take(&self) -> (Option<Instance>, Vec<Instance>) {
        let mut dead = Vec::new();
        loop {
            let Some(idle) = self.lock().pop() else {
                return (None, dead);
            };
            if !idle.instance.is_alive() {
                dead.push(idle.instance);
                continue;
            }
            if idle.frozen {
                idle.instance.thaw();
            }
            return (Some(idle.instance), dead);
        }
    }

    pub fn put(&self, instance: Instance) {
        self.lock().push(Idle {
            instance,
            since: Instant::now(),
            frozen: false,
        });
    }

    /// Freezes the instances idle for longer than [`FREEZE_AFTER`].
    pub fn freeze_settled(&self, now: Instant) {
        for idle in self.lock().iter_mut() {
            if !idle.frozen && now.saturating_duration_since(idle.since) >= FREEZE_AFTER {
                idle.instance.freeze();
                idle.frozen = true;
            }
        }
    }

    /// Removes and returns the instances idle for longer than `keep_alive`.
    pub fn expired(&self, now: Instant, keep_alive: Duration) -> Vec<Instance> {
        let mut idle = self.lock();
        let (keep, expired): (Vec<_>, Vec<_>) = idle
            .drain(..)
            .partition(|i| now.saturating_duration_since(i.since) < keep_alive);
        *idle = keep;
        expired.into_iter().map(|i| i.instance).collect()
    }

    /// When the longest-idle instance became idle.
    pub fn oldest(&self) -> Option<Instant> {
        self.lock().first().map(|i| i.since)
    }

    pub fn take_oldest(&self) -> Option<Instance> {
        let mut idle = self.lock();
        (!idle.is_empty()).then(|| idle.remove(0).instance)
    }

    pub fn drain(&self) -> Vec<Instance> {
        self.lock().drain(..).map(|i| i.instance).collect()
    }
}

/// The instances of one version of one function, at one configuration revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub function: String,
    pub version: String,
    pub revision: String,
}

impl PoolKey {
    pub fn of(version: &Version) -> Self {
        Self {
            function: version.function_name.clone(),
            version: version.version.clone(),
            revision: version.revision_id.clone(),
        }
    }
}

/// On-demand instances of one version.
pub(crate) struct Pool {
    pub version: Arc<Version>,
    pub function: Arc<FunctionState>,
    pub idle: IdleList,
}

/// Memory promised to execution environments (their `MemorySize`, the hard limit of their
/// cgroups), against what the host can give. Promises never exceed the budget, so the host is
/// never overcommitted however hard every function uses its memory.
pub(crate) struct MemoryBudget {
    limit_mb: u64,
    committed_mb: AtomicU64,
    /// Memory of instances being destroyed: still committed, about to come back.
    releasing_mb: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit_mb: u64) -> Self {
        Self {
            limit_mb,
            committed_mb: AtomicU64::new(0),
            releasing_mb: AtomicU64::new(0),
        }
    }

    /// An instance holding `mb` is being destroyed.
    pub fn releasing(&self, mb: u64) {
        self.releasing_mb.fetch_add(mb, Ordering::AcqRel);
    }

    /// ... and is gone.
    pub fn released(&self, mb: u64) {
        self.release(mb);
        self.releasing_mb.fetch_sub(mb, Ordering::AcqRel);
    }

    pub fn releasing_mb(&self) -> u64 {
        self.releasing_mb.load(Ordering::Relaxed)
    }

    pub fn try_reserve(&self, mb: u64) -> bool {
        self.committed_mb
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |c| {
                (c + mb <= self.limit_mb).then_some(c + mb)
            })
            .is_ok()
    }

    pub fn release(&self, mb: u64) {
        self.committed_mb.fetch_sub(mb, Ordering::AcqRel);
    }

    pub fn committed_mb(&self) -> u64 {
        self.committed_mb.load(Ordering::Relaxed)
    }

    pub fn limit_mb(&self) -> u64 {
        self.limit_mb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_never_overcommits() {
        let budget = MemoryBudget::new(256);
        assert!(budget.try_reserve(128));
        assert!(budget.try_reserve(128));
        assert!(!budget.try_reserve(1));
        budget.release(128);
        assert!(budget.try_reserve(100));
        assert_eq!(budget.committed_mb(), 228);
    }
}
