//! The CalDAV sink (`LIVESYNC_SINK=caldav`): one calendar collection per person on a
//! CalDAV server (Radicale, Nextcloud, SOGo, …), one calendar object per appointment.
//!
//! Layout: [`target`] — collection URL and credentials per person; [`transport`] — the
//! HTTPS client, limits per server, HTTP status → [`SinkError`]; [`dav`] — the requests
//! libdav does not model. Creating, updating and deleting use libdav's typed requests
//! (`PutResource::create` / `update`, `Delete::with_etag` / `force`, `GetEtag`, `Propfind`),
//! which cannot send an unconditional PUT by accident.
//!
//! # Design note
//! An appointment's object lives at `<collection>/<uid>.ics`; the href and ETag the server
//! reports are kept in the delivery state and come back as `previous`.
//!
//! ```text
//! upsert, nothing recorded ──PUT If-None-Match:*──▶ 2xx: done
//!                                   │ 412 (exists at our href) ─▶ reconcile(href)
//!                                   │ 409/412 no-uid-conflict ──▶ adopt(uid)
//!                                   └ 409 (no collection) ──────▶ create calendar, once more
//! upsert, href+etag ─────PUT If-Match:etag─▶ 2xx: done
//!                                   │ 404 ─▶ create at href   │ 412 ─▶ reconcile(href)
//! upsert, href only ─────────────────────────────────────────────▶ reconcile(href)
//! reconcile(href): GET it; our UID ─▶ PUT If-Match:<fresh etag>; gone ─▶ adopt(uid);
//!                  someone else's UID ─▶ Permanent (never overwritten)
//! adopt(uid):      REPORT calendar-query for the UID; found ─▶ PUT If-Match there;
//!                  not found ─▶ PUT If-None-Match:* at <uid>.ics;
//!                  404 (the collection is gone) ─▶ create calendar, PUT If-None-Match:*
//! delete ─DELETE If-Match:etag (or unconditional without one)─▶ 2xx/404: done
//!                  412 ─▶ GET: gone or not ours ─▶ done; ours ─▶ DELETE If-Match:<fresh>
//! ```
//! So a lost response (the worker killed between PUT and recording the ETag) is repaired
//! on the next attempt without a second object for the UID. The collection is looked up
//! (PROPFIND) and created when missing (MKCALENDAR, display name "notarXpert") before the
//! first upsert into it; that it exists is remembered until a PUT says otherwise.
//!
//! Errors: no answer, 5xx → [`SinkError::Retryable`] (with `Retry-After`); 401, 403,
//! 404 of the collection → [`SinkError::Config`]; 400, 413, 415, 422 or a CalDAV
//! precondition about the object → [`SinkError::Permanent`]. A 429 (or a 503 with
//! `Retry-After`) pauses the server and the request is sent again after the pause
//! ([`transport`]).
//!
//! Changes of a batch run side by side (at most as many as the server takes requests at
//! once), and each result is the change's own (the charging rule of [`crate::sink`]): a
//! failed request fails only the change that sent it, including the lookup or creation of
//! the collection, which the first change needing it does while the others wait (they look
//! for themselves if it failed). A change that would begin, or wait for a throttled server,
//! past [`RUN_BUDGET`] is handed back unsent ([`SinkError::Deferred`]). Only a
//! configuration problem met while looking up the collection is reported for the other
//! changes of the batch; it never counts as an attempt.

pub mod dav;
pub mod target;
pub mod transport;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ::http::{HeaderValue, StatusCode};
use libdav::Depth;
use libdav::dav::{Delete, GetEtag, Propfind, PutResource};
use libdav::names;
use libdav::requests::DavRequest;
use tokio::time::Instant;

use self::dav::{
    CollectionState, Fetch, FindByUid, ListObjects, MkCalendar, collection_state, object_uid,
};
use self::target::{Collection, Credentials, PLACEHOLDER, expand_url};
use self::transport::{Reply, Transport, failure};
use super::{
    Applied, CalendarOwner, CalendarSink, Change, ListedItem, RUN_BUDGET, RemoteRef, RenderContext,
    SinkError, Span,
};
use crate::config::CalDavSettings;
use crate::ical;

const CONTENT_TYPE: &str = "text/calendar; charset=utf-8";

/// Delivers appointments into CalDAV calendars.
pub struct CalDavSink {
    url_template: String,
    credentials: Credentials,
    transport: Transport,
    /// Collection URLs known to exist (found or created).
    known: Mutex<HashSet<String>>,
    /// Per collection URL: held while one change looks the collection up or creates it.
    ensuring: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    run_budget: Duration,
}

/// One person's calendar, resolved, for one batch.
struct Target {
    collection: Collection,
    auth: Option<HeaderValue>,
    /// The account name, for messages.
    login: Option<String>,
    /// Until then the batch starts changes and waits out the server's pauses.
    deadline: Instant,
}

/// How a PUT ended, when it did not simply fail.
enum Put {
    Done(Option<String>),
    /// 412: a precondition failed (something at the href, or a stale ETag).
    Precondition {
        uid_conflict: bool,
    },
    /// 409: the collection is missing, or (`uid_conflict`) the UID lives elsewhere.
    Conflict {
        uid_conflict: bool,
    },
    /// 404: nothing at the href (an update of an object deleted meanwhile).
    Gone,
}

impl CalDavSink {
    /// A sink for `settings`; the URL template must give an http(s) collection URL.
    pub fn new(settings: &CalDavSettings) -> Result<CalDavSink, SinkError> {
        let probe = expand_url(&settings.url_template, "probe");
        Collection::parse(&probe).map_err(|e| SinkError::Config {
            message: format!("LIVESYNC_CALDAV_URL: {e}"),
        })?;
        Ok(CalDavSink {
            url_template: settings.url_template.clone(),
            credentials: Credentials::new(settings.username.clone(), settings.password.clone()),
            transport: Transport::new(settings.request_timeout, settings.max_concurrency)?,
            known: Mutex::new(HashSet::new()),
            ensuring: Mutex::new(HashMap::new()),
            run_budget: RUN_BUDGET,
        })
    }

    /// Start new changes of one batch for at most `budget` ([`RUN_BUDGET`] by default;
    /// [`crate::sink::run_budget`] gives the one for a lease).
    pub fn with_run_budget(mut self, budget: Duration) -> CalDavSink {
        self.run_budget = budget;
        self
    }

    /// The collection URL of `owner`'s calendar: their own calendar address when set,
    /// otherwise the template with their percent-encoded user name.
    pub fn collection_url(&self, owner: &CalendarOwner) -> String {
        match owner.calendar_address.as_deref().map(str::trim) {
            Some(address) if !address.is_empty() => address.to_string(),
            _ => expand_url(&self.url_template, &owner.username),
        }
    }

    fn target(&self, owner: &CalendarOwner) -> Result<Target, SinkError> {
        let url = self.collection_url(owner);
        let collection = Collection::parse(&url).map_err(|e| SinkError::Config {
            message: format!("calendar address of {:?}: {e}", owner.username),
        })?;
        Ok(Target {
            collection,
            auth: self.credentials.header_for(&owner.username),
            login: self.credentials.login_for(&owner.username),
            deadline: Instant::now() + self.run_budget,
        })
    }

    async fn send<R: DavRequest>(&self, t: &Target, request: &R) -> Result<Reply, SinkError> {
        self.transport
            .send(&t.collection.origin, t.auth.as_ref(), request, t.deadline)
            .await
    }

    /// Why no change may begin any more in this batch: its budget is used up (the rest
    /// follows in the next batch at once), or the server is paused past the deadline (the
    /// rest follows after the pause).
    fn out_of_time(&self, t: &Target) -> Option<SinkError> {
        let now = Instant::now();
        if let Some(left) = self.transport.pause_left(&t.collection.origin)
            && now + left > t.deadline
        {
            return Some(transport::deferred(&t.collection.origin, left));
        }
        (now >= t.deadline).then(|| SinkError::Deferred {
            message: format!(
                "this batch for {} used its {:.1} s",
                t.collection.url(),
                self.run_budget.as_secs_f64()
            ),
            retry_after: None,
        })
    }

    /// [`Self::ensure_calendar`] by one change at a time per collection: the others wait
    /// and find it known, or look for themselves when it failed. A configuration problem
    /// found meanwhile (`config`, per batch) is reported without asking again.
    async fn ensure_calendar_once(
        &self,
        t: &Target,
        config: &OnceLock<SinkError>,
    ) -> Result<(), SinkError> {
        let lock = {
            let mut ensuring = self.ensuring.lock().unwrap_or_else(|e| e.into_inner());
            ensuring.entry(t.collection.url()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(e) = config.get() {
            return Err(e.clone());
        }
        if self.is_known(t) {
            return Ok(());
        }
        if let Some(e) = self.out_of_time(t) {
            return Err(e);
        }
        let result = self.ensure_calendar(t).await;
        if let Err(e @ SinkError::Config { .. }) = &result {
            let _ = config.set(e.clone());
        }
        result
    }

    fn fail(&self, t: &Target, reply: &Reply) -> SinkError {
        failure(reply, t.login.as_deref())
    }

    fn is_known(&self, t: &Target) -> bool {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.contains(&t.collection.url())
    }

    fn set_known(&self, t: &Target, exists: bool) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if exists {
            known.insert(t.collection.url());
        } else {
            known.remove(&t.collection.url());
        }
    }

    /// Make sure the collection exists, creating it when missing.
    async fn ensure_calendar(&self, t: &Target) -> Result<(), SinkError> {
        if self.is_known(t) {
            return Ok(());
        }
        match self.collection_state(t).await? {
            CollectionState::Calendar => {}
            CollectionState::NotACalendar => {
                return Err(SinkError::Config {
                    message: format!("{} exists but is not a calendar", t.collection.url()),
                });
            }
            CollectionState::Missing => {
                let reply = self
                    .send(
                        t,
                        &MkCalendar {
                            path: &t.collection.path,
                        },
                    )
                    .await?;
                let status = reply.status();
                if status.is_success() {
                    tracing::info!(calendar = %t.collection.url(), "created the calendar");
                } else if matches!(status.as_u16(), 403 | 405 | 409) {
                    // "Already exists" (created meanwhile) — or the parent is missing, or
                    // the account may not create calendars there: look again.
                    if self.collection_state(t).await? != CollectionState::Calendar {
                        return Err(SinkError::Config {
                            message: format!(
                                "MKCALENDAR {} answered {status}: cannot create the calendar; does the parent collection exist, and may {} create calendars there?",
                                t.collection.url(),
                                t.login
                                    .as_deref()
                                    .map_or("this account".to_string(), |l| format!("{l:?}")),
                            ),
                        });
                    }
                } else {
                    return Err(self.fail(t, &reply));
                }
            }
        }
        self.set_known(t, true);
        Ok(())
    }

    async fn collection_state(&self, t: &Target) -> Result<CollectionState, SinkError> {
        let request = Propfind::new(&t.collection.path)
            .with_properties(&[&names::RESOURCETYPE])
            .with_depth(Depth::Zero);
        let reply = self.send(t, &request).await?;
        match reply.status() {
            StatusCode::NOT_FOUND => Ok(CollectionState::Missing),
            s if s.is_success() => {
                collection_state(&reply.body).map_err(|e| SinkError::Retryable {
                    message: format!("PROPFIND {}: unreadable answer: {e}", reply.url),
                    retry_after: None,
                })
            }
            _ => Err(self.fail(t, &reply)),
        }
    }

    async fn put(
        &self,
        t: &Target,
        href: &str,
        data: &str,
        if_match: Option<&str>,
    ) -> Result<Put, SinkError> {
        let reply = match if_match {
            Some(etag) => {
                let request = PutResource::new(href).update(data, CONTENT_TYPE, etag);
                self.send(t, &request).await?
            }
            None => {
                let request = PutResource::new(href).create(data, CONTENT_TYPE);
                self.send(t, &request).await?
            }
        };
        let uid_conflict = reply.names_precondition("no-uid-conflict");
        match reply.status().as_u16() {
            200..=299 => Ok(Put::Done(reply.etag())),
            412 => Ok(Put::Precondition { uid_conflict }),
            409 => Ok(Put::Conflict { uid_conflict }),
            403 if uid_conflict => Ok(Put::Conflict { uid_conflict }),
            404 => Ok(Put::Gone),
            _ => Err(self.fail(t, &reply)),
        }
    }

    /// The result of a successful write at `href`; asks for the ETag when the PUT gave none.
    async fn written(&self, t: &Target, href: &str, etag: Option<String>) -> Applied {
        let etag = match etag {
            Some(e) => Some(e),
            None => self.current_etag(t, href).await,
        };
        Applied {
            remote_id: Some(href.to_string()),
            etag,
        }
    }

    async fn current_etag(&self, t: &Target, href: &str) -> Option<String> {
        let request = GetEtag::new(href);
        let reply = self.send(t, &request).await.ok()?;
        request
            .parse_response(&reply.parts, &reply.body)
            .ok()
            .map(|r| r.etag)
    }

    async fn upsert(
        &self,
        t: &Target,
        uid: &str,
        data: &str,
        previous: Option<&RemoteRef>,
    ) -> Result<Applied, SinkError> {
        let recorded = previous
            .and_then(|p| p.remote_id.as_deref().map(|href| (href, p.etag.as_deref())))
            .filter(|(href, _)| t.collection.contains(href))
            .map(|(href, etag)| (t.collection.path_of(href), etag));
        match recorded {
            Some((href, Some(etag))) => match self.put(t, &href, data, Some(etag)).await? {
                Put::Done(etag) => Ok(self.written(t, &href, etag).await),
                Put::Gone => self.create(t, &href, uid, data).await,
                Put::Precondition { uid_conflict: true } | Put::Conflict { uid_conflict: true } => {
                    self.adopt(t, uid, data).await
                }
                Put::Precondition { .. } => self.reconcile(t, &href, uid, data).await,
                Put::Conflict { .. } => {
                    self.set_known(t, false);
                    self.create(t, &href, uid, data).await
                }
            },
            Some((href, None)) => self.reconcile(t, &href, uid, data).await,
            None => {
                let href = t.collection.object_href(uid);
                self.create(t, &href, uid, data).await
            }
        }
    }

    /// Create the object at `href` (`If-None-Match: *`), reconciling when something is there.
    async fn create(
        &self,
        t: &Target,
        href: &str,
        uid: &str,
        data: &str,
    ) -> Result<Applied, SinkError> {
        for attempt in 0..2 {
            match self.put(t, href, data, None).await? {
                Put::Done(etag) => return Ok(self.written(t, href, etag).await),
                Put::Precondition { uid_conflict: true } | Put::Conflict { uid_conflict: true } => {
                    return self.adopt(t, uid, data).await;
                }
                Put::Precondition { .. } => return self.reconcile(t, href, uid, data).await,
                Put::Conflict { .. } | Put::Gone if attempt == 0 => {
                    // The collection went away (or was never there): create it, try again.
                    self.set_known(t, false);
                    self.ensure_calendar(t).await?;
                }
                Put::Conflict { .. } | Put::Gone => break,
            }
        }
        Err(SinkError::Retryable {
            message: format!(
                "PUT {}: the server keeps answering with a conflict",
                t.collection.url_of(href)
            ),
            retry_after: None,
        })
    }

    /// Something is at `href` (or our ETag is stale): read it back; overwrite it when it is
    /// ours, never when it is not.
    async fn reconcile(
        &self,
        t: &Target,
        href: &str,
        uid: &str,
        data: &str,
    ) -> Result<Applied, SinkError> {
        let Some(found) = self.fetch(t, href).await? else {
            return self.adopt(t, uid, data).await;
        };
        tracing::info!(
            object = %t.collection.url_of(href),
            "the calendar holds another version of this object (a lost response?); reconciling"
        );
        match object_uid(&found.data) {
            Some(u) if u == uid => {}
            other => {
                return Err(SinkError::Permanent {
                    message: format!(
                        "{} holds another calendar object (UID {:?}), which is left alone",
                        t.collection.url_of(href),
                        other.unwrap_or_default()
                    ),
                });
            }
        }
        let etag = match found.etag {
            Some(e) => e,
            None => self
                .current_etag(t, href)
                .await
                .ok_or_else(|| SinkError::Retryable {
                    message: format!(
                        "{}: the server gives no ETag, so the object cannot be replaced safely",
                        t.collection.url_of(href)
                    ),
                    retry_after: None,
                })?,
        };
        match self.put(t, href, data, Some(&etag)).await? {
            Put::Done(etag) => Ok(self.written(t, href, etag).await),
            _ => Err(changed_meanwhile(t, href)),
        }
    }

    /// Our UID may live under another href: find it and overwrite it there; create it at
    /// `<uid>.ics` when it is nowhere.
    async fn adopt(&self, t: &Target, uid: &str, data: &str) -> Result<Applied, SinkError> {
        let request = FindByUid {
            collection: &t.collection.path,
            uid,
        };
        let reply = self.send(t, &request).await?;
        if reply.status() == StatusCode::NOT_FOUND {
            // The collection itself is gone (a calendar wiped or recreated; some servers
            // answer a PUT with If-Match there with 412, not 404): create it, then the object.
            self.set_known(t, false);
            self.ensure_calendar(t).await?;
            let href = t.collection.object_href(uid);
            return match self.put(t, &href, data, None).await? {
                Put::Done(etag) => Ok(self.written(t, &href, etag).await),
                _ => Err(changed_meanwhile(t, &href)),
            };
        }
        if !reply.status().is_success() {
            return Err(self.fail(t, &reply));
        }
        let found = request
            .parse_response(&reply.parts, &reply.body)
            .map_err(|e| SinkError::Retryable {
                message: format!("REPORT {}: unreadable answer: {e}", reply.url),
                retry_after: None,
            })?;
        match found.into_iter().next() {
            Some(existing) => {
                let href = t.collection.path_of(&existing.href);
                tracing::info!(
                    object = %t.collection.url_of(&href),
                    uid,
                    "the UID is already in the calendar under another name; updating it there"
                );
                let etag = match existing.etag {
                    Some(e) => Some(e),
                    None => self.current_etag(t, &href).await,
                };
                let Some(etag) = etag else {
                    return Err(changed_meanwhile(t, &href));
                };
                match self.put(t, &href, data, Some(&etag)).await? {
                    Put::Done(etag) => Ok(self.written(t, &href, etag).await),
                    _ => Err(changed_meanwhile(t, &href)),
                }
            }
            None => {
                let href = t.collection.object_href(uid);
                match self.put(t, &href, data, None).await? {
                    Put::Done(etag) => Ok(self.written(t, &href, etag).await),
                    _ => Err(changed_meanwhile(t, &href)),
                }
            }
        }
    }

    /// GET `href`: `None` when nothing is there.
    async fn fetch(&self, t: &Target, href: &str) -> Result<Option<dav::Fetched>, SinkError> {
        let request = Fetch { href };
        let reply = self.send(t, &request).await?;
        match reply.status() {
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            s if s.is_success() => Ok(request.parse_response(&reply.parts, &reply.body).ok()),
            _ => Err(self.fail(t, &reply)),
        }
    }

    async fn delete(
        &self,
        t: &Target,
        uid: &str,
        previous: &RemoteRef,
    ) -> Result<Applied, SinkError> {
        let href = previous
            .remote_id
            .as_deref()
            .filter(|href| t.collection.contains(href))
            .map(|href| t.collection.path_of(href))
            .unwrap_or_else(|| t.collection.object_href(uid));
        let reply = match previous.etag.as_deref() {
            Some(etag) => self.send(t, &Delete::new(&href).with_etag(etag)).await?,
            None => self.send(t, &Delete::new(&href).force()).await?,
        };
        match reply.status().as_u16() {
            200..=299 | 404 | 410 => return Ok(Applied::default()),
            412 => {}
            _ => return Err(self.fail(t, &reply)),
        }
        // Changed since we wrote it: delete it if it is still ours.
        let Some(found) = self.fetch(t, &href).await? else {
            return Ok(Applied::default());
        };
        if object_uid(&found.data).as_deref() != Some(uid) {
            return Ok(Applied::default());
        }
        let Some(etag) = found.etag.or(self.current_etag(t, &href).await) else {
            return Err(changed_meanwhile(t, &href));
        };
        let reply = self.send(t, &Delete::new(&href).with_etag(etag)).await?;
        match reply.status().as_u16() {
            200..=299 | 404 | 410 => Ok(Applied::default()),
            412 => Err(changed_meanwhile(t, &href)),
            _ => Err(self.fail(t, &reply)),
        }
    }

    /// One change of a batch: begun when one of the batch's `slots` is free, unless the
    /// batch is out of time.
    async fn apply_in_batch(
        &self,
        t: &Target,
        change: &Change,
        ctx: &RenderContext,
        slots: &tokio::sync::Semaphore,
        config: &OnceLock<SinkError>,
    ) -> Result<Applied, SinkError> {
        let _slot = slots.acquire().await;
        if let Some(e) = self.out_of_time(t) {
            return Err(e);
        }
        if matches!(change, Change::Upsert { .. }) {
            self.ensure_calendar_once(t, config).await?;
        }
        self.apply_one(t, change, ctx).await
    }

    async fn apply_one(
        &self,
        t: &Target,
        change: &Change,
        ctx: &RenderContext,
    ) -> Result<Applied, SinkError> {
        match change {
            Change::Upsert {
                appointment,
                uid,
                sequence,
                previous,
            } => {
                let data = ical::render_object(appointment, uid, *sequence, ctx);
                self.upsert(t, uid, &data, previous.as_ref()).await
            }
            Change::Delete { uid, previous, .. } => self.delete(t, uid, previous).await,
        }
    }

    /// The URL `check()` asks: the template up to the path segment holding `{username}`
    /// (`None` when the placeholder is in the host name).
    fn check_url(&self) -> Option<String> {
        let Some(i) = self.url_template.find(PLACEHOLDER) else {
            return Some(self.url_template.clone());
        };
        let head = &self.url_template[..i];
        let authority_start = head.find("://").map_or(0, |k| k + 3);
        head[authority_start..].find('/')?;
        head.rfind('/').map(|j| head[..=j].to_string())
    }
}

fn changed_meanwhile(t: &Target, href: &str) -> SinkError {
    SinkError::Retryable {
        message: format!(
            "{} changed while it was being written; trying again",
            t.collection.url_of(href)
        ),
        retry_after: None,
    }
}

#[async_trait::async_trait]
impl CalendarSink for CalDavSink {
    fn name(&self) -> &'static str {
        "caldav"
    }

    async fn apply(
        &self,
        owner: &CalendarOwner,
        changes: &[Change],
        ctx: &RenderContext,
    ) -> Vec<Result<Applied, SinkError>> {
        let t = match self.target(owner) {
            Ok(t) => t,
            Err(e) => return vec![Err(e); changes.len()],
        };
        // Each change concerns another appointment, so they may run side by side, as many
        // at once as the server takes requests (the transport bounds those per server).
        let slots = tokio::sync::Semaphore::new(self.transport.max_concurrency());
        let config = OnceLock::new();
        futures_util::future::join_all(
            changes
                .iter()
                .map(|c| self.apply_in_batch(&t, c, ctx, &slots, &config)),
        )
        .await
    }

    async fn check(&self) -> Result<(), SinkError> {
        let Some(url) = self.check_url() else {
            return Ok(());
        };
        let collection = Collection::parse(&url).map_err(|e| SinkError::Config {
            message: format!("LIVESYNC_CALDAV_URL: {e}"),
        })?;
        let per_user = self.credentials.per_user();
        // Per-person credentials are checked on delivery; the service account here.
        let t = Target {
            auth: if per_user {
                None
            } else {
                self.credentials.header_for("")
            },
            login: if per_user {
                None
            } else {
                self.credentials.login_for("")
            },
            collection,
            deadline: Instant::now() + self.run_budget,
        };
        let request = Propfind::new(&t.collection.path)
            .with_properties(&[&names::RESOURCETYPE])
            .with_depth(Depth::Zero);
        let reply = self.send(&t, &request).await?;
        match reply.status().as_u16() {
            200..=299 => Ok(()),
            401 | 403 if per_user => Ok(()),
            _ => Err(self.fail(&t, &reply)),
        }
    }

    /// A `calendar-query` REPORT with a time range on VEVENT, with each object's data; a
    /// missing collection holds nothing. Every VEVENT-bearing object is one item (an
    /// object's first VEVENT speaks for it).
    async fn list(
        &self,
        owner: &CalendarOwner,
        span: &Span,
        ctx: &RenderContext,
    ) -> Result<Vec<ListedItem>, SinkError> {
        let t = self.target(owner)?;
        let format = |at: chrono::DateTime<chrono::Utc>| at.format("%Y%m%dT%H%M%SZ").to_string();
        let request = ListObjects {
            collection: &t.collection.path,
            start: format(span.from),
            end: span.to.map(format),
        };
        let reply = self.send(&t, &request).await?;
        match reply.status().as_u16() {
            404 => Ok(Vec::new()),
            200..=299 => {
                let listed =
                    dav::listed_objects(&reply.body).map_err(|e| SinkError::Retryable {
                        message: format!("REPORT {}: unreadable answer: {e}", reply.url),
                        retry_after: None,
                    })?;
                Ok(listed
                    .into_iter()
                    .filter_map(|object| {
                        let event = ical::read_event(&object.data, ctx.time_zone)?;
                        Some(ListedItem {
                            remote_id: Some(object.href),
                            event,
                        })
                    })
                    .collect())
            }
            _ => Err(self.fail(&t, &reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;

    fn sink(template: &str) -> CalDavSink {
        CalDavSink::new(&CalDavSettings {
            url_template: template.into(),
            username: Some("{username}".into()),
            password: Some(Secret::new("pw")),
            max_concurrency: 2,
            request_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    fn owner(name: &str, address: Option<&str>) -> CalendarOwner {
        CalendarOwner {
            user_id: 1,
            username: name.into(),
            calendar_address: address.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn the_collection_comes_from_the_template_or_the_persons_address() {
        let s = sink("https://dav.kanzlei.at/{username}/notarxpert/");
        assert_eq!(
            s.collection_url(&owner("Mag. Huber", None)),
            "https://dav.kanzlei.at/Mag.%20Huber/notarxpert/"
        );
        assert_eq!(
            s.collection_url(&owner(
                "x",
                Some("https://cloud.kanzlei.at/remote.php/dav/calendars/x/np/")
            )),
            "https://cloud.kanzlei.at/remote.php/dav/calendars/x/np/"
        );
        assert_eq!(s.check_url().as_deref(), Some("https://dav.kanzlei.at/"));
        let s = sink("https://cloud.kanzlei.at/remote.php/dav/calendars/{username}/notarxpert");
        assert_eq!(
            s.check_url().as_deref(),
            Some("https://cloud.kanzlei.at/remote.php/dav/calendars/")
        );
        assert_eq!(sink("https://{username}.dav.at/cal/").check_url(), None);
    }

    #[tokio::test]
    async fn a_bad_template_is_a_configuration_error() {
        let e = CalDavSink::new(&CalDavSettings {
            url_template: "dav.kanzlei.at/{username}".into(),
            username: None,
            password: None,
            max_concurrency: 1,
            request_timeout: Duration::from_secs(1),
        })
        .err()
        .unwrap();
        assert!(matches!(e, SinkError::Config { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retryable() {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let s = sink(&format!("http://127.0.0.1:{port}/{{username}}/cal/"));
        assert!(matches!(s.check().await, Err(SinkError::Retryable { .. })));
    }
}
