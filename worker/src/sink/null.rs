//! The `null` sink: accepts every change and counts it. For benchmarks and tests.
//!
//! [`NullSink::counters`] hands out shared counters; [`NullSink::with_hook`] additionally
//! reports every applied change with the instant it was applied, so latency benchmarks
//! and tests can observe deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::{Applied, CalendarOwner, CalendarSink, Change, RenderContext, SinkError};

/// Shared counters; clones observe the same numbers.
#[derive(Debug, Clone, Default)]
pub struct NullCounters {
    pub upserts: Arc<AtomicU64>,
    pub deletes: Arc<AtomicU64>,
    /// Calls to `apply`.
    pub batches: Arc<AtomicU64>,
}

impl NullCounters {
    pub fn upserts(&self) -> u64 {
        self.upserts.load(Ordering::Relaxed)
    }
    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::Relaxed)
    }
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
    /// Upserts and deletes together.
    pub fn changes(&self) -> u64 {
        self.upserts() + self.deletes()
    }
}

/// What kind of change was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    Upsert,
    Delete,
}

/// One applied change, as the hook reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub user_id: i64,
    pub appointment_id: i64,
    pub kind: DeliveryKind,
    /// iCalendar SEQUENCE for upserts, `None` for deletes.
    pub sequence: Option<i32>,
    pub at: Instant,
}

/// Accepts everything, counts, optionally reports.
#[derive(Debug, Default)]
pub struct NullSink {
    counters: NullCounters,
    hook: Option<UnboundedSender<Delivery>>,
}

impl NullSink {
    pub fn new() -> NullSink {
        NullSink::default()
    }

    /// Also send a [`Delivery`] for every applied change (a closed receiver is ignored).
    pub fn with_hook(hook: UnboundedSender<Delivery>) -> NullSink {
        NullSink {
            counters: NullCounters::default(),
            hook: Some(hook),
        }
    }

    /// The counters, shared with the sink.
    pub fn counters(&self) -> NullCounters {
        self.counters.clone()
    }
}

#[async_trait::async_trait]
impl CalendarSink for NullSink {
    fn name(&self) -> &'static str {
        "null"
    }

    async fn apply(
        &self,
        owner: &CalendarOwner,
        changes: &[Change],
        _ctx: &RenderContext,
    ) -> Vec<Result<Applied, SinkError>> {
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let at = Instant::now();
        changes
            .iter()
            .map(|change| {
                let (kind, sequence) = match change {
                    Change::Upsert { sequence, .. } => {
                        self.counters.upserts.fetch_add(1, Ordering::Relaxed);
                        (DeliveryKind::Upsert, Some(*sequence))
                    }
                    Change::Delete { .. } => {
                        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
                        (DeliveryKind::Delete, None)
                    }
                };
                if let Some(hook) = &self.hook {
                    let _ = hook.send(Delivery {
                        user_id: owner.user_id,
                        appointment_id: change.appointment_id(),
                        kind,
                        sequence,
                        at,
                    });
                }
                Ok(Applied::default())
            })
            .collect()
    }

    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::sink::{Appointment, RemoteRef};

    fn changes() -> Vec<Change> {
        let now = Utc::now();
        vec![
            Change::Upsert {
                appointment: Appointment {
                    id: 1,
                    subject: None,
                    location: None,
                    notes: None,
                    starts_at: now,
                    ends_at: now,
                    all_day: false,
                    updated_at: now,
                },
                uid: "u1".into(),
                sequence: 3,
                previous: None,
            },
            Change::Delete {
                appointment_id: 2,
                uid: "u2".into(),
                previous: RemoteRef::default(),
            },
        ]
    }

    #[tokio::test]
    async fn counts_and_reports_every_change() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = NullSink::with_hook(tx);
        let counters = sink.counters();
        let owner = CalendarOwner {
            user_id: 9,
            username: "mmuster".into(),
            calendar_address: None,
        };
        let ctx = RenderContext {
            time_zone: chrono_tz::Europe::Vienna,
        };
        let results = sink.apply(&owner, &changes(), &ctx).await;
        assert_eq!(
            results,
            vec![Ok(Applied::default()), Ok(Applied::default())]
        );
        assert_eq!((counters.upserts(), counters.deletes()), (1, 1));
        assert_eq!((counters.batches(), counters.changes()), (1, 2));
        let first = rx.recv().await.unwrap();
        assert_eq!(
            (
                first.user_id,
                first.appointment_id,
                first.kind,
                first.sequence
            ),
            (9, 1, DeliveryKind::Upsert, Some(3))
        );
        let second = rx.recv().await.unwrap();
        assert_eq!(
            (second.appointment_id, second.kind),
            (2, DeliveryKind::Delete)
        );
        drop(rx);
        // A dropped receiver does not fail deliveries.
        assert!(
            sink.apply(&owner, &changes(), &ctx)
                .await
                .iter()
                .all(Result::is_ok)
        );
        assert!(sink.check().await.is_ok());
        assert_eq!(NullSink::new().name(), "null");
    }
}
