#!/usr/bin/env bash
# Install what stepkit needs on a fresh machine: uv, the locked Python environment in .venv
# (with the `stepkit` console script and its `cli` extra). Idempotent; quiet when there is
# nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
# --extra cli: the `stepkit` command and dev server, which the Lambda asset leaves out.
uv sync --frozen --quiet --extra cli
