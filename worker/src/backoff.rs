//! Capped exponential back-off with jitter, and the server's Retry-After when it gave one.

use std::time::Duration;

use rand::Rng;

/// Delay before attempt `attempts + 1` of a delivery that failed `attempts` times (≥ 1):
/// 1 s, 2 s, 4 s … capped at `cap`, each drawn uniformly from the upper half ("equal
/// jitter"), so retries of many entries spread out but never come early.
pub fn delay(attempts: i32, retry_after: Option<Duration>, cap: Duration) -> Duration {
    let exp = attempts.clamp(1, 30) as u32 - 1;
    let base = Duration::from_secs(1)
        .saturating_mul(1u32 << exp.min(20))
        .min(cap);
    let half = base / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    let computed = half + Duration::from_millis(jitter);
    match retry_after {
        Some(ra) => postpone(Some(ra)),
        None => computed,
    }
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
    fn retry_after_is_a_floor() {
        for _ in 0..100 {
            let d = delay(1, Some(Duration::from_secs(7)), CAP);
            assert!(d >= Duration::from_secs(7) && d <= Duration::from_millis(7250));
        }
    }
}
