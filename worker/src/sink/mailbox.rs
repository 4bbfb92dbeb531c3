//! What the sinks that write into a remote mailbox (Graph, EWS) share: where a person's
//! mailbox is, the state kept per mailbox, and the fault accounting of one batch (the
//! charging rule of [`crate::sink`]).
//!
//! A [`Batch`] runs the changes of one `apply` call side by side, a bounded number at once.
//! A change begins only while the batch has time: once its run budget is used up, or
//! while the mailbox is paused past the batch's deadline, the changes not yet begun are
//! handed back as [`SinkError::Deferred`] (with the pause as `retry_after`). A problem of
//! the whole mailbox one change met (a configuration problem, say) is reported for the
//! changes not yet sent instead of sending them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::sink::pause::{self, Pause};
use crate::sink::{Applied, CalendarOwner, SinkError};

/// How long a listing of one mailbox (verification) may wait out the server's pauses
/// before it gives up on that calendar for this run.
pub const LIST_BUDGET: Duration = Duration::from_secs(120);

/// How far ahead a listing of an open window reads: ten years (a calendar view needs an
/// end).
pub const OPEN_END: chrono::TimeDelta = chrono::TimeDelta::days(3653);

/// The end of a listing of `span`: its own, or [`OPEN_END`] after its start.
pub fn listing_end(span: &crate::sink::Span) -> chrono::DateTime<chrono::Utc> {
    span.to.unwrap_or(span.from + OPEN_END)
}

/// Where each person's mailbox is: their own calendar address, else the configured
/// template with their user name for `{username}`.
#[derive(Debug, Clone)]
pub struct MailboxTemplate {
    template: String,
    /// Whether an address made from the template can name a mailbox.
    usable: fn(&str) -> bool,
}

impl MailboxTemplate {
    /// `template`, as configured in the variable `variable` (which must not be empty).
    pub fn new(
        template: &str,
        variable: &str,
        usable: fn(&str) -> bool,
    ) -> Result<MailboxTemplate, SinkError> {
        if template.trim().is_empty() {
            return Err(SinkError::Config {
                message: format!("{variable} is empty"),
            });
        }
        Ok(MailboxTemplate {
            template: template.to_string(),
            usable,
        })
    }

    /// The mailbox of `owner`: the per-user override, else the template's.
    pub fn address(&self, owner: &CalendarOwner) -> Result<String, SinkError> {
        if let Some(address) = owner.calendar_address.as_deref().map(str::trim)
            && !address.is_empty()
        {
            return Ok(address.to_string());
        }
        let address = self.template.replace("{username}", owner.username.trim());
        if !(self.usable)(&address) {
            return Err(SinkError::Config {
                message: format!("user {} has no mailbox address", owner.username),
            });
        }
        Ok(address)
    }
}

/// A remote mailbox as a batch sees it.
pub trait RemoteMailbox {
    /// The server asked to send nothing to this mailbox for a while.
    fn pause(&self) -> &Pause;
    /// Who paused the mailbox, for messages ("Microsoft Graph throttles mailbox …").
    fn throttled(&self) -> String;
    /// As configured, for messages.
    fn address(&self) -> &str;

    /// Not sent because of a pause of `left` that outlasts the caller's deadline.
    fn deferred(&self, left: Duration) -> SinkError {
        pause::deferred(&self.throttled(), left)
    }
}

/// The state a client keeps per mailbox address, made on first use.
#[derive(Debug)]
pub struct Mailboxes<M> {
    map: Mutex<HashMap<String, Arc<M>>>,
}

impl<M> Default for Mailboxes<M> {
    fn default() -> Self {
        Mailboxes {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<M> Mailboxes<M> {
    /// The state kept for `address` (made by `new` on first use).
    pub fn get(&self, address: &str, new: impl FnOnce() -> M) -> Arc<M> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(address.to_string())
            .or_insert_with(|| Arc::new(new()))
            .clone()
    }
}

/// One `apply` call's changes for one mailbox.
pub struct Batch {
    /// A problem of the whole mailbox one change found (it never counts as an attempt):
    /// the changes not yet sent report it too.
    stop: OnceLock<SinkError>,
    /// Changes being worked on at once.
    slots: Semaphore,
    /// Until then the batch starts changes and waits out the mailbox's pauses.
    deadline: Instant,
    budget: Duration,
}

impl Batch {
    /// A batch working on `concurrency` changes at once, starting them for `budget`.
    pub fn new(concurrency: usize, budget: Duration) -> Batch {
        Batch {
            stop: OnceLock::new(),
            slots: Semaphore::new(concurrency),
            deadline: Instant::now() + budget,
            budget,
        }
    }

    /// Until then requests may wait out the mailbox's pauses.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Run one change (`work`) when a slot is free and the batch may still begin it. A
    /// failure for which `whole_mailbox` holds is reported for the changes not yet sent.
    pub async fn change(
        &self,
        mailbox: &impl RemoteMailbox,
        work: impl Future<Output = Result<Applied, SinkError>>,
        whole_mailbox: impl Fn(&SinkError) -> bool,
    ) -> Result<Applied, SinkError> {
        let _slot = self.slots.acquire().await;
        self.may_begin(mailbox)?;
        let result = work.await;
        if let Err(e) = &result
            && whole_mailbox(e)
        {
            let _ = self.stop.set(e.clone());
        }
        result
    }

    /// The problem of the whole mailbox that stopped this batch, if any.
    pub fn stopped(&self) -> Result<(), SinkError> {
        match self.stop.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Whether a step may begin: the batch is not stopped and has time.
    pub fn may_begin(&self, mailbox: &impl RemoteMailbox) -> Result<(), SinkError> {
        self.stopped()?;
        match self.out_of_time(mailbox) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Why nothing more may begin in this batch: its budget is used up (report what is
    /// done before the worker's lease runs out; the rest follows in the next batch at
    /// once), or the mailbox is paused past the deadline (the rest follows after the
    /// pause).
    pub fn out_of_time(&self, mailbox: &impl RemoteMailbox) -> Option<SinkError> {
        let now = Instant::now();
        if let Some(left) = mailbox.pause().left()
            && now + left > self.deadline
        {
            return Some(mailbox.deferred(left));
        }
        (now >= self.deadline).then(|| SinkError::Deferred {
            message: format!(
                "this batch for mailbox {} used its {:.1} s",
                mailbox.address(),
                self.budget.as_secs_f64()
            ),
            retry_after: None,
        })
    }

    /// Create an `entry` ("event", "item") of appointment `appointment_id` without
    /// making a duplicate. A creation that got no answer (a retryable failure) may have
    /// happened all the same: the entry is looked up (`adopt` brings one found up to
    /// date) and created again only when it is not there, once; a second failure is the
    /// change's own. Without time left for the lookup, the change is deferred and a later
    /// batch looks first.
    pub async fn create_once<T, C, A>(
        &self,
        mailbox: &impl RemoteMailbox,
        appointment_id: i64,
        entry: &str,
        mut create: impl FnMut() -> C,
        mut adopt: impl FnMut() -> A,
    ) -> Result<Creation<T>, SinkError>
    where
        C: Future<Output = Result<T, SinkError>>,
        A: Future<Output = Result<Option<Applied>, SinkError>>,
    {
        let mut lost: Option<SinkError> = None;
        loop {
            if let Some(e) = &lost {
                if let Some(SinkError::Deferred {
                    message,
                    retry_after,
                }) = self.out_of_time(mailbox)
                {
                    return Err(SinkError::Deferred {
                        message: format!(
                            "{e}; the {entry} is looked up in a later batch ({message})"
                        ),
                        retry_after,
                    });
                }
                if let Some(applied) = adopt().await? {
                    return Ok(Creation::Adopted(applied));
                }
            }
            match create().await {
                Ok(created) => return Ok(Creation::Created(created)),
                Err(e @ SinkError::Retryable { .. }) if lost.is_none() => {
                    tracing::info!(
                        appointment_id,
                        error.message = %e,
                        "the answer to a creation was lost; looking the {entry} up"
                    );
                    lost = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// How [`Batch::create_once`] ended.
pub enum Creation<T> {
    /// Created: the answer to the creation.
    Created(T),
    /// Found after a lost answer and brought up to date.
    Adopted(Applied),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(calendar_address: Option<&str>) -> CalendarOwner {
        CalendarOwner {
            user_id: 1,
            username: " mmuster ".into(),
            calendar_address: calendar_address.map(str::to_string),
        }
    }

    #[test]
    fn the_persons_own_address_wins_over_the_template() {
        let template =
            MailboxTemplate::new("{username}@kanzlei.at", "MAILBOX", |a| !a.is_empty()).unwrap();
        assert_eq!(
            template.address(&owner(None)).unwrap(),
            "mmuster@kanzlei.at"
        );
        assert_eq!(
            template.address(&owner(Some(" m.m@notariat.at "))).unwrap(),
            "m.m@notariat.at"
        );
        let unusable = MailboxTemplate::new("{username}", "MAILBOX", |a| a != "mmuster").unwrap();
        assert!(matches!(
            unusable.address(&owner(Some(" "))),
            Err(SinkError::Config { .. })
        ));
        assert!(matches!(
            MailboxTemplate::new(" ", "MAILBOX", |_| true),
            Err(SinkError::Config { message }) if message == "MAILBOX is empty"
        ));
    }
}
