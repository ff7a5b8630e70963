#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run): on a fresh Debian machine with
# Python 3.11+, Java 17+ and Maven it installs everything (PostgreSQL too, as root), then
# runs the gates: ruff, mypy (strict for choreo/), the wheel as a user installs it
# (scripts/check_wheel.py: a fresh virtual environment, no extras, `choreo demo` in an
# empty directory), and pytest (which starts its own Kafka
# broker and PostgreSQL server through tests/conftest.py unless CHOREO_KAFKA_BOOTSTRAP and
# CHOREO_POSTGRES_URL name them; it lists the 25 slowest tests). Any failure exits non-zero,
# and so does a pytest run that collected no tests.
#
# pytest runs in CHOREO_TEST_WORKERS processes (pytest-xdist, default 3, a test file per
# worker at a time): most of the suite's wall time is waiting on brokers, rebalances and
# subprocesses, so three workers on two cores take about half the time of one. Each
# worker that needs one starts its own broker and PostgreSQL. `-n 0` among the arguments
# runs everything in one process (pytest takes the last -n).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

step() { printf '\n==> %s\n' "$*"; }

step "installing choreo with its dev extras"
"$PYTHON" -m pip install -q -e ".[dev]"   # dev includes the docs extra (mkdocs)

step "checking for Debian packages the tests need (chromium, graphviz, python3-venv)"
# Each tool the tests drive is a real program: the browser tests run Debian's chromium,
# the drawing tests Graphviz's `dot`, and the wheel check a fresh virtual environment
# (Debian ships venv's pip apart, as python3-venv). A fresh machine gets them here, so
# no test skips.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
"$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "chromium: $(command -v chromium); dot: $(command -v dot); venv: ok"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        echo "WARNING: could not install ${missing[*]}; the tests that need them will fail." >&2
    fi
else
    echo "WARNING: ${missing[*]} not installed and this is not root:" \
         "apt-get install ${missing[*]}, or the tests that need them will fail." >&2
fi

step "checking for PostgreSQL (store tests)"
if [ -n "${CHOREO_POSTGRES_URL:-}" ]; then
    echo "postgresql: CHOREO_POSTGRES_URL is set"
elif ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin | tail -n 1)"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; then
        echo "WARNING: could not install Debian's postgresql; the store tests will fail." >&2
    fi
else
    echo "WARNING: PostgreSQL is not installed and this is not root: install it" \
         "(apt-get install postgresql) or set CHOREO_POSTGRES_URL, or the store tests fail." >&2
fi

step "fetching the Kafka broker's jars (cached after the first time)"
"$PYTHON" scripts/kafka_broker.py fetch

step "ruff check ."
"$PYTHON" -m ruff check .

step "mypy"
"$PYTHON" -m mypy

step "the wheel, installed in a fresh virtual environment (scripts/check_wheel.py)"
"$PYTHON" scripts/check_wheel.py

step "pytest"
status=0
"$PYTHON" -m pytest --strict-markers --durations=25 \
    -n "${CHOREO_TEST_WORKERS:-3}" --dist loadfile "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "ERROR: pytest collected no tests." >&2
    exit 1
fi
exit "$status"
