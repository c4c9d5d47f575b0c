#!/usr/bin/env bash
# Install the pinned AWS CDK CLI (infra/package.json + package-lock.json) into infra/node_modules.
# The CLI is pinned to v2: the 3.0 CLI rejects the cloud assemblies current aws-cdk-lib writes.
# Idempotent: does nothing when the pinned version is already installed. Needs node + npm.
set -euo pipefail
cd "$(dirname "$0")/../infra"

want="$(sed -n 's/.*"aws-cdk": *"\([^"]*\)".*/\1/p' package.json)"
have=""
if [ -f node_modules/aws-cdk/package.json ]; then
  have="$(node -p 'require("./node_modules/aws-cdk/package.json").version' 2>/dev/null || true)"
fi
if [ "$have" = "$want" ] && [ -x node_modules/.bin/cdk ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install-cdk: npm is required to install the AWS CDK CLI (aws-cdk@$want)" >&2
  exit 1
fi
echo "install-cdk: installing aws-cdk@$want into infra/node_modules" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
