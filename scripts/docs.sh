#!/usr/bin/env bash
# Build the documentation site (mkdocs.yml) with --strict: any broken link, missing page
# or unresolved API name fails. Installs the `docs` extra first. The site goes to site/
# (git-ignored) unless a directory is given: `bash scripts/docs.sh /tmp/choreo-site`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

"$PYTHON" -m pip install -q -e ".[docs]"
"$PYTHON" -m mkdocs build --strict --site-dir "${1:-site}"
