//! When the service loop looks for work, as pure functions of what it saw.
//!
//! A look (`Worker::step`) is one statement. The loop looks:
//! - when woken: a trigger's NOTIFY (only sent while this worker says it sleeps), a
//!   reconnect of the listener, a transaction it waited for ended (`commit_watch`), or a
//!   delivery finished (its user may have more, and a slot is free);
//! - again at once after a look that left work behind (the change log was longer than one
//!   look takes, logins were handled before claiming), or, while it says it is awake, after
//!   every look that found something: the triggers do not wake an awake worker;
//! - at the latest one poll interval after the last look (the safety net), or when a
//!   postponed delivery falls due, or, after a failure, once its back-off has passed.
//!
//! A worker says it is awake only while the database is busy: when hints kept arriving
//! during a look that found work. It says it sleeps as soon as a look finds nothing.

use std::time::Duration;

use tokio::time::Instant;

/// What one look did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Change-log rows moved into the queue.
    pub expanded: u64,
    /// The change log held more than one look takes.
    pub log_left: bool,
    /// Logins handled (nothing is claimed in a look that finds logins).
    pub logins: usize,
    /// Users leased for delivery.
    pub claimed: usize,
    /// Entries written to or removed from calendars by deliveries that finished since the
    /// last look.
    pub delivered: usize,
}

impl StepReport {
    /// Whether the look found anything to do.
    pub fn found_work(&self) -> bool {
        self.expanded > 0 || self.logins > 0 || self.claimed > 0
    }
}

/// What the loop does after a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Look again at once.
    Look,
    /// Say it sleeps (then wait).
    Sleep,
    /// Wait for a wake-up or the next poll.
    Wait,
}

/// After a look: `awake` says whether the worker currently says it is awake.
pub fn after(report: &StepReport, awake: bool) -> Next {
    // Work left behind, or (awake) no NOTIFY would tell of more.
    if report.log_left || report.logins > 0 || (awake && report.found_work()) {
        Next::Look
    } else if awake {
        Next::Sleep
    } else {
        Next::Wait
    }
}

/// Whether to say "awake" with the next look: hints arrived while a look found work, so
/// the triggers' NOTIFYs come faster than the worker answers them.
pub fn stay_awake(report: &StepReport, hints_during_look: u64) -> bool {
    report.found_work() && hints_during_look > 0
}

/// When the next look is due at the latest.
#[derive(Debug, Clone)]
pub struct Schedule {
    poll: Duration,
    last_look: Instant,
    retry_at: Option<Instant>,
    backoff_until: Option<Instant>,
    failures: u32,
}

impl Schedule {
    pub fn new(poll: Duration, now: Instant) -> Schedule {
        Schedule {
            poll,
            last_look: now,
            retry_at: None,
            backoff_until: None,
            failures: 0,
        }
    }

    /// A look succeeded at `now`.
    pub fn looked(&mut self, now: Instant) {
        self.last_look = now;
        self.backoff_until = None;
        self.failures = 0;
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
        }
    }

    /// A look failed at `now`; the next one waits `backoff`.
    pub fn failed(&mut self, now: Instant, backoff: Duration) {
        self.failures = self.failures.saturating_add(1);
        self.backoff_until = Some(now + backoff);
    }

    /// Looks failed in a row since the last one that succeeded.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A postponed delivery falls due at `at`.
    pub fn retry_at(&mut self, at: Instant) {
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
    }

    /// The next look, unless something wakes the loop before.
    pub fn next_look(&self) -> Instant {
        if let Some(until) = self.backoff_until {
            return until;
        }
        let poll = self.last_look + self.poll;
        self.retry_at.map_or(poll, |t| t.min(poll))
    }

    /// Whether a failure's back-off is still running at `now` (wake-ups wait for it).
    pub fn backing_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| now < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(expanded: u64, claimed: usize) -> StepReport {
        StepReport {
            expanded,
            claimed,
            ..StepReport::default()
        }
    }

    #[test]
    fn a_sleeping_worker_waits_after_each_look_unless_work_was_left_behind() {
        assert_eq!(after(&found(3, 1), false), Next::Wait);
        assert_eq!(after(&found(0, 0), false), Next::Wait);
        let long_log = StepReport {
            expanded: 10_000,
            log_left: true,
            ..StepReport::default()
        };
        assert_eq!(after(&long_log, false), Next::Look);
        let logins = StepReport {
            logins: 2,
            ..StepReport::default()
        };
        assert_eq!(after(&logins, false), Next::Look);
    }

    #[test]
    fn an_awake_worker_looks_until_a_look_finds_nothing_then_sleeps() {
        assert_eq!(after(&found(1, 0), true), Next::Look);
        assert_eq!(after(&found(0, 1), true), Next::Look);
        assert_eq!(after(&found(0, 0), true), Next::Sleep);
    }

    #[test]
    fn only_hints_during_a_busy_look_keep_a_worker_awake() {
        assert!(stay_awake(&found(5, 0), 1));
        assert!(!stay_awake(&found(5, 0), 0));
        assert!(!stay_awake(&found(0, 0), 3), "hints for work already taken");
    }

    #[tokio::test(start_paused = true)]
    async fn the_poll_is_the_latest_look_and_moves_with_every_look() {
        let poll = Duration::from_secs(2);
        let start = Instant::now();
        let mut s = Schedule::new(poll, start);
        assert_eq!(s.next_look(), start + poll);
        tokio::time::advance(Duration::from_millis(700)).await;
        s.looked(Instant::now());
        assert_eq!(s.next_look(), start + Duration::from_millis(2700));
    }

    #[tokio::test(start_paused = true)]
    async fn a_postponed_delivery_brings_the_next_look_forward_once() {
        let poll = Duration::from_secs(2);
        let start = Instant::now();
        let mut s = Schedule::new(poll, start);
        s.retry_at(start + Duration::from_millis(500));
        s.retry_at(start + Duration::from_millis(1500)); // the earlier one counts
        assert_eq!(s.next_look(), start + Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        s.looked(Instant::now());
        assert_eq!(
            s.next_look(),
            start + Duration::from_millis(2500),
            "the retry is done: back to the poll"
        );
        s.retry_at(start + Duration::from_secs(60)); // later than the poll
        assert_eq!(s.next_look(), start + Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_nothing_looks_before_the_back_off_ends() {
        let poll = Duration::from_secs(2);
        let start = Instant::now();
        let mut s = Schedule::new(poll, start);
        s.retry_at(start + Duration::from_millis(10));
        s.failed(start, Duration::from_millis(800));
        assert_eq!(s.failures(), 1);
        assert_eq!(s.next_look(), start + Duration::from_millis(800));
        assert!(s.backing_off(start + Duration::from_millis(799)));
        tokio::time::advance(Duration::from_millis(800)).await;
        assert!(!s.backing_off(Instant::now()));
        s.looked(Instant::now());
        assert_eq!(s.failures(), 0);
        assert_eq!(s.next_look(), Instant::now() + poll);
    }
}
