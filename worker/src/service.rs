//! The worker: build, then run until stopped.
//!
//! Design note — how work is noticed without slowing Xpert down:
//!
//! ```text
//!            change seen / claim made / task done
//!        ┌──────────────────────────────────────────┐
//!        ▼                                          │
//!   ┌─────────┐  nothing for `linger`   ┌────────┐  │ notification, safety poll,
//!   │  awake  │ ──────────────────────▶ │ asleep │──┘ or change_version moved
//!   │ watches │   mark asleep, re-check │ LISTEN │
//!   │ version │   version once more     │ waits  │
//!   └─────────┘                         └────────┘
//! ```
//!
//! Awake, the loop reads `livesync.change_version` every millisecond (one tiny query over
//! a connection of its own, timed by `ticker`, as tokio's timer would make it two) and
//! scans for work (expands the change log, claims users) when it moved, again when the
//! transaction behind the new number ends (`commit_watch` waits for its advisory lock),
//! on the next eight ticks and 20, 100 and 500 ms later (in case that wait fails),
//! whenever a flush finishes, and at least every poll interval. After `linger` without activity it marks itself asleep; from then on the
//! triggers send a NOTIFY with each transaction that changes something, which wakes it
//! within a millisecond. Under
//! sustained writes a worker never sleeps, so no Xpert commit pays for a NOTIFY.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::claim;
use crate::commit_watch;
use crate::config::Settings;
use crate::connections::OwnConnection;
use crate::flush::{FlushError, FlushReport, FlushSettings, Flusher};
use crate::registry;
use crate::sink::CalendarSink;
use crate::ticker::Ticker;
use crate::user_log::UserLogs;
use crate::wakeup;

/// Health as /healthz reports it.
#[derive(Debug)]
pub struct Health {
    pub listener_ok: Arc<AtomicBool>,
    pub poll_only: bool,
}

pub struct Worker {
    pub id: Uuid,
    pool: PgPool,
    settings: Settings,
    flusher: Flusher,
    wake: Arc<Notify>,
    /// The newest change number seen, for `commit_watch`.
    commits: watch::Sender<i64>,
    pub health: Arc<Health>,
}

/// How long in-flight deliveries get to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// When to look again after a change was seen, each delay counted from the previous look:
/// eight looks a tick apart, then 20 ms, 100 ms and 500 ms later.
const RESCANS: [Duration; 11] = [
    TICK,
    TICK,
    TICK,
    TICK,
    TICK,
    TICK,
    TICK,
    TICK,
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(500),
];
/// Change-log rows moved into the queue per statement.
const EXPAND_LIMIT: i32 = 10_000;
/// Pause between two looks at the change counter while awake.
const TICK: Duration = Duration::from_millis(1);

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
                lease: settings.lease,
                max_batches: 20,
                concurrency: settings.concurrency,
            },
        );
        Worker {
            id: Uuid::new_v4(),
            health: Arc::new(Health {
                listener_ok: Arc::new(AtomicBool::new(settings.poll_only)),
                poll_only: settings.poll_only,
            }),
            pool,
            settings,
            flusher,
            wake: Arc::new(Notify::new()),
            commits: watch::Sender::new(0),
        }
    }

    /// Run until `stop` turns true; then stop claiming, let in-flight deliveries finish
    /// (or, after a grace period, leave them to their lease) and deregister.
    pub async fn run_until_stopped(self, stop: watch::Receiver<bool>) -> Result<(), sqlx::Error> {
        registry::register(&self.pool, self.id).await?;
        tracing::info!(worker_id = %self.id, sink = self.flusher.sink.name(), poll_only = self.settings.poll_only, "worker started");
        let mut helpers = JoinSet::new();
        if !self.settings.poll_only {
            helpers.spawn(wakeup::listen(
                self.pool.clone(),
                self.wake.clone(),
                self.health.listener_ok.clone(),
                stop.clone(),
            ));
        }
        helpers.spawn(housekeeping(self.pool.clone(), self.id, stop.clone()));
        helpers.spawn(commit_watch::watch_commits(
            self.pool.clone(),
            self.commits.subscribe(),
            self.wake.clone(),
            stop.clone(),
        ));

        let result = self.main_loop(stop.clone()).await;

        helpers.shutdown().await;
        if let Err(e) = registry::deregister(&self.pool, self.id).await {
            tracing::warn!(error.message = %e, "could not deregister; the row expires by itself");
        }
        tracing::info!(worker_id = %self.id, "worker stopped");
        result
    }

    async fn main_loop(&self, mut stop: watch::Receiver<bool>) -> Result<(), sqlx::Error> {
        let mut tasks: JoinSet<Result<FlushReport, FlushError>> = JoinSet::new();
        let mut seen: Option<i64> = None;
        let mut rescan_at: Option<Instant> = Some(Instant::now()); // catch-up at start
        let mut rescans_left: usize = 0;
        let mut last_activity = Instant::now();
        let mut next_safety = Instant::now() + self.settings.poll_interval;
        let mut db_failures: u32 = 0;
        // The counter read, the intake and the claim go over a connection of their own.
        let mut db = OwnConnection::new(&self.pool, None);
        let ticker = Ticker::start(TICK)
            .inspect_err(
                |e| tracing::warn!(error.message = %e, "no tick thread; ticking on tokio's timer"),
            )
            .ok();

        while !*stop.borrow() {
            let completed = reap(&mut tasks);
            let version = match read_version(&mut db).await {
                Ok(v) => {
                    if db_failures > 0 {
                        tracing::info!("database reachable again; catching up");
                        rescan_at = Some(Instant::now());
                    }
                    db_failures = 0;
                    v
                }
                Err(e) => {
                    db_failures = db_failures.saturating_add(1);
                    if db_failures == 1 || db_failures.is_power_of_two() {
                        tracing::error!(error.message = %e, failures = db_failures, "database unreachable; retrying");
                    }
                    self.pause(wakeup::reconnect_delay(db_failures), &mut stop)
                        .await;
                    continue;
                }
            };
            let now = Instant::now();
            let changed = seen != Some(version);
            let rescan_due = rescan_at.is_some_and(|t| now >= t);
            let safety_due = now >= next_safety;
            if changed || completed > 0 || rescan_due || safety_due {
                seen = Some(version);
                // A transaction is numbered at its first change, before it commits, so the
                // first look often comes too early: look again on the next ticks, then a
                // few times later (a transaction may run on after its first change).
                if changed {
                    rescans_left = RESCANS.len();
                    self.commits.send_replace(version);
                }
                rescan_at = if changed || (rescan_due && rescans_left > 0) {
                    let step = RESCANS[RESCANS.len() - rescans_left];
                    rescans_left -= 1;
                    Some(now + step)
                } else if rescan_due {
                    None
                } else {
                    rescan_at
                };
                if safety_due {
                    next_safety = now + self.settings.poll_interval;
                }
                match self.scan(&mut db, &mut tasks, &stop).await {
                    Ok(found) => {
                        if changed || found || completed > 0 {
                            last_activity = now;
                        }
                        if found {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error.message = %e, "scanning for work failed");
                        db_failures = db_failures.saturating_add(1);
                        self.pause(wakeup::reconnect_delay(db_failures), &mut stop)
                            .await;
                        continue;
                    }
                }
            }

            if !tasks.is_empty()
                || rescan_at.is_some()
                || now.duration_since(last_activity) < self.settings.linger
            {
                tokio::select! {
                    _ = self.wake.notified() => rescan_at = Some(Instant::now()),
                    _ = tick(ticker.as_ref()) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }

            // Idle: go to sleep, but look once more after saying so — a change queued
            // before the triggers could see us asleep has already moved the counter.
            if let Err(e) = registry::set_awake(&self.pool, self.id, false).await {
                // Without the mark no NOTIFY may come: the safety-net poll still will.
                tracing::debug!(error.message = %e, "could not mark the worker asleep");
            }
            let moved = read_version(&mut db)
                .await
                .map(|v| Some(v) != seen)
                .unwrap_or(true);
            if !moved {
                let until = next_safety;
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep_until(until) => {}
                    _ = stop.changed() => {}
                }
            }
            if let Err(e) = registry::set_awake(&self.pool, self.id, true).await {
                // Costs only NOTIFYs that are not needed while we are awake.
                tracing::debug!(error.message = %e, "could not mark the worker awake");
            }
            rescan_at = Some(Instant::now());
            last_activity = Instant::now();
        }

        tracing::info!(
            in_flight = tasks.len(),
            "stopping: no new claims; finishing deliveries in flight"
        );
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(r) = tasks.join_next().await {
                log_task(r);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "deliveries still running after the grace period; their leases will expire"
            );
            tasks.abort_all();
        }
        Ok(())
    }

    /// Handle new logins, then claim users for the free slots. True when anything was found.
    async fn scan(
        &self,
        db: &mut OwnConnection,
        tasks: &mut JoinSet<Result<FlushReport, FlushError>>,
        stop: &watch::Receiver<bool>,
    ) -> Result<bool, claim::LoginError> {
        let mut intake = take_in(db).await?;
        let mut expanded = intake.taken;
        // A backlog (the worker was down) is expanded in bounded steps before claiming.
        while intake.taken == EXPAND_LIMIT && !*stop.borrow() {
            intake = take_in(db).await?;
            expanded += intake.taken;
        }
        if expanded > 0 {
            metrics::counter!("livesync_changes_expanded_total").increment(expanded as u64);
        }
        let logins = if intake.logins_pending {
            claim::process_logins(&self.pool, 100).await?
        } else {
            0
        };
        let free = self.settings.concurrency.saturating_sub(tasks.len());
        let claimed = claim::claim_users(
            db.get().await?,
            free,
            self.id,
            self.settings.session_limit,
            self.settings.lease,
        )
        .await;
        let claims = db.check(claimed)?;
        let found = expanded > 0 || logins > 0 || !claims.is_empty();
        for c in claims {
            let flusher = self.flusher.clone();
            let stop = stop.clone();
            tasks.spawn(async move { flusher.flush(&c, &stop).await });
        }
        Ok(found)
    }

    async fn pause(&self, d: Duration, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One tick of the awake loop.
async fn tick(ticker: Option<&Ticker>) {
    match ticker {
        Some(t) => t.tick().await,
        None => tokio::time::sleep(TICK).await,
    }
}

/// The change counter, over the loop's own connection.
async fn read_version(db: &mut OwnConnection) -> Result<i64, sqlx::Error> {
    let read = wakeup::change_version(db.get().await?).await;
    db.check(read)
}

/// One step of the intake, over the loop's own connection.
async fn take_in(db: &mut OwnConnection) -> Result<claim::Intake, sqlx::Error> {
    let taken = claim::intake(db.get().await?, EXPAND_LIMIT).await;
    db.check(taken)
}

fn reap(tasks: &mut JoinSet<Result<FlushReport, FlushError>>) -> usize {
    let mut n = 0;
    while let Some(r) = tasks.try_join_next() {
        n += 1;
        log_task(r);
    }
    n
}

fn log_task(r: Result<Result<FlushReport, FlushError>, tokio::task::JoinError>) {
    if let Err(e) = r {
        tracing::error!(error.message = %e, "a delivery task panicked or was cancelled");
    }
}

/// Heartbeat and the gauges /metrics shows, every few seconds.
async fn housekeeping(pool: PgPool, id: Uuid, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(registry::HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => {}
        }
        if let Err(e) = registry::heartbeat(&pool, id).await {
            tracing::debug!(error.message = %e, "heartbeat failed");
            continue;
        }
        let gauges: Result<(i64, i64, f64), sqlx::Error> = sqlx::query_as(
            "select (select count(*) from livesync.queue)
                    + (select count(*) from livesync.changes),
                    (select count(*) from livesync.dead_letters),
                    pg_notification_queue_usage()",
        )
        .fetch_one(&pool)
        .await;
        if let Ok((queued, dead, usage)) = gauges {
            metrics::gauge!("livesync_queue_depth").set(queued as f64);
            metrics::gauge!("livesync_dead_letters").set(dead as f64);
            metrics::gauge!("livesync_notification_queue_usage").set(usage);
        }
    }
}

impl Health {
    pub fn listener_healthy(&self) -> bool {
        self.poll_only || self.listener_ok.load(Ordering::Relaxed)
    }
}
