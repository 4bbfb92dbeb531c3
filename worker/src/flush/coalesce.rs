//! Group commit in the worker: the deliveries running at the same time hand their database
//! work (loading due entries, completing a batch) to a few tasks per kind ("lanes"), which
//! run everything that queued up meanwhile as one statement.
//!
//! An idle worker pays nothing for it: a request that finds a lane waiting runs at once,
//! alone. Under load, while the statements run the next requests gather, so the number of
//! statements and commits grows with the number of rounds, not with the number of
//! calendars. Four lanes let four statements run side by side on the server (measured
//! against two: +5 % in the 100k storm, BENCHMARKS.md).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// Statements of one kind that may run at the same time.
pub(super) const LANES: usize = 4;

/// What a request gets back: its own answer, or the error of the statement it was part of.
pub(super) type Reply<T> = Result<T, Arc<sqlx::Error>>;

type Envelope<Req, Resp> = (Req, oneshot::Sender<Reply<Resp>>);

/// The sending side; cheap to clone. The task ends when the last clone is dropped.
pub(super) struct Coalescer<Req, Resp> {
    tx: mpsc::UnboundedSender<Envelope<Req, Resp>>,
}

impl<Req, Resp> Clone for Coalescer<Req, Resp> {
    fn clone(&self) -> Self {
        Coalescer {
            tx: self.tx.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Coalescer<Req, Resp> {
    /// Start `lanes` tasks that take requests from one queue. Each takes up to `max`
    /// requests in arrival order and passes them to `run`, which returns one answer per
    /// request, in the same order. With more than one lane, statements run side by side
    /// (PostgreSQL runs one statement on one core).
    pub(super) fn spawn<F, Fut>(max: usize, lanes: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Resp>, sqlx::Error>> + Send,
    {
        let (tx, rx) = mpsc::unbounded_channel::<Envelope<Req, Resp>>();
        let rx = Arc::new(Mutex::new(rx));
        let run = Arc::new(run);
        for _ in 0..lanes.max(1) {
            let rx = rx.clone();
            let run = run.clone();
            tokio::spawn(async move {
                loop {
                    let group = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else {
                            return;
                        };
                        let mut group = vec![first];
                        while group.len() < max {
                            match rx.try_recv() {
                                Ok(next) => group.push(next),
                                Err(_) => break,
                            }
                        }
                        group
                    };
                    answer(group, &*run).await;
                }
            });
        }
        Coalescer { tx }
    }

    /// Hand a request over and wait for its answer.
    pub(super) async fn call(&self, request: Req) -> Reply<Resp> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Arc::new(sqlx::Error::PoolClosed);
        self.tx.send((request, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Run one group and hand every request its answer.
async fn answer<Req, Resp, F, Fut>(group: Vec<Envelope<Req, Resp>>, run: &F)
where
    F: Fn(Vec<Req>) -> Fut,
    Fut: Future<Output = Result<Vec<Resp>, sqlx::Error>>,
{
    let (requests, replies): (Vec<Req>, Vec<_>) = group.into_iter().unzip();
    let n = requests.len();
    metrics::histogram!("livesync_coalesced_requests").record(n as f64);
    let answers = match run(requests).await {
        Ok(answers) if answers.len() == n => answers,
        Ok(answers) => {
            let e = Arc::new(sqlx::Error::Protocol(format!(
                "{} answers for {n} requests",
                answers.len()
            )));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        Err(e) => {
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(Ok(answer));
    }
}
