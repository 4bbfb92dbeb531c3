//! The EWS sink (`LIVESYNC_SINK=ews`): appointments as calendar items in a "notarXpert"
//! folder under the Calendar of each person's mailbox on an Exchange Server on premises
//! (2016, 2019, Subscription Edition), written by one service account through
//! `ExchangeImpersonation`.
//!
//! Layout: [`client`] HTTP with per-mailbox and total limits, throttling and error
//! classification; [`ntlm`] NTLM sign-in over reqwest; [`soap`] the SOAP requests
//! (quick-xml, schema order) and answers (roxmltree); [`item`] an appointment's fields.
//!
//! # Design note
//! The worker records the item's `ItemId` (remote id) and `ChangeKey` (ETag) after each
//! delivery and hands them back, so an update is an `UpdateItem` of that id and a
//! deletion a `DeleteItem` of it. Every item carries the appointment's UID in livesync's
//! own extended property (property set [`item::PROPERTY_SET_ID`], name
//! [`item::PROPERTY_NAME`]). EWS has no idempotency key for `CreateItem`, so creation is
//! the step that could duplicate, and it is guarded by that property:
//! - before creating, the batch looks up, with one `FindItem` (a restriction `Or` of
//!   `IsEqualTo` on the property) in the folder, every UID it would create or delete
//!   without a recorded id. That covers a creation whose answer was lost in an earlier
//!   batch or by a worker that died (the worker hands such an entry back without a
//!   reference: "maybe delivered"). An item found is adopted (updated) instead of created;
//!   duplicates found with it are deleted;
//! - a `CreateItem` that got no answer (timeout, broken connection, 5xx) is followed by a
//!   `FindItem` for its UID in the same batch, and created again only when that finds
//!   nothing; without time left for that, the change is deferred and the next batch's
//!   lookup finds it;
//! - an update or deletion whose item is gone (`ErrorItemNotFound`: deleted in Outlook)
//!   creates it anew (looked up first) or counts as done.
//!
//! **ChangeKey conflicts: Xpert wins.** Xpert is the source of truth, and livesync writes
//! only its own fields (subject, body, times, zone, all-day flag, location, its property).
//! `UpdateItem` sends the recorded ChangeKey with `ConflictResolution="AlwaysOverwrite"`:
//! when the person changed the item in Outlook meanwhile (a new ChangeKey), Xpert's values
//! overwrite those fields in one request, and what livesync does not write (categories,
//! reminders, the person's own notes elsewhere) stays. Should Exchange still answer
//! `ErrorIrresolvableConflict`, the item is looked up again for its current ChangeKey and
//! the update is sent once more; a second conflict is that change's retryable failure.
//!
//! The folder "notarXpert" is found by name (`FindFolder` under the Calendar) or created
//! (`CreateFolder`; `ErrorFolderExists` means another worker was first: found again), and
//! its FolderId remembered per mailbox until Exchange says it is gone. Items have no
//! attendees; every request says `SendToNone` for invitations and cancellations.
//!
//! Changes of one batch run concurrently (they concern different appointments), at most
//! `LIVESYNC_EWS_MAX_PER_MAILBOX` at once. Each change's result is its own (the charging
//! rule of [`crate::sink`]): a failed request fails only the change that sent it,
//! including the folder lookup and the batch's item lookup, which the first change needing
//! them does while the others wait (they try for themselves when it failed). A busy
//! mailbox (`ErrorServerBusy`) pauses every change and the batch goes on after the pause
//! ([`client`]); a pause or a change that would begin after the run budget is handed back
//! unsent ([`SinkError::Deferred`], with the pause as `retry_after`). What concerns the
//! whole mailbox is reported for the changes not yet sent instead of sending them: a
//! configuration problem (401, missing impersonation right) and a mailbox that does not
//! exist (permanent for that person; the admin fixes the address and requeues).
//!
//! # Listing (verification)
//! [`CalendarSink::list`] reads the "notarXpert" folder over the window with `FindItem`
//! and a `CalendarView` (ids and starts). A CalendarView has no paging, so the window is
//! read a year at a time, and a year holding more than [`LIST_PAGE`] items is continued
//! from the start of the last item returned (items seen twice count once); an open window
//! is read [`crate::sink::mailbox::OPEN_END`] ahead. `GetItem` then reads what is compared
//! (subject, body as text, times, all-day flag, location) and livesync's properties (UID
//! and stamp, see [`item`]). `ErrorServerBusy` pauses the listing as it pauses
//! deliveries. A mailbox without the folder holds nothing. An item deleted in Outlook lies
//! in Deleted Items (under another ItemId): it is not in the folder, so it is not listed
//! (`missing`), and the lookup by property, which searches the folder only, never adopts
//! it; the repair creates the item anew.
//!
//! # Crates
//! HTTP is the workspace's reqwest (rustls with aws-lc-rs, the platform's roots plus
//! `LIVESYNC_EWS_CA_FILE`). Requests are written with quick-xml's writer, which escapes
//! every value, and answers read with roxmltree, as the CalDAV sink does. The `ews` crate
//! (Thunderbird's ews-rs) is not used: it models calendar items as messages, has no
//! `ExchangeImpersonation` header, no restriction in `FindItem` and no transport, so the
//! few operations here would need as much code around it as without it. NTLM comes from
//! `sspi` (Devolutions; released often, NTLMv2 with MIC and channel bindings); the lighter
//! `ntlmclient` (two releases, one maintainer) panics on malformed challenges and has no
//! channel binding, which Exchange's Extended Protection requires.

pub mod client;
pub mod item;
pub mod ntlm;
pub mod soap;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::client::{EwsClient, Mailbox, is_missing_mailbox};
use self::item::{FOLDER_NAME, ItemFields};
use self::soap::{ItemRef, ResponseMessage};
use crate::config::EwsSettings;
use crate::sink::mailbox::{Batch, Creation, LIST_BUDGET, MailboxTemplate, listing_end};
use crate::sink::{
    Applied, Appointment, CalendarOwner, CalendarSink, Change, ListedItem, RUN_BUDGET, RemoteRef,
    RenderContext, SinkError, Span,
};

/// UIDs per `FindItem` restriction.
const LOOKUP_CHUNK: usize = 50;
/// Items per `FindItem` page.
const PAGE: usize = 200;
/// Items per `CalendarView` of a listing (`MaxEntriesReturned`).
const LIST_PAGE: usize = 200;
/// The longest part of a window one `CalendarView` of a listing reads.
const LIST_STEP: chrono::TimeDelta = chrono::TimeDelta::days(365);
/// Items per `GetItem` of a listing.
const GET_CHUNK: usize = 50;

/// Delivers into calendars of Exchange Server mailboxes through EWS.
#[derive(Debug, Clone)]
pub struct EwsSink {
    client: Arc<EwsClient>,
    mailbox_template: MailboxTemplate,
    per_mailbox: usize,
    run_budget: Duration,
}

impl EwsSink {
    pub fn new(settings: &EwsSettings) -> Result<EwsSink, SinkError> {
        // An address of the template without a user name ("@kanzlei.at") names nobody.
        let mailbox_template = MailboxTemplate::new(
            &settings.mailbox_template,
            "LIVESYNC_EWS_MAILBOX",
            |address| !(address.trim().is_empty() || address.starts_with('@')),
        )?;
        Ok(EwsSink {
            client: Arc::new(EwsClient::new(settings)?),
            mailbox_template,
            per_mailbox: settings.max_per_mailbox.max(1),
            run_budget: RUN_BUDGET,
        })
    }

    /// Start new changes of one batch for at most `budget` ([`RUN_BUDGET`] by default;
    /// [`crate::sink::run_budget`] gives the one for a lease).
    pub fn with_run_budget(mut self, budget: Duration) -> EwsSink {
        self.run_budget = budget;
        self
    }

    /// `livesync-worker check` for one person: the service account may impersonate
    /// `owner`'s mailbox and read its Calendar. Returns the address checked.
    pub async fn check_mailbox(&self, owner: &CalendarOwner) -> Result<String, SinkError> {
        let address = self.mailbox_template.address(owner)?;
        let mailbox = self.client.mailbox(&address);
        let deadline = Instant::now() + self.run_budget;
        let messages = self
            .client
            .call(Some(&mailbox), "GetFolder", soap::get_calendar, deadline)
            .await?;
        expect_success(&self.client, &messages, "GetFolder", &address)?;
        Ok(address)
    }
}

/// The first response message, or the failure it reports.
fn expect_success(
    client: &EwsClient,
    messages: &[ResponseMessage],
    operation: &str,
    mailbox: &str,
) -> Result<ResponseMessage, SinkError> {
    let Some(m) = messages.first() else {
        return Err(SinkError::Retryable {
            message: format!("{operation} for {mailbox}: Exchange sent no response message"),
            retry_after: None,
        });
    };
    if m.is_success() {
        Ok(m.clone())
    } else {
        Err(client.failure(operation, mailbox, &m.code, &m.text))
    }
}

#[async_trait::async_trait]
impl CalendarSink for EwsSink {
    fn name(&self) -> &'static str {
        "ews"
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
        // What the batch looks up before creating or deleting: changes without a
        // recorded item.
        let lookups: Vec<String> = changes
            .iter()
            .filter(|c| match c {
                Change::Upsert { previous, .. } => {
                    previous.as_ref().is_none_or(|p| p.remote_id.is_none())
                }
                Change::Delete { previous, .. } => previous.remote_id.is_none(),
            })
            .map(|c| c.uid().to_string())
            .collect();
        let run = Run {
            client: &self.client,
            mailbox: self.client.mailbox(&address),
            ctx,
            batch: Batch::new(self.per_mailbox, self.run_budget),
            lookups,
            found: tokio::sync::Mutex::new(None),
        };
        futures_util::future::join_all(changes.iter().map(|c| run.apply(c))).await
    }

    /// Reachability and the service account: `GetServerTimeZones`, which needs the
    /// credentials but no mailbox.
    async fn check(&self) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.run_budget;
        let messages = self
            .client
            .call(
                None,
                "GetServerTimeZones",
                |x| soap::get_server_time_zones(x, "UTC"),
                deadline,
            )
            .await?;
        expect_success(&self.client, &messages, "GetServerTimeZones", "(none)").map(|_| ())
    }

    /// The items of the "notarXpert" folder over `span` (see the module doc).
    async fn list(
        &self,
        owner: &CalendarOwner,
        span: &Span,
        ctx: &RenderContext,
    ) -> Result<Vec<ListedItem>, SinkError> {
        let address = self.mailbox_template.address(owner)?;
        let listing = Listing {
            client: &self.client,
            mailbox: self.client.mailbox(&address),
            deadline: Instant::now() + LIST_BUDGET,
        };
        // Looked up afresh: the folder may have been deleted since a delivery.
        let m = listing
            .call("FindFolder", |x| soap::find_folder(x, FOLDER_NAME))
            .await?;
        if !m.is_success() {
            return Err(listing.failure("FindFolder", &m));
        }
        let Some(folder) = m.folders.into_iter().next() else {
            return Ok(Vec::new());
        };
        let Some(ids) = listing.ids(&folder, span).await? else {
            return Ok(Vec::new());
        };
        let mut listed = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(GET_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let messages = listing
                .call_all("GetItem", |x| soap::get_items(x, &ids))
                .await?;
            for m in messages {
                if m.is_success() {
                    listed.extend(m.read.iter().map(|read| ListedItem {
                        remote_id: Some(read.id.clone()),
                        event: item::read(read, ctx.time_zone),
                    }));
                } else if m.code != "ErrorItemNotFound" {
                    // (One deleted since the view was read is simply not there.)
                    return Err(listing.failure("GetItem", &m));
                }
            }
        }
        Ok(listed)
    }
}

/// One listing of one mailbox.
struct Listing<'a> {
    client: &'a EwsClient,
    mailbox: Arc<Mailbox>,
    deadline: Instant,
}

impl Listing<'_> {
    async fn call_all(
        &self,
        operation: &str,
        write: impl Fn(&mut soap::Xml),
    ) -> Result<Vec<ResponseMessage>, SinkError> {
        self.client
            .call(Some(&self.mailbox), operation, write, self.deadline)
            .await
    }

    async fn call(
        &self,
        operation: &str,
        write: impl Fn(&mut soap::Xml),
    ) -> Result<ResponseMessage, SinkError> {
        let messages = self.call_all(operation, write).await?;
        first_message(operation, &self.mailbox.address, messages)
    }

    fn failure(&self, operation: &str, m: &ResponseMessage) -> SinkError {
        self.client
            .failure(operation, &self.mailbox.address, &m.code, &m.text)
    }

    /// The ids of the items in `folder` over `span`, each once, in the order found;
    /// `None` when the folder is gone meanwhile.
    async fn ids(&self, folder: &str, span: &Span) -> Result<Option<Vec<String>>, SinkError> {
        let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let end = listing_end(span);
        let mut seen = HashSet::new();
        let mut ids = Vec::new();
        let mut from = span.from;
        while from < end {
            let to = (from + LIST_STEP).min(end);
            let mut cursor = from;
            loop {
                let m = self
                    .call("FindItem", |x| {
                        soap::find_calendar_view(x, folder, &at(cursor), &at(to), LIST_PAGE)
                    })
                    .await?;
                if m.code == "ErrorFolderNotFound" {
                    return Ok(None);
                }
                if !m.is_success() {
                    return Err(self.failure("FindItem", &m));
                }
                let mut new = 0;
                for read in &m.read {
                    if seen.insert(read.id.clone()) {
                        ids.push(read.id.clone());
                        new += 1;
                    }
                }
                if m.last_page || m.read.is_empty() {
                    break;
                }
                // Continue from the last start returned; a view that brings nothing new
                // from there (more items than a view holds at one instant) cannot go on.
                let last = m
                    .read
                    .last()
                    .and_then(|r| r.start.as_deref())
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&chrono::Utc));
                match last {
                    Some(last) if new > 0 && last >= cursor => cursor = last,
                    _ => {
                        return Err(SinkError::Retryable {
                            message: format!(
                                "FindItem for {}: more than {LIST_PAGE} items at {} cannot be \
                                 listed with a CalendarView",
                                self.mailbox.address,
                                at(cursor)
                            ),
                            retry_after: None,
                        });
                    }
                }
            }
            from = to;
        }
        Ok(Some(ids))
    }
}

/// One `apply` call: one mailbox, one batch.
struct Run<'a> {
    client: &'a EwsClient,
    mailbox: Arc<Mailbox>,
    ctx: &'a RenderContext,
    /// Stopped by a problem of the whole mailbox one request found (configuration, or no
    /// such mailbox).
    batch: Batch,
    /// The UIDs of the batch's changes without a recorded item.
    lookups: Vec<String>,
    /// What the batch's lookup found for them, once it ran.
    found: tokio::sync::Mutex<Option<HashMap<String, Vec<ItemRef>>>>,
}

impl Run<'_> {
    /// One change of the batch; a configuration problem or a missing mailbox stops the
    /// batch.
    async fn apply(&self, change: &Change) -> Result<Applied, SinkError> {
        let whole_mailbox =
            |e: &SinkError| matches!(e, SinkError::Config { .. }) || is_missing_mailbox(e);
        self.batch
            .change(&*self.mailbox, self.deliver(change), whole_mailbox)
            .await
    }

    async fn deliver(&self, change: &Change) -> Result<Applied, SinkError> {
        match change {
            Change::Upsert {
                appointment,
                uid,
                previous,
                ..
            } => self.upsert(appointment, uid, previous.as_ref()).await,
            Change::Delete { uid, previous, .. } => self.delete(uid, previous).await,
        }
    }

    async fn call(
        &self,
        operation: &str,
        write: impl Fn(&mut soap::Xml),
    ) -> Result<ResponseMessage, SinkError> {
        self.batch.stopped()?;
        let messages = self
            .client
            .call(Some(&self.mailbox), operation, write, self.batch.deadline())
            .await?;
        first_message(operation, &self.mailbox.address, messages)
    }

    fn failure(&self, operation: &str, m: &ResponseMessage) -> SinkError {
        self.client
            .failure(operation, &self.mailbox.address, &m.code, &m.text)
    }

    async fn upsert(
        &self,
        appointment: &Appointment,
        uid: &str,
        previous: Option<&RemoteRef>,
    ) -> Result<Applied, SinkError> {
        let fields = item::fields(appointment, self.ctx.time_zone);
        let folder = if let Some(id) = previous.and_then(|p| p.remote_id.as_deref()) {
            let change_key = previous.and_then(|p| p.etag.as_deref());
            if let Some(applied) = self.update(id, change_key, &fields, uid).await? {
                return Ok(applied);
            }
            tracing::info!(
                appointment_id = appointment.id,
                "the item was deleted in the calendar; creating it again"
            );
            let folder = self.folder_id().await?;
            let found = self.find(&folder, &[uid]).await?;
            if let Some(applied) = self.adopt(found, &fields, uid).await? {
                return Ok(applied);
            }
            folder
        } else {
            let found = self.batch_lookup(uid).await?;
            let folder = self.folder_id().await?;
            if let Some(applied) = self.adopt(found, &fields, uid).await? {
                return Ok(applied);
            }
            folder
        };
        let folder = &folder;
        let fields = &fields;
        let adopt = move || async move {
            let found = self.find(folder, &[uid]).await?;
            let adopted = self.adopt(found, fields, uid).await?;
            if adopted.is_some() {
                tracing::info!(
                    appointment_id = appointment.id,
                    "found the item created by an earlier attempt; adopted it"
                );
            }
            Ok(adopted)
        };
        let create = move || self.create(folder, fields, uid);
        match self
            .batch
            .create_once(&*self.mailbox, appointment.id, "item", create, adopt)
            .await?
        {
            Creation::Created(applied) | Creation::Adopted(applied) => Ok(applied),
        }
    }

    async fn create(
        &self,
        folder: &str,
        fields: &ItemFields,
        uid: &str,
    ) -> Result<Applied, SinkError> {
        let m = self
            .call("CreateItem", |x| soap::create_item(x, folder, fields, uid))
            .await?;
        if m.is_success() {
            return applied(&m, None, "CreateItem");
        }
        Err(self
            .folder_gone(&m)
            .await
            .unwrap_or_else(|| self.failure("CreateItem", &m)))
    }

    /// When `m` says the folder is gone (deleted in Outlook): forget its id, so that the
    /// next request finds or creates it again, and say so.
    async fn folder_gone(&self, m: &ResponseMessage) -> Option<SinkError> {
        if !matches!(
            m.code.as_str(),
            "ErrorFolderNotFound" | "ErrorParentFolderNotFound"
        ) {
            return None;
        }
        *self.mailbox.folder_id.lock().await = None;
        Some(SinkError::Retryable {
            message: format!(
                "the {FOLDER_NAME} folder of mailbox {} is gone ({}); it is created again",
                self.mailbox.address, m.code
            ),
            retry_after: None,
        })
    }

    /// Update the item `id`; `None` when it no longer exists.
    async fn update(
        &self,
        id: &str,
        change_key: Option<&str>,
        fields: &ItemFields,
        uid: &str,
    ) -> Result<Option<Applied>, SinkError> {
        let mut change_key = change_key.map(str::to_string);
        let mut refetched = false;
        loop {
            let m = self
                .call("UpdateItem", |x| {
                    soap::update_item(x, id, change_key.as_deref(), fields, uid)
                })
                .await?;
            if m.is_success() {
                return applied(&m, Some(id), "UpdateItem").map(Some);
            }
            match m.code.as_str() {
                "ErrorItemNotFound" | "ErrorInvalidIdNotAnItemAttachmentId" => return Ok(None),
                "ErrorIrresolvableConflict" if !refetched => {
                    // Refetch the current ChangeKey and overwrite once more.
                    refetched = true;
                    let folder = self.folder_id().await?;
                    let current = self.find(&folder, &[uid]).await?;
                    match current.into_iter().find(|i| i.id == id) {
                        Some(item) => change_key = item.change_key,
                        None => return Ok(None),
                    }
                }
                _ => return Err(self.failure("UpdateItem", &m)),
            }
        }
    }

    /// Bring the first of `found` up to date and delete the others (duplicates); `None`
    /// when none of them exists any more.
    async fn adopt(
        &self,
        found: Vec<ItemRef>,
        fields: &ItemFields,
        uid: &str,
    ) -> Result<Option<Applied>, SinkError> {
        let mut found = found.into_iter();
        for item in found.by_ref() {
            if let Some(applied) = self
                .update(&item.id, item.change_key.as_deref(), fields, uid)
                .await?
            {
                for duplicate in found {
                    tracing::warn!(uid, "deleting a duplicate item of this appointment");
                    self.delete_item(&duplicate.id).await?;
                }
                return Ok(Some(applied));
            }
        }
        Ok(None)
    }

    async fn delete(&self, uid: &str, previous: &RemoteRef) -> Result<Applied, SinkError> {
        let ids: Vec<String> = match previous.remote_id.as_deref() {
            Some(id) => vec![id.to_string()],
            // Never recorded (e.g. its creation's answer was lost): look it up.
            None => self
                .batch_lookup(uid)
                .await?
                .into_iter()
                .map(|i| i.id)
                .collect(),
        };
        for id in ids {
            self.delete_item(&id).await?;
        }
        Ok(Applied::default())
    }

    /// Delete one item; one that is gone already counts as deleted.
    async fn delete_item(&self, id: &str) -> Result<(), SinkError> {
        let m = self
            .call("DeleteItem", |x| soap::delete_item(x, id))
            .await?;
        if m.is_success() || m.code == "ErrorItemNotFound" {
            Ok(())
        } else {
            Err(self.failure("DeleteItem", &m))
        }
    }

    /// The items found for `uid` by the batch's lookup (run by the first change that needs
    /// it; when it fails, it fails that change, and the next one runs it).
    async fn batch_lookup(&self, uid: &str) -> Result<Vec<ItemRef>, SinkError> {
        let mut found = self.found.lock().await;
        if found.is_none() {
            self.batch.stopped()?;
            let folder = self.folder_id().await?;
            let uids: Vec<&str> = self.lookups.iter().map(String::as_str).collect();
            let mut map: HashMap<String, Vec<ItemRef>> = HashMap::new();
            for chunk in uids.chunks(LOOKUP_CHUNK) {
                for item in self.find(&folder, chunk).await? {
                    if let Some(uid) = item.uid.clone() {
                        map.entry(uid).or_default().push(item);
                    }
                }
            }
            *found = Some(map);
        }
        Ok(found
            .as_ref()
            .and_then(|m| m.get(uid))
            .cloned()
            .unwrap_or_default())
    }

    /// The items in `folder` carrying any of `uids`.
    async fn find(&self, folder: &str, uids: &[&str]) -> Result<Vec<ItemRef>, SinkError> {
        let mut items = Vec::new();
        loop {
            let offset = items.len();
            let m = self
                .call("FindItem", |x| {
                    soap::find_items(x, folder, uids, offset, PAGE)
                })
                .await?;
            if !m.is_success() {
                return Err(self
                    .folder_gone(&m)
                    .await
                    .unwrap_or_else(|| self.failure("FindItem", &m)));
            }
            let last = m.last_page || m.items.is_empty();
            items.extend(m.items);
            if last {
                return Ok(items);
            }
        }
    }

    /// The FolderId of "notarXpert", found or created once per mailbox. Changes that need
    /// it wait for the one looking it up; when that lookup fails, it fails only that
    /// change, and the next one looks for itself.
    async fn folder_id(&self) -> Result<String, SinkError> {
        let mut cached = self.mailbox.folder_id.lock().await;
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        self.batch.may_begin(&*self.mailbox)?;
        let mut id = self.find_folder().await?;
        if id.is_none() {
            let m = self
                .call("CreateFolder", |x| soap::create_folder(x, FOLDER_NAME))
                .await?;
            if m.is_success() {
                tracing::info!(mailbox = %self.mailbox.address, "created the {FOLDER_NAME} folder");
                id = m.folders.into_iter().next();
            } else if m.code == "ErrorFolderExists" {
                id = self.find_folder().await?;
            } else {
                return Err(self.failure("CreateFolder", &m));
            }
        }
        let id = id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| SinkError::Retryable {
                message: format!(
                    "Exchange named no {FOLDER_NAME} folder for mailbox {}",
                    self.mailbox.address
                ),
                retry_after: None,
            })?;
        *cached = Some(id.clone());
        Ok(id)
    }

    async fn find_folder(&self) -> Result<Option<String>, SinkError> {
        let m = self
            .call("FindFolder", |x| soap::find_folder(x, FOLDER_NAME))
            .await?;
        if !m.is_success() {
            return Err(self.failure("FindFolder", &m));
        }
        Ok(m.folders.into_iter().next())
    }
}

/// What to record for the item an answer names.
fn applied(
    m: &ResponseMessage,
    known_id: Option<&str>,
    operation: &str,
) -> Result<Applied, SinkError> {
    let item = m.items.first();
    let id = item
        .map(|i| i.id.as_str())
        .filter(|id| !id.is_empty())
        .or(known_id)
        .ok_or_else(|| SinkError::Retryable {
            message: format!("{operation}: Exchange named no item"),
            retry_after: None,
        })?;
    Ok(Applied {
        remote_id: Some(id.to_string()),
        etag: item.and_then(|i| i.change_key.clone()),
    })
}

/// The response message of a one-item operation: Exchange answers with one per item.
fn first_message(
    operation: &str,
    address: &str,
    messages: Vec<ResponseMessage>,
) -> Result<ResponseMessage, SinkError> {
    messages
        .into_iter()
        .next()
        .ok_or_else(|| SinkError::Retryable {
            message: format!("{operation} for {address}: Exchange sent no response message"),
            retry_after: None,
        })
}
