//! Per-user log files ("Logfile für Live Synchronisation führen").
//!
//! For users with `keep_logfile` on, every sync action goes as one readable line into
//! `$LIVESYNC_LOG_DIR/<safe name>.log`:
//!
//! ```text
//! 2026-11-29T10:15:03+01:00 delivered appointment 42 "Verhandlung" (seq 2)
//! 2026-11-29T10:16:00+01:00 deleted appointment 42
//! 2026-11-29T10:17:00+01:00 retrying appointment 43 in 30s (next attempt 2026-11-29T10:17:30+01:00): temporary failure: timeout
//! 2026-11-29T10:20:00+01:00 dead-lettered appointment 44: rejected: bad object
//! ```
//!
//! The file name comes from [`crate::file_name::safe_path`], so no user name can leave the
//! directory. Files are created `0600`, the directory (when we create it) `0700`. When a
//! file would grow past `max_bytes` it is renamed to `<name>.log.1` (replacing the older
//! one) and a new file is started. Writing never panics and never fails a delivery: errors
//! are returned for the caller to log.
//!
//! Appends are single `write` calls on an `O_APPEND` file, so lines from several worker
//! processes do not interleave; two processes rotating the same file at the same moment
//! may lose one old file's worth of lines, which the size cap accepts.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Local, Utc};

use crate::file_name::safe_path;

/// Longest subject or error text written into a line, in characters.
const MAX_FIELD_CHARS: usize = 300;

/// One sync action, as it goes into the user's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAction {
    Delivered {
        appointment_id: i64,
        subject: String,
        sequence: i32,
    },
    Deleted {
        appointment_id: i64,
    },
    Retried {
        appointment_id: i64,
        error: String,
        retry_in: Duration,
    },
    DeadLettered {
        appointment_id: i64,
        error: String,
    },
}

/// The per-user log files in one directory.
#[derive(Debug)]
pub struct UserLogs {
    dir: PathBuf,
    max_bytes: u64,
    time_zone: Option<chrono_tz::Tz>,
    /// Serialises rotation and appends within this process.
    lock: Mutex<()>,
}

impl UserLogs {
    /// Log files go into `dir` (created on first write); a file is rotated once it would
    /// exceed `max_bytes` (at least 1 KiB is used).
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> UserLogs {
        UserLogs {
            dir: dir.into(),
            max_bytes: max_bytes.max(1024),
            time_zone: None,
            lock: Mutex::new(()),
        }
    }

    /// Write times in this zone (the firm's) instead of the machine's local zone.
    pub fn with_time_zone(mut self, time_zone: chrono_tz::Tz) -> UserLogs {
        self.time_zone = Some(time_zone);
        self
    }

    /// The file a user's lines go to.
    pub fn path(&self, username: &str) -> PathBuf {
        safe_path(&self.dir, username, "log")
    }

    /// Append one line for `action`, stamped now.
    pub fn write(&self, username: &str, action: &UserAction) -> io::Result<()> {
        let line = self.format(Utc::now(), action);
        self.write_line(username, &line)
    }

    /// Append one line for `action`, stamped now in `time_zone` (the firm's zone from
    /// `livesync.settings`, when the caller has it at hand).
    pub fn write_in(
        &self,
        username: &str,
        time_zone: chrono_tz::Tz,
        action: &UserAction,
    ) -> io::Result<()> {
        let line = format_line(Utc::now(), Some(time_zone), action);
        self.write_line(username, &line)
    }

    /// `<time> <action>` as it goes into the file (without the line end).
    pub fn format(&self, at: DateTime<Utc>, action: &UserAction) -> String {
        format_line(at, self.time_zone, action)
    }

    /// Append `line` (made one line: line breaks and control characters become blanks)
    /// to the user's file, rotating it first when it would grow past the limit.
    pub fn write_line(&self, username: &str, line: &str) -> io::Result<()> {
        let mut bytes: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        bytes.push('\n');
        let path = self.path(username);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        ensure_dir(&self.dir)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.len() > 0 && meta.len() + bytes.len() as u64 > self.max_bytes => {
                fs::rename(&path, rotated(&path))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let meta = file.metadata()?;
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(bytes.as_bytes())
    }
}

/// `<time> <action>`; times in `time_zone`, or the machine's zone when `None`.
pub fn format_line(
    at: DateTime<Utc>,
    time_zone: Option<chrono_tz::Tz>,
    action: &UserAction,
) -> String {
    let stamp = |t: DateTime<Utc>| match time_zone {
        Some(tz) => t
            .with_timezone(&tz)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        None => t
            .with_timezone(&Local)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    };
    let text = match action {
        UserAction::Delivered {
            appointment_id,
            subject,
            sequence,
        } => format!(
            "delivered appointment {appointment_id} \"{}\" (seq {sequence})",
            field(subject).replace('"', "'")
        ),
        UserAction::Deleted { appointment_id } => {
            format!("deleted appointment {appointment_id}")
        }
        UserAction::Retried {
            appointment_id,
            error,
            retry_in,
        } => {
            let next = chrono::Duration::from_std(*retry_in)
                .ok()
                .and_then(|d| at.checked_add_signed(d))
                .map(stamp)
                .unwrap_or_else(|| "unknown".to_owned());
            format!(
                "retrying appointment {appointment_id} in {} (next attempt {next}): {}",
                human(*retry_in),
                field(error)
            )
        }
        UserAction::DeadLettered {
            appointment_id,
            error,
        } => format!(
            "dead-lettered appointment {appointment_id}: {}",
            field(error)
        ),
    };
    format!("{} {text}", stamp(at))
}

/// `<name>.log.1`
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// One line's worth of a free text: blanks for line breaks, at most [`MAX_FIELD_CHARS`].
fn field(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_FIELD_CHARS)
        .collect();
    if text.chars().nth(MAX_FIELD_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// `45s`, `5m`, `2h 3m`, `1d 2h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 9, 15, 3).unwrap()
    }

    fn logs(dir: &Path, max: u64) -> UserLogs {
        UserLogs::new(dir, max).with_time_zone(chrono_tz::Europe::Vienna)
    }

    #[test]
    fn lines_read_well() {
        let l = logs(Path::new("/nonexistent"), 1 << 20);
        let delivered = UserAction::Delivered {
            appointment_id: 42,
            subject: "Verhandlung".into(),
            sequence: 2,
        };
        assert_eq!(
            l.format(at(), &delivered),
            "2026-11-29T10:15:03+01:00 delivered appointment 42 \"Verhandlung\" (seq 2)"
        );
        assert_eq!(
            l.format(at(), &UserAction::Deleted { appointment_id: 7 }),
            "2026-11-29T10:15:03+01:00 deleted appointment 7"
        );
        let retried = UserAction::Retried {
            appointment_id: 43,
            error: "temporary failure:\ntimeout".into(),
            retry_in: Duration::from_secs(90),
        };
        assert_eq!(
            l.format(at(), &retried),
            "2026-11-29T10:15:03+01:00 retrying appointment 43 in 1m 30s \
             (next attempt 2026-11-29T10:16:33+01:00): temporary failure: timeout"
        );
        let dead = UserAction::DeadLettered {
            appointment_id: 44,
            error: "rejected: bad object".into(),
        };
        assert_eq!(
            l.format(at(), &dead),
            "2026-11-29T10:15:03+01:00 dead-lettered appointment 44: rejected: bad object"
        );
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 8, 0, 0).unwrap();
        assert!(
            l.format(summer, &dead)
                .starts_with("2026-07-01T10:00:00+02:00 ")
        );
        let odd = UserAction::Delivered {
            appointment_id: 1,
            subject: format!("a\"b\r\n{}", "x".repeat(1000)),
            sequence: 0,
        };
        let line = l.format(at(), &odd);
        assert!(
            line.contains("\"a'b  xxx") && line.ends_with("…\" (seq 0)"),
            "{line}"
        );
        let huge = UserAction::Retried {
            appointment_id: 1,
            error: String::new(),
            retry_in: Duration::MAX,
        };
        assert!(l.format(at(), &huge).contains("next attempt unknown"));
    }

    #[test]
    fn writes_append_lines_to_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("logs");
        let l = logs(&logdir, 1 << 20);
        l.write("mmuster", &UserAction::Deleted { appointment_id: 1 })
            .unwrap();
        l.write_line("mmuster", "second\nline").unwrap();
        let path = logdir.join("mmuster.log");
        assert_eq!(l.path("mmuster"), path);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" deleted appointment 1"));
        assert_eq!(lines[1], "second line");
        UserLogs::new(&logdir, 1 << 20)
            .write_in(
                "mmuster",
                chrono_tz::Asia::Kolkata,
                &UserAction::Deleted { appointment_id: 2 },
            )
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let third = text.lines().nth(2).unwrap();
        assert!(third.contains("+05:30 deleted appointment 2"), "{third}");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&logdir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "directory not open to others: {mode:o}");
    }

    #[test]
    fn hostile_usernames_stay_inside_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let logdir = root.path().join("logs");
        let l = logs(&logdir, 1 << 20);
        for name in [
            "../escape",
            "../../etc/passwd",
            "..",
            ".",
            "",
            "/abs",
            "a\0b",
            "..\\x",
        ] {
            l.write_line(name, "x").unwrap();
            assert_eq!(l.path(name).parent(), Some(logdir.as_path()), "{name:?}");
        }
        let outside: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("logs")]);
        assert_eq!(fs::read_dir(&logdir).unwrap().count(), 8);
    }

    #[test]
    fn files_rotate_keeping_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let l = logs(dir.path(), 1024);
        let line = "y".repeat(99); // 100 bytes with the line end
        for i in 0..25 {
            l.write_line("u", &format!("{i:02}{}", &line[2..])).unwrap();
        }
        let current = fs::read_to_string(dir.path().join("u.log")).unwrap();
        let old = fs::read_to_string(dir.path().join("u.log.1")).unwrap();
        assert!(current.len() <= 1024 && old.len() <= 1024);
        assert_eq!(old.lines().count(), 10);
        assert!(old.starts_with("10") && current.starts_with("20"), "{old}");
        assert_eq!(current.lines().count(), 5);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
        // A line longer than the limit still gets written.
        l.write_line("v", &"z".repeat(5000)).unwrap();
        l.write_line("v", "after").unwrap();
        let v = fs::read_to_string(dir.path().join("v.log")).unwrap();
        assert_eq!(v, "after\n");
    }

    #[test]
    fn errors_are_returned_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let l = logs(&blocker.join("sub"), 1 << 20);
        assert!(l.write_line("u", "x").is_err());
    }
}
