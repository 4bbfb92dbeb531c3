//! livesync-worker: delivers queued Xpert appointments into each person's calendar.
pub mod sink;
