//! `sql/uninstall.sql`: removes everything livesync added, leaves Xpert's data untouched.
use crate::helpers::{TestDb, UNINSTALL};

/// Every row of Xpert's tables, as text, in a stable order.
async fn xpert_rows(db: &TestDb) -> String {
    db.scalar(
        "select concat_ws(E'\\n', \
           (select string_agg(u::text, ',' order by u.id) from xpert.users u), \
           (select string_agg(a::text, ',' order by a.id) from xpert.appointments a), \
           (select string_agg(p::text, ',' order by p.appointment_id, p.user_id) \
              from xpert.appointment_participants p), \
           (select string_agg(l::text, ',' order by l.id) from xpert.logins l))",
    )
    .await
}

async fn triggers_on_xpert(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "select c.relname || '.' || t.tgname from pg_trigger t \
         join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'xpert' and not t.tgisinternal order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn livesync_objects(db: &TestDb) -> i64 {
    db.scalar(
        "select (select count(*) from pg_namespace where nspname = 'livesync') \
              + (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
                 where n.nspname = 'livesync') \
              + (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                 where n.nspname = 'livesync')",
    )
    .await
}

async fn use_xpert(db: &TestDb, tag: &str) -> (i64, i64) {
    let user = db.user(&format!("user_{tag}")).await;
    let appt = db.appointment(&format!("Termin {tag}"), 24, &[user]).await;
    db.login(user, &format!("KANZLEI\\user_{tag}")).await;
    (user, appt)
}

#[tokio::test]
async fn uninstall_removes_livesync_and_leaves_xperts_data_alone() {
    let db = TestDb::migrated().await;
    db.enable_globally("push").await;
    let (user, _) = use_xpert(&db, "a").await;
    db.enable_user(user, true).await;
    use_xpert(&db, "b").await;
    assert!(!triggers_on_xpert(&db).await.is_empty());
    let before = xpert_rows(&db).await;

    sqlx::raw_sql(UNINSTALL)
        .execute(&db.pool)
        .await
        .expect("uninstall.sql runs");

    assert_eq!(livesync_objects(&db).await, 0);
    assert_eq!(triggers_on_xpert(&db).await, Vec::<String>::new());
    assert_eq!(xpert_rows(&db).await, before, "Xpert's rows untouched");

    // Xpert goes on working: inserts, updates, deletes on every table.
    let (user, appt) = use_xpert(&db, "c").await;
    db.exec_for(
        "update xpert.appointments set subject = 'geändert' where id = $1",
        appt,
    )
    .await;
    db.exec_for("delete from xpert.appointments where id = $1", appt)
        .await;
    db.exec_for("delete from xpert.logins where user_id = $1", user)
        .await;
    db.exec_for("delete from xpert.users where id = $1", user)
        .await;

    // Running it twice is harmless.
    sqlx::raw_sql(UNINSTALL)
        .execute(&db.pool)
        .await
        .expect("uninstall.sql runs again");
}

#[tokio::test]
async fn migrating_again_after_uninstall_works() {
    let db = TestDb::migrated().await;
    use_xpert(&db, "a").await;
    sqlx::raw_sql(UNINSTALL).execute(&db.pool).await.unwrap();

    db.migrate().await;
    assert!(
        livesync_core::migrate::status(&db.url)
            .await
            .unwrap()
            .is_current()
    );
    db.enable_globally("live").await;
    let user = db.user("mmuster").await;
    db.enable_user(user, false).await;
    let appt = db.appointment("nach Neuinstallation", 24, &[user]).await;
    assert_eq!(db.queue().await, vec![(user, appt, "upsert".to_string())]);
}
