//! The comparison: what Xpert says a person's calendar should hold against what it holds.
//! Pure; no database, no sink.
//!
//! Every listed item and every expected appointment ends in exactly one [`Finding`]:
//!
//! | state       | when                                                                    |
//! | ----------- | ----------------------------------------------------------------------- |
//! | `ok`        | ours, expected, and its content hash is the expected one                |
//! | `missing`   | expected, and no item of the calendar has its UID                       |
//! | `orphan`    | ours (livesync's UID), but not an appointment of this person in Xpert   |
//! | `drifted`   | ours and expected, but what it says differs from what Xpert says now    |
//! | `duplicate` | a further item for an appointment already found                         |
//! | `foreign`   | not written by livesync (no UID of ours): never touched                 |
//!
//! An appointment found more than once counts once as `ok` (the first copy whose content
//! is right) or `drifted` / `orphan` (the first copy); every other copy is a `duplicate`.
//!
//! Content is compared by [`crate::ical::content_hash`]: the hash of what the item says
//! now, computed from the item itself, against the hash of what Xpert says. The item's
//! stamp (the hash livesync wrote into it) tells why an item drifted: changed in the
//! calendar (the content no longer matches its stamp) or changed in Xpert since (the stamp
//! is not the expected hash). Items written before the stamp existed have none and are
//! compared by their content alone.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::flush::{UID_PREFIX, UID_SUFFIX};

/// What one item, or one expected appointment, was found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ok,
    Missing,
    Orphan,
    Drifted,
    Duplicate,
    Foreign,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Ok,
        State::Missing,
        State::Orphan,
        State::Drifted,
        State::Duplicate,
        State::Foreign,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Missing => "missing",
            State::Orphan => "orphan",
            State::Drifted => "drifted",
            State::Duplicate => "duplicate",
            State::Foreign => "foreign",
        }
    }

    /// Everything but `ok` and `foreign` is a problem.
    pub fn is_problem(self) -> bool {
        !matches!(self, State::Ok | State::Foreign)
    }
}

/// An appointment the calendar should hold, as Xpert says it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub appointment_id: i64,
    /// The content hash of the event livesync would write now.
    pub hash: String,
    pub summary: String,
}

/// An item the calendar holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub uid: Option<String>,
    /// The sink's id of the item (CalDAV href, Graph event id).
    pub remote_id: Option<String>,
    /// The content hash of what it says now; `None` when it could not be read.
    pub hash: Option<String>,
    /// The stamp livesync wrote into it, if any.
    pub stamp: Option<String>,
    pub summary: Option<String>,
}

/// One line of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub state: State,
    /// The appointment, for everything but foreign items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appointment_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    pub summary: String,
    /// Why it drifted, when the stamp tells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
}

/// The appointment id in one of livesync's UIDs (`xpert-termin-<id>@livesync`).
pub fn our_appointment(uid: &str) -> Option<i64> {
    let digits = uid.strip_prefix(UID_PREFIX)?.strip_suffix(UID_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Compare; findings come for the held items in their order, then the missing ones in
/// appointment order.
pub fn compare(expected: &[Expected], held: &[Held]) -> Vec<Finding> {
    let wanted: HashMap<i64, &Expected> = expected.iter().map(|e| (e.appointment_id, e)).collect();
    // Per appointment of ours, the indexes of its copies in `held`.
    let mut copies: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, item) in held.iter().enumerate() {
        if let Some(id) = item.uid.as_deref().and_then(our_appointment) {
            copies.entry(id).or_default().push(i);
        }
    }
    // The copy that counts for each appointment: the first with the right content, else
    // the first.
    let keeper: HashMap<i64, usize> = copies
        .iter()
        .map(|(id, indexes)| {
            let right = wanted.get(id).and_then(|e| {
                indexes
                    .iter()
                    .copied()
                    .find(|&i| held[i].hash.as_deref() == Some(e.hash.as_str()))
            });
            (*id, right.unwrap_or(indexes[0]))
        })
        .collect();

    let mut findings = Vec::with_capacity(held.len() + expected.len());
    for (i, item) in held.iter().enumerate() {
        let summary = item.summary.clone().unwrap_or_default();
        let Some(id) = item.uid.as_deref().and_then(our_appointment) else {
            findings.push(Finding {
                state: State::Foreign,
                appointment_id: None,
                uid: item.uid.clone(),
                remote_id: item.remote_id.clone(),
                summary,
                detail: None,
            });
            continue;
        };
        let (state, detail) = if keeper.get(&id) != Some(&i) {
            (State::Duplicate, None)
        } else {
            match wanted.get(&id) {
                None => (State::Orphan, None),
                Some(e) if item.hash.as_deref() == Some(e.hash.as_str()) => (State::Ok, None),
                Some(e) => (State::Drifted, Some(why_drifted(item, e))),
            }
        };
        findings.push(Finding {
            state,
            appointment_id: Some(id),
            uid: item.uid.clone(),
            remote_id: item.remote_id.clone(),
            summary,
            detail,
        });
    }
    let mut missing: Vec<&Expected> = expected
        .iter()
        .filter(|e| !copies.contains_key(&e.appointment_id))
        .collect();
    missing.sort_by_key(|e| e.appointment_id);
    missing.dedup_by_key(|e| e.appointment_id);
    findings.extend(missing.into_iter().map(|e| Finding {
        state: State::Missing,
        appointment_id: Some(e.appointment_id),
        uid: Some(crate::flush::uid_for(e.appointment_id)),
        remote_id: None,
        summary: e.summary.clone(),
        detail: None,
    }));
    findings
}

fn why_drifted(item: &Held, expected: &Expected) -> &'static str {
    match (&item.hash, &item.stamp) {
        (None, _) => "its times cannot be read",
        (Some(_), None) => "written before the stamp; its content differs",
        (Some(hash), Some(stamp)) if hash != stamp => "changed in the calendar",
        (Some(_), Some(stamp)) if *stamp != expected.hash => "changed in Xpert since",
        _ => "differs",
    }
}

/// The appointments whose recorded item a repair must not trust: `missing` ones (the
/// calendar does not hold the item where livesync recorded it; an item deleted in Outlook
/// may still answer to its Graph id from Deleted Items) and those found more than once.
/// Their repair looks the item up by its identity in the calendar instead.
pub fn not_where_recorded(findings: &[Finding]) -> Vec<i64> {
    let mut ids: Vec<i64> = findings
        .iter()
        .filter(|f| matches!(f.state, State::Missing | State::Duplicate))
        .filter_map(|f| f.appointment_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// How many findings are in each state, every state named (zero included).
pub fn totals<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> BTreeMap<State, usize> {
    let mut totals: BTreeMap<State, usize> = State::ALL.iter().map(|s| (*s, 0)).collect();
    for f in findings {
        *totals.entry(f.state).or_default() += 1;
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flush::uid_for;

    fn expected(id: i64, hash: &str) -> Expected {
        Expected {
            appointment_id: id,
            hash: hash.into(),
            summary: format!("Termin {id}"),
        }
    }

    fn held(uid: &str, hash: &str, stamp: Option<&str>) -> Held {
        Held {
            uid: Some(uid.into()),
            remote_id: Some(format!("/cal/{uid}.ics")),
            hash: Some(hash.into()),
            stamp: stamp.map(str::to_string),
            summary: Some("x".into()),
        }
    }

    fn states(findings: &[Finding]) -> Vec<(Option<i64>, State)> {
        findings
            .iter()
            .map(|f| (f.appointment_id, f.state))
            .collect()
    }

    #[test]
    fn only_livesyncs_uids_are_ours() {
        assert_eq!(our_appointment(&uid_for(42)), Some(42));
        assert_eq!(our_appointment("xpert-termin-42@elsewhere"), None);
        assert_eq!(our_appointment("xpert-termin-@livesync"), None);
        assert_eq!(our_appointment("xpert-termin--4@livesync"), None);
        assert_eq!(our_appointment("xpert-termin-4x@livesync"), None);
        assert_eq!(our_appointment("042B1F@google.com"), None);
    }

    #[test]
    fn a_calendar_that_equals_xpert_is_all_ok() {
        let f = compare(
            &[expected(1, "a"), expected(2, "b")],
            &[
                held(&uid_for(2), "b", Some("b")),
                held(&uid_for(1), "a", None),
            ],
        );
        assert_eq!(states(&f), [(Some(2), State::Ok), (Some(1), State::Ok)]);
        assert!(f.iter().all(|f| !f.state.is_problem()));
    }

    #[test]
    fn every_state_is_found() {
        let f = compare(
            &[expected(1, "a"), expected(2, "b"), expected(3, "c")],
            &[
                held(&uid_for(1), "a", Some("a")),
                held(&uid_for(2), "edited", Some("b")),
                held(&uid_for(9), "z", Some("z")),
                held("someone-else@example.com", "f", None),
            ],
        );
        assert_eq!(
            states(&f),
            [
                (Some(1), State::Ok),
                (Some(2), State::Drifted),
                (Some(9), State::Orphan),
                (None, State::Foreign),
                (Some(3), State::Missing),
            ]
        );
        assert_eq!(f[1].detail, Some("changed in the calendar"));
        assert_eq!(f[4].uid.as_deref(), Some(uid_for(3).as_str()));
        assert_eq!(f[4].summary, "Termin 3");
        let totals = totals(&f);
        assert_eq!(totals.len(), 6);
        assert_eq!(totals[&State::Duplicate], 0);
        assert_eq!(totals[&State::Missing], 1);
    }

    #[test]
    fn an_appointment_found_twice_counts_once_and_the_copy_is_a_duplicate() {
        // The right copy is the one that counts, wherever it is.
        let f = compare(
            &[expected(1, "a")],
            &[
                held(&uid_for(1), "old", Some("old")),
                held(&uid_for(1), "a", Some("a")),
            ],
        );
        assert_eq!(
            states(&f),
            [(Some(1), State::Duplicate), (Some(1), State::Ok)]
        );
        // Both wrong: the first counts as drifted.
        let f = compare(
            &[expected(1, "a")],
            &[
                held(&uid_for(1), "x", Some("a")),
                held(&uid_for(1), "y", Some("a")),
                held(&uid_for(1), "y", Some("a")),
            ],
        );
        assert_eq!(
            states(&f),
            [
                (Some(1), State::Drifted),
                (Some(1), State::Duplicate),
                (Some(1), State::Duplicate)
            ]
        );
        // An orphan found twice: one orphan, one duplicate.
        let f = compare(
            &[],
            &[held(&uid_for(5), "x", None), held(&uid_for(5), "x", None)],
        );
        assert_eq!(
            states(&f),
            [(Some(5), State::Orphan), (Some(5), State::Duplicate)]
        );
    }

    #[test]
    fn the_stamp_says_why_an_item_drifted() {
        let why = |item: Held| compare(&[expected(1, "new")], &[item])[0].detail;
        assert_eq!(
            why(held(&uid_for(1), "old", Some("old"))),
            Some("changed in Xpert since")
        );
        assert_eq!(
            why(held(&uid_for(1), "edited", Some("new"))),
            Some("changed in the calendar")
        );
        assert_eq!(
            why(held(&uid_for(1), "old", None)),
            Some("written before the stamp; its content differs")
        );
        let unreadable = Held {
            hash: None,
            ..held(&uid_for(1), "", None)
        };
        assert_eq!(why(unreadable), Some("its times cannot be read"));
    }

    #[test]
    fn missing_and_duplicated_appointments_are_not_where_recorded() {
        let f = compare(
            &[expected(1, "a"), expected(2, "b"), expected(3, "c")],
            &[
                held(&uid_for(1), "a", Some("a")),
                held(&uid_for(1), "a", Some("a")),
                held(&uid_for(2), "x", Some("b")),
                held("someone-else@example.com", "f", None),
            ],
        );
        assert_eq!(not_where_recorded(&f), [1, 3]);
    }

    #[test]
    fn an_item_without_uid_is_foreign_and_nothing_matches_it() {
        let item = Held {
            uid: None,
            ..held("", "a", None)
        };
        let f = compare(&[expected(1, "a")], &[item]);
        assert_eq!(
            states(&f),
            [(None, State::Foreign), (Some(1), State::Missing)]
        );
    }
}
