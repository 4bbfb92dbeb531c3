//! The Microsoft Graph sink (`LIVESYNC_SINK=graph`): appointments as events in a
//! "notarXpert" calendar of each person's Exchange Online mailbox.
//!
//! Layout: [`auth`] app-only tokens, [`client`] HTTP with per-mailbox limits and error
//! classification, [`event`] the JSON of an event (Windows zone names, transaction ids).
//!
//! Design note. The worker records the event's id (an ImmutableId) after each delivery
//! and hands it back, so updates are a `PATCH` and deletions a `DELETE` of that id.
//! Creation is the only step that can duplicate, so it is guarded three ways:
//! - the POST carries a deterministic `transactionId` (user, UID, SEQUENCE): Graph
//!   answers a repeated POST with the event it already made;
//! - every event carries the appointment id in a single-value extended property; when a
//!   POST got no answer (timeout, broken connection, 5xx) the appointment is marked
//!   uncertain, and the event is looked up by that property and adopted before anything
//!   else: at once in the same batch, and created again (same `transactionId`) only when
//!   the lookup does not find it; in the next batch when this one has no time left. The
//!   same lookup runs when Graph reports `ErrorDuplicateTransactionId` (the appointment
//!   changed between the lost POST and its retry, or the worker restarted);
//! - a PATCH that meets 404 (the person deleted the event in Outlook) creates it anew.
//!
//! Changes of one batch run concurrently (they concern different appointments), bounded
//! by the mailbox's 4 permits. Each change's result is its own (the charging rule of
//! [`crate::sink`]): a failed request fails only the change that sent it. A throttled
//! mailbox pauses every change (see [`client`]) and the batch goes on after the pause; a
//! pause or a change that would begin after [`RUN_BUDGET`] is handed back unsent
//! ([`SinkError::Deferred`], with the pause as `retry_after`), so a large backfill makes
//! progress batch by batch instead of running past the worker's lease. Only a
//! configuration problem (token refused, no access, no mailbox) is reported for the
//! changes not yet sent instead of sending them; it never counts as an attempt.
//! Not done: `$batch` (each change is its own request).
//!
//! # Listing (verification)
//! [`CalendarSink::list`] reads the "notarXpert" calendar over the window through
//! `calendarView` (`startDateTime`/`endDateTime`; an open window is read
//! [`crate::sink::mailbox::OPEN_END`] ahead), following `@odata.nextLink`, with `$select`
//! of the fields compared and `$expand` of livesync's extended properties (the stamp: UID
//! and content hash, see [`event`]); bodies as text (`Prefer: outlook.body-content-type`).
//! Throttling pauses the listing as it pauses deliveries. A mailbox without the calendar
//! holds nothing. An event deleted in Outlook lies in Deleted Items: it is no longer in
//! the calendar, so it is not listed (`missing`), and the lookup by extended property,
//! which reads the calendar only, never adopts it; the repair creates the event anew.

pub mod auth;
pub mod client;
pub mod event;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use self::auth::TokenCache;
use self::client::{GraphClient, Mailbox, Reply, form_encode, path_segment};
use crate::config::GraphSettings;
use crate::sink::mailbox::{Batch, Creation, LIST_BUDGET, MailboxTemplate, listing_end};
use crate::sink::{
    Applied, Appointment, CalendarOwner, CalendarSink, Change, ListedItem, RUN_BUDGET, RemoteRef,
    RenderContext, SinkError, Span,
};

/// Events per page of a listing (`$top`).
const LIST_PAGE: usize = 100;

/// Delivers into Exchange Online calendars through Microsoft Graph.
#[derive(Debug, Clone)]
pub struct GraphSink {
    client: Arc<GraphClient>,
    mailbox_template: MailboxTemplate,
    run_budget: Duration,
}

impl GraphSink {
    pub fn new(settings: &GraphSettings) -> Result<GraphSink, SinkError> {
        let mailbox_template = MailboxTemplate::new(
            &settings.mailbox_template,
            "LIVESYNC_GRAPH_MAILBOX",
            |address| !address.trim().is_empty(),
        )?;
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(
                settings
                    .request_timeout
                    .min(std::time::Duration::from_secs(10)),
            )
            .user_agent(concat!("livesync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SinkError::Config {
                message: format!("cannot set up the HTTP client: {}", client::describe(&e)),
            })?;
        let auth = TokenCache::new(
            http.clone(),
            &settings.login_url,
            &settings.tenant_id,
            &settings.client_id,
            settings.client_secret.clone(),
        );
        Ok(GraphSink {
            client: Arc::new(GraphClient::new(http, &settings.base_url, auth)),
            mailbox_template,
            run_budget: RUN_BUDGET,
        })
    }

    /// Start new changes of one batch for at most `budget` ([`RUN_BUDGET`] by default;
    /// [`crate::sink::run_budget`] gives the one for a lease).
    pub fn with_run_budget(mut self, budget: Duration) -> GraphSink {
        self.run_budget = budget;
        self
    }
}

#[async_trait::async_trait]
impl CalendarSink for GraphSink {
    fn name(&self) -> &'static str {
        "graph"
    }

    async fn apply(
        &self,
        owner: &CalendarOwner,
        changes: &[Change],
        ctx: &RenderContext,
    ) -> Vec<Result<Applied, SinkError>> {
        let address = match self.mailbox_template.address(owner) {
            Ok(a) => a,
            Err(e) => return vec![Err(e); changes.len()],
        };
        let run = Run {
            client: &self.client,
            mailbox: self.client.mailbox(&address),
            owner,
            ctx,
            batch: Batch::new(client::MAX_CONCURRENT_PER_MAILBOX, self.run_budget),
        };
        futures_util::future::join_all(changes.iter().map(|c| run.apply(c))).await
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.client.auth.get().await.map(|_| ())
    }

    /// The events of the "notarXpert" calendar over `span` (see the module doc).
    async fn list(
        &self,
        owner: &CalendarOwner,
        span: &Span,
        _ctx: &RenderContext,
    ) -> Result<Vec<ListedItem>, SinkError> {
        let address = self.mailbox_template.address(owner)?;
        let mailbox = self.client.mailbox(&address);
        let deadline = Instant::now() + LIST_BUDGET;
        let get = |path: String, query: String| {
            let mailbox = &mailbox;
            async move {
                self.client
                    .send(mailbox, Method::GET, &path, &query, None, deadline)
                    .await
            }
        };
        // Looked up afresh: the calendar may have been deleted since a delivery.
        let reply = get(
            format!("{}/calendars", mailbox.path),
            format!(
                "$filter={}&$select=id,name",
                form_encode(&event::filter_calendar())
            ),
        )
        .await?;
        let calendar = match reply.status.as_u16() {
            200 => ids(&reply.body).into_iter().next(),
            404 => return Err(no_mailbox(&mailbox.address, &reply)),
            _ => return Err(reply.failure("looking the calendar up")),
        };
        let Some(calendar) = calendar else {
            return Ok(Vec::new());
        };
        let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut path = format!(
            "{}/calendars/{}/calendarView",
            mailbox.path,
            path_segment(&calendar)
        );
        let mut query = format!(
            "startDateTime={}&endDateTime={}&$select={}&$expand={}&$top={LIST_PAGE}",
            form_encode(&at(span.from)),
            form_encode(&at(listing_end(span))),
            form_encode(event::LISTED_FIELDS),
            form_encode(&event::expand_properties()),
        );
        let mut listed = Vec::new();
        loop {
            let reply = get(path, query).await?;
            match reply.status.as_u16() {
                200 => {}
                // Deleted while it was read: it holds nothing now.
                404 => return Ok(Vec::new()),
                _ => return Err(reply.failure("listing the calendar")),
            }
            let (page, next) = listed_page(&reply.body);
            listed.extend(page);
            let Some(next) = next else {
                return Ok(listed);
            };
            (path, query) = self
                .client
                .relative(&next)
                .ok_or_else(|| SinkError::Retryable {
                    message: format!("Microsoft Graph sent a next page elsewhere: {next}"),
                    retry_after: None,
                })?;
        }
    }
}

/// One page of a listing: its events, and the link to the next page.
fn listed_page(body: &Value) -> (Vec<ListedItem>, Option<String>) {
    let events = body["value"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|v| ListedItem {
                    remote_id: v["id"].as_str().map(str::to_string),
                    event: event::read_event(v),
                })
                .collect()
        })
        .unwrap_or_default();
    let next = body["@odata.nextLink"].as_str().map(str::to_string);
    (events, next)
}

/// One `apply` call: one mailbox, one batch.
struct Run<'a> {
    client: &'a GraphClient,
    mailbox: Arc<Mailbox>,
    owner: &'a CalendarOwner,
    ctx: &'a RenderContext,
    /// Each change holds a mailbox permit per request; a configuration problem one
    /// request found (it concerns every change of the mailbox and never counts as an
    /// attempt) stops the batch.
    batch: Batch,
}

impl Run<'_> {
    /// One change of the batch; a configuration problem stops the batch.
    async fn apply(&self, change: &Change) -> Result<Applied, SinkError> {
        let whole_mailbox = |e: &SinkError| matches!(e, SinkError::Config { .. });
        self.batch
            .change(&*self.mailbox, self.deliver(change), whole_mailbox)
            .await
    }

    async fn deliver(&self, change: &Change) -> Result<Applied, SinkError> {
        match change {
            Change::Upsert {
                appointment,
                uid,
                sequence,
                previous,
            } => {
                self.upsert(appointment, uid, *sequence, previous.as_ref())
                    .await
            }
            Change::Delete {
                appointment_id,
                previous,
                ..
            } => self.delete(*appointment_id, previous).await,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&Value>,
    ) -> Result<Reply, SinkError> {
        self.batch.stopped()?;
        self.client
            .send(
                &self.mailbox,
                method,
                path,
                query,
                body,
                self.batch.deadline(),
            )
            .await
    }

    async fn upsert(
        &self,
        appointment: &Appointment,
        uid: &str,
        sequence: i32,
        previous: Option<&RemoteRef>,
    ) -> Result<Applied, SinkError> {
        let body = event::event_body(appointment, uid, self.ctx.time_zone);
        if let Some(id) = previous.and_then(|p| p.remote_id.as_deref()) {
            match self.patch(id, &body).await? {
                Some(applied) => return Ok(applied),
                None => tracing::info!(
                    appointment_id = appointment.id,
                    "the event was deleted in the calendar; creating it again"
                ),
            }
        }
        let uncertain = self.is_uncertain(appointment.id);
        if uncertain || previous.is_some() {
            let calendar = self.calendar_id().await?;
            if let Some(applied) = self.adopt(&calendar, appointment.id, &body).await? {
                return Ok(applied);
            }
        }
        // Again: a lookup that found the calendar gone made it be created anew.
        let calendar = self.calendar_id().await?;
        let mut create = body.clone();
        let transaction = event::transaction_id(self.owner, uid, sequence);
        event::creation_fields(&mut create, &transaction);
        let path = format!(
            "{}/calendars/{}/events",
            self.mailbox.path,
            path_segment(&calendar)
        );
        // A creation sent again after a lost answer carries the same transactionId.
        let post = {
            let (path, create) = (&path, &create);
            move || async move {
                let reply = self.send(Method::POST, path, "", Some(create)).await;
                if let Err(SinkError::Retryable { .. }) = &reply {
                    self.set_uncertain(appointment.id, true);
                }
                reply
            }
        };
        let adopt = || self.adopt(&calendar, appointment.id, &body);
        let reply = match self
            .batch
            .create_once(&*self.mailbox, appointment.id, "event", post, adopt)
            .await?
        {
            Creation::Created(reply) => reply,
            Creation::Adopted(applied) => return Ok(applied),
        };
        if reply.status.is_success() {
            self.set_uncertain(appointment.id, false);
            return applied(&reply, None);
        }
        match (reply.status.as_u16(), reply.code()) {
            (400, "ErrorDuplicateTransactionId") => {
                if let Some(applied) = self.adopt(&calendar, appointment.id, &body).await? {
                    return Ok(applied);
                }
                // The id was used for an event that is gone: create without it.
                let mut again = create.clone();
                if let Value::Object(map) = &mut again {
                    map.remove("transactionId");
                }
                let reply = match self.send(Method::POST, &path, "", Some(&again)).await {
                    Ok(reply) => reply,
                    Err(e) => {
                        if matches!(e, SinkError::Retryable { .. }) {
                            self.set_uncertain(appointment.id, true);
                        }
                        return Err(e);
                    }
                };
                if reply.status.is_success() {
                    self.set_uncertain(appointment.id, false);
                    return applied(&reply, None);
                }
                Err(reply.failure("creating the event"))
            }
            (404, _) => {
                // The calendar was deleted: find or create it again next time.
                *self.mailbox.calendar_id.lock().await = None;
                Err(SinkError::Retryable {
                    message: format!(
                        "the {} calendar of mailbox {} is gone; it will be created again",
                        event::CALENDAR_NAME,
                        self.mailbox.address
                    ),
                    retry_after: None,
                })
            }
            _ => Err(reply.failure("creating the event")),
        }
    }

    /// PATCH an event; `None` when it no longer exists.
    async fn patch(&self, id: &str, body: &Value) -> Result<Option<Applied>, SinkError> {
        let path = format!("{}/events/{}", self.mailbox.path, path_segment(id));
        let reply = self.send(Method::PATCH, &path, "", Some(body)).await?;
        if reply.status.is_success() {
            return applied(&reply, Some(id)).map(Some);
        }
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        Err(reply.failure("updating the event"))
    }

    /// Find the event carrying `appointment_id` in our calendar and bring it up to date;
    /// further copies found with it (duplicates) are deleted.
    async fn adopt(
        &self,
        calendar: &str,
        appointment_id: i64,
        body: &Value,
    ) -> Result<Option<Applied>, SinkError> {
        let mut found = self.find(calendar, appointment_id).await?.into_iter();
        for id in found.by_ref() {
            if let Some(applied) = self.patch(&id, body).await? {
                tracing::info!(
                    appointment_id,
                    "found the event in the calendar; adopted it"
                );
                for duplicate in found {
                    tracing::warn!(
                        appointment_id,
                        "deleting a duplicate event of this appointment"
                    );
                    self.delete_event(&duplicate).await?;
                }
                self.set_uncertain(appointment_id, false);
                return Ok(Some(applied));
            }
        }
        Ok(None)
    }

    /// Ids of the events in our calendar that carry `appointment_id`. Only the calendar
    /// is searched: an event deleted in Outlook (in Deleted Items) is never found. A
    /// calendar that is gone holds none (and is found or created again next time).
    async fn find(&self, calendar: &str, appointment_id: i64) -> Result<Vec<String>, SinkError> {
        let path = format!(
            "{}/calendars/{}/events",
            self.mailbox.path,
            path_segment(calendar)
        );
        let query = format!(
            "$filter={}&$select=id",
            form_encode(&event::filter_by_appointment(appointment_id))
        );
        let reply = self.send(Method::GET, &path, &query, None).await?;
        if reply.status.as_u16() == 404 {
            let mut cached = self.mailbox.calendar_id.lock().await;
            if cached.as_deref() == Some(calendar) {
                *cached = None;
            }
            return Ok(Vec::new());
        }
        if !reply.status.is_success() {
            return Err(reply.failure("looking the event up"));
        }
        Ok(ids(&reply.body))
    }

    async fn delete(
        &self,
        appointment_id: i64,
        previous: &RemoteRef,
    ) -> Result<Applied, SinkError> {
        let ids = match previous.remote_id.as_deref() {
            Some(id) => vec![id.to_string()],
            // Never recorded (e.g. its creation's answer was lost): look it up.
            None => {
                let calendar = self.calendar_id().await?;
                self.find(&calendar, appointment_id).await?
            }
        };
        for id in ids {
            self.delete_event(&id).await?;
        }
        self.set_uncertain(appointment_id, false);
        Ok(Applied::default())
    }

    /// Delete one event; one that is gone already counts as deleted.
    async fn delete_event(&self, id: &str) -> Result<(), SinkError> {
        let path = format!("{}/events/{}", self.mailbox.path, path_segment(id));
        let reply = self.send(Method::DELETE, &path, "", None).await?;
        if reply.status.is_success() || reply.status.as_u16() == 404 {
            Ok(())
        } else {
            Err(reply.failure("deleting the event"))
        }
    }

    /// The id of the "notarXpert" calendar, found or created once per mailbox. Changes
    /// that need it wait for the one looking it up; when that lookup fails, it fails only
    /// that change, and the next one looks for itself.
    async fn calendar_id(&self) -> Result<String, SinkError> {
        let mut cached = self.mailbox.calendar_id.lock().await;
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        self.batch.may_begin(&*self.mailbox)?;
        let path = format!("{}/calendars", self.mailbox.path);
        let query = format!(
            "$filter={}&$select=id,name",
            form_encode(&event::filter_calendar())
        );
        let reply = self.send(Method::GET, &path, &query, None).await?;
        let id = match reply.status.as_u16() {
            200 => ids(&reply.body).into_iter().next(),
            404 => return Err(self.no_mailbox(&reply)),
            _ => return Err(reply.failure("looking the calendar up")),
        };
        let id = match id {
            Some(id) => id,
            None => {
                let body = json!({ "name": event::CALENDAR_NAME });
                let reply = self.send(Method::POST, &path, "", Some(&body)).await?;
                match reply.status.as_u16() {
                    200 | 201 => {
                        tracing::info!(mailbox = %self.mailbox.address, "created the {} calendar", event::CALENDAR_NAME);
                        reply.body["id"].as_str().unwrap_or_default().to_string()
                    }
                    404 => return Err(self.no_mailbox(&reply)),
                    _ => return Err(reply.failure("creating the calendar")),
                }
            }
        };
        if id.is_empty() {
            return Err(SinkError::Retryable {
                message: "Microsoft Graph sent a calendar without id".into(),
                retry_after: None,
            });
        }
        *cached = Some(id.clone());
        Ok(id)
    }

    fn no_mailbox(&self, reply: &Reply) -> SinkError {
        no_mailbox(&self.mailbox.address, reply)
    }

    fn is_uncertain(&self, appointment_id: i64) -> bool {
        self.mailbox
            .uncertain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&appointment_id)
    }

    fn set_uncertain(&self, appointment_id: i64, uncertain: bool) {
        let mut set = self
            .mailbox
            .uncertain
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if uncertain {
            set.insert(appointment_id);
        } else {
            set.remove(&appointment_id);
        }
    }
}

/// Graph knows no mailbox `address`.
fn no_mailbox(address: &str, reply: &Reply) -> SinkError {
    SinkError::Config {
        message: format!(
            "mailbox {address} not found in Exchange Online ({}): check LIVESYNC_GRAPH_MAILBOX \
             or the user's calendar address",
            reply.code()
        ),
    }
}

/// The `id`s of a collection answer (`{"value": [{"id": …}, …]}`).
fn ids(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What to record for an event Graph returned.
fn applied(reply: &Reply, known_id: Option<&str>) -> Result<Applied, SinkError> {
    let id = reply.body["id"]
        .as_str()
        .or(known_id)
        .ok_or_else(|| SinkError::Retryable {
            message: "Microsoft Graph sent an event without id".into(),
            retry_after: None,
        })?;
    Ok(Applied {
        remote_id: Some(id.to_string()),
        etag: reply.body["@odata.etag"].as_str().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_gives_its_events_and_the_next_link() {
        let body = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('m%40x')/calendars('c')/calendarView",
            "value": [
                {
                    "id": "AAMkImm-1=",
                    "subject": "Termin 1",
                    "body": { "contentType": "text", "content": "" },
                    "location": { "displayName": "Kanzlei" },
                    "start": { "dateTime": "2026-12-04T09:00:00.0000000", "timeZone": "UTC" },
                    "end": { "dateTime": "2026-12-04T10:00:00.0000000", "timeZone": "UTC" },
                    "isAllDay": false,
                    "singleValueExtendedProperties": [
                        { "id": event::UID_PROPERTY, "value": "xpert-termin-1@livesync" },
                        { "id": event::HASH_PROPERTY, "value": "0123abcd" },
                    ],
                },
                {
                    "id": "AAMkImm-2=",
                    "iCalUId": "040000008200E00074C5B7101A82E008",
                    "subject": "Mittagessen",
                    "start": { "dateTime": "2026-12-05T11:00:00.0000000", "timeZone": "UTC" },
                    "end": { "dateTime": "2026-12-05T12:00:00.0000000", "timeZone": "UTC" },
                    "isAllDay": false,
                },
            ],
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/m@x/calendars/c/calendarView?startDateTime=2026-12-03T23%3A00%3A00Z&$skip=100",
        });
        let (items, next) = listed_page(&body);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].remote_id.as_deref(), Some("AAMkImm-1="));
        assert_eq!(
            items[0].event.uid.as_deref(),
            Some("xpert-termin-1@livesync")
        );
        assert_eq!(items[0].event.stamp.as_deref(), Some("0123abcd"));
        assert_eq!(items[0].event.location.as_deref(), Some("Kanzlei"));
        assert_eq!(items[0].event.description, None);
        assert_eq!(
            items[1].event.uid.as_deref(),
            Some("040000008200E00074C5B7101A82E008")
        );
        assert!(next.unwrap().ends_with("$skip=100"));
        // The last page has no link; an answer without events holds none.
        let (items, next) = listed_page(&json!({ "value": [] }));
        assert!(items.is_empty() && next.is_none());
        assert!(listed_page(&json!({})).0.is_empty());
    }
}
