//! Concurrency as Lambda accounts for it: an account limit, reserved concurrency that a function
//! owns exclusively, provisioned concurrency held by versions and aliases, and the unreserved pool
//! every other on-demand invocation shares. Pure rules; the invoker enforces them.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A provisioned concurrency configuration of one version or alias, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedConfig {
    /// A version number or an alias name; never `$LATEST`.
    pub qualifier: String,
    pub requested: u32,
    pub last_modified: String,
}

/// The account's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimits {
    /// Concurrent executions across every function (Lambda's default quota: 1,000).
    pub account: u32,
    /// What reservations must leave to functions without one (Lambda keeps 100).
    pub min_unreserved: u32,
}

/// What one function holds of the account's concurrency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub function: String,
    pub reserved: Option<u32>,
    /// Provisioned concurrency requested over all its versions and aliases.
    pub provisioned: u32,
}

impl Allocation {
    /// What this function takes away from the unreserved pool: its reservation, or else its
    /// provisioned concurrency (which a reservation already contains).
    pub fn claimed(&self) -> u64 {
        u64::from(self.reserved.unwrap_or(self.provisioned))
    }
}

/// What on-demand invocations of functions without reserved concurrency share: the account limit
/// minus every reservation and the provisioned concurrency of unreserved functions.
pub fn unreserved_capacity(limits: ConcurrencyLimits, allocations: &[Allocation]) -> u32 {
    let claimed: u64 = allocations.iter().map(Allocation::claimed).sum();
    u64::from(limits.account).saturating_sub(claimed) as u32
}

/// `UnreservedConcurrentExecutions` of GetAccountSettings: the limit minus reservations.
pub fn unreserved_reported(limits: ConcurrencyLimits, allocations: &[Allocation]) -> u32 {
    let reserved: u64 = allocations
        .iter()
        .map(|a| u64::from(a.reserved.unwrap_or(0)))
        .sum();
    u64::from(limits.account).saturating_sub(reserved) as u32
}

/// Checks that `function` claiming `claimed` (in place of what it claims now) leaves the
/// account its minimum unreserved concurrency; `member` names the request's member.
fn leaves_minimum(
    limits: ConcurrencyLimits,
    allocations: &[Allocation],
    function: &str,
    claimed: u64,
    member: &str,
) -> Result<()> {
    let others: u64 = allocations
        .iter()
        .filter(|a| a.function != function)
        .map(Allocation::claimed)
        .sum();
    if i128::from(limits.account) - i128::from(others) - i128::from(claimed)
        < i128::from(limits.min_unreserved)
    {
        return Err(Error::invalid_parameter(format!(
            "Specified {member} for function decreases account's UnreservedConcurrentExecution \
             below its minimum value of [{}].",
            limits.min_unreserved
        )));
    }
    Ok(())
}

/// Checks PutFunctionConcurrency: the account keeps its minimum unreserved, and the reservation
/// holds the function's provisioned concurrency.
pub fn check_reserved(
    limits: ConcurrencyLimits,
    allocations: &[Allocation],
    function: &str,
    reserved: u32,
) -> Result<()> {
    let provisioned = allocations
        .iter()
        .find(|a| a.function == function)
        .map_or(0, |a| a.provisioned);
    if reserved < provisioned {
        return Err(Error::invalid_parameter(format!(
            "Specified ReservedConcurrentExecutions for function is less than the function's \
             provisioned concurrency [{provisioned}]."
        )));
    }
    leaves_minimum(
        limits,
        allocations,
        function,
        u64::from(reserved),
        "ReservedConcurrentExecutions",
    )
}

/// Checks PutProvisionedConcurrencyConfig: `requested` for one qualifier, where the function's
/// other qualifiers hold `other_qualifiers` in all.
pub fn check_provisioned(
    limits: ConcurrencyLimits,
    allocations: &[Allocation],
    function: &str,
    other_qualifiers: u32,
    requested: u32,
) -> Result<()> {
    let total = u64::from(other_qualifiers) + u64::from(requested);
    let reserved = allocations
        .iter()
        .find(|a| a.function == function)
        .and_then(|a| a.reserved);
    if let Some(reserved) = reserved {
        if total > u64::from(reserved) {
            return Err(Error::invalid_parameter(
                "Requested Provisioned Concurrency should not be greater than the \
                 reservedConcurrentExecution for function",
            ));
        }
        return Ok(());
    }
    leaves_minimum(limits, allocations, function, total, "ConcurrentExecutions")
}

/// Lambda's scaling rate for one function: at most `per_10s` new execution environments in any
/// ten seconds, refilled continuously, never banked beyond `per_10s`.
#[derive(Debug, Clone)]
pub struct ScalingRate {
    per_10s: f64,
    tokens: f64,
    updated: Instant,
}

impl ScalingRate {
    pub fn new(per_10s: u32, now: Instant) -> Self {
        Self {
            per_10s: f64::from(per_10s),
            tokens: f64::from(per_10s),
            updated: now,
        }
    }

    /// Takes one new environment's worth, if the rate allows it now.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_10s / 10.0).min(self.per_10s);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: ConcurrencyLimits = ConcurrencyLimits {
        account: 1000,
        min_unreserved: 100,
    };

    fn allocation(function: &str, reserved: Option<u32>, provisioned: u32) -> Allocation {
        Allocation {
            function: function.into(),
            reserved,
            provisioned,
        }
    }

    #[test]
    fn unreserved_pool_loses_reservations_and_unreserved_provisioning() {
        let allocations = [
            allocation("a", Some(200), 50),
            allocation("b", None, 30),
            allocation("c", Some(0), 0),
        ];
        assert_eq!(unreserved_capacity(LIMITS, &allocations), 770);
        assert_eq!(unreserved_reported(LIMITS, &allocations), 800);
        assert_eq!(unreserved_capacity(LIMITS, &[]), 1000);
    }

    #[test]
    fn reservations_keep_the_minimum_unreserved_and_cover_provisioning() {
        let allocations = [allocation("a", Some(500), 0), allocation("b", None, 40)];
        assert!(check_reserved(LIMITS, &allocations, "c", 360).is_ok());
        assert!(check_reserved(LIMITS, &allocations, "c", 361).is_err());
        // A function's own earlier reservation does not count against it.
        assert!(check_reserved(LIMITS, &allocations, "a", 860).is_ok());
        assert!(check_reserved(LIMITS, &allocations, "b", 39).is_err());
        assert!(check_reserved(LIMITS, &allocations, "b", 40).is_ok());
    }

    #[test]
    fn provisioning_fits_the_reservation_or_the_unreserved_pool() {
        let allocations = [allocation("a", Some(10), 4), allocation("b", None, 0)];
        assert!(check_provisioned(LIMITS, &allocations, "a", 4, 6).is_ok());
        assert!(check_provisioned(LIMITS, &allocations, "a", 4, 7).is_err());
        assert!(check_provisioned(LIMITS, &allocations, "b", 0, 890).is_ok());
        assert!(check_provisioned(LIMITS, &allocations, "b", 0, 891).is_err());
    }

    #[test]
    fn scaling_rate_refills_continuously_without_banking() {
        let start = Instant::now();
        let mut rate = ScalingRate::new(10, start);
        assert!((0..10).all(|_| rate.try_take(start)));
        assert!(!rate.try_take(start));
        // One environment per second comes back.
        assert!(rate.try_take(start + Duration::from_millis(1000)));
        assert!(!rate.try_take(start + Duration::from_millis(1000)));
        // A long idle spell refills to the cap, not beyond.
        let later = start + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| rate.try_take(later)).count(), 10);
    }
}
