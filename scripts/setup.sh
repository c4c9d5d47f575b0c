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
# --compile-bytecode: compile the environment once (~30 s CPU on a fresh machine) rather than
# in every process that imports it: with PYTHONDONTWRITEBYTECODE set, as on this machine,
# nothing would ever be cached, and each test worker, dev server and CDK synth would compile
# boto3, pydantic and aws-cdk-lib from source again (`import aws_cdk`: 1.65 s -> 0.75 s).
uv sync --frozen --quiet --extra cli --compile-bytecode
