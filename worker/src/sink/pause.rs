//! A remote calendar's pause: the server (a CalDAV server, a Graph or Exchange mailbox)
//! asked to be sent nothing before some instant (429, or 503 with Retry-After,
//! `ErrorServerBusy`). Shared by every request the process sends there; a longer pause
//! already running stays.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sink::SinkError;

/// Not sent in this batch because the pause of `left` that `throttled` says who asked for
/// ("Microsoft Graph throttles mailbox …") outlasts the caller's deadline.
pub fn deferred(throttled: &str, left: Duration) -> SinkError {
    SinkError::Deferred {
        message: format!(
            "{throttled}; not sent in this batch, retry after {:.1} s",
            left.as_secs_f64()
        ),
        retry_after: Some(left),
    }
}

#[derive(Debug, Default)]
pub struct Pause {
    until: Mutex<Option<Instant>>,
}

impl Pause {
    /// How much longer the pause lasts; `None` when requests may go.
    pub fn left(&self) -> Option<Duration> {
        let until = (*self.until.lock().unwrap_or_else(|e| e.into_inner()))?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Send nothing for `wait` (a pause already running longer stays).
    pub fn extend(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut t = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_none_or(|t| t < until) {
            *t = Some(until);
        }
    }

    /// A request was throttled: send nothing for `wait`, then send it again. When that is
    /// past the caller's `deadline`, it is not sent in this batch: `deferred(wait)`.
    pub fn extend_or_defer(
        &self,
        wait: Duration,
        deadline: Instant,
        deferred: impl FnOnce(Duration) -> SinkError,
    ) -> Result<(), SinkError> {
        self.extend(wait);
        if Instant::now() + wait > deadline {
            return Err(deferred(wait));
        }
        Ok(())
    }

    /// Wait until the pause is over, or fail at once with `deferred(left)` when it lasts
    /// past `deadline`.
    pub async fn wait_out(
        &self,
        deadline: Instant,
        deferred: impl Fn(Duration) -> SinkError,
    ) -> Result<(), SinkError> {
        while let Some(left) = self.left() {
            let until = Instant::now() + left;
            if until > deadline {
                return Err(deferred(left));
            }
            tokio::time::sleep_until(until).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_when_its_time_is_up_and_a_shorter_one_does_not_cut_it() {
        let pause = Pause::default();
        assert_eq!(pause.left(), None);
        pause.extend(Duration::from_millis(500));
        pause.extend(Duration::from_millis(100));
        assert_eq!(pause.left(), Some(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(pause.left(), None);
    }
}
