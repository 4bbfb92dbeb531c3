//! `/healthz` of a running worker as a monitor would see it: one GET at a time, a short
//! pause between them, every answer kept with when it was asked and answered. The chaos
//! driver strikes between samples and reads afterwards whether the worker said unhealthy
//! during the fault and healthy again after it ([`cycle`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One GET /healthz.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    /// When it was sent, ms after the probe started.
    pub sent_ms: u64,
    /// When the answer (or the failure) came.
    pub answered_ms: u64,
    /// The HTTP status; `None`: no answer within the timeout, or no connection.
    pub status: Option<u16>,
    /// What the body said: `database=… listener=…`, or why there was no answer.
    pub detail: String,
}

/// Polls `http://127.0.0.1:<port>/healthz` until stopped.
pub struct Probe {
    epoch: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    /// Ask every `every` (after the previous answer), each request given up after `timeout`.
    pub fn start(port: u16, every: Duration, timeout: Duration) -> Probe {
        let epoch = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let samples = samples.clone();
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent_ms = epoch.elapsed().as_millis() as u64;
                    let (status, detail) =
                        match tokio::time::timeout(timeout, get_healthz(port)).await {
                            Ok(Ok((status, detail))) => (Some(status), detail),
                            Ok(Err(e)) => (None, format!("no answer: {e}")),
                            Err(_) => (None, format!("no answer within {timeout:?}")),
                        };
                    let answered_ms = epoch.elapsed().as_millis() as u64;
                    if let Ok(mut s) = samples.lock() {
                        s.push(Sample {
                            sent_ms,
                            answered_ms,
                            status,
                            detail,
                        });
                    }
                    tokio::time::sleep(every).await;
                }
            }
        });
        Probe {
            epoch,
            samples,
            stop,
            task,
        }
    }

    /// Milliseconds since the probe started (the samples' clock).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The last answer that came before `ms`.
    pub fn last_before(&self, ms: u64) -> Option<Sample> {
        self.samples()
            .into_iter()
            .rev()
            .find(|s| s.answered_ms < ms)
    }

    /// Wait until a request sent at or after `from_ms` is answered 200; when it was
    /// answered, or `None` after `timeout`.
    pub async fn wait_for_200(&self, from_ms: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .samples()
                .into_iter()
                .find(|s| s.sent_ms >= from_ms && s.status == Some(200));
            if let Some(s) = found {
                return Some(s.answered_ms);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop polling; every sample taken.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.samples.clone();
        let _ = self.task.await;
        samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// GET /healthz on a fresh connection: the status and `database=… listener=…`.
async fn get_healthz(port: u16) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let detail = format!(
        "database={} listener={}",
        json["database"].as_str().unwrap_or("?"),
        json["listener"].as_str().unwrap_or("?")
    );
    Ok((status, detail))
}

/// What /healthz said around one fault.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cycle {
    pub strike: u32,
    /// How long the fault took (for a restart: from `pg_ctl restart` until it returned).
    pub fault_ms: u64,
    /// The last answer before the fault was a 200.
    pub healthy_before: bool,
    /// The first answer other than 200 that came after the fault began: ms after its start
    /// when it was asked (negative: before) and when it was answered.
    pub unhealthy_asked_after_ms: Option<i64>,
    pub unhealthy_after_ms: Option<u64>,
    /// That answer: `503 database=unreachable listener=ok`.
    pub unhealthy: Option<String>,
    /// The first 200 after that answer: ms after the fault ended (negative: before).
    pub healthy_again_after_ms: Option<i64>,
    /// Requests in this cycle that got no answer (the worker process should always answer).
    pub unanswered: usize,
    /// Answers other than 200 in this cycle, and what they said (distinct, in order).
    pub unhealthy_answers: usize,
    pub said: Vec<String>,
}

impl Cycle {
    /// 200 before, 503 during, 200 again after.
    pub fn ok(&self) -> bool {
        self.healthy_before
            && self
                .unhealthy
                .as_deref()
                .is_some_and(|u| u.starts_with("503"))
            && self.healthy_again_after_ms.is_some()
    }

    /// `200 → 503 (database=unreachable listener=ok) after 40 ms → 200 120 ms after …`.
    pub fn describe(&self, what_ended: &str) -> String {
        let before = if self.healthy_before {
            "200"
        } else {
            "NOT 200"
        };
        let during = match (&self.unhealthy, self.unhealthy_after_ms) {
            (Some(u), Some(ms)) => format!(
                "{u} (asked after {} ms, answered after {ms} ms)",
                self.unhealthy_asked_after_ms.unwrap_or_default()
            ),
            _ => "never unhealthy".to_string(),
        };
        let after = match self.healthy_again_after_ms {
            Some(ms) => format!("200 {ms} ms after {what_ended}"),
            None => "NOT 200 again".to_string(),
        };
        let mut line = format!(
            "{before} → {during} → {after} (fault took {} ms; {} unhealthy answers",
            self.fault_ms, self.unhealthy_answers
        );
        if self.said.len() > 1 {
            line.push_str(&format!(": {}", self.said.join(", ")));
        }
        if self.unanswered > 0 {
            line.push_str(&format!("; {} UNANSWERED", self.unanswered));
        }
        line.push(')');
        line
    }
}

/// Read the samples around a fault that ran from `begin_ms` to `end_ms`: the last answer
/// before it, the first non-200 answered after it began, the first 200 after that.
pub fn cycle(samples: &[Sample], strike: u32, begin_ms: u64, end_ms: u64) -> Cycle {
    let healthy_before = samples
        .iter()
        .rev()
        .find(|s| s.answered_ms < begin_ms)
        .is_some_and(|s| s.status == Some(200));
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.answered_ms >= begin_ms)
        .collect();
    let first_bad = after
        .iter()
        .position(|s| s.status.is_some_and(|code| code != 200));
    let (unhealthy_asked_after_ms, unhealthy_after_ms, unhealthy, healthy_again_after_ms, window) =
        match first_bad {
            Some(i) => {
                let bad = after[i];
                let back = after[i..].iter().position(|s| s.status == Some(200));
                let window_end = back.map_or(after.len(), |j| i + j);
                (
                    Some(bad.sent_ms as i64 - begin_ms as i64),
                    Some(bad.answered_ms - begin_ms),
                    Some(format!("{} {}", bad.status.unwrap_or(0), bad.detail)),
                    back.map(|j| after[i + j].answered_ms as i64 - end_ms as i64),
                    &after[..window_end],
                )
            }
            None => {
                // Never unhealthy: the cycle runs until the first 200 sent after the fault.
                let back = after
                    .iter()
                    .position(|s| s.sent_ms >= end_ms && s.status == Some(200));
                (
                    None,
                    None,
                    None,
                    back.map(|j| after[j].answered_ms as i64 - end_ms as i64),
                    &after[..back.map_or(after.len(), |j| j + 1)],
                )
            }
        };
    let mut said: Vec<String> = Vec::new();
    for s in window.iter().filter(|s| s.status != Some(200)) {
        let text = match s.status {
            Some(code) => format!("{code} {}", s.detail),
            None => "no answer".to_string(),
        };
        if said.last() != Some(&text) {
            said.push(text);
        }
    }
    Cycle {
        strike,
        fault_ms: end_ms.saturating_sub(begin_ms),
        healthy_before,
        unhealthy_asked_after_ms,
        unhealthy_after_ms,
        unhealthy,
        healthy_again_after_ms,
        unanswered: window.iter().filter(|s| s.status.is_none()).count(),
        unhealthy_answers: window
            .iter()
            .filter(|s| s.status.is_some_and(|c| c != 200))
            .count(),
        said,
    }
}

#[cfg(test)]
mod tests {
    use super::{Sample, cycle};

    fn s(sent_ms: u64, answered_ms: u64, status: Option<u16>, detail: &str) -> Sample {
        Sample {
            sent_ms,
            answered_ms,
            status,
            detail: detail.to_string(),
        }
    }

    #[test]
    fn a_restart_seen_as_200_503_200() {
        let samples = [
            s(0, 2, Some(200), "database=ok listener=ok"),
            s(60, 62, Some(200), "database=ok listener=ok"),
            // The restart runs from 100 to 900.
            s(120, 2120, Some(503), "database=unreachable listener=ok"),
            s(2170, 2171, Some(503), "database=ok listener=down"),
            s(2221, 2222, None, ""),
            s(2272, 2273, Some(200), "database=ok listener=ok"),
        ];
        let c = cycle(&samples, 1, 100, 900);
        assert!(c.ok(), "{c:?}");
        assert_eq!(c.unhealthy_after_ms, Some(2020));
        assert_eq!(c.healthy_again_after_ms, Some(1373));
        assert_eq!(c.unhealthy_answers, 2);
        assert_eq!(c.unanswered, 1);
        assert_eq!(
            c.said,
            [
                "503 database=unreachable listener=ok",
                "503 database=ok listener=down",
                "no answer"
            ]
        );
        assert!(
            c.describe("PostgreSQL was up")
                .starts_with("200 → 503 database=unreachable listener=ok (asked after 20 ms, answered after 2020 ms) → 200 1373 ms after PostgreSQL was up")
        );
    }

    #[test]
    fn never_unhealthy_or_never_back_is_not_ok() {
        let all_fine = [
            s(0, 2, Some(200), ""),
            s(150, 1500, Some(200), ""),
            s(1550, 1551, Some(200), ""),
        ];
        let c = cycle(&all_fine, 1, 100, 900);
        assert!(!c.ok());
        assert_eq!(c.unhealthy, None);
        let stuck = [s(0, 2, Some(200), ""), s(150, 151, Some(503), "")];
        let c = cycle(&stuck, 1, 100, 900);
        assert!(!c.ok());
        assert_eq!(c.healthy_again_after_ms, None);
        let unhealthy_before = [
            s(0, 2, Some(503), ""),
            s(150, 151, Some(503), ""),
            s(1000, 1001, Some(200), ""),
        ];
        assert!(!cycle(&unhealthy_before, 1, 100, 900).ok());
    }
}
