//! The SOAP 1.1 messages of EWS: requests written with quick-xml (which escapes every text
//! and attribute value), answers read with roxmltree into owned values.
//!
//! Every request body follows the element order of Exchange's `messages.xsd` and
//! `types.xsd`: Exchange validates requests against the schema and refuses one whose
//! children are out of order (`ErrorSchemaValidation`). The orders used here:
//! - `t:CalendarItem`: Subject, Body, ExtendedProperty, Start, End, IsAllDayEvent,
//!   Location, StartTimeZone, EndTimeZone (item fields first, then calendar fields);
//! - `m:FindItem`: ItemShape, IndexedPageItemView or CalendarView, Restriction,
//!   ParentFolderIds; `m:ItemShape`: BaseShape, BodyType, AdditionalProperties;
//! - `m:GetItem`: ItemShape, ItemIds;
//! - `m:FindFolder`: FolderShape, Restriction, ParentFolderIds;
//! - `m:CreateItem`: SavedItemFolderId, Items; `m:UpdateItem`: ItemChanges;
//!   `t:ItemChange`: ItemId, Updates; `m:CreateFolder`: ParentFolderId, Folders.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::item::{
    CALENDAR_FOLDER, HASH_PROPERTY_NAME, ItemFields, PROPERTY_NAME, PROPERTY_SET_ID,
};

pub const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const MESSAGES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
pub const TYPES_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
pub const ERRORS_NS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

/// An XML document being written.
pub struct Xml {
    w: Writer<Vec<u8>>,
}

impl Xml {
    fn new() -> Xml {
        let mut xml = Xml {
            w: Writer::new(Vec::with_capacity(2048)),
        };
        xml.event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
        xml
    }

    fn event(&mut self, e: Event<'_>) {
        // Writing into a Vec cannot fail.
        self.w.write_event(e).expect("XML into memory");
    }

    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Xml {
        let mut start = BytesStart::new(name);
        for a in attrs {
            start.push_attribute(*a);
        }
        self.event(Event::Start(start));
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Xml {
        self.event(Event::End(BytesEnd::new(name)));
        self
    }

    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Xml {
        let mut start = BytesStart::new(name);
        for a in attrs {
            start.push_attribute(*a);
        }
        self.event(Event::Empty(start));
        self
    }

    pub fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Xml {
        self.open(name, attrs);
        self.event(Event::Text(BytesText::new(text)));
        self.close(name)
    }

    pub fn finish(self) -> String {
        String::from_utf8(self.w.into_inner()).expect("quick-xml writes UTF-8")
    }
}

/// Who the request acts for and in which schema version.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub version: &'a str,
    /// The mailbox written through `ExchangeImpersonation`; `None` for requests that
    /// concern no mailbox.
    pub impersonate: Option<&'a str>,
}

/// A whole request: envelope, headers, and `body` writing the operation.
pub fn envelope(header: Header<'_>, body: impl FnOnce(&mut Xml)) -> String {
    let mut x = Xml::new();
    x.open(
        "soap:Envelope",
        &[
            ("xmlns:soap", SOAP_NS),
            ("xmlns:m", MESSAGES_NS),
            ("xmlns:t", TYPES_NS),
        ],
    );
    x.open("soap:Header", &[]);
    x.empty("t:RequestServerVersion", &[("Version", header.version)]);
    if let Some(address) = header.impersonate {
        x.open("t:ExchangeImpersonation", &[])
            .open("t:ConnectingSID", &[])
            .text("t:PrimarySmtpAddress", &[], address)
            .close("t:ConnectingSID")
            .close("t:ExchangeImpersonation");
    }
    x.close("soap:Header");
    x.open("soap:Body", &[]);
    body(&mut x);
    x.close("soap:Body");
    x.close("soap:Envelope");
    x.finish()
}

fn extended_field_uri(x: &mut Xml) {
    property_uri(x, PROPERTY_NAME);
}

/// One of livesync's properties (the UID, the stamp).
fn property_uri(x: &mut Xml, name: &str) {
    x.empty(
        "t:ExtendedFieldURI",
        &[
            ("PropertySetId", PROPERTY_SET_ID),
            ("PropertyName", name),
            ("PropertyType", "String"),
        ],
    );
}

/// The fields a listing reads of each item (`GetItem`), livesync's properties included.
const LISTED_FIELDS: [&str; 6] = [
    "item:Subject",
    "item:Body",
    "calendar:Start",
    "calendar:End",
    "calendar:IsAllDayEvent",
    "calendar:Location",
];

fn folder_id(x: &mut Xml, folder: &str) {
    x.empty("t:FolderId", &[("Id", folder)]);
}

fn item_id(x: &mut Xml, id: &str, change_key: Option<&str>) {
    match change_key {
        Some(ck) => x.empty("t:ItemId", &[("Id", id), ("ChangeKey", ck)]),
        None => x.empty("t:ItemId", &[("Id", id)]),
    };
}

/// `FindFolder`: the calendar folder named `name` directly under the mailbox's Calendar.
pub fn find_folder(x: &mut Xml, name: &str) {
    x.open("m:FindFolder", &[("Traversal", "Shallow")]);
    x.open("m:FolderShape", &[])
        .text("t:BaseShape", &[], "IdOnly")
        .open("t:AdditionalProperties", &[])
        .empty("t:FieldURI", &[("FieldURI", "folder:DisplayName")])
        .close("t:AdditionalProperties")
        .close("m:FolderShape");
    x.open("m:Restriction", &[])
        .open("t:IsEqualTo", &[])
        .empty("t:FieldURI", &[("FieldURI", "folder:DisplayName")])
        .open("t:FieldURIOrConstant", &[])
        .empty("t:Constant", &[("Value", name)])
        .close("t:FieldURIOrConstant")
        .close("t:IsEqualTo")
        .close("m:Restriction");
    x.open("m:ParentFolderIds", &[])
        .empty("t:DistinguishedFolderId", &[("Id", CALENDAR_FOLDER)])
        .close("m:ParentFolderIds");
    x.close("m:FindFolder");
}

/// `CreateFolder`: a calendar folder named `name` under the mailbox's Calendar.
pub fn create_folder(x: &mut Xml, name: &str) {
    x.open("m:CreateFolder", &[]);
    x.open("m:ParentFolderId", &[])
        .empty("t:DistinguishedFolderId", &[("Id", CALENDAR_FOLDER)])
        .close("m:ParentFolderId");
    x.open("m:Folders", &[])
        .open("t:CalendarFolder", &[])
        .text("t:DisplayName", &[], name)
        .close("t:CalendarFolder")
        .close("m:Folders");
    x.close("m:CreateFolder");
}

/// `GetFolder` of the mailbox's Calendar (the check of impersonation).
pub fn get_calendar(x: &mut Xml) {
    x.open("m:GetFolder", &[]);
    x.open("m:FolderShape", &[])
        .text("t:BaseShape", &[], "IdOnly")
        .close("m:FolderShape");
    x.open("m:FolderIds", &[])
        .empty("t:DistinguishedFolderId", &[("Id", CALENDAR_FOLDER)])
        .close("m:FolderIds");
    x.close("m:GetFolder");
}

/// `GetServerTimeZones` of one zone without its rules: needs the credentials, no mailbox,
/// and says whether the server knows the zone.
pub fn get_server_time_zones(x: &mut Xml, zone: &str) {
    x.open(
        "m:GetServerTimeZones",
        &[("ReturnFullTimeZoneData", "false")],
    )
    .open("m:Ids", &[])
    .text("t:Id", &[], zone)
    .close("m:Ids")
    .close("m:GetServerTimeZones");
}

/// `FindItem` in `folder` for the items carrying any of `uids` in livesync's property,
/// returning their ids, change keys and that property; at most `max` from `offset`.
pub fn find_items(x: &mut Xml, folder: &str, uids: &[&str], offset: usize, max: usize) {
    x.open("m:FindItem", &[("Traversal", "Shallow")]);
    x.open("m:ItemShape", &[])
        .text("t:BaseShape", &[], "IdOnly")
        .open("t:AdditionalProperties", &[]);
    extended_field_uri(x);
    x.close("t:AdditionalProperties").close("m:ItemShape");
    let (offset, max) = (offset.to_string(), max.to_string());
    x.empty(
        "m:IndexedPageItemView",
        &[
            ("MaxEntriesReturned", max.as_str()),
            ("Offset", offset.as_str()),
            ("BasePoint", "Beginning"),
        ],
    );
    x.open("m:Restriction", &[]);
    if uids.len() > 1 {
        x.open("t:Or", &[]);
    }
    for uid in uids {
        x.open("t:IsEqualTo", &[]);
        extended_field_uri(x);
        x.open("t:FieldURIOrConstant", &[])
            .empty("t:Constant", &[("Value", uid)])
            .close("t:FieldURIOrConstant")
            .close("t:IsEqualTo");
    }
    if uids.len() > 1 {
        x.close("t:Or");
    }
    x.close("m:Restriction");
    x.open("m:ParentFolderIds", &[]);
    folder_id(x, folder);
    x.close("m:ParentFolderIds");
    x.close("m:FindItem");
}

/// `FindItem` of the items in `folder` that take place between `start` and `end`
/// (`xs:dateTime`), as a `CalendarView` of at most `max` items (sorted by start; it has no
/// paging: the caller continues from the last start it got). Ids and starts only: the
/// rest comes from [`get_items`].
pub fn find_calendar_view(x: &mut Xml, folder: &str, start: &str, end: &str, max: usize) {
    x.open("m:FindItem", &[("Traversal", "Shallow")]);
    x.open("m:ItemShape", &[])
        .text("t:BaseShape", &[], "IdOnly")
        .open("t:AdditionalProperties", &[])
        .empty("t:FieldURI", &[("FieldURI", "calendar:Start")])
        .close("t:AdditionalProperties")
        .close("m:ItemShape");
    let max = max.to_string();
    x.empty(
        "m:CalendarView",
        &[
            ("MaxEntriesReturned", max.as_str()),
            ("StartDate", start),
            ("EndDate", end),
        ],
    );
    x.open("m:ParentFolderIds", &[]);
    folder_id(x, folder);
    x.close("m:ParentFolderIds");
    x.close("m:FindItem");
}

/// `GetItem` of `ids` with what a listing compares: subject, body as text, times,
/// all-day flag, location, and livesync's properties (UID, stamp).
pub fn get_items(x: &mut Xml, ids: &[&str]) {
    x.open("m:GetItem", &[]);
    x.open("m:ItemShape", &[])
        .text("t:BaseShape", &[], "IdOnly")
        .text("t:BodyType", &[], "Text")
        .open("t:AdditionalProperties", &[]);
    for uri in LISTED_FIELDS {
        x.empty("t:FieldURI", &[("FieldURI", uri)]);
    }
    property_uri(x, PROPERTY_NAME);
    property_uri(x, HASH_PROPERTY_NAME);
    x.close("t:AdditionalProperties").close("m:ItemShape");
    x.open("m:ItemIds", &[]);
    for id in ids {
        item_id(x, id, None);
    }
    x.close("m:ItemIds");
    x.close("m:GetItem");
}

/// The children of a `t:CalendarItem`, in schema order, with livesync's properties (the
/// UID and the stamp).
fn calendar_item(x: &mut Xml, f: &ItemFields, uid: &str) {
    x.text("t:Subject", &[], &f.subject);
    x.text("t:Body", &[("BodyType", "Text")], &f.body);
    for (name, value) in [(PROPERTY_NAME, uid), (HASH_PROPERTY_NAME, f.hash.as_str())] {
        x.open("t:ExtendedProperty", &[]);
        property_uri(x, name);
        x.text("t:Value", &[], value).close("t:ExtendedProperty");
    }
    x.text("t:Start", &[], &f.start);
    x.text("t:End", &[], &f.end);
    x.text(
        "t:IsAllDayEvent",
        &[],
        if f.all_day { "true" } else { "false" },
    );
    if let Some(location) = &f.location {
        x.text("t:Location", &[], location);
    }
    x.empty("t:StartTimeZone", &[("Id", f.zone)]);
    x.empty("t:EndTimeZone", &[("Id", f.zone)]);
}

/// `CreateItem` of one calendar item in `folder`, sending no invitation.
pub fn create_item(x: &mut Xml, folder: &str, f: &ItemFields, uid: &str) {
    x.open("m:CreateItem", &[("SendMeetingInvitations", "SendToNone")]);
    x.open("m:SavedItemFolderId", &[]);
    folder_id(x, folder);
    x.close("m:SavedItemFolderId");
    x.open("m:Items", &[]).open("t:CalendarItem", &[]);
    calendar_item(x, f, uid);
    x.close("t:CalendarItem").close("m:Items");
    x.close("m:CreateItem");
}

/// `UpdateItem` of every field livesync writes, Xpert's values overwriting any change
/// made in Outlook meanwhile (`AlwaysOverwrite`, see the module's design note).
pub fn update_item(x: &mut Xml, id: &str, change_key: Option<&str>, f: &ItemFields, uid: &str) {
    x.open(
        "m:UpdateItem",
        &[
            ("ConflictResolution", "AlwaysOverwrite"),
            ("SendMeetingInvitationsOrCancellations", "SendToNone"),
        ],
    );
    x.open("m:ItemChanges", &[]).open("t:ItemChange", &[]);
    item_id(x, id, change_key);
    x.open("t:Updates", &[]);
    let set = |x: &mut Xml, uri: &str, write: &dyn Fn(&mut Xml)| {
        x.open("t:SetItemField", &[])
            .empty("t:FieldURI", &[("FieldURI", uri)])
            .open("t:CalendarItem", &[]);
        write(x);
        x.close("t:CalendarItem").close("t:SetItemField");
    };
    set(x, "item:Subject", &|x| {
        x.text("t:Subject", &[], &f.subject);
    });
    set(x, "item:Body", &|x| {
        x.text("t:Body", &[("BodyType", "Text")], &f.body);
    });
    // The UID again (an item adopted after a lost answer keeps it for sure), and the
    // stamp of this content.
    for (name, value) in [(PROPERTY_NAME, uid), (HASH_PROPERTY_NAME, f.hash.as_str())] {
        x.open("t:SetItemField", &[]);
        property_uri(x, name);
        x.open("t:CalendarItem", &[])
            .open("t:ExtendedProperty", &[]);
        property_uri(x, name);
        x.text("t:Value", &[], value)
            .close("t:ExtendedProperty")
            .close("t:CalendarItem")
            .close("t:SetItemField");
    }
    // Zones before the times they qualify, the all-day flag before the times.
    set(x, "calendar:StartTimeZone", &|x| {
        x.empty("t:StartTimeZone", &[("Id", f.zone)]);
    });
    set(x, "calendar:EndTimeZone", &|x| {
        x.empty("t:EndTimeZone", &[("Id", f.zone)]);
    });
    set(x, "calendar:IsAllDayEvent", &|x| {
        x.text(
            "t:IsAllDayEvent",
            &[],
            if f.all_day { "true" } else { "false" },
        );
    });
    set(x, "calendar:Start", &|x| {
        x.text("t:Start", &[], &f.start);
    });
    set(x, "calendar:End", &|x| {
        x.text("t:End", &[], &f.end);
    });
    match &f.location {
        Some(location) => set(x, "calendar:Location", &|x| {
            x.text("t:Location", &[], location);
        }),
        None => {
            x.open("t:DeleteItemField", &[])
                .empty("t:FieldURI", &[("FieldURI", "calendar:Location")])
                .close("t:DeleteItemField");
        }
    }
    x.close("t:Updates");
    x.close("t:ItemChange").close("m:ItemChanges");
    x.close("m:UpdateItem");
}

/// `DeleteItem` for good (not into Deleted Items), sending no cancellation.
pub fn delete_item(x: &mut Xml, id: &str) {
    x.open(
        "m:DeleteItem",
        &[
            ("DeleteType", "HardDelete"),
            ("SendMeetingCancellations", "SendToNone"),
        ],
    );
    x.open("m:ItemIds", &[]);
    item_id(x, id, None);
    x.close("m:ItemIds");
    x.close("m:DeleteItem");
}

/// An item as an answer names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRef {
    pub id: String,
    pub change_key: Option<String>,
    /// livesync's property, when the answer carries it (FindItem).
    pub uid: Option<String>,
}

/// An item's fields as an answer carries them (FindItem, GetItem); what it does not
/// carry is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemRead {
    pub id: String,
    /// livesync's UID property.
    pub uid: Option<String>,
    /// livesync's stamp property.
    pub stamp: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub location: Option<String>,
    /// `xs:dateTime` as sent (UTC).
    pub start: Option<String>,
    pub end: Option<String>,
    pub all_day: bool,
}

/// One response message of an answer (one per item or folder the request named).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseMessage {
    /// `ResponseClass`: Success, Warning or Error.
    pub class: String,
    /// `ResponseCode` (`NoError`, `ErrorItemNotFound`, …).
    pub code: String,
    pub text: String,
    /// `BackOffMilliseconds` of `MessageXml`, when given.
    pub back_off_ms: Option<u64>,
    pub items: Vec<ItemRef>,
    /// The same items with the fields the answer carries.
    pub read: Vec<ItemRead>,
    pub folders: Vec<String>,
    /// FindItem: `IncludesLastItemInRange` (true when absent).
    pub last_page: bool,
}

impl ResponseMessage {
    pub fn is_success(&self) -> bool {
        self.class != "Error" && (self.code.is_empty() || self.code == "NoError")
    }
}

/// An answer, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A `soap:Fault`: the whole request failed.
    Fault {
        code: String,
        text: String,
        back_off_ms: Option<u64>,
    },
    Messages(Vec<ResponseMessage>),
}

fn local<'a>(node: roxmltree::Node<'a, '_>) -> &'a str {
    node.tag_name().name()
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && local(*c) == name)
}

fn text_of(node: Option<roxmltree::Node<'_, '_>>) -> String {
    node.and_then(|n| n.text())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `BackOffMilliseconds` inside a `MessageXml` element.
fn back_off(message_xml: Option<roxmltree::Node<'_, '_>>) -> Option<u64> {
    message_xml?
        .descendants()
        .find(|n| {
            n.is_element()
                && local(*n) == "Value"
                && n.attribute("Name") == Some("BackOffMilliseconds")
        })?
        .text()?
        .trim()
        .parse()
        .ok()
}

/// Read an answer; `Err` says why it is no EWS answer.
pub fn parse(body: &str) -> Result<Answer, String> {
    let doc = roxmltree::Document::parse(body).map_err(|e| format!("not XML ({e})"))?;
    let envelope = doc.root_element();
    if local(envelope) != "Envelope" {
        return Err(format!("no SOAP envelope but <{}>", local(envelope)));
    }
    let body = child(envelope, "Body").ok_or("a SOAP envelope without body")?;
    let Some(first) = body.children().find(|c| c.is_element()) else {
        return Err("an empty SOAP body".into());
    };
    if local(first) == "Fault" {
        let detail = child(first, "detail").or_else(|| child(first, "Detail"));
        let mut code = text_of(detail.and_then(|d| child(d, "ResponseCode")));
        if code.is_empty() {
            // `a:ErrorServerBusy` with the types namespace as prefix.
            let faultcode = text_of(child(first, "faultcode"));
            code = faultcode.rsplit(':').next().unwrap_or_default().to_string();
        }
        return Ok(Answer::Fault {
            code,
            text: text_of(child(first, "faultstring")),
            back_off_ms: back_off(detail.and_then(|d| child(d, "MessageXml"))),
        });
    }
    let Some(messages) = child(first, "ResponseMessages") else {
        return Err(format!("<{}> without ResponseMessages", local(first)));
    };
    let mut out = Vec::new();
    for m in messages.children().filter(|c| c.is_element()) {
        let mut message = ResponseMessage {
            class: m.attribute("ResponseClass").unwrap_or_default().to_string(),
            code: text_of(child(m, "ResponseCode")),
            text: text_of(child(m, "MessageText")),
            back_off_ms: back_off(child(m, "MessageXml")),
            last_page: true,
            ..ResponseMessage::default()
        };
        let items = child(m, "Items").or_else(|| {
            let root = child(m, "RootFolder")?;
            message.last_page = root.attribute("IncludesLastItemInRange") != Some("false");
            child(root, "Items")
        });
        for item in items
            .into_iter()
            .flat_map(|i| i.children())
            .filter(|c| c.is_element())
        {
            let Some(id) = child(item, "ItemId") else {
                continue;
            };
            let property = |name: &str| {
                item.children()
                    .filter(|c| c.is_element() && local(*c) == "ExtendedProperty")
                    .find(|p| {
                        child(*p, "ExtendedFieldURI").is_some_and(|u| {
                            u.attribute("PropertyName") == Some(name)
                                && u.attribute("PropertySetId")
                                    .is_none_or(|set| set.eq_ignore_ascii_case(PROPERTY_SET_ID))
                        })
                    })
                    .map(|p| text_of(child(p, "Value")))
            };
            // Text as sent: subject, body and location are compared as they are.
            let raw =
                |name: &str| child(item, name).map(|n| n.text().unwrap_or_default().to_string());
            let uid = property(PROPERTY_NAME);
            let id_value = id.attribute("Id").unwrap_or_default().to_string();
            message.read.push(ItemRead {
                id: id_value.clone(),
                uid: uid.clone(),
                stamp: property(HASH_PROPERTY_NAME),
                subject: raw("Subject"),
                body: raw("Body"),
                location: raw("Location"),
                start: child(item, "Start").map(|n| text_of(Some(n))),
                end: child(item, "End").map(|n| text_of(Some(n))),
                all_day: text_of(child(item, "IsAllDayEvent")) == "true",
            });
            message.items.push(ItemRef {
                id: id_value,
                change_key: id.attribute("ChangeKey").map(str::to_string),
                uid,
            });
        }
        let folders = child(m, "Folders").or_else(|| child(child(m, "RootFolder")?, "Folders"));
        for folder in folders
            .into_iter()
            .flat_map(|f| f.children())
            .filter(|c| c.is_element())
        {
            if let Some(id) = child(folder, "FolderId").and_then(|f| f.attribute("Id")) {
                message.folders.push(id.to_string());
            }
        }
        out.push(message);
    }
    Ok(Answer::Messages(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let body = envelope(
            Header {
                version: "Exchange2016",
                impersonate: Some("a&b@kanzlei.at"),
            },
            |x| find_folder(x, "<\"notar\" & 'Xpert'>"),
        );
        assert!(body.contains("<t:PrimarySmtpAddress>a&amp;b@kanzlei.at</t:PrimarySmtpAddress>"));
        let doc = roxmltree::Document::parse(&body).unwrap();
        let constant = doc
            .descendants()
            .find(|n| n.tag_name().name() == "Constant")
            .unwrap();
        assert_eq!(constant.attribute("Value"), Some("<\"notar\" & 'Xpert'>"));
    }

    #[test]
    fn both_shapes_of_server_busy_are_read() {
        let fault = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
            <faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorServerBusy</faultcode>
            <faultstring xml:lang="en-US">The server cannot service this request right now. Try again later.</faultstring>
            <detail><e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">ErrorServerBusy</e:ResponseCode>
            <t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><t:Value Name="BackOffMilliseconds">2500</t:Value></t:MessageXml>
            </detail></s:Fault></s:Body></s:Envelope>"#;
        assert_eq!(
            parse(fault).unwrap(),
            Answer::Fault {
                code: "ErrorServerBusy".into(),
                text: "The server cannot service this request right now. Try again later.".into(),
                back_off_ms: Some(2500),
            }
        );
        let message = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
            <m:CreateItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
            <m:ResponseMessages><m:CreateItemResponseMessage ResponseClass="Error">
            <m:MessageText>The server cannot service this request right now. Try again later.</m:MessageText>
            <m:ResponseCode>ErrorServerBusy</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>
            <m:MessageXml><t:Value Name="BackOffMilliseconds">700</t:Value></m:MessageXml><m:Items/>
            </m:CreateItemResponseMessage></m:ResponseMessages></m:CreateItemResponse></s:Body></s:Envelope>"#;
        let Answer::Messages(m) = parse(message).unwrap() else {
            panic!()
        };
        assert_eq!(m[0].code, "ErrorServerBusy");
        assert_eq!(m[0].back_off_ms, Some(700));
        assert!(!m[0].is_success());
    }

    #[test]
    fn a_listing_reads_the_calendar_view_and_the_items() {
        let view = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
            <m:FindItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
            <m:ResponseMessages><m:FindItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>
            <m:RootFolder TotalItemsInView="3" IncludesLastItemInRange="false"><t:Items>
            <t:CalendarItem><t:ItemId Id="AAMkItem-1=" ChangeKey="CK1"/><t:Start>2026-12-04T08:00:00Z</t:Start></t:CalendarItem>
            <t:CalendarItem><t:ItemId Id="AAMkItem-2=" ChangeKey="CK2"/><t:Start>2026-12-05T08:00:00Z</t:Start></t:CalendarItem>
            </t:Items></m:RootFolder></m:FindItemResponseMessage></m:ResponseMessages></m:FindItemResponse></s:Body></s:Envelope>"#;
        let Answer::Messages(m) = parse(view).unwrap() else {
            panic!()
        };
        assert!(!m[0].last_page, "more items than returned");
        let starts: Vec<_> = m[0]
            .read
            .iter()
            .map(|i| (i.id.as_str(), i.start.as_deref()))
            .collect();
        assert_eq!(
            starts,
            [
                ("AAMkItem-1=", Some("2026-12-04T08:00:00Z")),
                ("AAMkItem-2=", Some("2026-12-05T08:00:00Z"))
            ]
        );

        let items = format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
            <m:GetItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
            <m:ResponseMessages>
            <m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items>
            <t:CalendarItem><t:ItemId Id="AAMkItem-1=" ChangeKey="CK1"/><t:Subject> Termin &amp; Co </t:Subject><t:Body BodyType="Text">Akt
mitnehmen</t:Body>
            <t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="{PROPERTY_SET_ID}" PropertyName="{PROPERTY_NAME}" PropertyType="String"/><t:Value>xpert-termin-1@livesync</t:Value></t:ExtendedProperty>
            <t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="{PROPERTY_SET_ID}" PropertyName="{HASH_PROPERTY_NAME}" PropertyType="String"/><t:Value>0123abcd</t:Value></t:ExtendedProperty>
            <t:Start>2026-12-04T08:00:00Z</t:Start><t:End>2026-12-04T09:30:00Z</t:End><t:IsAllDayEvent>false</t:IsAllDayEvent><t:Location>Kanzlei</t:Location>
            </t:CalendarItem></m:Items></m:GetItemResponseMessage>
            <m:GetItemResponseMessage ResponseClass="Error"><m:MessageText>The specified object was not found in the store.</m:MessageText><m:ResponseCode>ErrorItemNotFound</m:ResponseCode><m:Items/></m:GetItemResponseMessage>
            <m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items>
            <t:CalendarItem><t:ItemId Id="AAMkItem-3=" ChangeKey="CK3"/><t:Subject>Mittagessen</t:Subject><t:Body BodyType="Text"/>
            <t:Start>2026-12-05T10:00:00Z</t:Start><t:End>2026-12-05T11:00:00Z</t:End><t:IsAllDayEvent>true</t:IsAllDayEvent>
            </t:CalendarItem></m:Items></m:GetItemResponseMessage>
            </m:ResponseMessages></m:GetItemResponse></s:Body></s:Envelope>"#
        );
        let Answer::Messages(m) = parse(&items).unwrap() else {
            panic!()
        };
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0].read[0],
            ItemRead {
                id: "AAMkItem-1=".into(),
                uid: Some("xpert-termin-1@livesync".into()),
                stamp: Some("0123abcd".into()),
                subject: Some(" Termin & Co ".into()),
                body: Some("Akt\nmitnehmen".into()),
                location: Some("Kanzlei".into()),
                start: Some("2026-12-04T08:00:00Z".into()),
                end: Some("2026-12-04T09:30:00Z".into()),
                all_day: false,
            }
        );
        assert_eq!(
            m[0].items[0].uid.as_deref(),
            Some("xpert-termin-1@livesync")
        );
        assert_eq!(m[1].code, "ErrorItemNotFound");
        assert!(m[1].read.is_empty());
        let foreign = &m[2].read[0];
        assert_eq!(
            (foreign.uid.as_deref(), foreign.stamp.as_deref()),
            (None, None)
        );
        assert_eq!(foreign.body.as_deref(), Some(""));
        assert_eq!(foreign.location, None);
        assert!(foreign.all_day);
    }

    #[test]
    fn listing_requests_follow_the_schema_order() {
        let header = Header {
            version: "Exchange2016",
            impersonate: Some("m@kanzlei.at"),
        };
        let view = envelope(header, |x| {
            find_calendar_view(x, "F1", "2026-12-03T23:00:00Z", "2036-12-03T23:00:00Z", 200)
        });
        let doc = roxmltree::Document::parse(&view).unwrap();
        let find = doc
            .descendants()
            .find(|n| n.tag_name().name() == "FindItem")
            .unwrap();
        let names: Vec<_> = find
            .children()
            .filter(|c| c.is_element())
            .map(|c| c.tag_name().name())
            .collect();
        assert_eq!(names, ["ItemShape", "CalendarView", "ParentFolderIds"]);
        let cv = child(find, "CalendarView").unwrap();
        assert_eq!(cv.attribute("MaxEntriesReturned"), Some("200"));
        assert_eq!(cv.attribute("StartDate"), Some("2026-12-03T23:00:00Z"));

        let get = envelope(header, |x| get_items(x, &["A=", "B="]));
        let doc = roxmltree::Document::parse(&get).unwrap();
        let shape = doc
            .descendants()
            .find(|n| n.tag_name().name() == "ItemShape")
            .unwrap();
        let names: Vec<_> = shape
            .children()
            .filter(|c| c.is_element())
            .map(|c| c.tag_name().name())
            .collect();
        assert_eq!(names, ["BaseShape", "BodyType", "AdditionalProperties"]);
        let properties: Vec<_> = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "ExtendedFieldURI")
            .filter_map(|n| n.attribute("PropertyName"))
            .collect();
        assert_eq!(properties, [PROPERTY_NAME, HASH_PROPERTY_NAME]);
        assert_eq!(
            doc.descendants()
                .filter(|n| n.tag_name().name() == "ItemId")
                .count(),
            2
        );
    }
}
