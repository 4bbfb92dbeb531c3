//! The growth scenario's targets: no size drains slower per entry than the size below it,
//! and the queue gives its space back.
//!
//! Why "no step down" and not "all sizes equal". The storm's users log in within about a
//! second, and a delivery can only start once its user is in. So a small storm (10 entries
//! per user) is over as the last login arrives: its throughput is the login rate, not the
//! worker's. Larger backlogs run on after the logins and show the worker's own rate, which
//! rises with the size (bigger batches). A quadratic step — a scan of the backlog per
//! entry, an anti-join over a round's entries — shows as a *fall* in throughput from one
//! size to the next with the same users; that is what the first check looks for. Sizes
//! with other user counts (3,000 × 33) measure the cost per user, not growth, and are
//! only compared with sizes of the same users.

use std::collections::BTreeMap;

use super::delivery::Target;
use super::storm::StormResult;

/// A larger backlog must drain at least this share of the next smaller one's steady rate.
pub const MIN_STEP_RATIO: f64 = 0.75;

/// The table whose space the bloat check follows.
const QUEUE: &str = "livesync.queue";

/// The growth targets of a run (none when it had fewer than two sizes of the same users).
pub fn targets(growth: &[StormResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let mut by_users: BTreeMap<u32, Vec<&StormResult>> = BTreeMap::new();
    for r in growth.iter().filter(|r| r.system == "livesync") {
        by_users.entry(r.users).or_default().push(r);
    }
    let mut steps = Vec::new();
    let mut met = true;
    for (users, mut sizes) in by_users {
        sizes.sort_by_key(|r| r.entries);
        for w in sizes.windows(2) {
            let (small, large) = (w[0], w[1]);
            let ratio = match (small.steady_changes_per_s, large.steady_changes_per_s) {
                (Some(s), Some(l)) if s > 0.0 => l / s,
                _ => 0.0,
            };
            met &= ratio >= MIN_STEP_RATIO && small.drained && large.drained;
            steps.push(format!(
                "{users} users: {} → {} entries ×{ratio:.2}",
                small.entries, large.entries
            ));
        }
    }
    if !steps.is_empty() {
        out.push(Target {
            what: format!(
                "growth: no quadratic step (steady changes/s of each size ≥ {MIN_STEP_RATIO} × the next smaller size's, same users)"
            ),
            value: steps.join("; "),
            met: Some(met),
        });
    }
    let queue: Vec<(u64, i64, i64)> = growth
        .iter()
        .filter_map(|r| {
            let before = r.tables_before.iter().find(|t| t.table == QUEUE)?;
            let vacuumed = r.tables_after_vacuum.iter().find(|t| t.table == QUEUE)?;
            Some((r.entries, before.total_bytes, vacuumed.total_bytes))
        })
        .collect();
    if !queue.is_empty() {
        out.push(Target {
            what: "growth: the queue does not bloat (after the drain and a plain VACUUM no larger than before the storm)".into(),
            value: queue
                .iter()
                .map(|(n, b, v)| format!("{n} entries: {} → {} kB", b / 1024, v / 1024))
                .collect::<Vec<_>>()
                .join("; "),
            met: Some(queue.iter().all(|(_, b, v)| v <= b)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::TableStat;

    fn storm(users: u32, per_user: u32, steady: f64, queue: (i64, i64)) -> StormResult {
        let stat = |bytes| TableStat {
            table: QUEUE.into(),
            total_bytes: bytes,
            live_tuples: 0,
            dead_tuples: 0,
            autovacuums: 0,
        };
        StormResult {
            system: "livesync",
            variant: "null sink".into(),
            users,
            per_user,
            entries: u64::from(users * per_user),
            seed_seconds: 0.0,
            logins_seconds: None,
            delivered: u64::from(users * per_user),
            drained: true,
            to_last_delivery_s: None,
            to_queue_empty_s: 1.0,
            changes_per_s: None,
            steady_changes_per_s: Some(steady),
            deciles_s: Vec::new(),
            memory: None,
            tables_before: vec![stat(queue.0)],
            tables_after: vec![stat(queue.0 * 2)],
            tables_after_vacuum: vec![stat(queue.1)],
        }
    }

    fn met(targets: &[Target]) -> Vec<Option<bool>> {
        targets.iter().map(|t| t.met).collect()
    }

    #[test]
    fn a_rising_throughput_passes_and_a_fall_between_two_sizes_fails() {
        // 10k, 100k and 1M entries for 1,000 users; the largest drains at `last` changes/s.
        let sizes = |last: f64| {
            [
                storm(1000, 10, 9_500.0, (10, 5)),
                storm(1000, 100, 56_000.0, (100, 50)),
                storm(1000, 1000, last, (1000, 200)),
            ]
        };
        assert_eq!(met(&targets(&sizes(95_000.0))), [Some(true), Some(true)]);

        let t = targets(&sizes(30_000.0));
        assert_eq!(t[0].met, Some(false), "{}", t[0].value);
        assert!(t[0].value.contains("100000 → 1000000 entries ×0.54"));
    }

    #[test]
    fn only_sizes_with_the_same_users_are_compared() {
        // 3,000 users × 33 is slower per entry (per-user cost), not a growth step.
        let runs = [
            storm(1000, 100, 56_000.0, (100, 50)),
            storm(3000, 33, 26_000.0, (100, 50)),
            storm(1000, 1000, 95_000.0, (1000, 200)),
        ];
        let t = targets(&runs);
        assert_eq!(t[0].met, Some(true), "{}", t[0].value);
        assert!(!t[0].value.contains("3000 users"));
    }

    #[test]
    fn an_undrained_size_or_a_queue_larger_after_vacuum_fails() {
        let mut runs = vec![
            storm(1000, 10, 9_500.0, (10, 5)),
            storm(1000, 100, 56_000.0, (100, 150)),
        ];
        assert_eq!(met(&targets(&runs)), [Some(true), Some(false)]);
        runs[0].drained = false;
        assert_eq!(targets(&runs)[0].met, Some(false));
    }

    #[test]
    fn a_single_size_gives_no_step_target() {
        let t = targets(&[storm(100, 100, 10_000.0, (10, 5))]);
        assert_eq!(met(&t), [Some(true)]);
        assert!(t[0].what.contains("bloat"));
    }
}
