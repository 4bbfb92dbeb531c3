#!/usr/bin/env bash
# Creates .venv with the CalDAV servers the tests start (Radicale, Xandikos), the
# independent CalDAV client they read back with (PyPI `caldav`), the NTLM acceptor the EWS
# sink signs in against (PyPI `pyspnego`) and the EWS client that checks the EWS fake
# (PyPI `exchangelib`). Idempotent: does nothing when all are importable already.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY="$VENV/bin/python"
have_all() {
  [ -x "$PY" ] && [ -x "$VENV/bin/radicale" ] && [ -x "$VENV/bin/xandikos" ] \
    && "$PY" -c 'import radicale, xandikos, caldav, spnego, exchangelib' >/dev/null 2>&1
}

if have_all; then
  echo "==> test servers: $VENV has radicale, xandikos, caldav, pyspnego and exchangelib"
  exit 0
fi

if [ ! -x "$PY" ]; then
  PYTHON=${PYTHON:-python3}
  if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "==> installing python3-venv (Debian package)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "python3 with the venv module is needed for the CalDAV tests" >&2
      exit 1
    fi
  fi
  echo "==> creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi

echo "==> installing radicale, xandikos, caldav, pyspnego and exchangelib into $VENV"
"$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$PY" -m pip install --quiet --disable-pip-version-check radicale xandikos caldav pyspnego exchangelib
if ! have_all; then
  echo "installing the CalDAV test servers into $VENV failed" >&2
  exit 1
fi
echo "==> $VENV: $("$PY" -c 'import importlib.metadata as m; print(", ".join(p + " " + m.version(p) for p in ("radicale", "xandikos", "caldav", "pyspnego", "exchangelib")))')"
