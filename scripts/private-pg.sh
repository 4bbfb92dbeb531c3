# Sourced by the measuring scripts: a private PostgreSQL server at its defaults, in a work
# directory of its own, stopped and removed again when the script exits.
#
#   start_private_pg NAME PORT
#
# sets $bin (the newest server's bin directory), $work (/tmp/livesync-NAME.XXXXXX, the data
# directory in $work/data, the log in $work/log) and $port; the server listens on
# 127.0.0.1:PORT and in $work. `as_pg` runs a command as postgres when run as root.

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_private_pg() {
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bin" ] || { echo "no PostgreSQL server under /usr/lib/postgresql" >&2; exit 1; }
  work=$(mktemp -d "/tmp/livesync-$1.XXXXXX")
  port=$2
  if [ "$(id -u)" = 0 ]; then chown postgres "$work"; fi
  trap stop_private_pg EXIT
  as_pg "$bin/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
  as_pg "$bin/pg_ctl" -D "$work/data" -o "-p $port -k $work -c listen_addresses=127.0.0.1" \
    -l "$work/log" -w start >/dev/null
}

stop_private_pg() {
  as_pg "$bin/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$work"
}
