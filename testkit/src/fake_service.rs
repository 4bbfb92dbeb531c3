//! What the in-process fakes of remote services (`graph_fake`, `ews_fake`) share: serving
//! on loopback, the load both put on a client ([`Load`]), counting requests in flight,
//! choosing faults at a rate, and dropping a connection instead of answering.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;

/// Serve `app` on a free loopback port, in the background; its address.
pub(crate) async fn serve_on_loopback(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// What a fake does under load whatever the service: a share of creations whose answer is
/// lost (the connection drops after the item was stored; chosen pseudo-randomly from a
/// seed, so a run can be repeated), a latency per request, and a limit of requests at once
/// per mailbox (one more is refused as the service refuses it; the most seen is recorded).
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Percent of creations whose answer is lost after the item was stored.
    pub lost_creations_percent: u64,
    /// Seed of the pseudo-random choice of those creations.
    pub seed: u64,
    /// Latency of every request.
    pub latency: Option<Duration>,
    /// Requests per mailbox the service allows at once.
    pub concurrency_limit: Option<usize>,
}

impl Load {
    /// 15 % of creations losing their answer, 20 ms latency, and the service's documented
    /// limit of requests at once per mailbox.
    pub fn documented(seed: u64, concurrency_limit: usize) -> Load {
        Load {
            lost_creations_percent: 15,
            seed,
            latency: Some(Duration::from_millis(20)),
            concurrency_limit: Some(concurrency_limit),
        }
    }
}

/// splitmix64: a small, seeded, repeatable pseudo-random sequence.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether this one is chosen, `percent` times in a hundred (repeatably, from `state`).
pub(crate) fn chosen(state: &mut u64, percent: u64) -> bool {
    next_random(state) % 100 < percent
}

/// Requests being handled at once, and the most seen.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    now: usize,
    most: usize,
}

impl InFlight {
    /// One more request; whether it is over `limit`.
    pub(crate) fn enter(&mut self, limit: Option<usize>) -> bool {
        self.now += 1;
        self.most = self.most.max(self.now);
        limit.is_some_and(|l| self.now > l)
    }

    /// A request is done.
    pub(crate) fn leave(&mut self) {
        self.now -= 1;
    }

    /// The most requests seen at once.
    pub(crate) fn most(&self) -> usize {
        self.most
    }
}

/// An answer whose body fails before its first byte: the server closes the connection
/// without an answer.
pub(crate) fn dropped_connection() -> Response {
    Response::new(Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("the fake drops the connection"))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_over_the_limit_is_counted_and_said_so() {
        let mut n = InFlight::default();
        assert!(!n.enter(Some(2)));
        assert!(!n.enter(Some(2)));
        assert!(n.enter(Some(2)));
        n.leave();
        n.leave();
        assert!(!n.enter(None));
        assert_eq!(n.most(), 3);
    }

    #[test]
    fn the_choice_repeats_for_a_seed() {
        let pick = |mut seed: u64| (0..50).map(|_| chosen(&mut seed, 15)).collect::<Vec<_>>();
        assert_eq!(pick(7), pick(7));
        assert!(pick(7).iter().any(|c| *c) && !pick(7).iter().all(|c| *c));
    }
}
