#!/usr/bin/env bash
# Set up everything the test suite needs, then run lint, types and the whole suite
# (behaviour suite on every backend, dashboard browser test, CDK synth checks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/install-test-deps.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q "$@"
