//! The schema as the catalog sees it: every table and column, constraint, index, sequence,
//! function (body, rights, settings), trigger, view and privilege of livesync, with the
//! triggers livesync puts on Xpert's tables. Comments are left out; function bodies are
//! compared without comments and with blanks collapsed.

use sqlx::PgPool;

use crate::helpers::TestDb;

/// One line per schema object, sorted.
pub async fn fingerprint(pool: &PgPool) -> Vec<String> {
    let queries: [&str; 10] = [
        // Tables, views and sequences, with their options and privileges.
        "select format('relation %s kind=%s options=%s acl=%s', c.relname, c.relkind,
                       c.reloptions, c.relacl)
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
                       p.prosecdef, p.proconfig, p.proisstrict, p.proparallel, p.proacl)
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

/// A baseline database with two Xpert users from before the update.
async fn xpert_with_users() -> TestDb {
    let db = TestDb::baseline().await;
    db.user("mmuster").await;
    db.user("ssekretaer").await;
    db
}

#[tokio::test]
async fn the_squashed_schema_equals_the_migration_chain() {
    let chain = xpert_with_users().await;
    chain.migrate().await;
    let squashed = xpert_with_users().await;
    let mut tx = squashed.pool.begin().await.unwrap();
    for sql in [
        include_str!("../../../schema/V1__tables.sql"),
        include_str!("../../../schema/V2__functions.sql"),
        include_str!("../../../schema/V3__xpert_triggers.sql"),
        include_str!("../../../schema/V4__status_view_and_grants.sql"),
    ] {
        sqlx::raw_sql(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let (a, b) = (
        fingerprint(&chain.pool).await,
        fingerprint(&squashed.pool).await,
    );
    let only_chain: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_squashed: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    assert!(
        only_chain.is_empty() && only_squashed.is_empty(),
        "the schemas differ.\nonly in the chain:\n{}\nonly in the squashed set:\n{}",
        only_chain
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        only_squashed
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(
        a.len() > 150,
        "the fingerprint covers the schema: {} lines",
        a.len()
    );
}
