//! The schema as the catalog sees it: every table and column, constraint, index, sequence,
//! function (body, rights, settings), trigger, view and privilege of livesync, with the
//! triggers livesync puts on Xpert's tables. Comments are left out; function bodies are
//! compared without comments and with blanks collapsed; the migrating role is "owner".

use sqlx::PgPool;

use crate::helpers::TestDb;

/// One line per schema object, sorted.
pub async fn fingerprint(pool: &PgPool) -> Vec<String> {
    let queries: [&str; 10] = [
        // Tables, views and sequences, with their options and privileges.
        "select format('relation %s kind=%s options=%s acl=%s', c.relname, c.relkind,
                       c.reloptions, replace(c.relacl::text, current_user, 'owner'))
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'livesync' and c.relkind in ('r', 'v', 'S')
            and c.relname <> 'refinery_schema_history'",
        "select format('column %s.%s %s not_null=%s default=%s identity=%s',
                       c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                       a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity)
           from pg_attribute a
           join pg_class c on c.oid = a.attrelid
           join pg_namespace n on n.oid = c.relnamespace
           left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
          where n.nspname = 'livesync' and c.relkind in ('r', 'v') and a.attnum > 0
            and not a.attisdropped and c.relname <> 'refinery_schema_history'",
        "select format('constraint %s.%s %s', c.relname, k.conname, pg_get_constraintdef(k.oid))
           from pg_constraint k join pg_class c on c.oid = k.conrelid
           join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'livesync' and c.relname <> 'refinery_schema_history'",
        "select format('index %s', pg_get_indexdef(i.indexrelid))
           from pg_index i join pg_class c on c.oid = i.indrelid
           join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'livesync' and c.relname <> 'refinery_schema_history'",
        "select format('sequence %s type=%s start=%s min=%s max=%s cycle=%s',
                       c.relname, format_type(s.seqtypid, null), s.seqstart, s.seqmin,
                       s.seqmax, s.seqcycle)
           from pg_sequence s join pg_class c on c.oid = s.seqrelid
           join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'livesync'",
        "select format('function %s(%s) returns %s lang=%s volatile=%s definer=%s config=%s \
                        strict=%s parallel=%s acl=%s',
                       p.proname, pg_get_function_identity_arguments(p.oid),
                       pg_get_function_result(p.oid), l.lanname, p.provolatile,
                       p.prosecdef, p.proconfig, p.proisstrict, p.proparallel,
                       replace(p.proacl::text, current_user, 'owner'))
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           join pg_language l on l.oid = p.prolang
          where n.nspname = 'livesync'",
        "select format('body %s(%s) %s', p.proname, pg_get_function_identity_arguments(p.oid),
                       p.prosrc)
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
          where n.nspname = 'livesync'",
        // Triggers on livesync's and on Xpert's tables that call livesync's functions.
        "select format('trigger %s', pg_get_triggerdef(t.oid))
           from pg_trigger t join pg_proc p on p.oid = t.tgfoid
           join pg_namespace n on n.oid = p.pronamespace
          where n.nspname = 'livesync' and not t.tgisinternal",
        "select format('view %s %s', c.relname, pg_get_viewdef(c.oid))
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = 'livesync' and c.relkind = 'v'",
        // What migrating writes: the settings row and the update's existing users.
        "select format('data settings %s %s %s %s %s %s',
                       s.id, s.live_sync_enabled, s.cti_sync_licensed, s.exchange_server,
                       s.delivery_mode, s.time_zone)
           from livesync.settings s
         union all
         select format('data first_login %s %s', f.user_id, f.state)
           from livesync.first_login f",
    ];
    let mut lines = Vec::new();
    for q in queries {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        lines.extend(rows.into_iter().map(|l| normalise(&l)));
    }
    lines.sort();
    lines
}

/// Comments (`-- …` to the end of the line) removed, blanks collapsed.
fn normalise(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The schema migrating gives, line by line: `tests/tests/it/schema.snapshot`. Any change to
/// the schema shows here; after an intended one, rewrite the snapshot with
/// `LIVESYNC_UPDATE_SCHEMA_SNAPSHOT=1 cargo test -p livesync-tests --test it schema::` and
/// review its diff.
#[tokio::test]
async fn the_schema_matches_its_snapshot() {
    let db = TestDb::baseline().await;
    db.user("mmuster").await;
    db.user("ssekretaer").await;
    db.migrate().await;
    let lines = fingerprint(&db.pool).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/schema.snapshot");
    let now = lines.join("\n") + "\n";
    if std::env::var_os("LIVESYNC_UPDATE_SCHEMA_SNAPSHOT").is_some() {
        std::fs::write(path, &now).unwrap();
        return;
    }
    let kept = std::fs::read_to_string(path).unwrap_or_default();
    let kept_lines: Vec<&str> = kept.lines().collect();
    let gone: Vec<&str> = kept_lines
        .iter()
        .copied()
        .filter(|l| !lines.iter().any(|n| n == l))
        .collect();
    let new: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !kept_lines.contains(l))
        .collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "the schema differs from {path}.\nno longer there:\n{}\nnew:\n{}\n(after an intended change: \
         LIVESYNC_UPDATE_SCHEMA_SNAPSHOT=1 cargo test -p livesync-tests --test it schema::)",
        gone.join("\n"),
        new.join("\n"),
    );
    assert!(
        lines.len() > 150,
        "the fingerprint covers the schema: {} lines",
        lines.len()
    );
}

/// A database migrated by a pre-release build (the migration chain V1–V15 that this
/// release's four migrations replace) is recognised, and every tool says what to do.
#[tokio::test]
async fn a_database_with_the_pre_release_schema_gets_a_clear_message() {
    let db = TestDb::baseline().await;
    sqlx::raw_sql(
        "create schema livesync;
         create table livesync.refinery_schema_history (version int4 primary key,
           name varchar(255), applied_on varchar(255), checksum varchar(255));
         insert into livesync.refinery_schema_history
         values (1, 'settings_and_users', '2026-11-20', '1'),
                (14, 'lean_insert_path', '2026-12-01', '14'),
                (15, 'worker_presence_and_quiet_looks', '2026-12-03', '15');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let migrate = livesync_core::migrate::run(&db.url, false)
        .await
        .expect_err("a pre-release schema is not migrated over")
        .to_string();
    let worker = livesync_worker::schema::check(&db.pool)
        .await
        .expect_err("the worker refuses it")
        .to_string();
    for message in [&migrate, &worker] {
        assert!(
            message.contains("pre-release")
                && message.contains("settings_and_users")
                && message.contains("sql/uninstall.sql")
                && message.contains("livesync-admin migrate"),
            "{message}"
        );
    }
}
