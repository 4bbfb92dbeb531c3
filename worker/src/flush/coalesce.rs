//! Group commit in the worker: the deliveries running at the same time hand their database
//! work (loading due entries, completing a batch) to one task per kind, which runs
//! everything that queued up meanwhile as one statement.
//!
//! An idle worker pays nothing for it: a request that finds the task waiting runs at once,
//! alone. Under load, while one statement runs the next requests gather, so the number of
//! statements and commits grows with the number of rounds, not with the number of
//! calendars.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

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
    /// Start the task. `run` gets up to `max` requests in arrival order and returns one
    /// answer per request, in the same order.
    pub(super) fn spawn<F, Fut>(max: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Resp>, sqlx::Error>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Envelope<Req, Resp>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while group.len() < max {
                    match rx.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<Req>, Vec<_>) = group.into_iter().unzip();
                let n = requests.len();
                metrics::histogram!("livesync_coalesced_requests").record(n as f64);
                match run(requests).await {
                    Ok(answers) if answers.len() == n => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Ok(answers) => {
                        let e = Arc::new(sqlx::Error::Protocol(format!(
                            "{} answers for {n} requests",
                            answers.len()
                        )));
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
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
