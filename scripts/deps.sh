#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, idempotently:
#   - the Debian packages listed in .ci/apt-packages (as root, or with sudo);
#   - the pinned MinIO server, built with `go install` into a cache folder;
#   - the npm clients used by interoperability tests (interop/*/package.json,
#     each with its package-lock.json, installed with `npm ci`).
# Prints nothing but progress on stderr; `scripts/deps.sh minio-bin` prints
# the MinIO binary path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
CACHE=${CONSILIUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consilium}
MINIO_BIN=$CACHE/minio-$MINIO_VERSION/minio

log() { echo "deps: $*" >&2; }

apt_packages() {
	local want missing=()
	want=$(sed 's/#.*//' .ci/apt-packages | awk 'NF {print $1}')
	for p in $want; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local sudo=""
	if [ "$(id -u)" != 0 ]; then
		if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
			log "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]}); tests that need them will skip, or fail under CI=true"
			return 0
		fi
	fi
	log "installing Debian packages: ${missing[*]}"
	$sudo apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

minio_bin() {
	if [ ! -x "$MINIO_BIN" ]; then
		log "building MinIO server $MINIO_VERSION (a few minutes, once; cached in $CACHE)"
		mkdir -p "$(dirname "$MINIO_BIN")"
		GOBIN=$(dirname "$MINIO_BIN") GOFLAGS=-buildvcs=false go install "github.com/minio/minio@$MINIO_VERSION" >&2
	fi
}

npm_packages() {
	local dirs=()
	for f in interop/*/package.json; do [ -f "$f" ] && dirs+=("$(dirname "$f")"); done
	[ ${#dirs[@]} -eq 0 ] && return 0
	if ! command -v npm >/dev/null; then
		log "npm is missing; interoperability tests will skip, or fail under CI=true"
		return 0
	fi
	for d in "${dirs[@]}"; do
		if [ ! -d "$d/node_modules" ] || [ "$d/package-lock.json" -nt "$d/node_modules" ]; then
			log "installing npm clients in $d"
			(cd "$d" && npm ci --no-audit --no-fund --loglevel=error >&2 && touch node_modules)
		fi
	done
}

case "${1:-all}" in
minio-bin) minio_bin; echo "$MINIO_BIN" ;;
all) apt_packages; minio_bin; npm_packages ;;
*) echo "usage: scripts/deps.sh [all|minio-bin]" >&2; exit 2 ;;
esac
