//! The concurrency gate every invocation passes: the account's unreserved pool, each function's
//! reservation, and the scaling rate. Counters are atomics: the warm path takes no lock here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lamina_core::ThrottleReason;
use lamina_core::concurrency::{Allocation, ConcurrencyLimits, ScalingRate, unreserved_capacity};

/// What the invoker keeps of one function across its versions, for as long as it exists.
pub(crate) struct FunctionState {
    pub name: String,
    /// The reservation; negative when there is none.
    reserved: AtomicI64,
    /// Invocations running now, provisioned or on demand.
    in_use: AtomicU32,
    /// Of those, the ones on demand.
    on_demand: AtomicU32,
    /// Provisioned concurrency configured over all its versions and aliases.
    provisioned: AtomicU32,
    pub invocations: AtomicU64,
    pub throttles: AtomicU64,
    pub cold_starts: AtomicU64,
    /// Execution environments alive (busy or idle, on demand or provisioned).
    pub instances: AtomicU32,
    scaling: Mutex<ScalingRate>,
    /// Held while the invoker brings its state in line with the store, so that reconciliations
    /// of one function never interleave.
    pub reconciling: tokio::sync::Mutex<()>,
}

impl FunctionState {
    pub fn new(name: &str, scale_per_10s: u32) -> Self {
        Self {
            name: name.to_owned(),
            reserved: AtomicI64::new(-1),
            in_use: AtomicU32::new(0),
            on_demand: AtomicU32::new(0),
            provisioned: AtomicU32::new(0),
            invocations: AtomicU64::new(0),
            throttles: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            instances: AtomicU32::new(0),
            scaling: Mutex::new(ScalingRate::new(scale_per_10s, Instant::now())),
            reconciling: tokio::sync::Mutex::new(()),
        }
    }

    pub fn reserved(&self) -> Option<u32> {
        u32::try_from(self.reserved.load(Ordering::Relaxed)).ok()
    }

    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Takes one new execution environment's worth of the scaling rate.
    pub fn may_scale_out(&self) -> bool {
        self.scaling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(Instant::now())
    }
}

/// The account's side of the gate.
pub(crate) struct Gate {
    limits: ConcurrencyLimits,
    /// What on-demand invocations of unreserved functions may use; recomputed whenever an
    /// allocation changes.
    unreserved_capacity: AtomicU32,
    unreserved_in_use: AtomicU32,
    in_use: AtomicU32,
    throttles: AtomicU64,
    allocations: Mutex<BTreeMap<String, Allocation>>,
    /// Wakes admissions waiting for a place ([`Waiting`]) when one may have freed.
    pub freed: tokio::sync::Notify,
    /// Admissions waiting now: a released permit wakes them only when there are some, so the
    /// warm path touches no lock.
    waiters: AtomicU32,
}

impl Gate {
    pub fn new(limits: ConcurrencyLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            unreserved_capacity: AtomicU32::new(limits.account),
            unreserved_in_use: AtomicU32::new(0),
            in_use: AtomicU32::new(0),
            throttles: AtomicU64::new(0),
            allocations: Mutex::default(),
            freed: tokio::sync::Notify::new(),
            waiters: AtomicU32::new(0),
        })
    }

    /// Records what `function` holds (from the store) and recomputes the unreserved pool.
    pub fn set_allocation(
        &self,
        function: &FunctionState,
        reserved: Option<u32>,
        provisioned: u32,
    ) {
        function
            .reserved
            .store(reserved.map_or(-1, i64::from), Ordering::Relaxed);
        function.provisioned.store(provisioned, Ordering::Relaxed);
        let mut allocations = self.allocations.lock().unwrap_or_else(|p| p.into_inner());
        if reserved.is_none() && provisioned == 0 {
            allocations.remove(&function.name);
        } else {
            allocations.insert(
                function.name.clone(),
                Allocation {
                    function: function.name.clone(),
                    reserved,
                    provisioned,
                },
            );
        }
        let all: Vec<Allocation> = allocations.values().cloned().collect();
        self.unreserved_capacity
            .store(unreserved_capacity(self.limits, &all), Ordering::Relaxed);
        drop(allocations);
        // Capacity may have grown.
        self.freed.notify_waiters();
    }

    /// Admits one invocation of `function`, or says why it is throttled; the caller counts
    /// the throttle ([`throttled`](Self::throttled)) unless it waits and tries again.
    /// `provisioned`: it runs on a provisioned instance, which the unreserved pool does not
    /// pay for.
    pub fn try_admit(
        self: &Arc<Self>,
        function: &Arc<FunctionState>,
        provisioned: bool,
    ) -> Result<Permit, ThrottleReason> {
        let reserved_limit = ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded;
        let unreserved = match function.reserved() {
            Some(reserved) if provisioned => {
                if !increment_below(&function.in_use, reserved) {
                    return Err(reserved_limit);
                }
                false
            }
            Some(reserved) => {
                // The reservation pays for the function's provisioned concurrency first; on
                // demand it has what is left (reserved 1 with 1 provisioned: nothing).
                let left = reserved.saturating_sub(function.provisioned.load(Ordering::Relaxed));
                if !increment_below(&function.on_demand, left) {
                    return Err(reserved_limit);
                }
                if !increment_below(&function.in_use, reserved) {
                    function.on_demand.fetch_sub(1, Ordering::Relaxed);
                    return Err(reserved_limit);
                }
                false
            }
            None if provisioned => {
                function.in_use.fetch_add(1, Ordering::Relaxed);
                false
            }
            None => {
                let capacity = self.unreserved_capacity.load(Ordering::Relaxed);
                if !increment_below(&self.unreserved_in_use, capacity) {
                    return Err(ThrottleReason::ConcurrentInvocationLimitExceeded);
                }
                function.in_use.fetch_add(1, Ordering::Relaxed);
                function.on_demand.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        self.in_use.fetch_add(1, Ordering::Relaxed);
        function.invocations.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            gate: self.clone(),
            function: function.clone(),
            unreserved,
            on_demand: !provisioned,
        })
    }

    /// Counts a throttle of `function` and returns its reason.
    pub fn throttled(&self, function: &FunctionState, reason: ThrottleReason) -> ThrottleReason {
        self.throttles.fetch_add(1, Ordering::Relaxed);
        function.throttles.fetch_add(1, Ordering::Relaxed);
        reason
    }

    /// The reason to give when a function cannot scale out as fast as it is asked to.
    pub fn scaling_reason(function: &FunctionState) -> ThrottleReason {
        if function.reserved().is_some() {
            ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded
        } else {
            ThrottleReason::ConcurrentInvocationLimitExceeded
        }
    }

    /// Registers an admission that waits for a place: from now until the guard drops, every
    /// released permit wakes [`freed`](Self::freed). Register before the attempt that may
    /// fail, so that no release between the attempt and the wait goes unnoticed.
    pub fn waiting(self: &Arc<Self>) -> Waiting {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `Permit::drop`: either the release sees this waiter, or
        // the attempt that follows sees the release.
        fence(Ordering::SeqCst);
        Waiting(self.clone())
    }

    pub fn limits(&self) -> ConcurrencyLimits {
        self.limits
    }

    pub fn unreserved_capacity(&self) -> u32 {
        self.unreserved_capacity.load(Ordering::Relaxed)
    }

    pub fn unreserved_in_use(&self) -> u32 {
        self.unreserved_in_use.load(Ordering::Relaxed)
    }

    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Relaxed)
    }

    pub fn throttles(&self) -> u64 {
        self.throttles.load(Ordering::Relaxed)
    }

    pub fn provisioned_of(&self, function: &str) -> u32 {
        self.allocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(function)
            .map_or(0, |a| a.provisioned)
    }
}

/// Adds one to `counter` if that keeps it at or below `limit`.
fn increment_below(counter: &AtomicU32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// One admitted invocation; dropping it gives the concurrency back.
pub(crate) struct Permit {
    gate: Arc<Gate>,
    function: Arc<FunctionState>,
    unreserved: bool,
    on_demand: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.function.in_use.fetch_sub(1, Ordering::Relaxed);
        if self.on_demand {
            self.function.on_demand.fetch_sub(1, Ordering::Relaxed);
        }
        self.gate.in_use.fetch_sub(1, Ordering::Relaxed);
        if self.unreserved {
            self.gate.unreserved_in_use.fetch_sub(1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        if self.gate.waiters.load(Ordering::SeqCst) > 0 {
            self.gate.freed.notify_waiters();
        }
    }
}

/// An admission waiting for a place; see [`Gate::waiting`].
pub(crate) struct Waiting(Arc<Gate>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Gate {
        fn admit(
            self: &Arc<Self>,
            function: &Arc<FunctionState>,
            provisioned: bool,
        ) -> Result<Permit, ThrottleReason> {
            self.try_admit(function, provisioned)
                .map_err(|reason| self.throttled(function, reason))
        }
    }

    fn gate(account: u32) -> Arc<Gate> {
        Gate::new(ConcurrencyLimits {
            account,
            min_unreserved: 0,
        })
    }

    #[test]
    fn reserved_zero_throttles_every_invocation() {
        let gate = gate(10);
        let f = Arc::new(FunctionState::new("f", 1000));
        gate.set_allocation(&f, Some(0), 0);
        assert_eq!(
            gate.admit(&f, false).err(),
            Some(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded)
        );
        assert_eq!(gate.admit(&f, true).err(), gate.admit(&f, false).err());
        assert_eq!(f.throttles.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn reservation_caps_the_function_and_leaves_the_rest_to_others() {
        let gate = gate(4);
        let (f, g) = (
            Arc::new(FunctionState::new("f", 1000)),
            Arc::new(FunctionState::new("g", 1000)),
        );
        gate.set_allocation(&f, Some(2), 0);
        let held: Vec<_> = (0..2).map(|_| gate.admit(&f, false).unwrap()).collect();
        assert!(gate.admit(&f, false).is_err());
        let others: Vec<_> = (0..2).map(|_| gate.admit(&g, false).unwrap()).collect();
        assert_eq!(
            gate.admit(&g, false).err(),
            Some(ThrottleReason::ConcurrentInvocationLimitExceeded)
        );
        drop(held);
        assert!(gate.admit(&f, false).is_ok());
        assert_eq!((gate.in_use(), gate.unreserved_in_use()), (2, 2));
        drop(others);
        assert_eq!((gate.in_use(), gate.unreserved_in_use()), (0, 0));
    }

    #[test]
    fn provisioned_invocations_do_not_draw_on_the_unreserved_pool() {
        let gate = gate(3);
        let f = Arc::new(FunctionState::new("f", 1000));
        gate.set_allocation(&f, None, 2);
        assert_eq!(gate.unreserved_capacity(), 1);
        let provisioned: Vec<_> = (0..2).map(|_| gate.admit(&f, true).unwrap()).collect();
        let spilled = gate.admit(&f, false).unwrap();
        assert!(gate.admit(&f, false).is_err());
        assert_eq!(f.in_use(), 3);
        drop((provisioned, spilled));
        gate.set_allocation(&f, None, 0);
        assert_eq!(gate.unreserved_capacity(), 3);
    }

    #[tokio::test]
    async fn a_released_permit_wakes_a_waiting_admission() {
        let gate = gate(10);
        let f = Arc::new(FunctionState::new("f", 1000));
        gate.set_allocation(&f, Some(1), 0);
        let held = gate.try_admit(&f, false).unwrap();
        let waiter = {
            let (gate, f) = (gate.clone(), f.clone());
            tokio::spawn(async move {
                let _waiting = gate.waiting();
                loop {
                    let freed = gate.freed.notified();
                    tokio::pin!(freed);
                    freed.as_mut().enable();
                    if let Ok(permit) = gate.try_admit(&f, false) {
                        return permit;
                    }
                    freed.await;
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no place is free yet");
        drop(held);
        let permit = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("the release woke the waiter")
            .unwrap();
        assert_eq!(f.in_use(), 1);
        drop(permit);
        assert_eq!(gate.throttles(), 0, "waiting is not throttling");
    }

    #[test]
    fn a_reservation_pays_for_provisioned_concurrency_first() {
        let gate = gate(10);
        let f = Arc::new(FunctionState::new("f", 1000));
        gate.set_allocation(&f, Some(2), 1);
        let on_demand = gate.admit(&f, false).unwrap();
        assert!(gate.admit(&f, false).is_err(), "one of two is provisioned");
        let provisioned = gate.admit(&f, true).unwrap();
        assert!(gate.admit(&f, true).is_err());
        drop((on_demand, provisioned));
        gate.set_allocation(&f, Some(1), 1);
        assert_eq!(
            gate.admit(&f, false).err(),
            Some(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded),
            "reserved 1 with 1 provisioned leaves nothing on demand"
        );
        assert!(gate.admit(&f, true).is_ok());
    }
}
