#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine, then runs
# every test of the workspace against real components.
#   - PostgreSQL server binaries (Debian package) — the tests start a private server from
#     them unless DATABASE_URL points at a server that allows `create database`.
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
if ! have_pg; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing PostgreSQL (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL server binaries are missing: install the 'postgresql' package (as root) or set DATABASE_URL." >&2
    exit 1
  fi
fi

scripts/caldav-venv.sh
exec cargo test --workspace --locked "$@"
