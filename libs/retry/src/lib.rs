//! The one retry delay of Cutover: exponential, capped, with jitter,
//! resettable. Every loop that waits before trying again (Kafka requests
//! and reconnects, etcd watches and lease keepalives, a fetcher's partition
//! attempts, cluster connects and re-joins, the orchestrator's campaign)
//! takes its delay from here, so they all spread out the same way.
//!
//! The n-th delay (counting from 0) is drawn uniformly from
//! `[c/2, c]` where `c = min(initial * 2^n, max)` ("equal jitter"): never
//! longer than `max`, never shorter than half the ceiling, so a retry
//! neither hammers a peer that is down nor waits longer than configured,
//! and many clients that failed together (every partition of a link, every
//! fetcher after an etcd outage) do not come back in lockstep.
//!
//! [`Policy::delay`] is the stateless form for loops that count attempts
//! themselves; [`Backoff`] keeps the count, [`Backoff::reset`] starts over
//! after a success, and [`Backoff::wait`] sleeps on tokio's clock (so
//! tests can run it under a paused clock).

#![forbid(unsafe_code)]

use std::time::Duration;

/// Initial and maximum delay of a retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Ceiling of every delay.
    pub max: Duration,
}

impl Policy {
    /// Delays whose ceiling starts at `initial` and doubles up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Policy {
        Policy { initial, max }
    }

    /// The ceiling of delay number `attempt`: `min(initial * 2^attempt, max)`
    /// (and never below `initial` when `max` is smaller).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .saturating_mul(factor)
            .min(self.max.max(self.initial))
    }

    /// Delay number `attempt` (0 for the first retry), with equal jitter:
    /// uniform in `[ceiling / 2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        if spread == 0 {
            return ceiling;
        }
        half + Duration::from_nanos(rand::random_range(0..=spread))
    }

    /// A counting backoff with this policy.
    pub fn backoff(self) -> Backoff {
        Backoff::new(self)
    }
}

/// A retry loop's backoff: each delay doubles the ceiling of the previous
/// one up to the policy's maximum, until [`Backoff::reset`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    attempt: u32,
}

impl Backoff {
    pub const fn new(policy: Policy) -> Backoff {
        Backoff { policy, attempt: 0 }
    }

    /// The delay before the next try; moves on to the next one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.policy.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Sleeps the next delay (on tokio's clock) and returns it. Cancel-safe:
    /// dropped before it finishes, the delay counts as taken.
    pub async fn wait(&mut self) -> Duration {
        let d = self.next_delay();
        tokio::time::sleep(d).await;
        d
    }

    /// After a success: the next delay is a first one again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays taken since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy::new(100 * MS, Duration::from_secs(10))
    }

    #[test]
    fn ceilings_double_from_initial_up_to_max() {
        let p = policy();
        let want = [100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000];
        for (n, ms) in want.iter().enumerate() {
            assert_eq!(p.ceiling(n as u32), *ms * MS, "attempt {n}");
        }
        // No overflow, however long it failed.
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(10));
        assert_eq!(
            Policy::new(Duration::MAX, Duration::MAX).ceiling(40),
            Duration::MAX
        );
    }

    #[test]
    fn every_delay_is_between_half_its_ceiling_and_its_ceiling() {
        let p = policy();
        for n in 0..64 {
            for _ in 0..50 {
                let d = p.delay(n);
                let c = p.ceiling(n);
                assert!(
                    d >= c / 2 && d <= c,
                    "attempt {n}: {d:?} outside [{:?}, {c:?}]",
                    c / 2
                );
                assert!(d <= p.max);
            }
        }
    }

    #[test]
    fn delays_are_spread_out() {
        // Many clients failing at once must not retry at the same instant.
        let p = policy();
        let mut delays: Vec<Duration> = (0..100).map(|_| p.delay(3)).collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 90, "{} distinct delays of 100", delays.len());
        let (lo, hi) = (delays[0], delays[delays.len() - 1]);
        assert!(
            hi - lo > 200 * MS,
            "spread {lo:?}..{hi:?} of a 400..800 ms range"
        );
    }

    #[test]
    fn degenerate_policies() {
        assert_eq!(
            Policy::new(Duration::ZERO, Duration::ZERO).delay(5),
            Duration::ZERO
        );
        // A fixed interval, jittered.
        let fixed = Policy::new(Duration::from_secs(1), Duration::from_secs(1));
        for n in 0..10 {
            let d = fixed.delay(n);
            assert!(d >= 500 * MS && d <= Duration::from_secs(1), "{d:?}");
        }
        // max below initial: initial wins.
        assert_eq!(Policy::new(100 * MS, MS).ceiling(3), 100 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_each_delay_on_tokios_clock_and_reset_starts_over() {
        let mut b = policy().backoff();
        for n in 0..10u32 {
            let start = Instant::now();
            let d = b.wait().await;
            // tokio's timer rounds up to the millisecond.
            let slept = start.elapsed();
            assert!(
                slept >= d && slept <= d + MS,
                "attempt {n}: slept {slept:?} for {d:?}"
            );
            let c = policy().ceiling(n);
            assert!(d >= c / 2 && d <= c, "attempt {n}: {d:?}");
        }
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert_eq!(b.attempts(), 0);
        let start = Instant::now();
        let d = b.wait().await;
        let slept = start.elapsed();
        assert!(
            d <= 100 * MS && slept >= d && slept <= d + MS,
            "{d:?} {slept:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_still_counts() {
        let mut b = policy().backoff();
        tokio::select! {
            _ = b.wait() => panic!("the first delay is at least 50 ms"),
            _ = tokio::time::sleep(10 * MS) => {}
        }
        assert_eq!(b.attempts(), 1);
        let d = b.next_delay();
        assert!(d >= 100 * MS && d <= 200 * MS, "{d:?}");
    }
}
