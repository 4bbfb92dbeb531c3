//! An in-process fake of Microsoft Graph (calendars and events of user mailboxes) and of
//! the Microsoft identity platform's token endpoint, following the documented contract
//! closely enough to exercise the Graph sink, and recording every request.
//!
//! Contract followed: client-credentials tokens with `expires_in`; 401
//! `InvalidAuthenticationToken` for a missing, unknown or expired token; calendars and
//! events per mailbox; `transactionId` (a repeat with the same content returns the existing
//! event, with other content 400 `ErrorDuplicateTransactionId`); `$filter` by calendar name
//! and by single-value extended property (in that calendar only); PATCH merges (extended
//! properties by id); 404 `ErrorItemNotFound` for unknown ids; `calendarView` of a
//! calendar (`startDateTime`/`endDateTime` required, events overlapping the window in
//! order of start, times in UTC, all-day events by their dates, `$top` (default 10) with
//! `@odata.nextLink`, `$select`, and `$expand` of extended properties by id). Events are
//! kept by ImmutableId: an event deleted in Outlook moves to Deleted Items with its id, so
//! a PATCH or DELETE of that id still reaches it there, while the calendar's lists no
//! longer hold it; a calendar deleted in Outlook takes its events to Deleted Items.
//! Changes "in Outlook": move to Deleted Items, edit, copy, add someone else's event,
//! delete the calendar. Faults on demand: 429 with `Retry-After`, 403, an answer held back after
//! the event was created, tokens expired early, a delay per request (to measure
//! concurrency per mailbox), connections dropped before or after an event is created.
//!
//! [`FaultProfile`] adds Graph's documented behaviour under load: a 429 with `Retry-After`
//! on every Nth request of a mailbox, a share of creations whose answer is lost (the
//! connection drops after the event was stored; chosen pseudo-randomly from a seed, so a
//! run can be repeated), a latency per request, and the limit of concurrent requests per
//! mailbox (one more is answered 429 `ApplicationThrottled`; the most seen is recorded).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

pub use crate::fake_service::Load;
use crate::fake_service::{InFlight, chosen, dropped_connection, serve_on_loopback};
use livesync_worker::sink::graph::event::zone_of_windows_name;

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
pub const SECRET: &str = "Geheim~Kanzlei.Secret_0815";
/// The `calendar` of an event in the mailbox's Deleted Items folder.
pub const DELETED_ITEMS: &str = "deleteditems";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Decoded path below the API base (`/users/m@x/calendars`) or the token path.
    pub path: String,
    /// Decoded query parameters.
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    /// JSON body (or form fields as an object for the token endpoint).
    pub body: Value,
    pub at: Instant,
    pub status: u16,
    /// The connection was dropped instead of sending this answer.
    pub dropped: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub calendar: String,
    pub json: Value,
}

#[derive(Default)]
struct Mailbox {
    calendars: Vec<(String, String)>,
    events: BTreeMap<String, StoredEvent>,
    transactions: HashMap<String, String>,
    in_flight: InFlight,
    /// Graph requests received for this mailbox.
    received: u64,
}

#[derive(Default)]
struct Faults {
    throttle: u32,
    retry_after: String,
    hold_next_create: Option<Duration>,
    forbidden: Vec<String>,
    delay: Option<Duration>,
    profile: FaultProfile,
    /// Pseudo-random state for `profile.lost_creations_percent`.
    random: u64,
    /// Appointment ids whose creations fail: the connection drops before the event is
    /// stored.
    failing_creations: HashSet<i64>,
    /// Appointment ids whose next creation loses its answer (stored, then dropped).
    losing_answer: HashSet<i64>,
    /// Drop the connection of the next `n` Graph requests without handling them.
    drop_next: u32,
}

/// Graph's documented behaviour under load, as far as the sink meets it.
#[derive(Debug, Clone, Default)]
pub struct FaultProfile {
    /// Answer every Nth request of a mailbox with 429 and [`FaultProfile::retry_after`].
    pub throttle_every: Option<u64>,
    /// `Retry-After` of the fake's 429s (seconds, may be fractional).
    pub retry_after: String,
    /// Lost answers, latency, and the concurrent requests per mailbox Graph allows: one
    /// more is answered 429 `ApplicationThrottled` with [`FaultProfile::retry_after`].
    pub load: Load,
}

impl FaultProfile {
    /// As the outside check saw it (issue 16): 429 with `Retry-After: 0.5` on every 7th
    /// request per mailbox, 15 % of creations answered by a dropped connection after the
    /// event was created, 20 ms latency, at most 4 requests in flight per mailbox.
    pub fn documented(seed: u64) -> FaultProfile {
        FaultProfile {
            throttle_every: Some(7),
            retry_after: "0.5".into(),
            load: Load::documented(seed, 4),
        }
    }
}

/// What the fake does after handling a request.
enum After {
    Answer,
    /// Answer after this long.
    Hold(Duration),
    /// Drop the connection instead of answering.
    Drop,
}

#[derive(Default)]
struct Inner {
    mailboxes: HashMap<String, Mailbox>,
    tokens: HashMap<String, Instant>,
    expires_in: u64,
    requests: Vec<Recorded>,
    faults: Faults,
    next: u64,
}

#[derive(Clone)]
pub struct FakeGraph {
    pub base_url: String,
    pub login_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        let inner = Arc::new(Mutex::new(Inner {
            expires_in: 3599,
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let addr = serve_on_loopback(app).await;
        FakeGraph {
            base_url: format!("http://{addr}/v1.0"),
            login_url: format!("http://{addr}/login"),
            inner,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|i| i.requests.clone())
    }
    /// Requests to Graph (not to the token endpoint).
    pub fn graph_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/users/"))
            .collect()
    }
    pub fn token_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
            .collect()
    }
    pub fn events(&self, mailbox: &str) -> Vec<(String, StoredEvent)> {
        self.with(|i| {
            i.mailboxes
                .get(mailbox)
                .map(|m| {
                    m.events
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }
    pub fn calendars(&self, mailbox: &str) -> Vec<(String, String)> {
        self.with(|i| {
            i.mailboxes
                .get(mailbox)
                .map(|m| m.calendars.clone())
                .unwrap_or_default()
        })
    }
    /// The most requests for `mailbox` that were in flight at once (counting one that the
    /// concurrency limit refused).
    pub fn max_in_flight(&self, mailbox: &str) -> usize {
        self.with(|i| i.mailboxes.get(mailbox).map_or(0, |m| m.in_flight.most()))
    }
    /// Behave as `profile` says from now on (and set the latency it names).
    pub fn set_profile(&self, profile: FaultProfile) {
        self.with(|i| {
            i.faults.random = profile.load.seed;
            i.faults.delay = profile.load.latency;
            i.faults.profile = profile;
        })
    }
    /// Every creation of this appointment fails: the connection drops before the event
    /// is stored.
    pub fn fail_creations_of(&self, appointment_id: i64) {
        self.with(|i| i.faults.failing_creations.insert(appointment_id));
    }
    /// The next creation of this appointment stores the event, then drops the connection.
    pub fn lose_answer_to_creation_of(&self, appointment_id: i64) {
        self.with(|i| i.faults.losing_answer.insert(appointment_id));
    }
    /// Drop the connection of the next `n` Graph requests without handling them.
    pub fn drop_next(&self, n: u32) {
        self.with(|i| i.faults.drop_next = n)
    }
    /// Answer the next `n` Graph requests with 429 and this `Retry-After`.
    pub fn throttle(&self, n: u32, retry_after: &str) {
        self.with(|i| {
            i.faults.throttle = n;
            i.faults.retry_after = retry_after.to_string();
        })
    }
    /// Create the next event, then hold the answer back for `d`.
    pub fn hold_next_create(&self, d: Duration) {
        self.with(|i| i.faults.hold_next_create = Some(d))
    }
    /// Every token issued so far expires now.
    pub fn expire_tokens(&self) {
        self.with(|i| {
            let now = Instant::now();
            for t in i.tokens.values_mut() {
                *t = now;
            }
        })
    }
    pub fn set_expires_in(&self, secs: u64) {
        self.with(|i| i.expires_in = secs)
    }
    pub fn forbid(&self, mailbox: &str) {
        self.with(|i| i.faults.forbidden.push(mailbox.to_string()))
    }
    pub fn delay_each(&self, d: Duration) {
        self.with(|i| i.faults.delay = Some(d))
    }
    /// Remove an event for good (Shift+Del in Outlook).
    pub fn delete_event(&self, mailbox: &str, id: &str) {
        self.with(|i| {
            if let Some(m) = i.mailboxes.get_mut(mailbox) {
                m.events.remove(id);
            }
        })
    }
    /// A person deletes an event in Outlook: it moves to Deleted Items, keeping its
    /// ImmutableId.
    pub fn move_to_deleted_items(&self, mailbox: &str, id: &str) {
        self.with(|i| {
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            m.events.get_mut(id).expect("event").calendar = DELETED_ITEMS.into();
        })
    }
    /// A person changes a field of an event in Outlook (`subject`, `start`, …).
    pub fn edit_in_outlook(&self, mailbox: &str, id: &str, field: &str, value: Value) {
        self.with(|i| {
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            m.events.get_mut(id).expect("event").json[field] = value;
        })
    }
    /// A person copies an event in Outlook (into the same calendar, properties and all);
    /// the copy's id.
    pub fn copy_in_outlook(&self, mailbox: &str, id: &str) -> String {
        self.with(|i| {
            i.next += 1;
            let copy = format!("AAMkImm-{}=", i.next);
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            let e = m.events.get(id).expect("event").clone();
            m.events.insert(copy.clone(), e);
            copy
        })
    }
    /// Someone else's event (`json` as Graph takes it) in calendar `calendar`; its id.
    pub fn add_in_outlook(&self, mailbox: &str, calendar: &str, json: Value) -> String {
        self.with(|i| {
            i.next += 1;
            let id = format!("AAMkImm-{}=", i.next);
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            let e = StoredEvent {
                calendar: calendar.to_string(),
                json,
            };
            m.events.insert(id.clone(), e);
            id
        })
    }
    /// A person deletes a calendar in Outlook: it goes, its events to Deleted Items.
    pub fn delete_calendar_in_outlook(&self, mailbox: &str, calendar: &str) {
        self.with(|i| {
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            m.calendars.retain(|(id, _)| id != calendar);
            for e in m.events.values_mut().filter(|e| e.calendar == calendar) {
                e.calendar = DELETED_ITEMS.into();
            }
        })
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The quoted literals of an OData filter, in order.
fn literals(filter: &str) -> Vec<String> {
    filter
        .split('\'')
        .enumerate()
        .filter(|(n, _)| n % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// Content that makes two creations "the same event" for `transactionId`.
fn content(v: &Value) -> Value {
    json!([
        v["subject"],
        v["body"],
        v["location"],
        v["start"],
        v["end"],
        v["isAllDay"]
    ])
}

/// An event's start or end (`dateTimeTimeZone`, a Windows zone name) as a UTC instant.
fn instant(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    let local =
        chrono::NaiveDateTime::parse_from_str(v["dateTime"].as_str()?, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?;
    let zone = zone_of_windows_name(v["timeZone"].as_str().unwrap_or("UTC"))?;
    Some(
        zone.from_local_datetime(&local)
            .earliest()?
            .with_timezone(&chrono::Utc),
    )
}

/// A `dateTimeTimeZone` as a listing returns it: in UTC, all-day dates as they are.
fn listed_time(v: &Value, all_day: bool) -> Value {
    let text = if all_day {
        v["dateTime"]
            .as_str()
            .map(|t| format!("{}T00:00:00.0000000", &t[..t.len().min(10)]))
    } else {
        instant(v).map(|t| t.format("%Y-%m-%dT%H:%M:%S.0000000").to_string())
    };
    json!({ "dateTime": text, "timeZone": "UTC" })
}

/// An event as `calendarView` returns it: the `$select`ed fields (all without one), times
/// in UTC, and the extended properties `$expand` names.
fn listed(id: &str, e: &StoredEvent, select: Option<&str>, expand: &[String]) -> Value {
    let all_day = e.json["isAllDay"].as_bool().unwrap_or(false);
    let mut out = serde_json::Map::new();
    out.insert("id".into(), json!(id));
    let fields = [
        "iCalUId", "subject", "body", "location", "start", "end", "isAllDay",
    ];
    for field in fields {
        if select.is_some_and(|s| !s.split(',').any(|f| f.trim() == field)) {
            continue;
        }
        let value = match field {
            "iCalUId" => json!(format!("040000008200E00074C5B7101A82E008{id}")),
            "start" | "end" => listed_time(&e.json[field], all_day),
            _ => e.json[field].clone(),
        };
        if !value.is_null() {
            out.insert(field.into(), value);
        }
    }
    let properties: Vec<Value> = e.json["singleValueExtendedProperties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            expand
                .iter()
                .any(|id| p["id"].as_str().is_some_and(|p| p.eq_ignore_ascii_case(id)))
        })
        .cloned()
        .collect();
    if !expand.is_empty() && !properties.is_empty() {
        out.insert("singleValueExtendedProperties".into(), json!(properties));
    }
    Value::Object(out)
}

/// PATCH of `patch` onto `target`: top-level fields replaced, extended properties merged
/// by id.
fn merge(target: &mut Value, patch: &Value) {
    let (Value::Object(target), Value::Object(patch)) = (target, patch) else {
        return;
    };
    for (k, v) in patch {
        if k == "singleValueExtendedProperties"
            && let (Some(Value::Array(have)), Value::Array(new)) = (target.get_mut(k), v)
        {
            for p in new {
                match have.iter_mut().find(|h| {
                    h["id"].as_str().map(str::to_ascii_lowercase)
                        == p["id"].as_str().map(str::to_ascii_lowercase)
                }) {
                    Some(h) => *h = p.clone(),
                    None => have.push(p.clone()),
                }
            }
            continue;
        }
        target.insert(k.clone(), v.clone());
    }
}

fn public(id: &str, e: &StoredEvent, etag: u64) -> Value {
    let mut v = e.json.clone();
    if let Value::Object(map) = &mut v {
        map.remove("singleValueExtendedProperties");
        map.insert("id".into(), json!(id));
        map.insert("@odata.etag".into(), json!(format!("W/\"{etag}\"")));
    }
    v
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_path = uri.path().to_string();
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect();
    let is_token = raw_path.ends_with("/oauth2/v2.0/token");
    let segments: Vec<String> = raw_path
        .trim_start_matches("/v1.0")
        .split('/')
        .map(decode)
        .collect();
    let path = segments.join("/");
    let json_body: Value = if is_token {
        let form: serde_json::Map<String, Value> = String::from_utf8_lossy(&body)
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (decode(k), json!(decode(&v.replace('+', " ")))))
            .collect();
        Value::Object(form)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let mailbox = segments.get(2).cloned().unwrap_or_default();

    // In-flight accounting per mailbox (a request over the limit is refused at once),
    // and the optional delay.
    let (delay, over_limit) = {
        let mut i = inner.lock().unwrap();
        let limit = i.faults.profile.load.concurrency_limit;
        let over_limit = !is_token && {
            let m = i.mailboxes.entry(mailbox.clone()).or_default();
            m.in_flight.enter(limit)
        };
        (i.faults.delay, over_limit)
    };
    if let (Some(d), false, false) = (delay, is_token, over_limit) {
        tokio::time::sleep(d).await;
    }
    let (response, after) = {
        let mut i = inner.lock().unwrap();
        let (response, after) = if is_token {
            (token(&mut i, &json_body), After::Answer)
        } else if over_limit {
            (throttled(&i.faults.profile.retry_after), After::Answer)
        } else if i.faults.drop_next > 0 {
            i.faults.drop_next -= 1;
            (StatusCode::OK.into_response(), After::Drop)
        } else {
            graph(&mut i, &method, &segments, &query, &headers, &json_body)
        };
        if !is_token && let Some(m) = i.mailboxes.get_mut(&mailbox) {
            m.in_flight.leave();
        }
        i.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            headers: headers.clone(),
            body: json_body.clone(),
            at: Instant::now(),
            status: response.status().as_u16(),
            dropped: matches!(after, After::Drop),
        });
        (response, after)
    };
    match after {
        After::Answer => response,
        After::Hold(d) => {
            tokio::time::sleep(d).await;
            response
        }
        After::Drop => dropped_connection(),
    }
}

/// An ISO 8601 instant of a query (`2026-12-03T23:00:00Z`, offsets and fractions allowed;
/// without an offset taken as UTC).
fn parse_utc(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

fn mailbox_of(seg: &[String]) -> String {
    seg.get(2).cloned().unwrap_or_default()
}

/// Percent-encoding of a link's segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@$".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// 429 `ApplicationThrottled` with this `Retry-After`.
fn throttled(retry_after: &str) -> Response {
    let mut r = graph_error(
        StatusCode::TOO_MANY_REQUESTS,
        "ApplicationThrottled",
        "Application is over its MailboxConcurrency limit.",
    );
    r.headers_mut()
        .insert("retry-after", retry_after.parse().unwrap());
    r
}

/// The appointment id a creation carries in its extended property.
fn appointment_of(body: &Value) -> Option<i64> {
    body["singleValueExtendedProperties"][0]["value"]
        .as_str()?
        .parse()
        .ok()
}

fn token(i: &mut Inner, form: &Value) -> Response {
    let ok = form["grant_type"] == "client_credentials"
        && form["client_id"] == CLIENT_ID
        && form["client_secret"] == SECRET
        && form["scope"] == "https://graph.microsoft.com/.default";
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 0",
            })),
        )
            .into_response();
    }
    i.next += 1;
    let token = format!("eyJ0eXAi.fake-token-{}", i.next);
    i.tokens.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(i.expires_in),
    );
    axum::Json(json!({"token_type": "Bearer", "expires_in": i.expires_in, "access_token": token}))
        .into_response()
}

fn graph(
    i: &mut Inner,
    method: &Method,
    seg: &[String],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Value,
) -> (Response, After) {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match i.tokens.get(bearer) {
        Some(exp) if *exp > Instant::now() => {}
        _ => {
            return (
                graph_error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    "Access token has expired or is not yet valid.",
                ),
                After::Answer,
            );
        }
    }
    // seg: ["", "users", mailbox, ...]
    let mailbox = seg.get(2).cloned().unwrap_or_default();
    let received = {
        let m = i.mailboxes.entry(mailbox.clone()).or_default();
        m.received += 1;
        m.received
    };
    if i.faults.throttle > 0 {
        i.faults.throttle -= 1;
        return (throttled(&i.faults.retry_after), After::Answer);
    }
    if let Some(every) = i.faults.profile.throttle_every
        && received % every == 0
    {
        return (throttled(&i.faults.profile.retry_after), After::Answer);
    }
    if i.faults.forbidden.contains(&mailbox) {
        return (
            graph_error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ),
            After::Answer,
        );
    }
    i.next += 1;
    let n = i.next;
    let creation = matches!(
        (method, seg.get(3).map(String::as_str), seg.len()),
        (&Method::POST, Some("calendars"), 6)
    );
    let appointment = appointment_of(body);
    if creation && appointment.is_some_and(|a| i.faults.failing_creations.contains(&a)) {
        return (StatusCode::OK.into_response(), After::Drop);
    }
    let mut after = match i.faults.hold_next_create.take_if(|_| creation) {
        Some(d) => After::Hold(d),
        None => After::Answer,
    };
    if creation {
        let chosen = chosen(
            &mut i.faults.random,
            i.faults.profile.load.lost_creations_percent,
        );
        let asked = appointment.is_some_and(|a| i.faults.losing_answer.remove(&a));
        if chosen || asked {
            after = After::Drop;
        }
    }
    let m = i.mailboxes.entry(mailbox).or_default();
    let rest: Vec<&str> = seg[3..].iter().map(String::as_str).collect();
    let not_found = || {
        graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    };
    let response = match (method, rest.as_slice()) {
        (&Method::GET, ["calendars"]) => {
            let wanted = literals(query.get("$filter").map_or("", String::as_str));
            let value: Vec<Value> = m
                .calendars
                .iter()
                .filter(|(_, name)| wanted.first().is_none_or(|w| w == name))
                .map(|(id, name)| json!({"id": id, "name": name}))
                .collect();
            axum::Json(json!({ "value": value })).into_response()
        }
        (&Method::POST, ["calendars"]) => {
            let name = body["name"].as_str().unwrap_or_default().to_string();
            if m.calendars.iter().any(|(_, n)| *n == name) {
                graph_error(
                    StatusCode::CONFLICT,
                    "ErrorFolderExists",
                    "A folder with the specified name already exists.",
                )
            } else {
                let id = format!("AAMkCal-{n}=");
                m.calendars.push((id.clone(), name.clone()));
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"id": id, "name": name})),
                )
                    .into_response()
            }
        }
        (_, ["calendars", cal, "events"]) if !m.calendars.iter().any(|(id, _)| id == cal) => {
            not_found()
        }
        (&Method::GET, ["calendars", cal, "events"]) => {
            let filter = query.get("$filter").cloned().unwrap_or_default();
            let lit = literals(&filter);
            if !filter.starts_with("singleValueExtendedProperties/Any(ep: ep/id eq ")
                || lit.len() != 2
            {
                graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Invalid filter clause",
                )
            } else {
                let value: Vec<Value> = m
                    .events
                    .iter()
                    .filter(|(_, e)| e.calendar == *cal)
                    .filter(|(_, e)| {
                        e.json["singleValueExtendedProperties"]
                            .as_array()
                            .is_some_and(|props| {
                                props
                                    .iter()
                                    .any(|p| p["id"] == lit[0] && p["value"] == lit[1])
                            })
                    })
                    .map(|(id, e)| public(id, e, n))
                    .collect();
                axum::Json(json!({ "value": value })).into_response()
            }
        }
        (&Method::POST, ["calendars", cal, "events"]) => {
            let tx = body["transactionId"].as_str().map(str::to_string);
            let existing = tx
                .as_ref()
                .and_then(|t| m.transactions.get(t))
                .and_then(|id| m.events.get(id).map(|e| (id.clone(), e.clone())));
            match existing {
                Some((id, e)) if content(&e.json) == content(body) => {
                    (StatusCode::CREATED, axum::Json(public(&id, &e, n))).into_response()
                }
                Some(_) => graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorDuplicateTransactionId",
                    "Your request can't be completed. A different item with the same transaction ID already exists.",
                ),
                None if body.get("attendees").is_some_and(|a| a != &json!([])) => graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidRequest",
                    "attendees are not expected",
                ),
                None => {
                    let id = format!("AAMkImm-{n}=");
                    let e = StoredEvent {
                        calendar: cal.to_string(),
                        json: body.clone(),
                    };
                    if let Some(t) = tx {
                        m.transactions.insert(t, id.clone());
                    }
                    let out = public(&id, &e, n);
                    m.events.insert(id, e);
                    (StatusCode::CREATED, axum::Json(out)).into_response()
                }
            }
        }
        (&Method::GET, ["calendars", cal, "calendarView"]) => {
            let window = (
                query.get("startDateTime").and_then(|t| parse_utc(t)),
                query.get("endDateTime").and_then(|t| parse_utc(t)),
            );
            match window {
                (Some(from), Some(to)) => {
                    let top: usize = query.get("$top").and_then(|t| t.parse().ok()).unwrap_or(10);
                    let skip: usize = query.get("$skip").and_then(|t| t.parse().ok()).unwrap_or(0);
                    let expand = literals(query.get("$expand").map_or("", String::as_str));
                    let mut inside: Vec<(chrono::DateTime<chrono::Utc>, &String, &StoredEvent)> = m
                        .events
                        .iter()
                        .filter(|(_, e)| e.calendar == *cal)
                        .filter_map(|(id, e)| {
                            let all_day = e.json["isAllDay"].as_bool().unwrap_or(false);
                            let start = instant(&e.json["start"])?;
                            let end = instant(&e.json["end"])?;
                            // All-day events are floating: their UTC dates.
                            let (start, end) = if all_day {
                                let utc = |v: &Value| {
                                    parse_utc(&format!(
                                        "{}T00:00:00Z",
                                        &v["dateTime"].as_str()?[..10]
                                    ))
                                };
                                (utc(&e.json["start"])?, utc(&e.json["end"])?)
                            } else {
                                (start, end)
                            };
                            let overlaps =
                                start < to && (end > from || (end == start && start >= from));
                            overlaps.then_some((start, id, e))
                        })
                        .collect();
                    inside.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)));
                    let page: Vec<Value> = inside
                        .iter()
                        .skip(skip)
                        .take(top)
                        .map(|(_, id, e)| {
                            listed(id, e, query.get("$select").map(String::as_str), &expand)
                        })
                        .collect();
                    let mut answer = json!({ "value": page });
                    if skip + top < inside.len() {
                        let host = headers
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("localhost");
                        let mut next: Vec<String> = query
                            .iter()
                            .filter(|(k, _)| *k != "$skip")
                            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                            .collect();
                        next.sort();
                        next.push(format!("$skip={}", skip + top));
                        answer["@odata.nextLink"] = json!(format!(
                            "http://{host}/v1.0/users/{}/calendars/{}/calendarView?{}",
                            encode(&mailbox_of(seg)),
                            encode(cal),
                            next.join("&")
                        ));
                    }
                    axum::Json(answer).into_response()
                }
                _ => graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidParameter",
                    "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
                ),
            }
        }
        (&Method::PATCH, ["events", id]) => match m.events.get_mut(*id) {
            Some(e) => {
                merge(&mut e.json, body);
                axum::Json(public(id, e, n)).into_response()
            }
            None => not_found(),
        },
        (&Method::DELETE, ["events", id]) => match m.events.remove(*id) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => not_found(),
        },
        _ => graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Unsupported request"),
    };
    // An answer is lost only after the event was stored.
    if matches!(after, After::Drop) && response.status() != StatusCode::CREATED {
        after = After::Answer;
    }
    (response, after)
}
