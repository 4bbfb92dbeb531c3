//! Calendar sinks: where delivered appointments end up.
//!
//! A sink receives, for one person's calendar at a time, an ordered batch of changes
//! (upserts carrying the appointment's current state, deletes) and returns one result per
//! change. The worker serialises calls per user (the user lease), records what a sink
//! reports (remote id, ETag) in `livesync.delivered`, and hands it back on the next change
//! of that appointment, so a sink can update or delete precisely and never duplicate.
//!
//! Errors say what the worker does next: [`SinkError::Retryable`] counts as a failed
//! attempt and backs off (honouring `retry_after`), [`SinkError::Permanent`] dead-letters
//! the one change, [`SinkError::Config`] backs off the whole calendar without counting and
//! is logged as something an admin must fix; [`SinkError::Deferred`] (not done in this
//! batch, through no fault of its own) comes back without counting as an attempt, at once
//! or after its `retry_after`.
//!
//! **The charging rule: a change is charged an attempt only for its own failed request.**
//! A problem of the whole calendar (a throttled mailbox or server, the batch's time running
//! out) never fails the other changes of a batch: those not yet sent are `Deferred`, with
//! the server's pause as `retry_after` when there is one. A throttled request (429, or 503
//! with `Retry-After`) is not the change's failure either: the sink waits out the pause and
//! sends it again while the batch has time, else defers it. Only a configuration problem
//! (rejected credentials, a missing calendar) may be reported for the changes not yet sent,
//! as it is never charged.

pub mod caldav;
pub mod ews;
pub mod graph;
pub mod ics;
pub mod mailbox;
pub mod null;
pub mod pause;

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Whose calendar a batch is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarOwner {
    pub user_id: i64,
    /// The Xpert user name, as stored (may contain anything).
    pub username: String,
    /// `livesync.user_settings.calendar_address`: where this person's calendar is when
    /// the sink's template does not fit (a Graph mailbox, a CalDAV collection URL).
    pub calendar_address: Option<String>,
}

/// An appointment ("Termin") as Xpert stores it. Xpert validates little: the subject may be
/// missing, the end may lie before the start, notes may be huge or hold control characters.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Appointment {
    pub id: i64,
    pub subject: Option<String>,
    pub location: Option<String>,
    pub notes: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub all_day: bool,
    pub updated_at: DateTime<Utc>,
}

/// What a calendar already holds for an appointment, as a sink reported it last time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteRef {
    /// The sink's id of the entry (CalDAV href, Graph event id); `None` for file sinks.
    pub remote_id: Option<String>,
    pub etag: Option<String>,
}

/// One change to deliver into one calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create the entry, or replace it with the appointment's current state.
    Upsert {
        appointment: Appointment,
        /// Stable iCalendar UID (same for every delivery of this appointment).
        uid: String,
        /// iCalendar SEQUENCE: 0 on creation, bumped on every update.
        sequence: i32,
        /// Set when the calendar already holds the entry.
        previous: Option<RemoteRef>,
    },
    /// Remove the entry. Removing an entry that is already gone succeeds.
    Delete {
        appointment_id: i64,
        uid: String,
        previous: RemoteRef,
    },
}

impl Change {
    pub fn appointment_id(&self) -> i64 {
        match self {
            Change::Upsert { appointment, .. } => appointment.id,
            Change::Delete { appointment_id, .. } => *appointment_id,
        }
    }
    pub fn uid(&self) -> &str {
        match self {
            Change::Upsert { uid, .. } | Change::Delete { uid, .. } => uid,
        }
    }
}

/// What a sink reports after applying a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub remote_id: Option<String>,
    pub etag: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SinkError {
    /// Try again later (network, 5xx, 429); `retry_after` when the server said how long.
    #[error("temporary failure: {message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// This change cannot succeed as it is (the server rejects the object).
    #[error("rejected: {message}")]
    Permanent { message: String },
    /// The calendar is not set up right (credentials, URL, permissions): an admin must act.
    #[error("configuration problem: {message}")]
    Config { message: String },
    /// Not done in this batch through no fault of its own (the sink ran out of time, the
    /// server throttles the calendar): delivered with a later batch, not counted as a
    /// failure; no sooner than `retry_after` when set (the server's pause).
    #[error("not attempted yet: {message}")]
    Deferred {
        message: String,
        retry_after: Option<Duration>,
    },
}

/// How long one batch of a remote sink (CalDAV, Graph) starts changes, waits out a
/// throttled server's pause and looks up an event whose creation lost its answer, by
/// default: a third of the default lease (60 s). A change started late can still take a
/// request timeout or two; the worker keeps another third of the lease as margin.
pub const RUN_BUDGET: Duration = Duration::from_secs(20);

/// The run budget for a worker lease of `lease`: a third of it, at most [`RUN_BUDGET`].
/// The worker stops waiting for a batch at two thirds of its lease and then takes none of
/// its results (all come back uncharged), so a sink that went on longer would throw its
/// own work away, batch after batch.
pub fn run_budget(lease: Duration) -> Duration {
    (lease / 3).min(RUN_BUDGET)
}

/// Settings every sink needs to render appointments.
#[derive(Debug, Clone)]
pub struct RenderContext {
    /// The firm's time zone (`livesync.settings.time_zone`): all-day dates are taken there.
    pub time_zone: chrono_tz::Tz,
}

/// A place appointments are delivered to. Implementations must be idempotent per change:
/// applying the same upsert twice leaves one entry; deleting twice succeeds.
#[async_trait::async_trait]
pub trait CalendarSink: Send + Sync + 'static {
    /// Short name for logs and metrics (`ics`, `null`, `caldav`, `graph`, `ews`).
    fn name(&self) -> &'static str;

    /// Apply `changes` to `owner`'s calendar in order; exactly one result per change, in
    /// the same order. An error result speaks for that change alone (the charging rule
    /// above): never copy one request's error onto the other changes.
    async fn apply(
        &self,
        owner: &CalendarOwner,
        changes: &[Change],
        ctx: &RenderContext,
    ) -> Vec<Result<Applied, SinkError>>;

    /// Is the sink usable at all (directory writable, server reachable, credentials
    /// accepted)? Used at start-up, by `/healthz` and by `livesync-admin doctor`.
    async fn check(&self) -> Result<(), SinkError>;

    /// Every item `owner`'s calendar holds that may overlap `span`, whoever wrote it (a
    /// sink may return more; verification looks at the times itself). A calendar that
    /// does not exist holds nothing. Read only; used by verification (`crate::verify`).
    /// Sinks that cannot list yet say so as a [`SinkError::Config`].
    async fn list(
        &self,
        owner: &CalendarOwner,
        span: &Span,
        ctx: &RenderContext,
    ) -> Result<Vec<ListedItem>, SinkError> {
        let _ = (owner, span, ctx);
        Err(SinkError::Config {
            message: format!(
                "the {} sink cannot list a calendar yet: verification is not available for it",
                self.name()
            ),
        })
    }

    /// Read `owner`'s calendar again, cheaply where the server can tell what changed
    /// (CalDAV `sync-collection`, Graph's calendarView delta, EWS `SyncFolderItems`):
    /// only the changes since `token`, a token an earlier reading of this calendar over a
    /// span covering `span` returned. Without a token, or when the server no longer knows
    /// it (expired, the calendar recreated), or when it does not cover `span`, a
    /// [`Reading::Full`] with a fresh token; the token is taken before the items are
    /// read, so that nothing written in between is missed. By default a full listing
    /// without a token.
    async fn read_since(
        &self,
        owner: &CalendarOwner,
        span: &Span,
        token: Option<&str>,
        ctx: &RenderContext,
    ) -> Result<Reading, SinkError> {
        let _ = token;
        Ok(Reading::Full {
            items: self.list(owner, span, ctx).await?,
            token: None,
        })
    }
}

/// A reading of a calendar: everything, or only what changed since an earlier reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Every item the calendar holds that may overlap the span (as [`CalendarSink::list`]
    /// returns them), and the token the next reading starts from: `None` when the sink
    /// (or the server) cannot tell changes.
    Full {
        items: Vec<ListedItem>,
        token: Option<String>,
    },
    /// What changed since the token the reading started from: items added or changed
    /// (wherever they lie; the reader keeps those that may overlap its span), and the ids
    /// ([`ListedItem::remote_id`]) of items removed from the calendar (deleted, or moved
    /// out of it, as into Deleted Items); then the token for the next reading.
    Changes {
        changed: Vec<ListedItem>,
        removed: Vec<String>,
        token: String,
    },
}

/// A part of a calendar: what takes place from `from` on, before `to` when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
}

/// One item of a calendar, as listing read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedItem {
    /// The sink's id of the item (CalDAV href, Graph event id); `None` for file sinks.
    pub remote_id: Option<String>,
    pub event: crate::ical::EventRead,
}

/// Appointments for the sinks' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use chrono::{DateTime, TimeZone, Utc};

    use super::Appointment;

    /// An appointment as Xpert may store it: a padded subject, a blank location, CRLF in
    /// the notes.
    pub(crate) fn untidy(start: DateTime<Utc>, end: DateTime<Utc>, all_day: bool) -> Appointment {
        Appointment {
            id: 42,
            subject: Some("  Tagsatzung  ".into()),
            location: Some(" ".into()),
            notes: Some("Akt\r\nmitnehmen".into()),
            starts_at: start,
            ends_at: end,
            all_day,
            updated_at: start,
        }
    }

    /// All day in Vienna from 28 to 30 March 2026, across the change to summer time.
    pub(crate) fn all_day_across_the_clock_change() -> Appointment {
        let tz = chrono_tz::Europe::Vienna;
        let midnight = |day| {
            tz.with_ymd_and_hms(2026, 3, day, 0, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        };
        untidy(midnight(28), midnight(30), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_ends_inside_the_workers_lease() {
        assert_eq!(run_budget(Duration::from_secs(60)), RUN_BUDGET);
        assert_eq!(run_budget(Duration::from_secs(600)), RUN_BUDGET);
        assert_eq!(run_budget(Duration::from_secs(6)), Duration::from_secs(2));
    }
}
