//! Running workers inside a test, and a recording calendar sink whose failures a test
//! controls (the real `ics` sink is used where the calendar's contents matter).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livesync_worker::config::Settings;
use livesync_worker::schedule::StepReport;
use livesync_worker::service::Worker;
use livesync_worker::sink::{
    Applied, CalendarOwner, CalendarSink, Change, RenderContext, SinkError,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::TestDb;

/// Settings for a worker under test: short poll and lease, files in `dir`.
pub fn test_settings(db: &TestDb, dir: &std::path::Path) -> Settings {
    Settings {
        database_url: Some(db.url.clone()),
        ics_dir: dir.join("ics"),
        log_dir: dir.join("logs"),
        poll_interval: Duration::from_millis(200),
        lease: Duration::from_secs(5),
        concurrency: 4,
        ..Settings::default()
    }
}

/// A worker driven by the test, one look at a time, without its loop: no listener (and so
/// no presence: poll-only), no timers. What a look did is its report.
pub struct SteppedWorker {
    worker: Worker,
    stop: watch::Receiver<bool>,
    _stop_tx: watch::Sender<bool>,
}

impl SteppedWorker {
    pub fn new(db: &TestDb, mut settings: Settings, sink: Arc<dyn CalendarSink>) -> SteppedWorker {
        settings.poll_only = true;
        let (stop_tx, stop) = watch::channel(false);
        SteppedWorker {
            worker: Worker::build(settings, db.pool.clone(), sink),
            stop,
            _stop_tx: stop_tx,
        }
    }

    /// One look for work; the deliveries it started have finished when it returns.
    pub async fn step(&mut self) -> StepReport {
        let report = self.worker.step(&self.stop).await.expect("a look for work");
        self.worker.finish_deliveries().await;
        report
    }

    /// Look until a look finds nothing (logins are handled one look before their claims).
    pub async fn settle(&mut self) -> StepReport {
        let mut total = StepReport::default();
        for _ in 0..20 {
            let r = self.step().await;
            if !r.found_work() {
                return total;
            }
            total.expanded += r.expanded;
            total.logins += r.logins;
            total.claimed += r.claimed;
        }
        panic!("the worker kept finding work for 20 looks");
    }
}

pub struct RunningWorker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<Result<(), sqlx::Error>>,
}

impl RunningWorker {
    pub fn start(db: &TestDb, settings: Settings, sink: Arc<dyn CalendarSink>) -> RunningWorker {
        RunningWorker::start_with_pool(db.pool.clone(), settings, sink)
    }

    /// A worker on its own pool (e.g. connected as another database role).
    pub fn start_with_pool(
        pool: sqlx::PgPool,
        settings: Settings,
        sink: Arc<dyn CalendarSink>,
    ) -> RunningWorker {
        let worker = Worker::build(settings, pool, sink);
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(worker.run_until_stopped(rx));
        RunningWorker { stop, handle }
    }

    /// Graceful stop, as on SIGTERM; panics if the worker does not stop within 15 s.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("worker stops promptly")
            .expect("worker task")
            .expect("worker ran without error");
    }

    /// Like `kill -9` for an in-process worker: the task is dropped wherever it is; nothing
    /// is released, its leases simply expire.
    pub fn kill(self) {
        self.handle.abort();
    }
}

/// One call of `apply` as a sink saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub user_id: i64,
    pub appointment_id: i64,
    pub upsert: bool,
    pub sequence: i32,
    pub subject: Option<String>,
}

/// Records every change; fails those the test asks to fail.
#[derive(Default)]
pub struct RecordingSink {
    pub seen: Mutex<Vec<Seen>>,
    /// Appointment ids to reject permanently.
    pub reject: Mutex<HashSet<i64>>,
    /// Appointment ids to fail temporarily (how many more times).
    pub fail_times: Mutex<HashMap<i64, u32>>,
    /// Delay every apply by this much (to hold a lease while a test acts).
    pub delay: Mutex<Option<Duration>>,
    /// Calls of `apply` begun (a call cut off by the worker records nothing else).
    pub calls: std::sync::atomic::AtomicUsize,
}

impl RecordingSink {
    pub fn new() -> Arc<RecordingSink> {
        Arc::new(RecordingSink::default())
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn seen_for(&self, user_id: i64) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.user_id == user_id)
            .collect()
    }
}

#[async_trait::async_trait]
impl CalendarSink for RecordingSink {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn apply(
        &self,
        owner: &CalendarOwner,
        changes: &[Change],
        _ctx: &RenderContext,
    ) -> Vec<Result<Applied, SinkError>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let id = change.appointment_id();
            if self.reject.lock().unwrap().contains(&id) {
                out.push(Err(SinkError::Permanent {
                    message: format!("appointment {id} rejected by the test"),
                }));
                continue;
            }
            if let Some(n) = self.fail_times.lock().unwrap().get_mut(&id)
                && *n > 0
            {
                *n -= 1;
                out.push(Err(SinkError::Retryable {
                    message: format!("appointment {id}: temporary failure"),
                    retry_after: Some(Duration::from_millis(100)),
                }));
                continue;
            }
            let (upsert, sequence, subject) = match change {
                Change::Upsert {
                    sequence,
                    appointment,
                    ..
                } => (true, *sequence, appointment.subject.clone()),
                Change::Delete { .. } => (false, 0, None),
            };
            self.seen.lock().unwrap().push(Seen {
                user_id: owner.user_id,
                appointment_id: id,
                upsert,
                sequence,
                subject,
            });
            out.push(Ok(Applied::default()));
        }
        out
    }

    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A real sink that writes, and then does what a test needs before the worker hears back.
pub struct ApplyThen<S> {
    pub inner: S,
    pub then: AfterApply,
}

pub enum AfterApply {
    /// Hang: with [`RunningWorker::kill`], a worker dying between the calendar write and
    /// the database commit.
    Hang,
    /// While set, answer every change with a temporary error (as when the answer is lost
    /// on the way back).
    FailWhile(std::sync::atomic::AtomicBool),
}

impl<S> ApplyThen<S> {
    pub fn hang(inner: S) -> ApplyThen<S> {
        ApplyThen {
            inner,
            then: AfterApply::Hang,
        }
    }

    pub fn fail(inner: S) -> ApplyThen<S> {
        ApplyThen {
            inner,
            then: AfterApply::FailWhile(true.into()),
        }
    }

    /// Stop failing (after [`ApplyThen::fail`]).
    pub fn recover(&self) {
        if let AfterApply::FailWhile(failing) = &self.then {
            failing.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[async_trait::async_trait]
impl<S: CalendarSink> CalendarSink for ApplyThen<S> {
    fn name(&self) -> &'static str {
        "apply-then"
    }

    async fn apply(
        &self,
        owner: &CalendarOwner,
        changes: &[Change],
        ctx: &RenderContext,
    ) -> Vec<Result<Applied, SinkError>> {
        let results = self.inner.apply(owner, changes, ctx).await;
        match &self.then {
            AfterApply::Hang => std::future::pending::<Vec<_>>().await,
            AfterApply::FailWhile(failing) if failing.load(std::sync::atomic::Ordering::SeqCst) => {
                results
                    .iter()
                    .map(|_| {
                        Err(SinkError::Retryable {
                            message: "the answer was lost".into(),
                            retry_after: Some(Duration::from_millis(200)),
                        })
                    })
                    .collect()
            }
            AfterApply::FailWhile(_) => results,
        }
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.inner.check().await
    }
}
