#!/usr/bin/env bash
# What livesync's triggers cost one Xpert transaction (an appointment and its three
# participants, prepared statements), counted in instructions by callgrind in a single-user
# PostgreSQL backend: the same figure on a busy machine as on a quiet one, unlike tps.
#
#   cargo build --release -p livesync-bench && scripts/write-path-instructions.sh [SQL...]
#
# Databases: A (Xpert only) and B (livesync, sync active for every user), seeded by
# `livesync-bench write-path`; each SQL file given is applied to a copy of B (an
# experiment, e.g. an older trigger) and measured as well. Per variant, 500 and 2,500
# transactions run in one backend each; the difference over 2,000 is the cost of one
# (start-up and catalog loading cancel out). Takes a few minutes (valgrind is ~50x slower).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench="$repo/target/release/livesync-bench"
[ -x "$bench" ] || { echo "build first: cargo build --release -p livesync-bench" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
. "$repo/scripts/private-pg.sh"
start_private_pg instructions 55439
url="postgres://postgres@127.0.0.1:$port/postgres"
echo "seeding A and B (livesync-bench write-path) ..." >&2
DATABASE_URL=$url "$bench" write-path --quick --rounds 1 --seconds 1 --variants a,b --keep >/dev/null
psql() { command psql -h 127.0.0.1 -p "$port" -U postgres -q -v ON_ERROR_STOP=1 "$@"; }
variants=(a b)
i=0
for f in "$@"; do
  i=$((i + 1))
  psql -c "create database livesync_bench_x$i template livesync_bench_b" postgres
  psql -f "$f" "livesync_bench_x$i"
  variants+=("x$i")
done
for v in "${variants[@]}"; do psql -c "vacuum analyze" "livesync_bench_$v"; done
as_pg "$bin/pg_ctl" -D "$work/data" stop -m fast >/dev/null

# Xpert's write pattern with fixed values, as prepared statements (pgbench -M prepared).
python3 - "$work" <<'EOF'
import random, sys
for n, first in ((500, 2_000_000), (2500, 3_000_000)):
    rnd = random.Random(1)
    with open(f"{sys.argv[1]}/tx_{n}.sql", "w") as f:
        f.write("PREPARE ia (bigint, int, bigint) AS INSERT INTO xpert.appointments "
                "(id, subject, location, notes, starts_at, ends_at, created_by) VALUES ($1, "
                "'Besprechung Verlassenschaft', 'Kanzlei, Besprechungszimmer 2', "
                "'Aktenzahl 4711/26; Unterlagen mitbringen', now() + make_interval(hours => $2), "
                "now() + make_interval(hours => $2 + 1), $3)\n")
        f.write("PREPARE ip (bigint, bigint) AS INSERT INTO xpert.appointment_participants "
                "(appointment_id, user_id) VALUES ($1, $2)\n")
        for i in range(n):
            u1 = rnd.randint(1, 1000)
            u2 = (u1 - 1 + rnd.randint(1, 499)) % 1000 + 1
            u3 = (u1 - 1 + rnd.randint(500, 999)) % 1000 + 1
            h = rnd.randint(-48, 2400)
            f.write(f"BEGIN\nEXECUTE ia({first + i}, {h}, {u1})\n")
            for u in (u1, u2, u3):
                f.write(f"EXECUTE ip({first + i}, {u})\n")
            f.write("COMMIT\n")
EOF
[ "$(id -u)" = 0 ] && chown postgres "$work"/tx_*.sql

count() { # variant n -> instructions of the whole backend run
  local out="$work/cg_$1_$2.out"
  as_pg valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin/postgres" --single -D "$work/data" -c fsync=off "livesync_bench_$1" \
    <"$work/tx_$2.sql" >"$work/single_$1_$2.log" 2>&1
  if grep -q ERROR "$work/single_$1_$2.log"; then
    grep -m3 ERROR "$work/single_$1_$2.log" >&2; exit 1
  fi
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
}
printf '| variant | instructions per transaction | A ÷ variant |\n| --- | ---: | ---: |\n'
base=
for v in "${variants[@]}"; do
  echo "counting $v ..." >&2
  per=$(( ($(count "$v" 2500) - $(count "$v" 500)) / 2000 ))
  [ -n "$base" ] || base=$per
  printf '| %s | %s | %s |\n' "$v" "$per" "$(awk -v a="$base" -v b="$per" 'BEGIN { printf "%.3f", a / b }')"
done
