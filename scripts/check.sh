#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs into .venv, makes sure PostgreSQL is up,
# then ruff (lint + format), mypy (strict) and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

# The PostgreSQL contract tests run against the real server on this machine. Start it if it
# is down; when CI is set and it still cannot be reached, those tests fail (never skip).
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
fi

# The dashboard's browser tests drive Debian's chromium (never a downloaded browser).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo -n")
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null; } \
    || echo "warning: could not install chromium; the browser tests will fail under CI"
fi

# The chain integration tests run a real anvil node from npm (package.json pins it).
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo -n")
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nodejs npm >/dev/null 2>&1 \
    || echo "warning: could not install npm; the anvil tests will fail under CI"
fi
# `npm install` (not `npm ci`): the lock file records only the linux-amd64 binary package of
# anvil's per-platform optional dependencies, and npm ci refuses such a lock as out of sync.
# npm install still installs exactly the locked versions and integrity hashes.
if command -v npm >/dev/null 2>&1 && [ ! -x node_modules/.bin/anvil ]; then
  npm install --no-audit --no-fund --loglevel=error >/dev/null \
    || echo "warning: npm install failed; the anvil tests will fail under CI"
fi
if [ -x node_modules/.bin/anvil ]; then
  node_modules/.bin/anvil --version | head -n1
elif [ -n "${CI:-}" ]; then
  echo "error: anvil is not installed (node_modules/.bin/anvil); the chain tests need it" >&2
  exit 1
fi

echo "== ruff"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# pytest exits 5 when it collected nothing: set -e turns that into a failure too. Three
# workers (most tests wait on subprocesses and sockets, not the CPU); --dist loadscope keeps
# each module on one worker, so a module-scoped live network starts once.
.venv/bin/pytest -p no:cacheprovider -n "${QUACKMESH_TEST_WORKERS:-3}" --dist loadscope "$@"
