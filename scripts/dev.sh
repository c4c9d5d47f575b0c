#!/usr/bin/env bash
# Set up, then run the dev server with the example functions on the embedded SQLite backend.
# Extra arguments go to `stepkit dev` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/stepkit dev "$@"
