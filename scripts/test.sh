#!/usr/bin/env bash
# Set up everything the test suite needs, then run lint, types and the whole suite
# (behaviour suite on every backend, dashboard browser test, CDK synth checks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/install-test-deps.sh
# Let this run cache the bytecode of the project's own modules and pytest's rewritten test
# modules (in the gitignored __pycache__/), for the workers and subprocesses after the first.
unset PYTHONDONTWRITEBYTECODE
.venv/bin/ruff check .
.venv/bin/mypy
# One pytest worker per core (pytest-xdist), at most 4: each starts its own emulators
# (a DynamoDB Local JVM and an in-process moto), ~0.5 GB of memory apiece.
.venv/bin/pytest -q -n "${STEPKIT_TEST_WORKERS:-auto}" --maxprocesses 4 --dist loadgroup "$@"
