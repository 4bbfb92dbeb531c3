//! The worker: build, then run until stopped.
//!
//! Design note — one loop, one wake-up path:
//!
//! ```text
//!   wake-ups ──▶ Wake ─┐     (trigger NOTIFY, listener reconnect, commit watch)
//!   a delivery ends ───┼──▶ select! ──▶ step() ──▶ schedule::after ──▶ Look / Sleep / Wait
//!   schedule deadline ─┤                (one statement: livesync.next_work)
//!   stop ──────────────┘
//! ```
//!
//! Every reason to look for work feeds one `select!`; a look is one statement
//! (`claim::next_work`: expand the change log, see whether logins wait, lease users), and
//! each leased user's delivery runs as a task of its own (`flush`). What to do after a look
//! and when to look at the latest are pure functions (`schedule`).
//!
//! The triggers send a NOTIFY only while every worker says it sleeps. A worker sleeps by
//! default: at a quiet time each change costs its transaction one NOTIFY and wakes the worker
//! within a millisecond; an idle worker sends one statement per poll interval. When hints
//! arrive faster than it answers them, it says it is awake: no more NOTIFYs (and no commit
//! of Xpert's waits on NOTIFY's global lock), and it looks back to back as long as each look
//! finds something. When a look finds nothing it says it sleeps, and waits for the
//! transactions that may have read "awake" just before (`commit_watch`).
//!
//! Verification on a schedule (`LIVESYNC_VERIFY_EVERY`) is a task of its own beside the
//! loop (`verify::schedule`): it sleeps until its next pass is due, claims it and verifies
//! one person at a time; it shares the sink, not the loop.
//!
//! Presence: the listener holds the worker's presence lock. When it is lost, every delivery
//! in flight is stopped at once and no user is claimed until it is back (with a new key),
//! so a user a worker loses can be taken over at once, never delivered by two.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::claim::{self, Looker, Mark};
use crate::config::Settings;
use crate::connections::OwnConnection;
use crate::flush::{FlushError, FlushReport, FlushSettings, Flusher};
use crate::listener::{self, Presence, Wake};
use crate::registry;
use crate::schedule::{self, Next, Schedule, StepReport};
use crate::sink::CalendarSink;
use crate::user_log::UserLogs;

/// Health as /healthz reports it.
#[derive(Debug)]
pub struct Health {
    pub listener_ok: Arc<AtomicBool>,
    pub poll_only: bool,
}

impl Health {
    pub fn listener_healthy(&self) -> bool {
        self.poll_only || self.listener_ok.load(Ordering::Relaxed)
    }
}

pub struct Worker {
    pub id: Uuid,
    pool: PgPool,
    settings: Settings,
    flusher: Flusher,
    wake: Arc<Wake>,
    presence_tx: watch::Sender<Option<i32>>,
    presence: Presence,
    pub health: Arc<Health>,
    /// The loop's own connection (looks for work, sleep transitions).
    db: OwnConnection,
    tasks: JoinSet<Result<FlushReport, FlushError>>,
    /// Whether this worker currently says it is awake (the triggers do not NOTIFY).
    awake: bool,
    /// Say "awake" with the next look.
    mark_awake: bool,
    last_heartbeat: Instant,
    /// Deliveries that finished since the last look, counted for its report.
    delivered_since_look: usize,
    schedule: Schedule,
    commit_keys: Option<mpsc::UnboundedSender<Vec<i32>>>,
}

/// How long in-flight deliveries get to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Change-log rows moved into the queue per look.
const EXPAND_LIMIT: i32 = 10_000;

impl Worker {
    pub fn build(settings: Settings, pool: PgPool, sink: Arc<dyn CalendarSink>) -> Worker {
        let user_logs = Some(Arc::new(UserLogs::new(
            settings.log_dir.clone(),
            settings.user_log_max_bytes,
        )));
        let flusher = Flusher::start(
            pool.clone(),
            sink,
            user_logs,
            FlushSettings {
                max_attempts: settings.max_attempts,
                batch_size: settings.batch_size,
                first_batch: settings.first_batch,
                lease: settings.lease,
                max_batches: 20,
                concurrency: settings.concurrency,
            },
        );
        let (presence_tx, presence) = watch::channel(None);
        let now = Instant::now();
        Worker {
            id: Uuid::new_v4(),
            health: Arc::new(Health {
                listener_ok: Arc::new(AtomicBool::new(settings.poll_only)),
                poll_only: settings.poll_only,
            }),
            db: OwnConnection::new(&pool, None),
            schedule: Schedule::new(settings.poll_interval, now),
            pool,
            settings,
            flusher,
            wake: Arc::new(Wake::default()),
            presence_tx,
            presence,
            tasks: JoinSet::new(),
            awake: true,
            mark_awake: false,
            last_heartbeat: now,
            delivered_since_look: 0,
            commit_keys: None,
        }
    }

    /// Run until `stop` turns true; then stop claiming, let in-flight deliveries finish
    /// (or, after a grace period, leave them to their lease) and deregister.
    pub async fn run_until_stopped(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), sqlx::Error> {
        registry::register(&self.pool, self.id).await?;
        tracing::info!(worker_id = %self.id, sink = self.flusher.sink.name(), poll_only = self.settings.poll_only, "worker started");
        let mut helpers = JoinSet::new();
        let options = listener::options_of(&self.pool);
        if !self.settings.poll_only {
            helpers.spawn(listener::run(
                options.clone(),
                self.id,
                self.wake.clone(),
                self.presence_tx.clone(),
                self.health.listener_ok.clone(),
                stop.clone(),
            ));
            let (keys_tx, keys_rx) = mpsc::unbounded_channel();
            self.commit_keys = Some(keys_tx);
            helpers.spawn(crate::commit_watch::run(
                options,
                keys_rx,
                self.wake.clone(),
                self.settings.poll_interval,
                stop.clone(),
            ));
        }

        if self.settings.verify.every != crate::verify::schedule::Every::Off {
            helpers.spawn(crate::verify::schedule::run(
                self.pool.clone(),
                self.flusher.sink.clone(),
                self.settings.verify,
                self.id,
                stop.clone(),
            ));
        }

        let mut presence = self.presence.clone();
        let mut next = Next::Look; // catch up at start
        while !*stop.borrow() {
            if next != Next::Look {
                let due = self.schedule.next_look();
                tokio::select! {
                    _ = stop.changed() => continue,
                    _ = self.wake.wait() => {}
                    Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(done),
                    _ = tokio::time::sleep_until(due) => {}
                    _ = presence.changed() => {
                        if presence.borrow_and_update().is_none() {
                            self.presence_lost();
                        }
                    }
                }
                // A failed look's back-off holds back every wake-up.
                let now = Instant::now();
                if self.schedule.backing_off(now) {
                    tokio::time::sleep_until(self.schedule.next_look()).await;
                }
            }
            next = self.look(&stop).await;
        }

        tracing::info!(
            in_flight = self.tasks.len(),
            "stopping: no new claims; finishing deliveries in flight"
        );
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(r) = self.tasks.join_next().await {
                log_task(&r);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = self.tasks.len(),
                "deliveries still running after the grace period; their leases will expire"
            );
            self.tasks.abort_all();
        }
        helpers.shutdown().await;
        if let Err(e) = registry::deregister(&self.pool, self.id).await {
            tracing::warn!(error.message = %e, "could not deregister; the row expires by itself");
        }
        tracing::info!(worker_id = %self.id, "worker stopped");
        Ok(())
    }

    /// One look, then whatever it calls for: the transition to sleep when it found nothing
    /// while awake. Returns what the loop does next.
    async fn look(&mut self, stop: &watch::Receiver<bool>) -> Next {
        let hints = self.wake.hints();
        let report = match self.step(stop).await {
            Ok(report) => report,
            Err(e) => {
                self.look_failed(&e);
                return Next::Wait;
            }
        };
        if !self.settings.poll_only && schedule::stay_awake(&report, self.wake.hints() - hints) {
            self.mark_awake = true;
        }
        match schedule::after(&report, self.awake || self.mark_awake) {
            Next::Sleep if !self.settings.poll_only => self.fall_asleep().await,
            Next::Sleep => Next::Wait,
            next => next,
        }
    }

    /// Look for work once: expand the change log, handle logins, lease users for the free
    /// delivery slots and start their deliveries. Reports what it did (deliveries started
    /// here finish later; `delivered` counts those that finished since the last look).
    pub async fn step(&mut self, stop: &watch::Receiver<bool>) -> Result<StepReport, StepError> {
        while let Some(done) = self.tasks.try_join_next() {
            self.finished(done);
        }
        let now = Instant::now();
        let mark = if self.mark_awake && !self.awake {
            Mark::Awake
        } else if now.duration_since(self.last_heartbeat) >= registry::HEARTBEAT_EVERY {
            Mark::Alive
        } else {
            Mark::None
        };
        // Without its presence a worker claims nobody (its leases could not be told from a
        // dead worker's); in poll-only mode there is none, and leases simply expire.
        let lock_key = *self.presence.borrow();
        let may_claim = self.settings.poll_only || lock_key.is_some();
        let free = if may_claim && !*stop.borrow() {
            self.settings.concurrency.saturating_sub(self.tasks.len())
        } else {
            0
        };
        let looker = Looker {
            worker_id: self.id,
            lock_key,
            expand_limit: EXPAND_LIMIT,
            session_limit: self.settings.session_limit,
            lease: self.settings.lease,
        };
        let conn = self.db.get().await?;
        let look = claim::next_work(conn, &looker, mark, free).await;
        let look = self.db.check(look)?;
        self.schedule.looked(now);
        if mark != Mark::None {
            self.last_heartbeat = now;
        }
        if mark == Mark::Awake {
            self.awake = true;
            self.mark_awake = false;
        }
        if !look.registered {
            tracing::warn!(worker_id = %self.id, "this worker's row was gone; registering again");
            registry::register(&self.pool, self.id).await?;
            self.awake = true;
        }
        if look.taken > 0 {
            metrics::counter!("livesync_changes_expanded_total").increment(look.taken as u64);
        }
        let logins = if look.logins_pending {
            claim::process_logins(&self.pool, 100).await?
        } else {
            0
        };
        let report = StepReport {
            expanded: look.taken.max(0) as u64,
            log_left: look.taken >= EXPAND_LIMIT,
            logins,
            claimed: look.claims.len(),
            delivered: std::mem::take(&mut self.delivered_since_look),
        };
        for c in look.claims {
            let flusher = self.flusher.clone();
            let stop = stop.clone();
            self.tasks
                .spawn(async move { flusher.flush(&c, &stop).await });
        }
        Ok(report)
    }

    /// Wait until the deliveries started by earlier looks have finished; the next look
    /// reports what they delivered. (Tests drive a worker with `step` and this instead of
    /// running its loop: "nothing happened" is then a look that found nothing.)
    pub async fn finish_deliveries(&mut self) {
        while let Some(done) = self.tasks.join_next().await {
            self.finished(done);
        }
    }

    /// Say this worker sleeps, and hand the transactions that may have missed it to the
    /// commit watch.
    async fn fall_asleep(&mut self) -> Next {
        let asleep = match self.db.get().await {
            Ok(conn) => registry::sleep(conn, self.id).await,
            Err(e) => Err(e),
        };
        let asleep = match self.db.check(asleep) {
            Ok(a) => a,
            Err(e) => {
                self.look_failed(&StepError::Database(e));
                return Next::Wait;
            }
        };
        self.awake = false;
        if !asleep.registered
            && let Err(e) = registry::register(&self.pool, self.id).await
        {
            self.look_failed(&StepError::Database(e));
            return Next::Wait;
        }
        if !asleep.in_flight.is_empty()
            && let Some(keys) = &self.commit_keys
        {
            let _ = keys.send(asleep.in_flight);
        }
        if asleep.more { Next::Look } else { Next::Wait }
    }

    fn look_failed(&mut self, e: &StepError) {
        let failures = self.schedule.failures() + 1;
        if failures == 1 || failures.is_power_of_two() {
            tracing::error!(error.message = %e, failures, "looking for work failed; retrying");
        }
        self.schedule
            .failed(Instant::now(), crate::backoff::reconnect(failures));
    }

    /// The presence lock is gone: stop every delivery now (the users can be taken over by
    /// anyone at once); claims wait until the listener holds a new one.
    fn presence_lost(&mut self) {
        if !self.tasks.is_empty() {
            tracing::warn!(
                in_flight = self.tasks.len(),
                "presence lost: stopping every delivery in flight; their users are taken over"
            );
            self.tasks.abort_all();
        }
    }

    fn finished(&mut self, done: Result<Result<FlushReport, FlushError>, tokio::task::JoinError>) {
        if let Ok(Ok(report)) = &done {
            self.delivered_since_look += report.delivered + report.deleted;
            if let Some(retry_in) = report.retry_in {
                self.schedule.retry_at(Instant::now() + retry_in);
            }
        }
        log_task(&done);
    }
}

/// Why a look failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Logins(#[from] claim::LoginError),
}

fn log_task(r: &Result<Result<FlushReport, FlushError>, tokio::task::JoinError>) {
    if let Err(e) = r
        && !e.is_cancelled()
    {
        tracing::error!(error.message = %e, "a delivery task panicked");
    }
}
