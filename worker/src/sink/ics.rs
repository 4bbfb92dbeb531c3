//! The `ics` sink: one iCalendar file per person, `<dir>/<safe name>.ics`.
//!
//! Each file is one VCALENDAR (see [`crate::ical`]) holding every entry the person's
//! calendar has, ordered by UID. A batch is applied as read–modify–replace:
//!
//! 1. take the user's lock: an in-process async mutex (one task at a time) and an advisory
//!    exclusive lock on `<dir>/.<name>.ics.lock` (one process at a time, on this host);
//! 2. read the current file, if any, and split it into VEVENT blocks by UID (it is our own
//!    output; a file that cannot be read back is a [`SinkError::Config`]);
//! 3. apply the changes in order: an upsert replaces the block with that UID or adds one, a
//!    delete removes it and succeeds when it is absent;
//! 4. if anything changed, write `<dir>/.<name>.ics.tmp` (mode 0640), fsync it, rename it
//!    over the file, fsync the directory. A reader sees the old or the new file, never a
//!    mix; a temp file left by a crash is simply overwritten by the next write.
//!
//! Every applied upsert reports `etag` = SHA-256 of its VEVENT block (deletes report
//! nothing). I/O failures make the whole batch [`SinkError::Retryable`]: the batch is one
//! write, so its failure is every change's own (the charging rule of [`crate::sink`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{
    Applied, CalendarOwner, CalendarSink, Change, ListedItem, RenderContext, SinkError, Span,
};
use crate::file_name::{safe_path, sha256_hex};
use crate::ical;

/// Mode of the calendar files: owner writes, group (e.g. the web server) reads.
const FILE_MODE: u32 = 0o640;

/// Writes each person's calendar as a file in one directory.
#[derive(Debug)]
pub struct IcsSink {
    dir: PathBuf,
    /// One async mutex per calendar file, so tasks of this process queue up without
    /// blocking threads on the file lock.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl IcsSink {
    /// Files go into `dir` (`LIVESYNC_ICS_DIR`), created when missing.
    pub fn new(dir: impl Into<PathBuf>) -> IcsSink {
        IcsSink {
            dir: dir.into(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The file that holds `username`'s calendar.
    pub fn path(&self, username: &str) -> PathBuf {
        safe_path(&self.dir, username, "ics")
    }

    fn user_lock(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(path.to_path_buf()).or_default().clone()
    }

    /// Forget the mutex of `path` when no other task holds or waits for it.
    fn release_user_lock(&self, path: &Path, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Ours plus the map's: nobody else.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(path);
        }
    }
}

#[async_trait::async_trait]
impl CalendarSink for IcsSink {
    fn name(&self) -> &'static str {
        "ics"
    }

    async fn apply(
        &self,
        owner: &CalendarOwner,
        changes: &[Change],
        ctx: &RenderContext,
    ) -> Vec<Result<Applied, SinkError>> {
        if changes.is_empty() {
            return Vec::new();
        }
        let path = self.path(&owner.username);
        let lock = self.user_lock(&path);
        let count = changes.len();
        let results = {
            let _guard = lock.lock().await;
            let (dir, file, changes, ctx) = (
                self.dir.clone(),
                path.clone(),
                changes.to_vec(),
                ctx.clone(),
            );
            let task =
                tokio::task::spawn_blocking(move || apply_locked(&dir, &file, &changes, &ctx));
            match task.await {
                Ok(results) => results,
                Err(e) => vec![Err(retryable(&path, "writing failed", &e)); count],
            }
        };
        self.release_user_lock(&path, lock);
        results
    }

    async fn check(&self) -> Result<(), SinkError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || check_dir(&dir))
            .await
            .map_err(|e| SinkError::Config {
                message: format!("checking the ics directory failed: {e}"),
            })?
    }

    /// Every event of the person's file (a missing file holds nothing); duplicate UIDs are
    /// listed as often as they occur. Reads without the lock: the file is only ever
    /// replaced whole.
    async fn list(
        &self,
        owner: &CalendarOwner,
        _span: &Span,
        ctx: &RenderContext,
    ) -> Result<Vec<ListedItem>, SinkError> {
        let path = self.path(&owner.username);
        let zone = ctx.time_zone;
        let read = tokio::task::spawn_blocking(move || list_file(&path, zone)).await;
        read.map_err(|e| SinkError::Retryable {
            message: format!("reading the calendar file failed: {e}"),
            retry_after: None,
        })?
    }
}

fn list_file(path: &Path, zone: chrono_tz::Tz) -> Result<Vec<ListedItem>, SinkError> {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| damaged(path, "not UTF-8"))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(retryable(path, "cannot read", &e)),
    };
    Ok(ical::split_events(&text)
        .map_err(|e| damaged(path, &e))?
        .into_iter()
        .filter_map(|(_, block)| ical::read_event(&block, zone))
        .map(|event| ListedItem {
            remote_id: None,
            event,
        })
        .collect())
}

/// Create the ics directory (and missing parents) readable for the group only, whatever the
/// umask: nobody else may replace a calendar file. An existing directory keeps its mode.
fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// The ics directory exists (or can be created) and takes a new file.
fn check_dir(dir: &Path) -> Result<(), SinkError> {
    let config = |what: &str, e: &dyn std::fmt::Display| SinkError::Config {
        message: format!(
            "ics directory {} (LIVESYNC_ICS_DIR) {what}: {e}",
            dir.display()
        ),
    };
    create_dir(dir).map_err(|e| config("cannot be created", &e))?;
    let probe = dir.join(format!(".livesync-check.{}.tmp", std::process::id()));
    let written = File::create(&probe)
        .and_then(|mut f| f.write_all(b"ok"))
        .map_err(|e| config("is not writable", &e));
    let _ = fs::remove_file(&probe);
    written
}

/// Apply `changes` to the file at `path`; called with the in-process lock held.
fn apply_locked(
    dir: &Path,
    path: &Path,
    changes: &[Change],
    ctx: &RenderContext,
) -> Vec<Result<Applied, SinkError>> {
    match apply_file(dir, path, changes, ctx) {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) => vec![Err(e); changes.len()],
    }
}

fn apply_file(
    dir: &Path,
    path: &Path,
    changes: &[Change],
    ctx: &RenderContext,
) -> Result<Vec<Applied>, SinkError> {
    create_dir(dir).map_err(|e| retryable(dir, "cannot create directory", &e))?;
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(sibling(path, "lock"))
        .map_err(|e| retryable(path, "cannot open lock file", &e))?;
    lock_file
        .lock()
        .map_err(|e| retryable(path, "cannot lock", &e))?;

    let old = match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| damaged(path, "not UTF-8"))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(retryable(path, "cannot read", &e)),
    };
    let mut events: BTreeMap<String, String> = ical::split_events(&old)
        .map_err(|e| damaged(path, &e))?
        .into_iter()
        .collect();

    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        match change {
            Change::Upsert {
                appointment,
                uid,
                sequence,
                ..
            } => {
                let block = ical::render_event(appointment, uid, *sequence, ctx);
                let etag = sha256_hex(block.as_bytes());
                events.insert(uid.clone(), block);
                results.push(Applied {
                    remote_id: None,
                    etag: Some(etag),
                });
            }
            Change::Delete { uid, .. } => {
                events.remove(uid);
                results.push(Applied::default());
            }
        }
    }

    let new = ical::render_calendar(events.values().map(String::as_str));
    if new != old {
        replace(dir, path, new.as_bytes()).map_err(|e| retryable(path, "cannot write", &e))?;
    }
    drop(lock_file); // unlocks
    Ok(results)
}

/// Write `bytes` to a temp file next to `path`, fsync, rename over `path`, fsync `dir`.
fn replace(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = sibling(path, "tmp");
    let written = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&temp)?;
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// `<dir>/.<file name>.<suffix>`: hidden, and never a user's file (those never start with
/// a dot).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{suffix}"))
}

fn retryable(path: &Path, what: &str, e: &dyn std::fmt::Display) -> SinkError {
    SinkError::Retryable {
        message: format!("{}: {what}: {e}", path.display()),
        retry_after: None,
    }
}

fn damaged(path: &Path, why: &str) -> SinkError {
    SinkError::Config {
        message: format!(
            "calendar file {} cannot be read back ({why}); an admin must repair or remove it",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::sink::{Appointment, RemoteRef};

    fn ctx() -> RenderContext {
        RenderContext {
            time_zone: chrono_tz::Europe::Vienna,
        }
    }

    fn owner(name: &str) -> CalendarOwner {
        CalendarOwner {
            user_id: 1,
            username: name.into(),
            calendar_address: None,
        }
    }

    fn upsert(id: i64, subject: &str, sequence: i32) -> Change {
        let start =
            Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap() + chrono::Duration::hours(id);
        Change::Upsert {
            appointment: Appointment {
                id,
                subject: Some(subject.into()),
                location: None,
                notes: Some("Notiz".into()),
                starts_at: start,
                ends_at: start + chrono::Duration::minutes(30),
                all_day: false,
                updated_at: start,
            },
            uid: format!("xpert-{id}@livesync"),
            sequence,
            previous: None,
        }
    }

    fn delete(id: i64) -> Change {
        Change::Delete {
            appointment_id: id,
            uid: format!("xpert-{id}@livesync"),
            previous: RemoteRef::default(),
        }
    }

    /// (UID, SUMMARY) of each event, read with the independent `ical` parser.
    fn events(path: &Path) -> Vec<(String, String)> {
        let text = fs::read_to_string(path).unwrap();
        let mut parser = ::ical::IcalParser::new(BufReader::new(text.as_bytes()));
        let calendar = parser.next().unwrap().unwrap();
        let value = |e: &::ical::parser::ical::component::IcalEvent, name: &str| {
            e.properties
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.value.clone())
                .unwrap_or_default()
        };
        calendar
            .events
            .iter()
            .map(|e| (value(e, "UID"), value(e, "SUMMARY")))
            .collect()
    }

    fn pair(uid_id: i64, summary: &str) -> (String, String) {
        (format!("xpert-{uid_id}@livesync"), summary.to_owned())
    }

    #[tokio::test]
    async fn create_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let sink = IcsSink::new(dir.path().join("ics"));
        sink.check().await.unwrap();
        let me = owner("mmuster");
        let path = sink.path("mmuster");
        assert_eq!(path, dir.path().join("ics/mmuster.ics"));

        let r = sink
            .apply(&me, &[upsert(1, "Eins", 0), upsert(2, "Zwei", 0)], &ctx())
            .await;
        assert_eq!(r.len(), 2);
        let etag1 = r[0].clone().unwrap().etag.unwrap();
        assert_eq!(etag1.len(), 64);
        assert_eq!(r[0].clone().unwrap().remote_id, None);
        assert_eq!(events(&path), vec![pair(1, "Eins"), pair(2, "Zwei")]);

        let r = sink.apply(&me, &[upsert(1, "Eins neu", 1)], &ctx()).await;
        assert_ne!(r[0].clone().unwrap().etag.unwrap(), etag1);
        assert_eq!(events(&path), vec![pair(1, "Eins neu"), pair(2, "Zwei")]);
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .contains("SEQUENCE:1\r\n")
        );

        let r = sink.apply(&me, &[delete(2), delete(3)], &ctx()).await;
        assert_eq!(r, vec![Ok(Applied::default()), Ok(Applied::default())]);
        assert_eq!(events(&path), vec![pair(1, "Eins neu")]);

        // In order within a batch: upsert then delete leaves nothing.
        sink.apply(&me, &[upsert(4, "Vier", 0), delete(4), delete(1)], &ctx())
            .await;
        assert_eq!(events(&path), vec![]);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("X-WR-CALNAME:notarXpert\r\n"));
        assert!(sink.apply(&me, &[], &ctx()).await.is_empty());
    }

    #[tokio::test]
    async fn re_applying_a_batch_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sink = IcsSink::new(dir.path());
        let me = owner("a");
        let batch = [upsert(1, "Eins", 0), upsert(2, "Zwei", 3), delete(7)];
        let first = sink.apply(&me, &batch, &ctx()).await;
        let bytes = fs::read(sink.path("a")).unwrap();
        let second = sink.apply(&me, &batch, &ctx()).await;
        assert_eq!(first, second);
        assert_eq!(fs::read(sink.path("a")).unwrap(), bytes);
        assert_eq!(events(&sink.path("a")).len(), 2);
    }

    #[test]
    fn a_created_directory_gives_others_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("kanzlei").join("kalender");
        check_dir(&nested).unwrap();
        for d in [nested.as_path(), nested.parent().unwrap()] {
            let mode = fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o027, 0, "{} is {mode:o}", d.display());
        }
    }

    #[tokio::test]
    async fn files_are_0640_and_users_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let sink = IcsSink::new(dir.path());
        for name in ["a/b", "a_b", "../x", ""] {
            sink.apply(&owner(name), &[upsert(1, "Termin", 0)], &ctx())
                .await;
            let path = sink.path(name);
            assert_eq!(path.parent(), Some(dir.path()));
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, FILE_MODE, "{name:?}");
            assert_eq!(events(&path), vec![pair(1, "Termin")]);
        }
        let visible = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(visible, 4);
        assert!(!dir.path().parent().unwrap().join("x.ics").exists());
    }

    #[tokio::test]
    async fn a_temp_file_left_by_a_crash_does_not_break_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let sink = IcsSink::new(dir.path());
        let me = owner("mmuster");
        sink.apply(&me, &[upsert(1, "Eins", 0)], &ctx()).await;
        let path = sink.path("mmuster");
        // A writer died after writing half a temp file, holding no lock any more.
        fs::write(sibling(&path, "tmp"), "BEGIN:VCALENDAR\r\nBEGIN:VEV").unwrap();
        fs::set_permissions(sibling(&path, "tmp"), fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            events(&path),
            vec![pair(1, "Eins")],
            "the file itself is intact"
        );
        sink.apply(&me, &[upsert(2, "Zwei", 0)], &ctx()).await;
        assert_eq!(events(&path), vec![pair(1, "Eins"), pair(2, "Zwei")]);
        assert!(!sibling(&path, "tmp").exists());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
    }

    #[tokio::test]
    async fn a_damaged_file_is_a_config_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sink = IcsSink::new(dir.path());
        let path = sink.path("u");
        fs::write(&path, "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n").unwrap();
        let r = sink
            .apply(&owner("u"), &[upsert(1, "Eins", 0)], &ctx())
            .await;
        assert!(matches!(&r[0], Err(SinkError::Config { message }) if message.contains("u.ics")));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n"
        );
    }

    #[tokio::test]
    async fn io_errors_are_retryable_and_check_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("plain-file");
        fs::write(&blocker, "").unwrap();
        let sink = IcsSink::new(blocker.join("ics"));
        let r = sink
            .apply(&owner("u"), &[upsert(1, "Eins", 0), delete(2)], &ctx())
            .await;
        assert_eq!(r.len(), 2);
        assert!(
            r.iter()
                .all(|r| matches!(r, Err(SinkError::Retryable { .. })))
        );
        match sink.check().await {
            Err(SinkError::Config { message }) => {
                assert!(message.contains("plain-file/ics"), "{message}");
                assert!(message.contains("LIVESYNC_ICS_DIR"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_applies_for_one_user_leave_a_consistent_file() {
        let dir = tempfile::tempdir().unwrap();
        // Two sinks on one directory stand for two worker processes (only the file lock
        // serialises them); two tasks on the first sink share its in-process lock.
        let a = Arc::new(IcsSink::new(dir.path()));
        let b = Arc::new(IcsSink::new(dir.path()));
        let mut tasks = Vec::new();
        for (n, sink) in [a.clone(), a.clone(), b.clone()].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for i in 0..30 {
                    let id = (n as i64) * 1000 + i;
                    let r = sink
                        .apply(&owner("shared"), &[upsert(id, "x", 0)], &ctx())
                        .await;
                    assert!(r[0].is_ok(), "{r:?}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let got = events(&a.path("shared"));
        assert_eq!(got.len(), 90);
        let mut uids: Vec<_> = got.into_iter().map(|(u, _)| u).collect();
        uids.dedup();
        assert_eq!(uids.len(), 90);
        assert!(a.locks.lock().unwrap().is_empty(), "lock map cleaned up");
    }
}
