//! The attempts charged to queue entries, counted as they happen (a queue row is gone once
//! it is delivered), for the tests of the charging rule under faults.

use crate::helpers::TestDb;

/// Count every attempt charged to a queue entry from now on.
pub(crate) async fn record_charges(db: &TestDb) {
    db.exec(
        "create table public.charges (user_id bigint, appointment_id bigint, attempts int, error text);
         create function public.record_charge() returns trigger language plpgsql security definer as $$
         begin
           if new.attempts > old.attempts then
             insert into public.charges values (new.user_id, new.appointment_id, new.attempts, new.last_error);
           end if;
           return new;
         end $$;
         create trigger record_charge after update on livesync.queue
           for each row execute function public.record_charge();",
    )
    .await;
}

/// The changes not delivered yet: queued, or not yet expanded into the queue.
pub(crate) async fn queued(db: &TestDb) -> i64 {
    db.scalar(
        "select (select count(*) from livesync.queue) + (select count(*) from livesync.changes)",
    )
    .await
}

/// Nothing was dead-lettered, and no entry was charged an attempt since
/// [`record_charges`].
pub(crate) async fn assert_nobody_charged(db: &TestDb) {
    let dead: i64 = db
        .scalar("select count(*) from livesync.dead_letters")
        .await;
    assert_eq!(dead, 0, "nothing dead-lettered");
    let charged: Vec<(i64, i64, i32, Option<String>)> =
        sqlx::query_as("select user_id, appointment_id, attempts, error from public.charges")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(charged.is_empty(), "charged: {charged:#?}");
}
