#!/usr/bin/env bash
# Runs every test: installs what the tests need (scripts/deps.sh), then
# `go test -race` over the whole module. Tests that need MinIO use the
# server named by CONSILIUM_TEST_MINIO_ENDPOINT (as .ci/run exports) or
# start the cached MinIO binary themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh all
export CONSILIUM_MINIO_BIN=${CONSILIUM_MINIO_BIN:-$(scripts/deps.sh minio-bin)}
export PATH="$(dirname "$CONSILIUM_MINIO_BIN"):$PATH"
exec go test -race -count=1 -timeout 45m "$@" ./...
