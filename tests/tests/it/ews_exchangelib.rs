//! Is the EWS fake faithful? exchangelib (PyPI), a mature EWS client written by others,
//! talks to it: its requests must pass the fake's schema-order and contract checks, and it
//! must read the fake's answers. (The EWS sink is checked against the same fake.)

use std::process::Stdio;

use livesync_worker::sink::CalendarSink;
use livesync_worker::sink::ews::EwsSink;
use livesync_worker::sink::ews::item::{PROPERTY_NAME, PROPERTY_SET_ID};

use crate::ews::settings;
use crate::mailbox_support::{MAILBOX, batch, owner, uid, vienna};
use livesync_testkit::ews_fake::{FakeEws, PASSWORD, USER};

const CLIENT: &str = r#"
import sys
from datetime import datetime, timezone
from exchangelib import (Account, BASIC, Build, CalendarItem, Configuration, Credentials,
    EWSDateTime, EWSTimeZone, ExtendedProperty, IMPERSONATION, Version)
from exchangelib.folders import Calendar

url, user, password, mailbox, folder_id, set_id, name, existing_uid = sys.argv[1:9]

class XpertUid(ExtendedProperty):
    property_set_id = set_id
    property_name = name
    property_type = "String"

CalendarItem.register("xpert_uid", XpertUid)
config = Configuration(service_endpoint=url, credentials=Credentials(user, password),
                       auth_type=BASIC, version=Version(build=Build(15, 1, 2507)))
account = Account(primary_smtp_address=mailbox, config=config, autodiscover=False,
                  access_type=IMPERSONATION, default_timezone=EWSTimeZone("Europe/Vienna"))
folder = Calendar(root=account.root, id=folder_id, changekey="AgAAAA==")
tz = EWSTimeZone("Europe/Vienna")

# What the sink stored, found by exchangelib through the property.
found = list(folder.filter(xpert_uid=existing_uid).only("id", "changekey", "xpert_uid"))
assert len(found) == 1, found
assert found[0].xpert_uid == existing_uid, found[0].xpert_uid

item = CalendarItem(account=account, folder=folder, subject="exchangelib <&> Termin",
                    body="Notiz", location="Saal 1",
                    start=EWSDateTime(2026, 12, 4, 9, 0, tzinfo=tz),
                    end=EWSDateTime(2026, 12, 4, 10, 0, tzinfo=tz),
                    xpert_uid="exchangelib-1")
item.save(send_meeting_invitations="SendToNone")
print("created", item.id, item.changekey)
again = list(folder.filter(xpert_uid="exchangelib-1").only("id", "changekey"))
assert [i.id for i in again] == [item.id], again
item.subject = "exchangelib geändert"
item.save(update_fields=["subject"], send_meeting_invitations="SendToNone",
          conflict_resolution="AlwaysOverwrite")
print("updated", item.changekey)
item.delete(send_meeting_cancellations="SendToNone")
print("deleted")
"#;

#[tokio::test]
async fn exchangelib_talks_to_the_fake() {
    let python = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let has = std::process::Command::new(&python)
        .args(["-c", "import exchangelib"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has,
        "{} with exchangelib is missing: run scripts/caldav-venv.sh",
        python.display()
    );
    let fake = FakeEws::start().await;
    let sink = EwsSink::new(&settings(&fake)).unwrap();
    let r = sink.apply(&owner(), &batch(1..=1), &vienna()).await;
    assert!(r[0].is_ok(), "{r:?}");
    let folder = fake.folders(MAILBOX)[0].0.clone();
    let out = tokio::process::Command::new(&python)
        .args(["-c", CLIENT])
        .arg(&fake.url)
        .arg(USER)
        .arg(PASSWORD)
        .arg(MAILBOX)
        .arg(&folder)
        .arg(PROPERTY_SET_ID)
        .arg(PROPERTY_NAME)
        .arg(uid(1))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let refused: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.code.starts_with("Error"))
        .map(|r| (r.operation, r.code, r.body))
        .collect();
    assert!(out.status.success(), "{text}\nrefused: {refused:#?}");
    assert!(text.contains("deleted"), "{text}");
    assert!(refused.is_empty(), "{refused:#?}");
    let created = fake
        .requests_of("CreateItem")
        .into_iter()
        .find(|r| {
            r.header("user-agent")
                .is_some_and(|a| a.contains("exchangelib"))
        })
        .expect("exchangelib's CreateItem");
    // The sink writes its fields in the order exchangelib writes them.
    let theirs = created.children("CalendarItem");
    let mut ours = fake.requests_of("CreateItem")[0].children("CalendarItem");
    // The order of the kinds of field: several ExtendedProperty elements (the UID and the
    // stamp) stand where exchangelib writes its one.
    ours.dedup();
    let mut rest = theirs.iter();
    assert!(
        ours.iter().all(|field| rest.any(|t| t == field)),
        "the sink's order {ours:?} differs from exchangelib's {theirs:?}"
    );
    assert_eq!(
        fake.requests_of("UpdateItem")
            .last()
            .unwrap()
            .attr("UpdateItem", "ConflictResolution")
            .as_deref(),
        Some("AlwaysOverwrite")
    );
    let ops: Vec<String> = fake.requests().into_iter().map(|r| r.operation).collect();
    assert!(
        ops.contains(&"UpdateItem".to_string()) && ops.contains(&"DeleteItem".to_string()),
        "{ops:?}"
    );
    assert_eq!(
        fake.items(MAILBOX).len(),
        1,
        "the sink's item stays, exchangelib's is gone"
    );
}
