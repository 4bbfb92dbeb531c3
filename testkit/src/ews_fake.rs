//! An in-process fake of Exchange Web Services (Exchange Server 2016/2019/SE on premises)
//! as far as the EWS sink meets it, following the documented contract and recording every
//! request.
//!
//! Contract followed: SOAP 1.1 on `POST /EWS/Exchange.asmx`; Basic authentication of the
//! service account (401 otherwise); `RequestServerVersion` required
//! (`ErrorInvalidServerVersion`); `ExchangeImpersonation` by primary SMTP address, refused
//! with `ErrorImpersonateUserDenied` where the role is missing and
//! `ErrorNonExistentMailbox` for an unknown address (both as SOAP faults, HTTP 500);
//! **the schema's element order** of every element the sink writes (`ErrorSchemaValidation`
//! fault otherwise); FindFolder/CreateFolder (`ErrorFolderExists`) under the Calendar;
//! CreateItem (`SendMeetingInvitations` required), UpdateItem (`ConflictResolution`:
//! a stale or missing ChangeKey is `ErrorIrresolvableConflict` /
//! `ErrorChangeKeyRequiredForWriteOperations` unless `AlwaysOverwrite`), DeleteItem
//! (`ErrorItemNotFound`), FindItem with an `IndexedPageItemView` and a restriction on an
//! extended property (`IsEqualTo`, or `Or` of them; `ErrorInvalidRestriction` with a
//! `CalendarView`); FindItem with a `CalendarView` (items overlapping the window, in order
//! of start, at most `MaxEntriesReturned` with `IncludesLastItemInRange="false"` when more
//! are there: no paging); GetItem of ids (subject, and what `AdditionalProperties` asks:
//! body, times, all-day flag, location, livesync's properties); every write gives a new
//! ChangeKey; GetFolder and GetServerTimeZones. An item deleted in Outlook moves to Deleted
//! Items under a new ItemId (EWS ids change with the folder). Changes "in Outlook": move
//! to Deleted Items, edit, copy, add someone else's item, delete the folder. exchangelib, an EWS client written by
//! others, talks to it without a refusal (`ews_exchangelib`).
//!
//! Faults on demand: `ErrorServerBusy` with `BackOffMilliseconds` as a SOAP fault or
//! inside a response message, an answer dropped after CreateItem stored the item, a
//! creation that fails before it stores anything, dropped connections, latency, and an
//! edit or deletion "in Outlook". [`FaultProfile`] adds them at rates: busy on every Nth
//! request of a mailbox (alternating the two shapes), a share of creations whose answer is
//! lost (seeded, repeatable), latency, and `EWSMaxConcurrency` per mailbox
//! (`ErrorExceededConnectionCount` beyond it; the most seen is recorded).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use livesync_worker::sink::ews::item::{HASH_PROPERTY_NAME, PROPERTY_NAME, PROPERTY_SET_ID};
use quick_xml::escape::escape;
use roxmltree::Node;
use tokio::time::Instant;

pub use crate::fake_service::Load;
use crate::fake_service::{InFlight, chosen, dropped_connection, serve_on_loopback};

pub const USER: &str = "KANZLEI\\svc-livesync";
pub const PASSWORD: &str = "Dienst~Kennwort_0815";
pub const PATH: &str = "/EWS/Exchange.asmx";
/// The `folder` of an item in the mailbox's Deleted Items.
pub const DELETED_ITEMS: &str = "deleteditems";

const SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const TYPES: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
const MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
const ERRORS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The operation (`CreateItem`, …), or "" when the body was not read.
    pub operation: String,
    /// The impersonated mailbox.
    pub mailbox: Option<String>,
    pub headers: HeaderMap,
    pub body: String,
    pub at: Instant,
    pub status: u16,
    /// The EWS code answered (of the fault, or of the first response message).
    pub code: String,
    /// The connection was dropped instead of sending this answer.
    pub dropped: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The request body's document (parsed again for each look).
    pub fn with_doc<T>(&self, f: impl FnOnce(Node<'_, '_>) -> T) -> T {
        let doc = roxmltree::Document::parse(&self.body).expect("the request is XML");
        f(doc.root_element())
    }
    /// Text of the first element named `name` (local name).
    pub fn text(&self, name: &str) -> Option<String> {
        self.with_doc(|root| {
            root.descendants()
                .find(|n| n.tag_name().name() == name)
                .map(|n| n.text().unwrap_or_default().to_string())
        })
    }
    /// Attribute `attr` of the first element named `name`.
    pub fn attr(&self, name: &str, attr: &str) -> Option<String> {
        self.with_doc(|root| {
            root.descendants()
                .find(|n| n.tag_name().name() == name)
                .and_then(|n| n.attribute(attr).map(str::to_string))
        })
    }
    /// The local names of the children of the first element named `name`.
    pub fn children(&self, name: &str) -> Vec<String> {
        self.with_doc(|root| {
            root.descendants()
                .find(|n| n.tag_name().name() == name)
                .map(|n| {
                    n.children()
                        .filter(|c| c.is_element())
                        .map(|c| c.tag_name().name().to_string())
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

/// A calendar item as stored.
#[derive(Debug, Clone)]
pub struct StoredItem {
    pub id: String,
    pub change_key: String,
    pub folder: String,
    /// Field name (`Subject`, `Start`, …) → text, or the zone's `Id` for the time zones.
    pub fields: BTreeMap<String, String>,
    /// livesync's property.
    pub uid: Option<String>,
    /// livesync's stamp property.
    pub stamp: Option<String>,
}

impl StoredItem {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct MailboxState {
    /// (FolderId, DisplayName) under the Calendar.
    folders: Vec<(String, String)>,
    items: BTreeMap<String, (StoredItem, u64)>,
    in_flight: InFlight,
    received: u64,
}

/// The two documented shapes of `ErrorServerBusy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// A SOAP fault (HTTP 500) with `BackOffMilliseconds` in its detail's `MessageXml`.
    Fault,
    /// A response message (HTTP 200, `ResponseClass="Error"`) with it in `MessageXml`.
    Message,
}

/// EWS under load, at rates.
#[derive(Debug, Clone, Default)]
pub struct FaultProfile {
    /// `ErrorServerBusy` on every Nth request of a mailbox, the two shapes in turn.
    pub busy_every: Option<u64>,
    pub back_off_ms: u64,
    /// Lost answers, latency, and `EWSMaxConcurrency` per mailbox: one more request at once
    /// is answered `ErrorExceededConnectionCount`.
    pub load: Load,
}

impl FaultProfile {
    /// Busy on every 7th request of a mailbox with a back-off of 500 ms, 15 % of creations
    /// losing their answer, 20 ms latency, Exchange's default `EWSMaxConcurrency` of 27.
    pub fn documented(seed: u64) -> FaultProfile {
        FaultProfile {
            busy_every: Some(7),
            back_off_ms: 500,
            load: Load::documented(seed, 27),
        }
    }
}

#[derive(Default)]
struct Faults {
    busy: u32,
    busy_back_off_ms: u64,
    busy_shape: Option<Busy>,
    profile: FaultProfile,
    random: u64,
    losing_answer: HashSet<String>,
    failing_creations: HashSet<String>,
    drop_next: u32,
    delay: Option<Duration>,
    /// Answer the next stale ChangeKey with a conflict whatever the ConflictResolution.
    conflict_once: bool,
}

#[derive(Default)]
struct Inner {
    mailboxes: HashMap<String, MailboxState>,
    missing: HashSet<String>,
    denied: HashSet<String>,
    requests: Vec<Recorded>,
    faults: Faults,
    next: u64,
    in_flight: InFlight,
}

#[derive(Clone)]
pub struct FakeEws {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeEws {
    pub async fn start() -> FakeEws {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let addr = serve_on_loopback(app).await;
        FakeEws {
            url: format!("http://{addr}{PATH}"),
            inner,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|i| i.requests.clone())
    }
    /// Requests of one operation, in order.
    pub fn requests_of(&self, operation: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }
    /// The items of `mailbox` (in any folder).
    pub fn items(&self, mailbox: &str) -> Vec<StoredItem> {
        self.with(|i| {
            i.mailboxes
                .get(mailbox)
                .map(|m| m.items.values().map(|(item, _)| item.clone()).collect())
                .unwrap_or_default()
        })
    }
    pub fn folders(&self, mailbox: &str) -> Vec<(String, String)> {
        self.with(|i| {
            i.mailboxes
                .get(mailbox)
                .map(|m| m.folders.clone())
                .unwrap_or_default()
        })
    }
    pub fn max_in_flight(&self, mailbox: &str) -> usize {
        self.with(|i| i.mailboxes.get(mailbox).map_or(0, |m| m.in_flight.most()))
    }
    /// The most requests in flight at once, all mailboxes together.
    pub fn max_in_flight_total(&self) -> usize {
        self.with(|i| i.in_flight.most())
    }
    pub fn set_profile(&self, profile: FaultProfile) {
        self.with(|i| {
            i.faults.random = profile.load.seed;
            i.faults.delay = profile.load.latency;
            i.faults.profile = profile;
        })
    }
    /// Answer the next `n` requests for a mailbox with `ErrorServerBusy` in `shape`.
    pub fn busy(&self, n: u32, back_off_ms: u64, shape: Busy) {
        self.with(|i| {
            i.faults.busy = n;
            i.faults.busy_back_off_ms = back_off_ms;
            i.faults.busy_shape = Some(shape);
        })
    }
    /// The next creation of this UID stores the item, then drops the connection.
    pub fn lose_answer_to_creation_of(&self, uid: &str) {
        self.with(|i| i.faults.losing_answer.insert(uid.to_string()));
    }
    /// Every creation of this UID drops the connection before storing anything.
    pub fn fail_creations_of(&self, uid: &str) {
        self.with(|i| i.faults.failing_creations.insert(uid.to_string()));
    }
    /// Drop the connection of the next `n` requests without handling them.
    pub fn drop_next(&self, n: u32) {
        self.with(|i| i.faults.drop_next = n)
    }
    pub fn delay_each(&self, d: Duration) {
        self.with(|i| i.faults.delay = Some(d))
    }
    /// The next UpdateItem with a stale ChangeKey gets `ErrorIrresolvableConflict` even
    /// with `AlwaysOverwrite` (as a server may for properties it cannot merge).
    pub fn conflict_once(&self) {
        self.with(|i| i.faults.conflict_once = true)
    }
    /// The directory has no such mailbox.
    pub fn remove_mailbox(&self, address: &str) {
        self.with(|i| i.missing.insert(address.to_ascii_lowercase()));
    }
    /// The service account's ApplicationImpersonation scope leaves this mailbox out.
    pub fn deny_impersonation(&self, address: &str) {
        self.with(|i| i.denied.insert(address.to_ascii_lowercase()));
    }
    /// A person changes a field in Outlook (a new ChangeKey).
    pub fn edit_in_outlook(&self, mailbox: &str, id: &str, field: &str, value: &str) {
        self.with(|i| {
            i.next += 1;
            let n = i.next;
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            let (item, version) = m.items.get_mut(id).expect("item");
            item.fields.insert(field.into(), value.into());
            *version += 1;
            item.change_key = change_key(id, *version, n);
        })
    }
    /// A person deletes a folder (with its items) in Outlook.
    pub fn delete_folder_in_outlook(&self, mailbox: &str, folder: &str) {
        self.with(|i| {
            if let Some(m) = i.mailboxes.get_mut(mailbox) {
                m.folders.retain(|(id, _)| id != folder);
                m.items.retain(|_, (item, _)| item.folder != folder);
            }
        })
    }
    /// A person deletes an item for good in Outlook (Shift+Del).
    pub fn delete_in_outlook(&self, mailbox: &str, id: &str) {
        self.with(|i| {
            if let Some(m) = i.mailboxes.get_mut(mailbox) {
                m.items.remove(id);
            }
        })
    }
    /// A person deletes an item in Outlook: it moves to Deleted Items, under a new ItemId
    /// (returned).
    pub fn move_to_deleted_items(&self, mailbox: &str, id: &str) -> String {
        self.with(|i| {
            i.next += 1;
            let moved = format!("AAMkItem-{}=", i.next);
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            let (mut item, version) = m.items.remove(id).expect("item");
            item.id = moved.clone();
            item.folder = DELETED_ITEMS.into();
            m.items.insert(moved.clone(), (item, version));
            moved
        })
    }
    /// A person copies an item in Outlook (into the same folder, properties and all); the
    /// copy's ItemId.
    pub fn copy_in_outlook(&self, mailbox: &str, id: &str) -> String {
        self.with(|i| {
            i.next += 1;
            let n = i.next;
            let copy = format!("AAMkItem-{n}=");
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            let (mut item, _) = m.items.get(id).expect("item").clone();
            item.id = copy.clone();
            item.change_key = change_key(&copy, 1, n);
            m.items.insert(copy.clone(), (item, 1));
            copy
        })
    }
    /// Someone else's item in `folder` with these fields (`Subject`, `Start`, `End`, …,
    /// as [`StoredItem::fields`]); its ItemId.
    pub fn add_in_outlook(&self, mailbox: &str, folder: &str, fields: &[(&str, &str)]) -> String {
        self.with(|i| {
            i.next += 1;
            let n = i.next;
            let id = format!("AAMkItem-{n}=");
            let item = StoredItem {
                id: id.clone(),
                change_key: change_key(&id, 1, n),
                folder: folder.into(),
                fields: fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                uid: None,
                stamp: None,
            };
            let m = i.mailboxes.get_mut(mailbox).expect("mailbox");
            m.items.insert(id.clone(), (item, 1));
            id
        })
    }
}

fn change_key(id: &str, version: u64, n: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("CK:{id}:{version}:{n}"))
}

/// What the fake does after handling a request.
enum After {
    Answer,
    Drop,
}

/// A failure of the whole request.
struct Fault {
    code: String,
    text: String,
    back_off_ms: Option<u64>,
}

fn fault(code: &str, text: &str) -> Fault {
    Fault {
        code: code.into(),
        text: text.into(),
        back_off_ms: None,
    }
}

fn fault_response(f: &Fault) -> Response {
    let message_xml = f.back_off_ms.map_or(String::new(), |ms| {
        format!(
            r#"<t:MessageXml xmlns:t="{TYPES}"><t:Value Name="BackOffMilliseconds">{ms}</t:Value></t:MessageXml>"#
        )
    });
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault><faultcode xmlns:a="{TYPES}">a:{code}</faultcode><faultstring xml:lang="en-US">{text}</faultstring><detail><e:ResponseCode xmlns:e="{ERRORS}">{code}</e:ResponseCode><e:Message xmlns:e="{ERRORS}">{text}</e:Message>{message_xml}</detail></s:Fault></s:Body></s:Envelope>"#,
        code = f.code,
        text = escape(&f.text),
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("content-type", "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// One response message.
struct Message {
    code: String,
    text: String,
    back_off_ms: Option<u64>,
    content: String,
}

fn ok(content: String) -> Message {
    Message {
        code: "NoError".into(),
        text: String::new(),
        back_off_ms: None,
        content,
    }
}

fn error(code: &str, text: &str) -> Message {
    Message {
        code: code.into(),
        text: text.into(),
        back_off_ms: None,
        content: String::new(),
    }
}

fn messages_response(operation: &str, messages: &[Message]) -> Response {
    let mut out = String::new();
    for m in messages {
        if m.code == "NoError" {
            out.push_str(&format!(
                r#"<m:{operation}ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>{}</m:{operation}ResponseMessage>"#,
                m.content
            ));
        } else {
            let xml = m.back_off_ms.map_or(String::new(), |ms| {
                format!(r#"<m:MessageXml><t:Value Name="BackOffMilliseconds">{ms}</t:Value></m:MessageXml>"#)
            });
            out.push_str(&format!(
                r#"<m:{operation}ResponseMessage ResponseClass="Error"><m:MessageText>{}</m:MessageText><m:ResponseCode>{}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{xml}{}</m:{operation}ResponseMessage>"#,
                escape(&m.text),
                m.code,
                m.content
            ));
        }
    }
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}"><s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="2" MajorBuildNumber="1544" MinorBuildNumber="4" Version="V2017_07_11" xmlns:h="{TYPES}"/></s:Header><s:Body><m:{operation}Response xmlns:m="{MESSAGES}" xmlns:t="{TYPES}"><m:ResponseMessages>{out}</m:ResponseMessages></m:{operation}Response></s:Body></s:Envelope>"#
    );
    (
        StatusCode::OK,
        [("content-type", "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The order of children the schema prescribes for the elements the sink writes: each
/// rank is a set of names that may stand there; children must not go back in rank, and
/// unknown children are refused.
fn schema_order(parent: &str) -> Option<&'static [&'static [&'static str]]> {
    Some(match parent {
        "Envelope" => &[&["Header"], &["Body"]],
        "FindItem" => &[
            &["ItemShape"],
            &[
                "IndexedPageItemView",
                "FractionalPageItemView",
                "CalendarView",
                "ContactsView",
            ],
            &["GroupBy", "DistinguishedGroupBy"],
            &["Restriction"],
            &["SortOrder"],
            &["ParentFolderIds"],
            &["QueryString"],
        ],
        "FindFolder" => &[
            &["FolderShape"],
            &["IndexedPageFolderView", "FractionalPageFolderView"],
            &["Restriction"],
            &["ParentFolderIds"],
        ],
        "ItemShape" | "FolderShape" => &[
            &["BaseShape"],
            &["IncludeMimeContent"],
            &["BodyType"],
            &["FilterHtmlContent"],
            &["ConvertHtmlCodePageToUTF8"],
            &["AdditionalProperties"],
        ],
        "CreateItem" => &[&["SavedItemFolderId"], &["Items"]],
        "UpdateItem" => &[&["SavedItemFolderId"], &["ItemChanges"]],
        "ItemChange" => &[
            &["ItemId", "OccurrenceItemId", "RecurringMasterItemId"],
            &["Updates"],
        ],
        "SetItemField" => &[
            &["FieldURI", "IndexedFieldURI", "ExtendedFieldURI"],
            &["Item", "Message", "CalendarItem", "Contact", "Task"],
        ],
        "DeleteItemField" => &[&["FieldURI", "IndexedFieldURI", "ExtendedFieldURI"]],
        "DeleteItem" => &[&["ItemIds"]],
        "CreateFolder" => &[&["ParentFolderId"], &["Folders"]],
        "GetFolder" => &[&["FolderShape"], &["FolderIds"]],
        "CalendarFolder" => &[
            &["FolderId"],
            &["ParentFolderId"],
            &["FolderClass"],
            &["DisplayName"],
        ],
        "ExtendedProperty" => &[&["ExtendedFieldURI"], &["Value", "Values"]],
        "IsEqualTo" => &[
            &["FieldURI", "IndexedFieldURI", "ExtendedFieldURI"],
            &["FieldURIOrConstant"],
        ],
        // ItemType's fields, then CalendarItemType's (types.xsd).
        "CalendarItem" => &[
            &["MimeContent"],
            &["ItemId"],
            &["ParentFolderId"],
            &["ItemClass"],
            &["Subject"],
            &["Sensitivity"],
            &["Body"],
            &["Attachments"],
            &["DateTimeReceived"],
            &["Size"],
            &["Categories"],
            &["Importance"],
            &["InReplyTo"],
            &["IsSubmitted"],
            &["IsDraft"],
            &["IsFromMe"],
            &["IsResend"],
            &["IsUnmodified"],
            &["InternetMessageHeaders"],
            &["DateTimeSent"],
            &["DateTimeCreated"],
            &["ResponseObjects"],
            &["ReminderDueBy"],
            &["ReminderIsSet"],
            &["ReminderMinutesBeforeStart"],
            &["DisplayCc"],
            &["DisplayTo"],
            &["HasAttachments"],
            &["ExtendedProperty"],
            &["Culture"],
            &["EffectiveRights"],
            &["LastModifiedName"],
            &["LastModifiedTime"],
            &["IsAssociated"],
            &["WebClientReadFormQueryString"],
            &["WebClientEditFormQueryString"],
            &["ConversationId"],
            &["UniqueBody"],
            &["UID"],
            &["RecurrenceId"],
            &["DateTimeStamp"],
            &["Start"],
            &["End"],
            &["OriginalStart"],
            &["IsAllDayEvent"],
            &["LegacyFreeBusyStatus"],
            &["Location"],
            &["When"],
            &["IsMeeting"],
            &["IsCancelled"],
            &["IsRecurring"],
            &["MeetingRequestWasSent"],
            &["IsResponseRequested"],
            &["CalendarItemType"],
            &["MyResponseType"],
            &["Organizer"],
            &["RequiredAttendees"],
            &["OptionalAttendees"],
            &["Resources"],
            &["ConflictingMeetingCount"],
            &["AdjacentMeetingCount"],
            &["ConflictingMeetings"],
            &["AdjacentMeetings"],
            &["Duration"],
            &["TimeZone"],
            &["AppointmentReplyTime"],
            &["AppointmentSequenceNumber"],
            &["AppointmentState"],
            &["Recurrence"],
            &["FirstOccurrence"],
            &["LastOccurrence"],
            &["ModifiedOccurrences"],
            &["DeletedOccurrences"],
            &["MeetingTimeZone"],
            &["StartTimeZone"],
            &["EndTimeZone"],
        ],
        _ => return None,
    })
}

/// The first violation of the schema's element order in the document.
fn order_violation(root: Node<'_, '_>) -> Option<String> {
    for node in root.descendants().filter(|n| n.is_element()) {
        let parent = node.tag_name().name();
        let Some(order) = schema_order(parent) else {
            continue;
        };
        let mut rank = 0;
        for child in node.children().filter(|c| c.is_element()) {
            let name = child.tag_name().name();
            match order.iter().position(|r| r.contains(&name)) {
                Some(r) if r >= rank => rank = r,
                Some(_) => {
                    return Some(format!(
                        "The element '{parent}' in namespace '{}' has invalid child element '{name}' in namespace '{}'. (out of order)",
                        node.tag_name().namespace().unwrap_or_default(),
                        child.tag_name().namespace().unwrap_or_default()
                    ));
                }
                None => {
                    return Some(format!(
                        "The element '{parent}' has invalid child element '{name}'."
                    ));
                }
            }
        }
    }
    None
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn is_our_property(uri: Node<'_, '_>) -> bool {
    is_property(uri, PROPERTY_NAME)
}

fn is_our_stamp(uri: Node<'_, '_>) -> bool {
    is_property(uri, HASH_PROPERTY_NAME)
}

fn is_property(uri: Node<'_, '_>, name: &str) -> bool {
    uri.tag_name().name() == "ExtendedFieldURI"
        && uri.attribute("PropertySetId") == Some(PROPERTY_SET_ID)
        && uri.attribute("PropertyName") == Some(name)
        && uri.attribute("PropertyType") == Some("String")
}

/// The fields `AdditionalProperties` of an `ItemShape` asks for (`Body`, `Start`, …), and
/// whether it asks for livesync's UID and stamp.
fn asked(op: Node<'_, '_>) -> (Vec<String>, bool, bool) {
    let Some(additional) = child(op, "ItemShape").and_then(|s| child(s, "AdditionalProperties"))
    else {
        return (Vec::new(), false, false);
    };
    let fields = children(additional, "FieldURI")
        .filter_map(|f| f.attribute("FieldURI"))
        .map(|f| f.split(':').nth(1).unwrap_or(f).to_string())
        .collect();
    (
        fields,
        children(additional, "ExtendedFieldURI").any(is_our_property),
        children(additional, "ExtendedFieldURI").any(is_our_stamp),
    )
}

/// livesync's property `name` with `value`, as an answer carries it.
fn property_xml(name: &str, value: &str) -> String {
    format!(
        r#"<t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="{PROPERTY_SET_ID}" PropertyName="{name}" PropertyType="String"/><t:Value>{}</t:Value></t:ExtendedProperty>"#,
        escape(value)
    )
}

/// An item's `t:CalendarItem` in an answer: its id, `Subject` when `subject`, the
/// `fields` asked (schema order), livesync's properties when asked.
fn item_xml(
    item: &StoredItem,
    subject: bool,
    (fields, uid, stamp): &(Vec<String>, bool, bool),
) -> String {
    let wants = |f: &str| fields.iter().any(|w| w == f);
    let mut out = format!(
        r#"<t:CalendarItem><t:ItemId Id="{}" ChangeKey="{}"/>"#,
        escape(&item.id),
        escape(&item.change_key)
    );
    if subject || wants("Subject") {
        out.push_str(&format!(
            "<t:Subject>{}</t:Subject>",
            escape(item.field("Subject").unwrap_or_default())
        ));
    }
    if wants("Body") {
        out.push_str(&format!(
            r#"<t:Body BodyType="Text">{}</t:Body>"#,
            escape(item.field("Body").unwrap_or_default())
        ));
    }
    if let (Some(v), true) = (&item.uid, uid) {
        out.push_str(&property_xml(PROPERTY_NAME, v));
    }
    if let (Some(v), true) = (&item.stamp, stamp) {
        out.push_str(&property_xml(HASH_PROPERTY_NAME, v));
    }
    for f in ["Start", "End", "IsAllDayEvent", "Location"] {
        if wants(f)
            && let Some(v) = item.field(f)
        {
            out.push_str(&format!("<t:{f}>{}</t:{f}>", escape(v)));
        }
    }
    out.push_str("</t:CalendarItem>");
    out
}

fn instant(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut record = Recorded {
        operation: String::new(),
        mailbox: None,
        headers: headers.clone(),
        body: text.clone(),
        at: Instant::now(),
        status: 0,
        code: String::new(),
        dropped: false,
    };
    let save = |inner: &Arc<Mutex<Inner>>,
                mut record: Recorded,
                response: &Response,
                code: &str,
                dropped: bool| {
        record.status = response.status().as_u16();
        record.code = code.to_string();
        record.dropped = dropped;
        inner.lock().unwrap().requests.push(record);
    };
    if method != Method::POST || uri.path() != PATH {
        let r = StatusCode::NOT_FOUND.into_response();
        save(&inner, record, &r, "", false);
        return r;
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        let r = (
            StatusCode::UNAUTHORIZED,
            [
                ("www-authenticate", "Basic realm=\"mail.kanzlei.at\""),
                ("content-type", "text/html"),
            ],
            "<html><body>401 - Unauthorized: Access is denied due to invalid credentials.</body></html>",
        )
            .into_response();
        save(&inner, record, &r, "", false);
        return r;
    }
    let doc = match roxmltree::Document::parse(&text) {
        Ok(doc) => doc,
        Err(e) => {
            let f = fault(
                "ErrorSchemaValidation",
                &format!("The request failed schema validation: {e}"),
            );
            let r = fault_response(&f);
            save(&inner, record, &r, &f.code, false);
            return r;
        }
    };
    let envelope = doc.root_element();
    let header = child(envelope, "Header");
    let operation_node =
        child(envelope, "Body").and_then(|b| b.children().find(|c| c.is_element()));
    record.operation = operation_node.map_or(String::new(), |n| n.tag_name().name().to_string());
    let mailbox = header
        .and_then(|h| child(h, "ExchangeImpersonation"))
        .and_then(|i| {
            i.descendants()
                .find(|n| n.tag_name().name() == "PrimarySmtpAddress")
        })
        .and_then(|n| n.text())
        .map(|t| t.trim().to_ascii_lowercase());
    record.mailbox = mailbox.clone();

    // In-flight accounting (per mailbox and in total) and the latency.
    let (delay, over_limit, drop_now) = {
        let mut i = inner.lock().unwrap();
        i.in_flight.enter(None);
        let limit = i.faults.profile.load.concurrency_limit;
        let over = match &mailbox {
            Some(address) => {
                let m = i.mailboxes.entry(address.clone()).or_default();
                m.in_flight.enter(limit)
            }
            None => false,
        };
        let drop_now = i.faults.drop_next > 0;
        if drop_now {
            i.faults.drop_next -= 1;
        }
        (i.faults.delay, over, drop_now)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let (response, code, after) = {
        let mut i = inner.lock().unwrap();
        let (response, code, after) = if drop_now {
            (StatusCode::OK.into_response(), String::new(), After::Drop)
        } else if over_limit {
            let f = fault(
                "ErrorExceededConnectionCount",
                "You have exceeded the available concurrent connections for your account.  Try again once your other requests have completed.",
            );
            (fault_response(&f), f.code, After::Answer)
        } else {
            match serve(&mut i, envelope, header, operation_node, mailbox.as_deref()) {
                Ok((operation, messages, after)) => {
                    let code = messages.first().map_or(String::new(), |m| m.code.clone());
                    (messages_response(&operation, &messages), code, after)
                }
                Err(f) => (fault_response(&f), f.code, After::Answer),
            }
        };
        i.in_flight.leave();
        if let Some(m) = mailbox.as_ref().and_then(|a| i.mailboxes.get_mut(a)) {
            m.in_flight.leave();
        }
        (response, code, after)
    };
    let dropped = matches!(after, After::Drop);
    save(&inner, record, &response, &code, dropped);
    match after {
        After::Answer => response,
        After::Drop => dropped_connection(),
    }
}

type Served = (String, Vec<Message>, After);

fn serve(
    i: &mut Inner,
    envelope: Node<'_, '_>,
    header: Option<Node<'_, '_>>,
    operation: Option<Node<'_, '_>>,
    mailbox: Option<&str>,
) -> Result<Served, Fault> {
    if let Some(violation) = order_violation(envelope) {
        return Err(fault(
            "ErrorSchemaValidation",
            &format!("The request failed schema validation: {violation}"),
        ));
    }
    let version = header
        .and_then(|h| child(h, "RequestServerVersion"))
        .and_then(|v| v.attribute("Version"));
    if !matches!(
        version,
        Some(
            "Exchange2010"
                | "Exchange2010_SP1"
                | "Exchange2010_SP2"
                | "Exchange2013"
                | "Exchange2013_SP1"
                | "Exchange2016"
        )
    ) {
        return Err(fault(
            "ErrorInvalidServerVersion",
            "The specified server version is invalid.",
        ));
    }
    let Some(op) = operation else {
        return Err(fault(
            "ErrorSchemaValidation",
            "The request has no operation.",
        ));
    };
    let name = op.tag_name().name().to_string();
    if op.tag_name().namespace() != Some(MESSAGES) {
        return Err(fault(
            "ErrorSchemaValidation",
            "The operation is not in the messages namespace.",
        ));
    }
    if name == "GetServerTimeZones" {
        return Ok((
            name,
            vec![ok("<m:TimeZoneDefinitions/>".into())],
            After::Answer,
        ));
    }
    let Some(address) = mailbox else {
        return Err(fault(
            "ErrorNonExistentMailbox",
            "No mailbox with such guid.",
        ));
    };
    if i.missing.contains(address) {
        return Err(fault(
            "ErrorNonExistentMailbox",
            &format!("The SMTP address has no mailbox associated with it. ({address})"),
        ));
    }
    if i.denied.contains(address) {
        return Err(fault(
            "ErrorImpersonateUserDenied",
            "The account does not have permission to impersonate the requested user.",
        ));
    }
    // Throttling: on demand, and at the profile's rate.
    let received = {
        let m = i.mailboxes.entry(address.to_string()).or_default();
        m.received += 1;
        m.received
    };
    let busy = if i.faults.busy > 0 {
        i.faults.busy -= 1;
        Some((
            i.faults.busy_back_off_ms,
            i.faults.busy_shape.unwrap_or(Busy::Fault),
        ))
    } else {
        i.faults
            .profile
            .busy_every
            .filter(|every| received % every == 0)
            .map(|every| {
                let shape = if (received / every) % 2 == 0 {
                    Busy::Message
                } else {
                    Busy::Fault
                };
                (i.faults.profile.back_off_ms, shape)
            })
    };
    if let Some((ms, shape)) = busy {
        let text = "The server cannot service this request right now. Try again later.";
        return match shape {
            Busy::Fault => Err(Fault {
                code: "ErrorServerBusy".into(),
                text: text.into(),
                back_off_ms: Some(ms),
            }),
            Busy::Message => Ok((
                name,
                vec![Message {
                    code: "ErrorServerBusy".into(),
                    text: text.into(),
                    back_off_ms: Some(ms),
                    content: String::new(),
                }],
                After::Answer,
            )),
        };
    }
    i.next += 1;
    let n = i.next;
    let m = i.mailboxes.entry(address.to_string()).or_default();
    let folder_exists = |m: &MailboxState, id: &str| m.folders.iter().any(|(f, _)| f == id);
    let messages = match name.as_str() {
        "GetFolder" => vec![ok(format!(
            r#"<m:Folders><t:CalendarFolder><t:FolderId Id="calendar-{}" ChangeKey="AgAAAA=="/></t:CalendarFolder></m:Folders>"#,
            escape(address)
        ))],
        "FindFolder" => {
            let parent = op
                .descendants()
                .find(|d| d.tag_name().name() == "DistinguishedFolderId")
                .and_then(|d| d.attribute("Id"));
            if parent != Some("calendar") {
                return Err(fault(
                    "ErrorInvalidRequest",
                    "The fake knows folders under the Calendar only.",
                ));
            }
            let wanted = op
                .descendants()
                .find(|d| d.tag_name().name() == "Constant")
                .and_then(|c| c.attribute("Value"));
            let folders: String = m
                .folders
                .iter()
                .filter(|(_, name)| wanted.is_none_or(|w| w == name))
                .map(|(id, name)| {
                    format!(
                        r#"<t:CalendarFolder><t:FolderId Id="{}" ChangeKey="AgAAAA=="/><t:DisplayName>{}</t:DisplayName></t:CalendarFolder>"#,
                        escape(id),
                        escape(name)
                    )
                })
                .collect();
            vec![ok(format!(
                r#"<m:RootFolder TotalItemsInView="1" IncludesLastItemInRange="true"><t:Folders>{folders}</t:Folders></m:RootFolder>"#
            ))]
        }
        "CreateFolder" => {
            let name = op
                .descendants()
                .find(|d| d.tag_name().name() == "DisplayName")
                .and_then(|d| d.text())
                .unwrap_or_default()
                .to_string();
            if m.folders.iter().any(|(_, n)| *n == name) {
                vec![error(
                    "ErrorFolderExists",
                    "A folder with the specified name already exists.",
                )]
            } else {
                let id = format!("AAMkFolder-{n}=");
                m.folders.push((id.clone(), name));
                vec![ok(format!(
                    r#"<m:Folders><t:CalendarFolder><t:FolderId Id="{id}" ChangeKey="AgAAAA=="/></t:CalendarFolder></m:Folders>"#
                ))]
            }
        }
        "CreateItem" => {
            if op.attribute("SendMeetingInvitations").is_none() {
                vec![error(
                    "ErrorSendMeetingInvitationsRequired",
                    "SendMeetingInvitations attribute is required for calendar items.",
                )]
            } else {
                let folder = op
                    .descendants()
                    .find(|d| d.tag_name().name() == "FolderId")
                    .and_then(|d| d.attribute("Id"))
                    .unwrap_or_default();
                let calendar = op
                    .descendants()
                    .find(|d| d.tag_name().name() == "CalendarItem");
                match calendar {
                    _ if !folder_exists(m, folder) => {
                        vec![error(
                            "ErrorFolderNotFound",
                            "The specified folder could not be found in the store.",
                        )]
                    }
                    None => vec![error("ErrorInvalidRequest", "No calendar item.")],
                    Some(c) => {
                        let uid = children(c, "ExtendedProperty")
                            .find(|p| child(*p, "ExtendedFieldURI").is_some_and(is_our_property))
                            .and_then(|p| child(p, "Value"))
                            .and_then(|v| v.text())
                            .map(str::to_string);
                        if let Some(u) = &uid
                            && i.faults.failing_creations.contains(u)
                        {
                            return Ok((name, vec![], After::Drop));
                        }
                        let chosen = chosen(
                            &mut i.faults.random,
                            i.faults.profile.load.lost_creations_percent,
                        );
                        let asked = uid
                            .as_ref()
                            .is_some_and(|u| i.faults.losing_answer.remove(u));
                        let m = i.mailboxes.get_mut(address).unwrap();
                        let id = format!("AAMkItem-{n}=");
                        let mut item = StoredItem {
                            id: id.clone(),
                            change_key: change_key(&id, 1, n),
                            folder: folder.to_string(),
                            fields: BTreeMap::new(),
                            uid,
                            stamp: None,
                        };
                        set_fields(&mut item, c);
                        let content = format!(
                            r#"<m:Items><t:CalendarItem><t:ItemId Id="{}" ChangeKey="{}"/></t:CalendarItem></m:Items>"#,
                            escape(&item.id),
                            escape(&item.change_key)
                        );
                        m.items.insert(id, (item, 1));
                        let after = if chosen || asked {
                            After::Drop
                        } else {
                            After::Answer
                        };
                        return Ok((name, vec![ok(content)], after));
                    }
                }
            }
        }
        "UpdateItem" => {
            let mode = op.attribute("ConflictResolution");
            if mode.is_none()
                || op
                    .attribute("SendMeetingInvitationsOrCancellations")
                    .is_none()
            {
                return Err(fault(
                    "ErrorSchemaValidation",
                    "ConflictResolution and SendMeetingInvitationsOrCancellations are required for calendar items.",
                ));
            }
            let mut out = Vec::new();
            for change in op
                .descendants()
                .filter(|d| d.tag_name().name() == "ItemChange")
            {
                let Some(item_id) = child(change, "ItemId") else {
                    out.push(error("ErrorInvalidIdEmpty", "ItemId is missing."));
                    continue;
                };
                let id = item_id.attribute("Id").unwrap_or_default();
                let Some((item, version)) = m.items.get_mut(id) else {
                    out.push(error(
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    ));
                    continue;
                };
                let stale = item_id
                    .attribute("ChangeKey")
                    .is_some_and(|ck| ck != item.change_key);
                let forced = stale && std::mem::take(&mut i.faults.conflict_once);
                match (item_id.attribute("ChangeKey"), mode) {
                    (_, Some("AlwaysOverwrite")) if !forced => {}
                    (Some(ck), _) if ck == item.change_key => {}
                    (Some(_), _) => {
                        out.push(error(
                            "ErrorIrresolvableConflict",
                            "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
                        ));
                        continue;
                    }
                    (None, _) => {
                        out.push(error(
                            "ErrorChangeKeyRequiredForWriteOperations",
                            "When making a request that will change an item, you must provide the ChangeKey.",
                        ));
                        continue;
                    }
                }
                if let Some(updates) = child(change, "Updates") {
                    for update in updates.children().filter(|c| c.is_element()) {
                        let uri = update.children().find(|c| c.is_element());
                        let field = uri
                            .and_then(|u| u.attribute("FieldURI"))
                            .map(|f| f.split(':').nth(1).unwrap_or(f).to_string());
                        match update.tag_name().name() {
                            "SetItemField" => {
                                if let Some(c) = child(update, "CalendarItem") {
                                    set_fields(item, c);
                                }
                            }
                            "DeleteItemField" => {
                                if let Some(f) = field {
                                    item.fields.remove(&f);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                *version += 1;
                item.change_key = change_key(id, *version, n);
                out.push(ok(format!(
                    r#"<m:Items><t:CalendarItem><t:ItemId Id="{}" ChangeKey="{}"/></t:CalendarItem></m:Items><m:ConflictResults><t:Count>0</t:Count></m:ConflictResults>"#,
                    escape(id),
                    escape(&item.change_key)
                )));
            }
            out
        }
        "DeleteItem" => {
            if op.attribute("DeleteType").is_none()
                || op.attribute("SendMeetingCancellations").is_none()
            {
                return Err(fault(
                    "ErrorSchemaValidation",
                    "DeleteType and SendMeetingCancellations are required for calendar items.",
                ));
            }
            op.descendants()
                .filter(|d| d.tag_name().name() == "ItemId")
                .map(
                    |d| match m.items.remove(d.attribute("Id").unwrap_or_default()) {
                        Some(_) => ok(String::new()),
                        None => error(
                            "ErrorItemNotFound",
                            "The specified object was not found in the store.",
                        ),
                    },
                )
                .collect()
        }
        "GetItem" => {
            let shape = asked(op);
            op.descendants()
                .filter(|d| d.tag_name().name() == "ItemId")
                .map(
                    |d| match m.items.get(d.attribute("Id").unwrap_or_default()) {
                        Some((item, _)) => ok(format!(
                            "<m:Items>{}</m:Items>",
                            item_xml(item, true, &shape)
                        )),
                        None => error(
                            "ErrorItemNotFound",
                            "The specified object was not found in the store.",
                        ),
                    },
                )
                .collect()
        }
        "FindItem" => {
            if child(op, "CalendarView").is_some() && child(op, "Restriction").is_some() {
                return Ok((
                    name,
                    vec![error(
                        "ErrorInvalidRestriction",
                        "Restrictions and sort order may not be specified for a CalendarView.",
                    )],
                    After::Answer,
                ));
            }
            let folder = child(op, "ParentFolderIds")
                .and_then(|p| child(p, "FolderId"))
                .and_then(|f| f.attribute("Id"))
                .unwrap_or_default();
            if !folder_exists(m, folder) {
                vec![error(
                    "ErrorFolderNotFound",
                    "The specified folder could not be found in the store.",
                )]
            } else if let Some(view) = child(op, "CalendarView") {
                let (Some(from), Some(to)) = (
                    view.attribute("StartDate").and_then(instant),
                    view.attribute("EndDate").and_then(instant),
                ) else {
                    return Err(fault(
                        "ErrorSchemaValidation",
                        "CalendarView needs StartDate and EndDate.",
                    ));
                };
                let max: usize = view
                    .attribute("MaxEntriesReturned")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(usize::MAX);
                let mut inside: Vec<(chrono::DateTime<chrono::Utc>, &StoredItem)> = m
                    .items
                    .values()
                    .map(|(item, _)| item)
                    .filter(|item| item.folder == folder)
                    .filter_map(|item| {
                        let start = instant(item.field("Start")?)?;
                        let end = instant(item.field("End")?)?;
                        let overlaps =
                            start < to && (end > from || (end == start && start >= from));
                        overlaps.then_some((start, item))
                    })
                    .collect();
                inside.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
                let total = inside.len();
                let shape = asked(op);
                let items: String = inside
                    .iter()
                    .take(max)
                    .map(|(_, item)| item_xml(item, false, &shape))
                    .collect();
                vec![ok(format!(
                    r#"<m:RootFolder TotalItemsInView="{total}" IncludesLastItemInRange="{}"><t:Items>{items}</t:Items></m:RootFolder>"#,
                    total <= max
                ))]
            } else {
                let wanted: Option<Vec<String>> = child(op, "Restriction").map(|r| {
                    r.descendants()
                        .filter(|d| d.tag_name().name() == "IsEqualTo")
                        .filter(|e| child(*e, "ExtendedFieldURI").is_some_and(is_our_property))
                        .filter_map(|e| {
                            e.descendants()
                                .find(|d| d.tag_name().name() == "Constant")
                                .and_then(|c| c.attribute("Value"))
                                .map(str::to_string)
                        })
                        .collect()
                });
                let returns_property = child(op, "ItemShape")
                    .and_then(|s| child(s, "AdditionalProperties"))
                    .is_some_and(|a| children(a, "ExtendedFieldURI").any(is_our_property));
                let view = child(op, "IndexedPageItemView");
                let max: usize = view
                    .and_then(|v| v.attribute("MaxEntriesReturned"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(usize::MAX);
                let offset: usize = view
                    .and_then(|v| v.attribute("Offset"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let matching: Vec<&StoredItem> = m
                    .items
                    .values()
                    .map(|(item, _)| item)
                    .filter(|item| item.folder == folder)
                    .filter(|item| match &wanted {
                        None => true,
                        Some(uids) => item.uid.as_ref().is_some_and(|u| uids.contains(u)),
                    })
                    .collect();
                let total = matching.len();
                let page: Vec<&StoredItem> = matching.into_iter().skip(offset).take(max).collect();
                let last = offset + page.len() >= total;
                let items: String = page
                    .iter()
                    .map(|item| {
                        let property = match (&item.uid, returns_property) {
                            (Some(uid), true) => format!(
                                r#"<t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="{PROPERTY_SET_ID}" PropertyName="{PROPERTY_NAME}" PropertyType="String"/><t:Value>{}</t:Value></t:ExtendedProperty>"#,
                                escape(uid)
                            ),
                            _ => String::new(),
                        };
                        format!(
                            r#"<t:CalendarItem><t:ItemId Id="{}" ChangeKey="{}"/>{property}</t:CalendarItem>"#,
                            escape(&item.id),
                            escape(&item.change_key)
                        )
                    })
                    .collect();
                vec![ok(format!(
                    r#"<m:RootFolder IndexedPagingOffset="{}" TotalItemsInView="{total}" IncludesLastItemInRange="{last}"><t:Items>{items}</t:Items></m:RootFolder>"#,
                    offset + page.len()
                ))]
            }
        }
        _ => {
            return Err(fault(
                "ErrorInvalidRequest",
                &format!("The fake does not know {name}."),
            ));
        }
    };
    Ok((name, messages, After::Answer))
}

/// Store the fields a `t:CalendarItem` element carries.
fn set_fields(item: &mut StoredItem, c: Node<'_, '_>) {
    for field in c.children().filter(|f| f.is_element()) {
        let name = field.tag_name().name();
        match name {
            "ExtendedProperty" => {
                let value = child(field, "Value")
                    .and_then(|v| v.text())
                    .map(str::to_string);
                let uri = child(field, "ExtendedFieldURI");
                if uri.is_some_and(is_our_property) {
                    item.uid = value;
                } else if uri.is_some_and(is_our_stamp) {
                    item.stamp = value;
                }
            }
            "StartTimeZone" | "EndTimeZone" => {
                item.fields.insert(
                    name.into(),
                    field.attribute("Id").unwrap_or_default().into(),
                );
            }
            "Body" => {
                item.fields
                    .insert(name.into(), field.text().unwrap_or_default().into());
                item.fields.insert(
                    "BodyType".into(),
                    field.attribute("BodyType").unwrap_or_default().into(),
                );
            }
            _ => {
                item.fields
                    .insert(name.into(), field.text().unwrap_or_default().into());
            }
        }
    }
}
