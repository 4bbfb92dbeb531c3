//! Delivering one leased user's queue into their calendar.
//!
//! Design note. The queue holds intents, the tables hold the truth: for every due entry the
//! worker reads the appointment's *current* row and whether the user still participates,
//! and what the calendar holds (`livesync.delivered`). Present → upsert; absent but
//! delivered → delete; absent and never delivered → nothing to do. So coalesced, reordered
//! or repeated entries always converge on the database's state, and a retry never
//! resurrects what was deleted.
//!
//! Every batch is completed in one statement (`complete`, shared with the other deliveries
//! finishing at the same time) that first checks, under a row lock, that this worker still
//! holds the user's lease token; a worker that lost its lease completes nothing for that
//! user. The due entries are loaded the same way (`load`), both through `coalesce`. Entries are removed only if their version is still the one delivered
//! (`version = $v`), so a change that arrived during the delivery stays queued, and the
//! delivered state only moves forward (`delivered.version < $v`). A worker never calls the
//! sink after its local lease deadline, which lies before the database's expiry.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;
use tracing::{Instrument, Span};

mod coalesce;
mod complete;
mod load;
mod plan;

use complete::{Completer, Completion, Done};
use load::{DueRow, Loader};
use plan::{Plan, plan};

use crate::backoff;
use crate::claim::Claim;
use crate::sink::{Applied, CalendarOwner, CalendarSink, Change, RenderContext, SinkError};
use crate::user_log::{UserAction, UserLogs};

/// What a flush needs besides the claim.
#[derive(Clone)]
pub struct Flusher {
    pub pool: PgPool,
    pub sink: Arc<dyn CalendarSink>,
    pub user_logs: Option<Arc<UserLogs>>,
    pub max_attempts: i32,
    pub batch_size: i64,
    /// Entries of a claim's first batch (at most `batch_size`), see [`first_batch`].
    pub first_batch: i64,
    pub lease: Duration,
    /// Batches per claim before the user is given back (fairness under a storm).
    pub max_batches: usize,
    loader: Loader,
    completer: Completer,
}

/// How a [`Flusher`] is set up.
pub struct FlushSettings {
    pub max_attempts: i32,
    pub batch_size: i64,
    pub first_batch: i64,
    pub lease: Duration,
    pub max_batches: usize,
    /// Deliveries that may run at once: the most users one load or completion covers.
    pub concurrency: usize,
}

impl Flusher {
    /// Set up, and start the tasks that load and complete for all deliveries together
    /// (they stop when the last clone of the flusher is dropped). Needs a tokio runtime.
    pub fn start(
        pool: PgPool,
        sink: Arc<dyn CalendarSink>,
        user_logs: Option<Arc<UserLogs>>,
        s: FlushSettings,
    ) -> Flusher {
        let max_users = s.concurrency.max(1);
        Flusher {
            loader: load::spawn_loader(pool.clone(), s.batch_size, max_users),
            completer: complete::spawn_completer(pool.clone(), s.lease, max_users),
            pool,
            sink,
            user_logs,
            max_attempts: s.max_attempts,
            batch_size: s.batch_size,
            first_batch: s.first_batch.clamp(1, s.batch_size.max(1)),
            lease: s.lease,
            max_batches: s.max_batches,
        }
    }
}

/// What one flush of one user did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushReport {
    pub delivered: usize,
    pub deleted: usize,
    pub skipped: usize,
    pub retried: usize,
    pub dead_lettered: usize,
    pub lease_lost: bool,
    /// The last batch's completion gave the user back already.
    pub released: bool,
    /// The soonest a postponed entry of this user falls due again.
    pub retry_in: Option<Duration>,
}

impl FlushReport {
    pub fn handled(&self) -> usize {
        self.delivered + self.deleted + self.skipped + self.retried + self.dead_lettered
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The error of a statement that loaded or completed for several deliveries at once.
    #[error("database error: {0}")]
    Shared(#[from] Arc<sqlx::Error>),
}

/// The stable iCalendar UID of an appointment (the same in every participant's calendar).
pub fn uid_for(appointment_id: i64) -> String {
    format!("{UID_PREFIX}{appointment_id}{UID_SUFFIX}")
}

/// Cut a claim's loaded `rows` to the size of batch number `round` and say whether it is
/// the last one (everything due was loaded and fits).
///
/// The first batch of a claim is at most `first_batch` entries, the others `batch_size`.
/// A delivery is recorded only when its whole batch is done, so for a remote calendar,
/// where an entry costs up to four requests (a worker that took over a crashed one's
/// user reconciles each "maybe delivered" entry: PUT, 412, GET, PUT), a small first batch
/// is what makes the first recorded delivery come within a second instead of after the
/// full batch. The rows cut off stay queued and come with the next load.
fn batch_is_last(rows: &mut Vec<DueRow>, round: usize, first_batch: i64, batch_size: i64) -> bool {
    let limit = if round == 0 { first_batch } else { batch_size };
    if rows.len() as i64 > limit {
        rows.truncate(limit.max(1) as usize);
        false
    } else {
        (rows.len() as i64) < batch_size
    }
}

pub(crate) const UID_PREFIX: &str = "xpert-termin-";
pub(crate) const UID_SUFFIX: &str = "@livesync";

/// `livesync.delivered.sequence` of an entry handed to a sink whose outcome is unknown (the
/// write failed or was cut off, or the worker died before recording it): the calendar may
/// hold it, or not. Who writes these marks, and when: `claim`.
pub const MAYBE_DELIVERED: i32 = -1;

impl Flusher {
    /// Deliver the claimed user's due entries, batch by batch, then release the user.
    pub async fn flush(
        &self,
        claim: &Claim,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<FlushReport, FlushError> {
        let span = tracing::info_span!(
            "flush",
            user_id = claim.user_id,
            username = %claim.username,
            entries = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self
            .flush_batches(claim, stop)
            .instrument(span.clone())
            .await;
        // Give the user back even after an error, so another attempt can start at once
        // (normally the last batch's completion has done so).
        let released = match &result {
            Ok(report) if report.released || report.lease_lost => Ok(()),
            Ok(_) => crate::claim::release(&self.pool, claim).await,
            Err(_) => crate::claim::release_after_error(&self.pool, claim).await,
        };
        let _enter = span.enter();
        match &result {
            Ok(report) => {
                Span::current().record("entries", report.handled());
                let outcome = if report.lease_lost {
                    "lease_lost"
                } else if report.retried + report.dead_lettered > 0 {
                    "partial"
                } else {
                    "ok"
                };
                Span::current().record("outcome", outcome);
                metrics::histogram!("livesync_flush_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(?report, "flush done");
            }
            Err(e) => {
                Span::current().record("outcome", "error");
                tracing::error!(error.message = %e, error.cause_chain = ?e, "flush failed");
            }
        }
        if let Err(e) = released {
            tracing::warn!(error.message = %e, "releasing the user failed; the lease will expire");
        }
        result
    }

    async fn flush_batches(
        &self,
        claim: &Claim,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<FlushReport, FlushError> {
        let mut report = FlushReport::default();
        // The lease runs from the claim; stay well inside it on our own clock.
        let margin = self.lease / 3;
        let mut deadline = Instant::now() + self.lease - margin;
        let owner = CalendarOwner {
            user_id: claim.user_id,
            username: claim.username.clone(),
            calendar_address: claim.calendar_address.clone(),
        };
        for round in 0..self.max_batches {
            if *stop.borrow() {
                break;
            }
            let mut rows: Vec<DueRow> = self.loader.call(claim.user_id).await?;
            if rows.is_empty() {
                break;
            }
            // Everything due fits in this batch: the completion gives the user back (a
            // change that comes later starts a new claim).
            let last = batch_is_last(&mut rows, round, self.first_batch, self.batch_size);
            let ctx = RenderContext {
                time_zone: rows[0]
                    .time_zone
                    .parse()
                    .unwrap_or(chrono_tz::Europe::Vienna),
            };
            let mut done = Vec::with_capacity(rows.len());
            let mut to_send = Vec::new();
            let mut sent_rows = Vec::new();
            for row in &rows {
                match plan(row) {
                    Plan::Skip => done.push(Done::Skipped {
                        appointment_id: row.appointment_id,
                        version: row.version,
                    }),
                    Plan::Unchanged => done.push(Done::Unchanged {
                        appointment_id: row.appointment_id,
                        version: row.version,
                    }),
                    Plan::Send(change) => {
                        to_send.push(change);
                        sent_rows.push(row);
                    }
                }
            }
            if !to_send.is_empty() {
                let before_call = Instant::now();
                if before_call >= deadline {
                    report.lease_lost = true;
                    break;
                }
                let results = match tokio::time::timeout(
                    deadline - before_call,
                    self.sink.apply(&owner, &to_send, &ctx),
                )
                .await
                {
                    Ok(results) if results.len() == to_send.len() => results,
                    Ok(results) => {
                        let msg = format!(
                            "sink {} returned {} results for {} changes",
                            self.sink.name(),
                            results.len(),
                            to_send.len()
                        );
                        vec![
                            Err(SinkError::Retryable {
                                message: msg,
                                retry_after: None
                            });
                            to_send.len()
                        ]
                    }
                    // Cut off at the lease deadline: not the entries' fault, and some of
                    // them may be written already (the completion marks them "maybe
                    // delivered", so the next try reconciles). They come back without counting as an
                    // attempt, or a slow calendar would dead-letter entries it accepts.
                    Err(_) => vec![
                        Err(SinkError::Deferred {
                            message: "the calendar did not answer before the lease deadline".into(),
                            retry_after: None,
                        });
                        to_send.len()
                    ],
                };
                for ((change, row), result) in to_send.into_iter().zip(sent_rows).zip(results) {
                    done.push(self.outcome(change, row, result));
                }
            }
            let renewed_at = Instant::now();
            let done = Arc::new(done);
            let completion = Completion {
                user_id: claim.user_id,
                token: claim.token,
                done: done.clone(),
                release: last,
            };
            match self.completer.call(completion).await? {
                true => deadline = renewed_at + self.lease - margin,
                false => {
                    report.lease_lost = true;
                    tracing::warn!("lease lost; another worker took this user over");
                    break;
                }
            }
            self.account(claim, &done, &mut report);
            if last {
                report.released = true;
                break;
            }
        }
        Ok(report)
    }

    /// What becomes of one entry after the sink's result for its change. Only a failure of
    /// the change itself counts as an attempt: `Retryable` backs off exponentially (or for
    /// the server's `retry_after`) and dead-letters at `max_attempts`, `Permanent`
    /// dead-letters at once. `Deferred` (not done through no fault of its own) and `Config`
    /// (an admin must act) keep the attempt count: `Deferred` comes back at once or after
    /// its `retry_after`, `Config` at a slow pace.
    fn outcome(&self, change: Change, row: &DueRow, result: Result<Applied, SinkError>) -> Done {
        let appointment_id = row.appointment_id;
        let version = row.version;
        // A write that failed may still have reached the calendar (a lost answer, a batch
        // cut off at the deadline): without any record, it gets a "maybe delivered" mark.
        let unrecorded = matches!(change, Change::Upsert { .. }) && row.uid.is_none();
        match (change, result) {
            (
                Change::Upsert {
                    uid,
                    sequence,
                    appointment,
                    ..
                },
                Ok(applied),
            ) => Done::Upserted {
                appointment_id,
                version,
                uid,
                sequence,
                applied,
                subject: appointment.subject.unwrap_or_default(),
                row_version: row.row_version.clone(),
            },
            (Change::Delete { .. }, Ok(_)) => Done::Deleted {
                appointment_id,
                version,
            },
            (_, Err(e)) => {
                let attempts = row.attempts + 1;
                let error = e.to_string();
                match e {
                    SinkError::Permanent { .. } => Done::Dead {
                        appointment_id,
                        version,
                        error,
                        unrecorded,
                    },
                    SinkError::Retryable { .. } if attempts >= self.max_attempts => Done::Dead {
                        appointment_id,
                        version,
                        error,
                        unrecorded,
                    },
                    SinkError::Retryable { retry_after, .. } => Done::Retry {
                        appointment_id,
                        version,
                        attempts,
                        delay: backoff::delay(attempts, retry_after, backoff::CAP),
                        error,
                        unrecorded,
                    },
                    // Not done through no fault of its own (throttled calendar, batch out of
                    // time): back with a later batch without counting as an attempt, at once
                    // or once the server's pause is over.
                    SinkError::Deferred { retry_after, .. } => Done::Retry {
                        appointment_id,
                        version,
                        attempts: row.attempts,
                        delay: backoff::postpone(retry_after),
                        error,
                        unrecorded,
                    },
                    // A configuration problem is not the entry's fault: keep it, without
                    // counting towards the dead letters, and come back at a slow pace.
                    SinkError::Config { .. } => Done::Retry {
                        appointment_id,
                        version,
                        attempts: row.attempts,
                        delay: backoff::delay(attempts.max(6), None, backoff::CAP),
                        error,
                        unrecorded,
                    },
                }
            }
        }
    }

    /// Count, measure and write the user's own log file.
    fn account(&self, claim: &Claim, done: &[Done], report: &mut FlushReport) {
        let sink = self.sink.name();
        for d in done {
            let action = match d {
                Done::Upserted {
                    appointment_id,
                    sequence,
                    subject,
                    ..
                } => {
                    report.delivered += 1;
                    metrics::counter!("livesync_delivered_total", "sink" => sink, "op" => "upsert")
                        .increment(1);
                    Some(UserAction::Delivered {
                        appointment_id: *appointment_id,
                        subject: subject.clone(),
                        sequence: *sequence,
                    })
                }
                Done::Deleted { appointment_id, .. } => {
                    report.deleted += 1;
                    metrics::counter!("livesync_delivered_total", "sink" => sink, "op" => "delete")
                        .increment(1);
                    Some(UserAction::Deleted {
                        appointment_id: *appointment_id,
                    })
                }
                Done::Skipped { .. } | Done::Unchanged { .. } => {
                    report.skipped += 1;
                    None
                }
                Done::Retry {
                    appointment_id,
                    delay,
                    error,
                    attempts,
                    ..
                } => {
                    report.retried += 1;
                    report.retry_in = Some(report.retry_in.map_or(*delay, |d| d.min(*delay)));
                    metrics::counter!("livesync_failed_total", "sink" => sink).increment(1);
                    tracing::warn!(appointment_id, attempts, retry_in = ?delay, error.message = %error, "delivery failed; will retry");
                    Some(UserAction::Retried {
                        appointment_id: *appointment_id,
                        error: error.clone(),
                        retry_in: *delay,
                    })
                }
                Done::Dead {
                    appointment_id,
                    error,
                    ..
                } => {
                    report.dead_lettered += 1;
                    metrics::counter!("livesync_dead_lettered_total", "sink" => sink).increment(1);
                    tracing::error!(appointment_id, error.message = %error, "delivery failed for good; moved to dead letters");
                    Some(UserAction::DeadLettered {
                        appointment_id: *appointment_id,
                        error: error.clone(),
                    })
                }
            };
            if let (Some(action), Some(logs), true) = (action, &self.user_logs, claim.keep_logfile)
                && let Err(e) = logs.write(&claim.username, &action)
            {
                tracing::warn!(error.message = %e, "writing the user's log file failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<DueRow> {
        (0..n as i64).map(DueRow::for_test).collect()
    }

    #[test]
    fn the_first_batch_is_cut_to_its_size_and_is_never_the_last_when_cut() {
        let mut r = rows(50);
        assert!(!batch_is_last(&mut r, 0, 10, 50));
        assert_eq!(r.len(), 10);
        assert_eq!(r[9].version, 9, "the earliest versions go first");
    }

    #[test]
    fn a_first_batch_that_fits_gives_the_user_back() {
        let mut r = rows(7);
        assert!(batch_is_last(&mut r, 0, 10, 50));
        assert_eq!(r.len(), 7);
    }

    #[test]
    fn later_batches_are_full_size_and_last_when_short() {
        let mut r = rows(50);
        assert!(
            !batch_is_last(&mut r, 1, 10, 50),
            "a full batch: more may be due"
        );
        assert_eq!(r.len(), 50);
        let mut r = rows(49);
        assert!(batch_is_last(&mut r, 3, 10, 50));
    }

    #[test]
    fn without_a_smaller_first_batch_nothing_changes() {
        let mut r = rows(500);
        assert!(!batch_is_last(&mut r, 0, 500, 500));
        assert_eq!(r.len(), 500);
        let mut r = rows(499);
        assert!(batch_is_last(&mut r, 0, 500, 500));
    }
}
