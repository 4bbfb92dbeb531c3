//! The requests libdav does not model, as [`DavRequest`]s of our own (MKCALENDAR, a
//! calendar-query for one UID, a plain GET), and reading the answers.

use ::http::{Method, Request, Uri, header, response::Parts};
use libdav::dav::make_relative_url;
use libdav::names;
use libdav::requests::{DavRequest, ParseResponseError, xml_content_type_header};

use crate::ical::CALENDAR_NAME;

/// `MKCALENDAR` (RFC 4791 §5.3.1) with display name "notarXpert", for events only.
pub struct MkCalendar<'a> {
    pub path: &'a str,
}

impl DavRequest for MkCalendar<'_> {
    type Response = ();
    type ParseError = ParseResponseError;
    type Error<E> = libdav::dav::WebDavError<E>;

    fn prepare_request(&self, base_url: Uri) -> Result<Request<String>, ::http::Error> {
        let body = format!(
            concat!(
                r#"<?xml version="1.0" encoding="utf-8"?>"#,
                r#"<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
                r#"<D:set><D:prop><D:displayname>{}</D:displayname>"#,
                r#"<C:supported-calendar-component-set><C:comp name="VEVENT"/>"#,
                r#"</C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#
            ),
            xml_escape(CALENDAR_NAME)
        );
        let (ct_name, ct_value) = xml_content_type_header();
        Request::builder()
            .method(Method::from_bytes(b"MKCALENDAR")?)
            .uri(make_relative_url(base_url, self.path)?)
            .header(ct_name, ct_value)
            .body(body)
    }

    fn parse_response(&self, parts: &Parts, _body: &[u8]) -> Result<(), ParseResponseError> {
        success(parts)
    }
}

/// `REPORT calendar-query` for the objects in a collection whose VEVENT has this UID.
pub struct FindByUid<'a> {
    pub collection: &'a str,
    pub uid: &'a str,
}

/// An object found on the server: its href and, when the server said, its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub href: String,
    pub etag: Option<String>,
}

impl DavRequest for FindByUid<'_> {
    type Response = Vec<Found>;
    type ParseError = ParseResponseError;
    type Error<E> = libdav::dav::WebDavError<E>;

    fn prepare_request(&self, base_url: Uri) -> Result<Request<String>, ::http::Error> {
        calendar_query(
            base_url,
            self.collection,
            r#"<D:getetag/>"#,
            &format!(
                concat!(
                    r#"<C:prop-filter name="UID"><C:text-match collation="i;octet">{}</C:text-match>"#,
                    r#"</C:prop-filter>"#
                ),
                xml_escape(self.uid)
            ),
        )
    }

    fn parse_response(&self, parts: &Parts, body: &[u8]) -> Result<Vec<Found>, ParseResponseError> {
        success(parts)?;
        each_response(body, |response, href| {
            // A response that is only a status (e.g. 404) names nothing that exists.
            if response.children().any(|n| n.tag_name() == names::STATUS)
                && !response.children().any(|n| n.tag_name() == names::PROPSTAT)
            {
                return None;
            }
            Some(Found {
                href,
                etag: etag_of(response),
            })
        })
    }
}

/// `REPORT calendar-query` for every object of a collection with a VEVENT in a time range
/// (RFC 4791 §7.8.1), with its ETag and its data.
pub struct ListObjects<'a> {
    pub collection: &'a str,
    /// `YYYYMMDDTHHMMSSZ`
    pub start: String,
    /// `YYYYMMDDTHHMMSSZ`; open-ended when `None`.
    pub end: Option<String>,
}

/// An object listed with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub href: String,
    pub etag: Option<String>,
    pub data: String,
}

impl DavRequest for ListObjects<'_> {
    type Response = Vec<Listed>;
    type ParseError = ParseResponseError;
    type Error<E> = libdav::dav::WebDavError<E>;

    fn prepare_request(&self, base_url: Uri) -> Result<Request<String>, ::http::Error> {
        let end = self
            .end
            .as_deref()
            .map(|e| format!(r#" end="{}""#, xml_escape(e)))
            .unwrap_or_default();
        calendar_query(
            base_url,
            self.collection,
            r#"<D:getetag/><C:calendar-data/>"#,
            &format!(
                r#"<C:time-range start="{}"{}/>"#,
                xml_escape(&self.start),
                end
            ),
        )
    }

    fn parse_response(
        &self,
        parts: &Parts,
        body: &[u8],
    ) -> Result<Vec<Listed>, ParseResponseError> {
        success(parts)?;
        listed_objects(body)
    }
}

/// The objects of a calendar-query multistatus that carry calendar data.
pub fn listed_objects(body: &[u8]) -> Result<Vec<Listed>, ParseResponseError> {
    each_response(body, |response, href| {
        let data = response
            .descendants()
            .find(|n| n.tag_name() == names::CALENDAR_DATA)
            .map(|n| n.text().unwrap_or_default().to_string())
            .filter(|d| !d.trim().is_empty())?;
        Some(Listed {
            href,
            etag: etag_of(response),
            data,
        })
    })
}

/// A `REPORT calendar-query` (Depth 1) on `collection` for `props` of the objects whose
/// VEVENT matches `event_filter`.
fn calendar_query(
    base_url: Uri,
    collection: &str,
    props: &str,
    event_filter: &str,
) -> Result<Request<String>, ::http::Error> {
    let body = format!(
        concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
            r#"<D:prop>{}</D:prop>"#,
            r#"<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">{}"#,
            r#"</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
        ),
        props, event_filter
    );
    let (ct_name, ct_value) = xml_content_type_header();
    Request::builder()
        .method(Method::from_bytes(b"REPORT")?)
        .uri(make_relative_url(base_url, collection)?)
        .header("Depth", "1")
        .header(ct_name, ct_value)
        .body(body)
}

/// A successful status, or the error naming the status.
fn success(parts: &Parts) -> Result<(), ParseResponseError> {
    if parts.status.is_success() {
        Ok(())
    } else {
        Err(ParseResponseError::BadStatusCode(parts.status))
    }
}

/// What `read` makes of each `response` of a multistatus that has an href (given trimmed);
/// the responses it returns `None` for are left out.
fn each_response<T>(
    body: &[u8],
    mut read: impl FnMut(roxmltree::Node<'_, '_>, String) -> Option<T>,
) -> Result<Vec<T>, ParseResponseError> {
    let text = std::str::from_utf8(body)?;
    let doc = roxmltree::Document::parse(text)?;
    Ok(doc
        .descendants()
        .filter(|n| n.tag_name() == names::RESPONSE)
        .filter_map(|response| {
            let href = child_text(response, &names::HREF)?.trim().to_string();
            read(response, href)
        })
        .collect())
}

/// The ETag a response carries, if it is not empty.
fn etag_of(response: roxmltree::Node<'_, '_>) -> Option<String> {
    response
        .descendants()
        .find(|n| n.tag_name() == names::GETETAG)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// A plain `GET` of one calendar object.
pub struct Fetch<'a> {
    pub href: &'a str,
}

/// A calendar object read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub data: String,
    pub etag: Option<String>,
}

impl DavRequest for Fetch<'_> {
    type Response = Fetched;
    type ParseError = ParseResponseError;
    type Error<E> = libdav::dav::WebDavError<E>;

    fn prepare_request(&self, base_url: Uri) -> Result<Request<String>, ::http::Error> {
        Request::builder()
            .method(Method::GET)
            .uri(make_relative_url(base_url, self.href)?)
            .header(header::ACCEPT, "text/calendar")
            .body(String::new())
    }

    fn parse_response(&self, parts: &Parts, body: &[u8]) -> Result<Fetched, ParseResponseError> {
        success(parts)?;
        Ok(Fetched {
            data: String::from_utf8_lossy(body).into_owned(),
            etag: parts
                .headers
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        })
    }
}

/// What a `PROPFIND Depth: 0` of `resourcetype` says about a collection URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectionState {
    Calendar,
    Missing,
    /// Something exists there, but it is no calendar.
    NotACalendar,
}

/// Read a PROPFIND multistatus (some servers answer 207 with a 404 inside for a missing
/// resource).
pub fn collection_state(body: &[u8]) -> Result<CollectionState, ParseResponseError> {
    let text = std::str::from_utf8(body)?;
    let doc = roxmltree::Document::parse(text)?;
    let mut responses = doc
        .descendants()
        .filter(|n| n.tag_name() == names::RESPONSE)
        .peekable();
    if responses.peek().is_none() {
        return Ok(CollectionState::Missing);
    }
    let mut state = CollectionState::NotACalendar;
    for response in responses {
        let only_status = response
            .children()
            .find(|n| n.tag_name() == names::STATUS)
            .and_then(|n| n.text());
        if only_status.is_some_and(|status| status.contains(" 404")) {
            return Ok(CollectionState::Missing);
        }
        let is_calendar = response
            .descendants()
            .filter(|n| n.tag_name() == names::RESOURCETYPE)
            .any(|rt| rt.children().any(|c| c.tag_name() == names::CALENDAR));
        if is_calendar {
            state = CollectionState::Calendar;
        }
    }
    Ok(state)
}

/// The UID of the (first) VEVENT in an iCalendar object, unfolded.
pub fn object_uid(data: &str) -> Option<String> {
    let unfolded = data
        .replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\n ", "")
        .replace("\n\t", "");
    let mut in_event = false;
    for line in unfolded.lines() {
        let line = line.trim_end_matches('\r');
        if line.eq_ignore_ascii_case("BEGIN:VEVENT") {
            in_event = true;
        } else if in_event {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.split(';').next().unwrap_or(name);
            if name.eq_ignore_ascii_case("UID") {
                return Some(value.to_string());
            }
        }
    }
    None
}

fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &libdav::PropertyName) -> Option<&'a str> {
    node.children()
        .find(|n| n.tag_name() == *name)
        .and_then(|n| n.text())
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_collection_is_seen_in_a_404_or_in_a_multistatus() {
        let xandikos = br#"<ns0:multistatus xmlns:ns0="DAV:"><ns0:response><ns0:href>http://h/u/c/</ns0:href><ns0:status>HTTP/1.1 404 Not Found</ns0:status></ns0:response></ns0:multistatus>"#;
        assert_eq!(
            collection_state(xandikos).unwrap(),
            CollectionState::Missing
        );
        let calendar = br#"<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/u/c/</href><propstat><prop><resourcetype><C:calendar /><collection /></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        assert_eq!(
            collection_state(calendar).unwrap(),
            CollectionState::Calendar
        );
        let plain = br#"<multistatus xmlns="DAV:"><response><href>/u/</href><propstat><prop><resourcetype><collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        assert_eq!(
            collection_state(plain).unwrap(),
            CollectionState::NotACalendar
        );
    }

    #[test]
    fn found_objects_carry_href_and_etag() {
        let body = br#"<multistatus xmlns="DAV:"><response><href>/mmuster/notarxpert/x.ics</href><propstat><prop><getetag>"e1"</getetag></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let (parts, ()) = ::http::Response::builder()
            .status(207)
            .body(())
            .unwrap()
            .into_parts();
        let found = FindByUid {
            collection: "/mmuster/notarxpert/",
            uid: "x",
        }
        .parse_response(&parts, body)
        .unwrap();
        assert_eq!(
            found,
            vec![Found {
                href: "/mmuster/notarxpert/x.ics".into(),
                etag: Some("\"e1\"".into())
            }]
        );
    }

    #[test]
    fn listed_objects_carry_href_etag_and_data() {
        let body = br#"<?xml version="1.0"?>
<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
 <D:response><D:href>/u/cal/a.ics</D:href><D:propstat><D:prop>
  <D:getetag>"e1"</D:getetag><C:calendar-data>BEGIN:VCALENDAR&#13;
END:VCALENDAR&#13;
</C:calendar-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
 <D:response><D:href>/u/cal/</D:href><D:propstat><D:prop><D:getetag/></D:prop>
  <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"#;
        let listed = listed_objects(body).unwrap();
        assert_eq!(listed.len(), 1, "only objects with data");
        assert_eq!(listed[0].href, "/u/cal/a.ics");
        assert_eq!(listed[0].etag.as_deref(), Some("\"e1\""));
        assert_eq!(listed[0].data, "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n");
    }

    #[test]
    fn the_uid_is_read_from_the_event_even_when_folded() {
        let data = "BEGIN:VCALENDAR\r\nUID:not-this\r\nBEGIN:VEVENT\r\nUID:xpert-termin-\r\n 12@livesync\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        assert_eq!(
            object_uid(data).as_deref(),
            Some("xpert-termin-12@livesync")
        );
        assert_eq!(object_uid("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"), None);
    }

    #[test]
    fn the_reports_ask_for_one_uid_or_a_time_range() {
        let base = || Uri::from_static("http://h:1/");
        let find = FindByUid {
            collection: "/mmuster/notarxpert/",
            uid: "a<b",
        }
        .prepare_request(base())
        .unwrap();
        assert_eq!(find.method().as_str(), "REPORT");
        assert_eq!(find.uri().to_string(), "http://h:1/mmuster/notarxpert/");
        assert_eq!(find.headers()["Depth"], "1");
        assert_eq!(
            find.body(),
            concat!(
                r#"<?xml version="1.0" encoding="utf-8"?>"#,
                r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
                r#"<D:prop><D:getetag/></D:prop>"#,
                r#"<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">"#,
                r#"<C:prop-filter name="UID"><C:text-match collation="i;octet">a&lt;b</C:text-match>"#,
                r#"</C:prop-filter></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
            )
        );
        let list = ListObjects {
            collection: "/mmuster/notarxpert/",
            start: "20261201T000000Z".into(),
            end: Some("20270101T000000Z".into()),
        }
        .prepare_request(base())
        .unwrap();
        assert_eq!(list.method().as_str(), "REPORT");
        assert_eq!(list.headers()["Depth"], "1");
        assert_eq!(
            list.body(),
            concat!(
                r#"<?xml version="1.0" encoding="utf-8"?>"#,
                r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">"#,
                r#"<D:prop><D:getetag/><C:calendar-data/></D:prop>"#,
                r#"<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">"#,
                r#"<C:time-range start="20261201T000000Z" end="20270101T000000Z"/>"#,
                r#"</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
            )
        );
    }

    #[test]
    fn mkcalendar_asks_for_an_event_calendar_named_notarxpert() {
        let r = MkCalendar {
            path: "/mmuster/notarxpert/",
        }
        .prepare_request(Uri::from_static("http://h:1/"))
        .unwrap();
        assert_eq!(r.method().as_str(), "MKCALENDAR");
        assert_eq!(r.uri().to_string(), "http://h:1/mmuster/notarxpert/");
        assert!(
            r.body()
                .contains("<D:displayname>notarXpert</D:displayname>")
        );
        assert!(r.body().contains(r#"<C:comp name="VEVENT"/>"#));
    }
}
