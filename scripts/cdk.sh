#!/usr/bin/env bash
# Run the pinned AWS CDK CLI from the repository root, e.g.
#   scripts/cdk.sh synth                 # template in cdk.out/
#   scripts/cdk.sh deploy -c stepkit:stage=prod
#   scripts/cdk.sh destroy
# Installs the CLI (scripts/install-cdk.sh) and the Python environment (scripts/setup.sh)
# when they are missing; cdk.json runs the app with .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  scripts/setup.sh
fi
scripts/install-cdk.sh
# jsii (under aws-cdk-lib) prints a banner about this machine's Node 20 on every synth; the
# pinned CLI and library work on it, so keep the output readable.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="${JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION:-20}"
exec infra/node_modules/.bin/cdk "$@"
