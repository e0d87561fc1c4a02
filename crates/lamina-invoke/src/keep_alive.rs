//! How long an idle execution environment stays warm: a policy per server, consulted per
//! function when idle instances are reaped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Decides how long idle instances of a function are kept.
pub trait KeepAlivePolicy: Send + Sync + 'static {
    /// An invocation of `function` arrived at `at`; a policy may learn from the gaps.
    fn invoked(&self, _function: &str, _at: Instant) {}
    /// How long an idle instance of `function` stays warm.
    fn keep_alive(&self, function: &str) -> Duration;
    /// `function` is gone.
    fn forget(&self, _function: &str) {}
}

/// The same keep-alive for every function (Lambda's behaviour, and the default).
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub Duration);

impl KeepAlivePolicy for Fixed {
    fn keep_alive(&self, _function: &str) -> Duration {
        self.0
    }
}

/// The hybrid-histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020),
/// keep-alive half: per function, a histogram of the gaps between invocations; once it is
/// representative, instances are kept for its 99th percentile plus a margin, so a function
/// called every few minutes stays warm exactly as long as it needs and a function called once
/// an hour is not held for nothing. While the histogram says little (too few gaps, gaps beyond
/// its range, or a flat shape) the fixed keep-alive applies.
pub struct HybridHistogram {
    fallback: Duration,
    bin: Duration,
    bins: usize,
    functions: Mutex<HashMap<String, Gaps>>,
}

struct Gaps {
    last: Instant,
    counts: Vec<u32>,
    beyond: u32,
}

/// Gaps a histogram needs before it is trusted.
const MIN_GAPS: u32 = 10;
/// Above this share of gaps beyond the histogram's range it is not trusted.
const MAX_BEYOND: f64 = 0.5;
/// Below this coefficient of variation of the bin counts the shape says nothing.
const MIN_CV: f64 = 2.0;
const MARGIN: f64 = 1.1;

impl HybridHistogram {
    /// One-minute bins over four hours, as in the paper.
    pub fn new(fallback: Duration) -> Self {
        Self::with_bins(fallback, Duration::from_secs(60), 240)
    }

    pub fn with_bins(fallback: Duration, bin: Duration, bins: usize) -> Self {
        Self {
            fallback,
            bin,
            bins,
            functions: Mutex::default(),
        }
    }

    fn decide(&self, gaps: &Gaps) -> Option<Duration> {
        let inside: u32 = gaps.counts.iter().sum();
        let all = inside + gaps.beyond;
        if all < MIN_GAPS || f64::from(gaps.beyond) / f64::from(all) > MAX_BEYOND {
            return None;
        }
        let n = gaps.counts.len() as f64;
        let mean = f64::from(inside) / n;
        let variance = gaps
            .counts
            .iter()
            .map(|c| (f64::from(*c) - mean).powi(2))
            .sum::<f64>()
            / n;
        if variance.sqrt() / mean < MIN_CV {
            return None;
        }
        let wanted = (f64::from(inside) * 0.99).ceil() as u32;
        let mut seen = 0;
        let tail = gaps.counts.iter().position(|c| {
            seen += c;
            seen >= wanted
        })?;
        // The upper edge of the bin that holds the 99th percentile.
        Some(self.bin.mul_f64((tail + 1) as f64 * MARGIN))
    }
}

impl KeepAlivePolicy for HybridHistogram {
    fn invoked(&self, function: &str, at: Instant) {
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        match functions.get_mut(function) {
            None => {
                functions.insert(
                    function.to_owned(),
                    Gaps {
                        last: at,
                        counts: vec![0; self.bins],
                        beyond: 0,
                    },
                );
            }
            Some(gaps) => {
                let gap = at.saturating_duration_since(gaps.last);
                gaps.last = at;
                let bin = (gap.as_secs_f64() / self.bin.as_secs_f64()) as usize;
                match gaps.counts.get_mut(bin) {
                    Some(count) => *count = count.saturating_add(1),
                    None => gaps.beyond = gaps.beyond.saturating_add(1),
                }
            }
        }
    }

    fn keep_alive(&self, function: &str) -> Duration {
        let functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        functions
            .get(function)
            .and_then(|gaps| self.decide(gaps))
            .unwrap_or(self.fallback)
    }

    fn forget(&self, function: &str) {
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(function);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FALLBACK: Duration = Duration::from_secs(300);

    fn policy() -> HybridHistogram {
        HybridHistogram::with_bins(FALLBACK, Duration::from_secs(1), 60)
    }

    fn calls(policy: &HybridHistogram, function: &str, gaps_s: &[u64]) {
        let mut at = Instant::now();
        policy.invoked(function, at);
        for gap in gaps_s {
            at += Duration::from_secs(*gap);
            policy.invoked(function, at);
        }
    }

    #[test]
    fn a_regular_function_is_kept_for_its_tail_gap() {
        let policy = policy();
        calls(&policy, "f", &[5; 30]);
        // Gaps of 5 s sit in the bin [5, 6): kept for 6 s plus the margin.
        assert_eq!(
            policy.keep_alive("f"),
            Duration::from_secs(6).mul_f64(MARGIN)
        );
    }

    #[test]
    fn too_few_or_too_long_gaps_fall_back_to_fixed() {
        let policy = policy();
        calls(&policy, "few", &[5; 3]);
        assert_eq!(policy.keep_alive("few"), FALLBACK);
        calls(&policy, "hourly", &[3600; 20]);
        assert_eq!(policy.keep_alive("hourly"), FALLBACK);
        assert_eq!(policy.keep_alive("unknown"), FALLBACK);
    }

    #[test]
    fn a_flat_histogram_falls_back_to_fixed() {
        let policy = policy();
        let gaps: Vec<u64> = (0..60).collect();
        calls(&policy, "spread", &gaps);
        assert_eq!(policy.keep_alive("spread"), FALLBACK);
    }
}
