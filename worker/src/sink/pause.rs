//! A remote calendar's pause: the server (a CalDAV server, a Graph mailbox) asked to be sent
//! nothing before some instant (429, or 503 with Retry-After). Shared by every request the
//! process sends there; a longer pause already running stays.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

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
