//! livesync's SECURITY DEFINER functions run with the rights of the role that migrated,
//! called by Xpert's role (the triggers on Xpert's tables, `notice_shown`, the status view's
//! `pending_changes`) or by a worker (`recompute_wake_until`). Those that do not pin their
//! search_path qualify every name instead. A caller who may create objects in a schema it
//! puts ahead of pg_catalog must not get any of its look-alikes run with those rights.
//!
//! The test does not pick look-alikes by hand: it reads the body of every livesync
//! function and the status view, takes every name followed by "(" and every operator in
//! them, and every type and table name, and creates a look-alike of each in a schema
//! `evil` that Xpert's role owns, for every signature pg_catalog has under that name
//! (functions, aggregates, operators, a domain per type, a view per table), each raising
//! "hijacked". Then Xpert's role, with `search_path = evil, pg_catalog`, writes what Xpert
//! writes and reads what Xpert reads.

use std::collections::BTreeSet;

use sqlx::{Connection, PgConnection};

use crate::helpers::TestDb;

/// Names followed by "(" in `text` (lower case; schema qualifiers dropped).
fn called_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'(' {
                names.insert(text[start..i].to_ascii_lowercase());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every word of `text` (for types and tables: cheap to over-approximate).
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Runs of operator characters in `text`.
fn operators(text: &str) -> BTreeSet<String> {
    const OP: &str = "+-*/<>=~!@#%^&|`?";
    let mut ops = BTreeSet::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if OP.contains(c) {
            current.push(c);
        } else if !current.is_empty() {
            ops.insert(std::mem::take(&mut current));
        }
    }
    ops
}

/// Create, in schema `evil`, a look-alike raising "hijacked" for every pg_catalog function,
/// aggregate, operator and type named in `names` / `ops`, and a view for every table name.
const PLANT: &str = r#"
do $plant$
declare
  r record;
  v_names text[] := string_to_array(current_setting('livesync_test.names'), ',');
  v_ops text[] := string_to_array(current_setting('livesync_test.ops'), ',');
  n integer := 0;
  -- The body of every look-alike function: it raises.
  v_raises constant text := ' language plpgsql as $f$ begin perform evil.hijacked(); end $f$';
begin
  create function evil.hijacked() returns boolean language plpgsql as
    $f$ begin raise exception 'hijacked'; end $f$;
  -- Functions (same name and argument types, same result) and aggregates (a transition
  -- function), raising.
  for r in select p.proname, p.prokind, pg_get_function_identity_arguments(p.oid) as args,
                  pg_get_function_result(p.oid) as res
             from pg_proc p
            where p.pronamespace = 'pg_catalog'::regnamespace and p.prokind in ('f', 'a')
              and p.proname = any (v_names)
  loop
    begin
      if r.prokind = 'f' then
        execute format('create function evil.%I(%s) returns %s', r.proname, r.args, r.res)
                || v_raises;
      elsif r.args in ('*', '') then
        execute format('create function evil.%I(%s) returns %s',
                       'agg_' || r.proname || '_' || n, r.res, r.res) || v_raises;
        execute format('create aggregate evil.%I(*) (sfunc = evil.%I, stype = %s)',
                       r.proname, 'agg_' || r.proname || '_' || n, r.res);
      else
        execute format('create function evil.%I(%s, %s) returns %s',
                       'agg_' || r.proname || '_' || n, r.res, r.args, r.res) || v_raises;
        execute format('create aggregate evil.%I(%s) (sfunc = evil.%I, stype = %s)',
                       r.proname, r.args, 'agg_' || r.proname || '_' || n, r.res);
      end if;
      n := n + 1;
    exception when others then null;  -- internal types: not callable from SQL anyway
    end;
  end loop;
  -- Operators: every signature pg_catalog has for each symbol.
  for r in select o.oprname, o.oprleft::regtype as l, o.oprright::regtype as rt,
                  o.oprresult::regtype as res, o.oid
             from pg_operator o
            where o.oprnamespace = 'pg_catalog'::regnamespace and o.oprname = any (v_ops)
  loop
    begin
      if r.l = 0::regtype then
        execute format('create function evil.%I(%s) returns %s', 'op_' || r.oid, r.rt, r.res)
                || v_raises;
        execute format('create operator evil.%s (rightarg = %s, function = evil.%I)',
                       r.oprname, r.rt, 'op_' || r.oid);
      else
        execute format('create function evil.%I(%s, %s) returns %s',
                       'op_' || r.oid, r.l, r.rt, r.res) || v_raises;
        execute format('create operator evil.%s (leftarg = %s, rightarg = %s, function = evil.%I)',
                       r.oprname, r.l, r.rt, 'op_' || r.oid);
      end if;
      n := n + 1;
    exception when others then null;
    end;
  end loop;
  -- Types: a domain of the same name whose check raises.
  for r in select t.typname from pg_type t
            where t.typnamespace = 'pg_catalog'::regnamespace and t.typtype = 'b'
              and t.typname = any (v_names) and t.typname not like '\_%'
  loop
    begin
      execute format('create domain evil.%I as pg_catalog.%I check (evil.hijacked())',
                     r.typname, r.typname);
      n := n + 1;
    exception when others then null;
    end;
  end loop;
  -- Tables and views: a view of the same name that raises when read.
  for r in select distinct c.relname from pg_class c
            where c.relnamespace in ('livesync'::regnamespace, 'xpert'::regnamespace,
                                     'pg_catalog'::regnamespace)
              and c.relkind in ('r', 'v') and c.relname = any (v_names)
  loop
    execute format('create view evil.%I as select evil.hijacked() as hijacked', r.relname);
    n := n + 1;
  end loop;
  raise notice 'look-alikes: %', n;
  perform set_config('livesync_test.planted', n::text, false);
end
$plant$;
"#;

#[tokio::test]
async fn no_caller_search_path_can_redirect_a_security_definer_function() {
    let db = TestDb::baseline().await;
    let lawyer = db.user("mmuster").await; // exists before the update: first-login rule
    let partner = db.user("hhuber").await;
    let leaver = db.user("ausgeschieden").await;
    let colleague = db.user("kkollege").await;
    db.migrate().await;
    db.enable_globally("live").await;
    db.enable_user(lawyer, true).await;
    db.enable_user(partner, false).await;
    // A sleeping worker, so that every change also runs the wake-up's NOTIFY.
    db.exec(
        "insert into livesync.workers (id, host, pid, awake)
         values ('00000000-0000-0000-0000-000000000009', 'test', 9, false)",
    )
    .await;

    // What the definer functions run: every livesync function body and the status view.
    let bodies: Vec<String> = sqlx::query_scalar(
        "select p.prosrc from pg_proc p where p.pronamespace = 'livesync'::regnamespace
         union all
         select pg_get_viewdef('livesync.user_status'::regclass)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let definers: i64 = db
        .scalar("select count(*) from pg_proc where pronamespace = 'livesync'::regnamespace and prosecdef")
        .await;
    assert!(
        definers >= 8,
        "every SECURITY DEFINER function is covered: {definers}"
    );
    let text = bodies.join("\n");
    let mut names: BTreeSet<String> = called_names(&text);
    names.extend(words(&text));
    let names: Vec<String> = names.into_iter().collect();
    let ops: Vec<String> = operators(&text).into_iter().collect();

    // Xpert's application role: its own tables, what roles.sql gives it, and a schema of
    // its own with CREATE.
    let role = format!("xpert_app_{}", uuid::Uuid::new_v4().simple());
    for sql in [
        format!("create role {role} login password 'xpert'"),
        format!("create schema evil authorization {role}"),
        format!("grant usage on schema xpert, livesync to {role}"),
        format!("grant select, insert, update, delete on all tables in schema xpert to {role}"),
        format!("grant usage on all sequences in schema xpert to {role}"),
        format!("grant select on livesync.user_status to {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let mut xpert = PgConnection::connect(&db.url_as(&role, "xpert"))
        .await
        .unwrap();
    sqlx::query("select set_config('livesync_test.names', $1, false), set_config('livesync_test.ops', $2, false)")
        .bind(names.join(","))
        .bind(ops.join(","))
        .execute(&mut xpert)
        .await
        .unwrap();
    sqlx::raw_sql(PLANT).execute(&mut xpert).await.unwrap();
    let planted: String = sqlx::query_scalar("select current_setting('livesync_test.planted')")
        .fetch_one(&mut xpert)
        .await
        .unwrap();
    let planted: i64 = planted.parse().unwrap();
    assert!(planted > 300, "look-alikes planted: {planted}");
    for shadowed in [
        "now",
        "nextval",
        "pg_notify",
        "count",
        "text",
        "int8",
        "=",
        "changes",
    ] {
        let n: i64 = sqlx::query_scalar(
            "select (select count(*) from pg_proc where pronamespace = 'evil'::regnamespace
                      and proname = $1)
                  + (select count(*) from pg_operator where oprnamespace = 'evil'::regnamespace
                      and oprname = $1)
                  + (select count(*) from pg_type where typnamespace = 'evil'::regnamespace
                      and typname = $1)
                  + (select count(*) from pg_class where relnamespace = 'evil'::regnamespace
                      and relname = $1)",
        )
        .bind(shadowed)
        .fetch_one(&mut xpert)
        .await
        .unwrap();
        assert!(n > 0, "{shadowed} has a look-alike");
    }
    sqlx::raw_sql("set search_path = evil, pg_catalog")
        .execute(&mut xpert)
        .await
        .unwrap();

    // What Xpert writes and reads, with the hostile search_path.
    let steps: [(&str, String); 10] = [
        (
            "a new appointment with participants",
            format!(
                "begin;
                 with a as (insert into xpert.appointments (subject, starts_at, ends_at)
                            values ('Termin', pg_catalog.now() operator(pg_catalog.+) '1 day'::pg_catalog.interval,
                                    pg_catalog.now() operator(pg_catalog.+) '25 hours'::pg_catalog.interval)
                            returning id)
                 insert into xpert.appointment_participants (appointment_id, user_id)
                 select a.id, u.u from a, (values ({lawyer}::pg_catalog.int8), ({partner}::pg_catalog.int8)) u(u);
                 commit;"
            ),
        ),
        (
            "a participant added to an older appointment",
            format!(
                "insert into xpert.appointment_participants (appointment_id, user_id)
                 select pg_catalog.max(id), {leaver}::pg_catalog.int8 from xpert.appointments"
            ),
        ),
        (
            "a participant changed",
            format!(
                "update xpert.appointment_participants set user_id = {colleague}::pg_catalog.int8
                  where user_id operator(pg_catalog.=) {leaver}::pg_catalog.int8"
            ),
        ),
        (
            "an appointment changed",
            "update xpert.appointments set subject = 'verlegt'".to_string(),
        ),
        (
            "a participant removed",
            format!(
                "delete from xpert.appointment_participants
                  where user_id operator(pg_catalog.=) {partner}::pg_catalog.int8"
            ),
        ),
        (
            "a login",
            format!(
                "insert into xpert.logins (user_id, windows_username)
                 values ({lawyer}::pg_catalog.int8, 'KANZLEI\\mmuster')"
            ),
        ),
        (
            "a logout",
            "update xpert.logins set logged_out_at = pg_catalog.now()".to_string(),
        ),
        (
            "Xpert reads the status",
            "select * from livesync.user_status".to_string(),
        ),
        (
            "an appointment deleted",
            "delete from xpert.appointments".to_string(),
        ),
        (
            "a user deleted",
            format!(
                "delete from xpert.logins where user_id operator(pg_catalog.=) {leaver}::pg_catalog.int8;
                 delete from xpert.users where id operator(pg_catalog.=) {leaver}::pg_catalog.int8"
            ),
        ),
    ];
    for (what, sql) in &steps {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut xpert)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // The notice Xpert shows once, then marks as shown (the login above decided the
    // lawyer's first login: a notice is waiting).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "select livesync.notice_shown({lawyer}::pg_catalog.int8)"
    )))
    .execute(&mut xpert)
    .await
    .expect("notice_shown calls none of the look-alikes");
    // A worker's role changes livesync.workers (the trigger recomputing wake_until).
    let mut worker = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("set search_path = evil, pg_catalog; update livesync.workers set awake = true")
        .execute(&mut worker)
        .await
        .expect("recompute_wake_until calls none of the look-alikes");

    let logged: i64 = db.scalar("select count(*) from livesync.changes").await;
    assert!(logged >= 6, "the changes were logged: {logged}");
    let logins: i64 = db
        .scalar("select count(*) from livesync.login_events")
        .await;
    assert_eq!(logins, 1, "the login was recorded");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop schema evil cascade; drop owned by {role}; drop role {role}"
    )))
    .execute(&db.pool)
    .await
    .ok();
}

#[test]
fn names_operators_and_words_are_read_from_a_body() {
    let body = "perform pg_catalog.pg_notify('x', p); if a operator(pg_catalog.=) b or c <> d \
                then x := now (); end if; y::text";
    let names = called_names(body);
    assert!(names.contains("pg_notify") && names.contains("now") && names.contains("operator"));
    let ops = operators(body);
    assert!(ops.contains("=") && ops.contains("<>"));
    assert!(words(body).contains("text"));
}
