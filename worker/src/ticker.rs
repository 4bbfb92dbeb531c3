//! The awake loop's tick: a short pause that lasts what it says.
//!
//! tokio's timer counts in whole milliseconds and rounds up, so `tokio::time::sleep(1 ms)`
//! lasts 2.1 ms on average (measured here: 500 sleeps of 1 ms, 0.5 ms and 0.2 ms took
//! 2.13, 1.62 and 1.33 ms each; a thread's `std::thread::sleep(0.5 ms)` 0.67 ms). The
//! loop's tick decides how soon a new change number is seen, and a number seen before its
//! transaction commits lets the commit watch start the delivery at the commit itself, so
//! the tick is kept by a thread of its own, which sleeps with the system's fine-grained
//! timer. It runs only while the loop waits for a tick: an idle worker costs nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

struct Shared {
    period: Duration,
    wanted: AtomicBool,
    stop: AtomicBool,
    ticked: Notify,
}

pub struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Start the ticking thread (parked until the first [`tick`](Self::tick)).
    pub fn start(period: Duration) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared {
            period,
            wanted: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ticked: Notify::new(),
        });
        let thread = std::thread::Builder::new()
            .name("livesync-tick".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared)
            })?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// Resolves about one period from now. (A tick asked for by a call that was dropped
    /// before it resolved may end the next call early: a tick is only a cue to look.)
    pub async fn tick(&self) {
        let ticked = self.shared.ticked.notified();
        self.shared.wanted.store(true, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        ticked.await;
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        if shared.wanted.swap(false, Ordering::AcqRel) {
            std::thread::sleep(shared.period);
            shared.ticked.notify_one();
        } else {
            // An unpark that came before this park makes it return at once.
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ticker;
    use std::time::Duration;

    #[tokio::test]
    async fn ticks_when_asked_and_stops_when_dropped() {
        let ticker = Ticker::start(Duration::from_millis(1)).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..20 {
            tokio::time::timeout(Duration::from_secs(5), ticker.tick())
                .await
                .expect("a tick comes");
        }
        assert!(started.elapsed() >= Duration::from_millis(19));
        drop(ticker); // joins the thread: hangs the test if it does not stop
    }
}
