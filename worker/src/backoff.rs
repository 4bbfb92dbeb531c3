//! Capped exponential back-off with jitter, and the server's Retry-After when it gave one:
//! for deliveries (`delay`, `postpone`) and for reconnecting to the database (`reconnect`).

use std::time::Duration;

use rand::Rng;

/// `first` doubled `failures - 1` times, capped at `cap`, drawn uniformly from the upper
/// half ("equal jitter"): many retries spread out, none comes early.
fn equal_jitter(first: Duration, failures: u32, cap: Duration) -> Duration {
    let base = first
        .saturating_mul(1u32 << failures.clamp(1, 21).saturating_sub(1))
        .min(cap);
    let half = base / 2;
    half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis() as u64))
}

/// Delay before attempt `attempts + 1` of a delivery that failed `attempts` times (≥ 1):
/// 1 s, 2 s, 4 s … capped at `cap`, or the server's `retry_after`.
pub fn delay(attempts: i32, retry_after: Option<Duration>, cap: Duration) -> Duration {
    match retry_after {
        Some(ra) => postpone(Some(ra)),
        None => equal_jitter(Duration::from_secs(1), attempts.max(1) as u32, cap),
    }
}

/// Delay before connecting again after `failures` failed attempts: 100 ms doubling to 5 s,
/// so a flapping server is not flooded.
pub fn reconnect(failures: u32) -> Duration {
    equal_jitter(
        Duration::from_millis(100),
        failures + 1,
        Duration::from_secs(5),
    )
}

/// Delay before a change that was not attempted (deferred, uncharged) comes back: at once,
/// or after the server's pause. A server's Retry-After is a floor: never sooner, a little
/// jitter on top so that many throttled calendars do not return in lockstep.
pub fn postpone(retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(ra) => ra + Duration::from_millis(rand::rng().random_range(0..=250)),
        None => Duration::ZERO,
    }
}

/// The longest back-off between two attempts.
pub const CAP: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_stays_under_the_cap() {
        for attempts in 1..40 {
            let d = delay(attempts, None, CAP);
            let base = Duration::from_secs(1u64 << (attempts - 1).min(20)).min(CAP);
            assert!(d >= base / 2 && d <= base, "attempt {attempts}: {d:?}");
        }
    }

    #[test]
    fn a_deferred_change_waits_only_for_the_servers_pause() {
        assert_eq!(postpone(None), Duration::ZERO);
        for _ in 0..100 {
            let d = postpone(Some(Duration::from_millis(500)));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(750));
        }
    }

    #[test]
    fn reconnecting_starts_fast_and_never_waits_more_than_five_seconds() {
        for failures in 0..40 {
            let d = reconnect(failures);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_secs(5),
                "{failures}: {d:?}"
            );
        }
        assert!(reconnect(0) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_is_a_floor() {
        for _ in 0..100 {
            let d = delay(1, Some(Duration::from_secs(7)), CAP);
            assert!(d >= Duration::from_secs(7) && d <= Duration::from_millis(7250));
        }
    }
}
