#!/usr/bin/env bash
# What one look for work (`livesync.next_work`, as the worker calls it with its session
# settings) costs the server, by how many users are online, with nothing to deliver:
# 1,000 users with live sync, first all online, then one. Runs pgbench on a private
# PostgreSQL at its defaults; the two states alternate three times (the machine is shared).
#
#   scripts/look-cost.sh [seconds per run, default 10]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-10}
. "$repo/scripts/private-pg.sh"
start_private_pg look-cost 55438
psql() { command psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
psql -c "create database looks" >/dev/null
psql -d looks -f "$repo/sql/xpert_baseline.sql" >/dev/null
for m in $(ls "$repo"/migrations/V*.sql | sort -V); do psql -d looks -f "$m" >/dev/null; done
psql -d looks <<'SQL' >/dev/null
insert into livesync.settings (live_sync_enabled, cti_sync_licensed) values (true, true)
  on conflict (id) do update set live_sync_enabled = true, cti_sync_licensed = true;
insert into xpert.users (username) select 'user' || g from generate_series(1, 1000) g;
insert into livesync.user_settings (user_id, live_sync_enabled) select id, true from xpert.users;
SQL
echo "select * from livesync.next_work('00000000-0000-0000-0000-000000000001', null, null, 1000, 4, '12 hours', '60 s');" \
  > "$work/look.sql"
look() {
  PGOPTIONS="-c jit=off -c enable_seqscan=off" "$bin/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres \
    -f "$work/look.sql" -T "$secs" looks 2>&1 | awk '/latency average/ { print $4 }'
}
echo "| round | 1,000 online: ms per look | 1 online: ms per look | ratio |"
echo "| ---: | ---: | ---: | ---: |"
for round in 1 2 3; do
  psql -d looks -c "update livesync.user_state set login_matched = true, logged_out_at = null, logged_in_at = now()"
  all=$(look)
  psql -d looks -c "update livesync.user_state set logged_out_at = now() where user_id <> 1"
  one=$(look)
  echo "| $round | $all | $one | $(awk -v a="$all" -v o="$one" 'BEGIN { printf "%.1f", a / o }') |"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
