#!/usr/bin/env bash
# The README's main command: installs choreo if needed, then runs `choreo demo`
# (the order-fulfilment saga with the trace viewer). Arguments go to `choreo demo`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${PYTHON:-python3}"

# -I: is choreo (and the CLI's dependencies) installed, not merely importable from here?
if ! "$PYTHON" -I -c "import choreo.cli" >/dev/null 2>&1; then
    echo "installing choreo ..." >&2
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        "$PYTHON" -m pip install -q -e .
fi

# through $PYTHON, not the first `choreo` on PATH: the demo runs with the choreo just checked
exec "$PYTHON" -m choreo demo "$@"
