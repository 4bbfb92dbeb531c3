//! Reading iCalendar text back, with the `ical` crate: the events of one or more
//! VCALENDAR objects, each with its properties (value unescaped, parameters kept).
//!
//! Lines are unfolded first (RFC 5545: a line break followed by one blank or tab goes):
//! the `ical` crate trims blanks at the end of each folded piece, and servers fold where
//! they like.

use std::collections::BTreeMap;
use std::io::BufReader;

/// A property's parameters, as `(name, values)`.
pub type Params = Vec<(String, Vec<String>)>;

/// One VEVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Property name → (value as written, parameters). The last one wins when a property
    /// occurs twice.
    pub props: BTreeMap<String, (String, Params)>,
}

impl Event {
    /// A property's value as written (escapes kept).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.props.get(name).map(|(v, _)| v.as_str())
    }

    /// A text property's value with RFC 5545 escapes undone (`\,` `\;` `\\` `\n`).
    pub fn text(&self, name: &str) -> Option<String> {
        self.raw(name).map(unescape)
    }

    pub fn uid(&self) -> Option<&str> {
        self.raw("UID")
    }

    pub fn summary(&self) -> Option<String> {
        self.text("SUMMARY")
    }

    /// A property's parameter value (`DTSTART;VALUE=DATE` → `param("DTSTART", "VALUE")`).
    pub fn param(&self, name: &str, param: &str) -> Option<&str> {
        self.props.get(name).and_then(|(_, params)| {
            params
                .iter()
                .find(|(p, _)| p == param)
                .and_then(|(_, v)| v.first().map(String::as_str))
        })
    }
}

/// RFC 5545 unfolding.
pub fn unfold(data: &str) -> String {
    data.replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\n ", "")
        .replace("\n\t", "")
}

/// Undo RFC 5545 text escapes.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') | Some('N') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every VEVENT of every VCALENDAR in `text`; an error names what did not parse.
pub fn events(text: &str) -> Result<Vec<Event>, String> {
    let data = unfold(text);
    let mut out = Vec::new();
    for calendar in ical::IcalParser::new(BufReader::new(data.as_bytes())) {
        let calendar = calendar.map_err(|e| format!("unreadable iCalendar: {e}"))?;
        for event in calendar.events {
            let props = event
                .properties
                .into_iter()
                .map(|p| {
                    (
                        p.name,
                        (p.value.unwrap_or_default(), p.params.unwrap_or_default()),
                    )
                })
                .collect();
            out.push(Event { props });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_folded_escaped_events_of_several_calendars() {
        let text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a@x\r\n\
                    SUMMARY:Besprechung\\, Zimmer 2\\;\r\n  spät\r\nDTSTART;VALUE=DATE:20261203\r\n\
                    END:VEVENT\r\nEND:VCALENDAR\r\nBEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:b@x\r\n\
                    END:VEVENT\r\nEND:VCALENDAR\r\n";
        let events = events(text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].uid(), Some("a@x"));
        assert_eq!(
            events[0].summary().as_deref(),
            Some("Besprechung, Zimmer 2; spät")
        );
        assert_eq!(events[0].param("DTSTART", "VALUE"), Some("DATE"));
        assert_eq!(events[1].summary(), None);
    }
}
