#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine, then runs
# every test of the workspace against real components.
#   - PostgreSQL server binaries (Debian package) — the tests start a private server from
#     them unless DATABASE_URL points at a server that allows `create database`.
#   - Chromium and ChromeDriver (Debian packages chromium, chromium-driver) — the console's
#     browser test drives headless Chromium; with CI=true it fails when they are missing.
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

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Chromium and ChromeDriver (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "Chromium is missing: install the 'chromium' and 'chromium-driver' packages (as root); the console's browser test is skipped without them (and fails with CI=true)." >&2
  fi
fi

scripts/caldav-venv.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary, the last of them
# often for a binary without tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
