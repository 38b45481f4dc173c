#!/usr/bin/env bash
# STOW-RS throughput of the 300-slice CT series that gen_dicom.py makes, with
# 4 requests in flight, against, in the same run:
#   (a) Orthanc (Debian's orthanc), REST POST /instances, one instance each;
#   (b) the gateway with the filesystem backend (consilium serve --dev);
#   (c) the gateway with the MinIO backend;
#   (d) plain minio-go PUTs of the same bytes to the same MinIO.
# The gateways are measured with 1 and with 16 instances per STOW-RS request
# (16 is what consilium push sends). Every server and the load client run inside a
# private network namespace whose only interface is loopback (unshare -n;
# Orthanc 1.10 cannot bind its HTTP port to one address), so nothing else
# can reach them. Orthanc has RemoteAccessAllowed false and its DICOM port
# disabled. Each iteration stores the series under new UIDs (a new study),
# so no target can answer "already stored".
#
#   bench/dicomweb/run.sh
#   ROUNDS=5 BENCHTIME=3x SLICES=300 bench/dicomweb/run.sh
#
# Needs root (unshare -n), Go, /usr/bin/python3 with pydicom and numpy, the
# MinIO server (CONSILIUM_MINIO_BIN or scripts/deps.sh builds it), and
# installs orthanc and iproute2 with apt-get when they are missing.
# Results: bench/out/dicomweb/bench.txt (go test -bench output of every
# round) and bench/out/dicomweb/summary.txt (medians and ratios).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/bench/out/dicomweb
work=${BENCH_WORK:-/var/tmp/consilium-bench-dicomweb}

if [ "${1:-}" != "--inside" ]; then
	cd "$root"
	[ "$(id -u)" = 0 ] || { echo "run as root: unshare -n needs it" >&2; exit 1; }
	need() { command -v "$1" >/dev/null || { echo "missing $1: $2" >&2; exit 1; }; }
	apt_install() {
		echo "== installing $*" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 ||
			{ apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2; }
	}
	command -v Orthanc >/dev/null || apt_install orthanc
	command -v ip >/dev/null || apt_install iproute2
	need go "install Go"
	need unshare "apt-get install util-linux"
	need curl "apt-get install curl"
	[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import pydicom, numpy' ||
		{ echo "missing pydicom/numpy for /usr/bin/python3: apt-get install python3-pydicom python3-numpy" >&2; exit 1; }
	minio_bin=${CONSILIUM_MINIO_BIN:-}
	[ -n "$minio_bin" ] || minio_bin=$(command -v minio || true)
	[ -n "$minio_bin" ] || minio_bin=$(scripts/deps.sh minio-bin)
	[ -x "$minio_bin" ] || { echo "no MinIO server binary" >&2; exit 1; }

	rm -rf "$work"
	mkdir -p "$work" "$out"
	echo "== building consilium and the load client" >&2
	go build -o "$work/consilium" ./cmd/consilium
	go test -c -o "$work/bench.test" ./bench/dicomweb
	echo "== generating the ${SLICES:-300}-slice CT series (gen_dicom.py)" >&2
	/usr/bin/python3 "$root/../shared/tools/gen_dicom.py" "$work/gen" --slices "${SLICES:-300}" --skip-multiframe >/dev/null
	MINIO_BIN=$minio_bin exec unshare -n "$0" --inside
fi

# --- inside the network namespace: only loopback ----------------------------
ip link set lo up
cd "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

wait_for() { # name, command...
	local name=$1; shift
	for _ in $(seq 1 300); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "$name did not come up; logs in $work" >&2
	exit 1
}

export MINIO_ROOT_USER=benchadmin MINIO_ROOT_PASSWORD=bench-secret-key
"$MINIO_BIN" server "$work/minio" --address 127.0.0.1:9000 --console-address 127.0.0.1:9001 --quiet >"$work/minio.log" 2>&1 &
pids+=($!)

mkdir -p "$work/orthanc/storage" "$work/orthanc/index"
cat >"$work/orthanc.json" <<EOF
{
  "Name": "bench",
  "StorageDirectory": "$work/orthanc/storage",
  "IndexDirectory": "$work/orthanc/index",
  "HttpPort": 8042,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomServerEnabled": false,
  "Plugins": []
}
EOF
Orthanc "$work/orthanc.json" >"$work/orthanc.log" 2>&1 &
pids+=($!)

"$work/consilium" serve --dev --data "$work/dev" --addr 127.0.0.1:8443 >"$work/gateway-fs.log" 2>&1 &
pids+=($!)
dev=$work/dev
wait_for "the filesystem gateway" test -f "$dev/pki/st-marys.key"
wait_for MinIO curl -fsS http://127.0.0.1:9000/minio/health/live
CONSILIUM_ADDR=127.0.0.1:8444 CONSILIUM_STORAGE=minio CONSILIUM_MINIO_ENDPOINT=127.0.0.1:9000 \
	CONSILIUM_MINIO_BUCKET=consilium CONSILIUM_MINIO_ACCESS_KEY=$MINIO_ROOT_USER \
	CONSILIUM_MINIO_SECRET_KEY=$MINIO_ROOT_PASSWORD CONSILIUM_LOG_LEVEL=info CONSILIUM_LOG_FORMAT=text \
	CONSILIUM_TLS_CA=$dev/pki/ca.pem CONSILIUM_TLS_CERT=$dev/pki/server.pem CONSILIUM_TLS_KEY=$dev/pki/server.key \
	CONSILIUM_TLS_CRL=$dev/pki/crl.pem CONSILIUM_KEYRING_FILE=$dev/keys/keyring.json CONSILIUM_SIGNING_KEY_FILE=$dev/keys/gateway.key \
	"$work/consilium" serve >"$work/gateway-minio.log" 2>&1 &
pids+=($!)

curlc=(curl -fsS --cacert "$dev/pki/ca.pem" --cert "$dev/pki/st-marys.pem" --key "$dev/pki/st-marys.key")
wait_for Orthanc curl -fsS http://127.0.0.1:8042/system
wait_for "the filesystem gateway" "${curlc[@]}" https://127.0.0.1:8443/readyz
wait_for "the MinIO gateway" "${curlc[@]}" https://127.0.0.1:8444/readyz
echo "== network namespace: $(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')" >&2
echo "== Orthanc $(curl -fsS http://127.0.0.1:8042/system | sed -n 's/.*"Version" : "\([^"]*\)".*/\1/p'), $(nproc) CPUs" >&2

export BENCH_SERIES=$work/gen/ct BENCH_CONCURRENCY=4 \
	BENCH_ORTHANC_URL=http://127.0.0.1:8042 \
	BENCH_GATEWAY_FS_URL=https://127.0.0.1:8443 BENCH_GATEWAY_MINIO_URL=https://127.0.0.1:8444 \
	BENCH_CERT=$dev/pki/st-marys.pem BENCH_KEY=$dev/pki/st-marys.key BENCH_CA=$dev/pki/ca.pem \
	BENCH_MINIO_ENDPOINT=127.0.0.1:9000 BENCH_MINIO_ACCESS_KEY=$MINIO_ROOT_USER \
	BENCH_MINIO_SECRET_KEY=$MINIO_ROOT_PASSWORD BENCH_MINIO_BUCKET=plain
{
	echo "# $(date -u +%FT%TZ), $(nproc) CPUs, $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# Orthanc $(curl -fsS http://127.0.0.1:8042/system | sed -n 's/.*"Version" : "\([^"]*\)".*/\1/p'), rounds ${ROUNDS:-3}, benchtime ${BENCHTIME:-3x}, 4 requests in flight"
} >"$out/bench.txt"
for r in $(seq 1 "${ROUNDS:-3}"); do
	echo "== round $r" >&2
	BENCH_ROUND=$r "$work/bench.test" -test.run '^$' -test.bench '^BenchmarkStore$' \
		-test.benchtime "${BENCHTIME:-3x}" | tee -a "$out/bench.txt"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/bench.txt"

# Medians over the rounds, and the ratios against the peers measured in the
# same round (the targets of one round run back to back), with their median.
awk '
/^goos:/ { round++ }
/^BenchmarkStore\// {
	name = $1; sub(/^BenchmarkStore\//, "", name); sub(/-[0-9]+$/, "", name)
	for (i = 2; i < NF; i++) {
		if ($(i+1) == "instances/s") { ips[name] = ips[name] " " $i; per[round, name] = $i }
		if ($(i+1) == "MB/s") mbs[name] = mbs[name] " " $i
	}
	if (!(name in seen)) { seen[name] = 1; order[++n] = name }
}
function median(s,   a, k, i, j, t) {
	k = split(s, a, " ")
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function ratios(t, peer,   r, s) {
	s = ""
	for (r = 1; r <= round; r++) if (per[r, peer] > 0 && per[r, t] > 0) s = s " " sprintf("%.2f", per[r, t] / per[r, peer])
	return s
}
END {
	printf "%-32s %14s %10s   (medians of %d rounds)\n", "target (4 requests in flight)", "instances/s", "MB/s", round
	for (i = 1; i <= n; i++) printf "%-32s %14.1f %10.1f\n", order[i], median(ips[order[i]]), median(mbs[order[i]])
	print ""
	for (i = 1; i <= n; i++) {
		t = order[i]
		if (t ~ /^gateway-fs/) {
			s = ratios(t, "orthanc")
			printf "%-32s %.2fx Orthanc (median of per-round ratios;%s)   target >= 2x\n", t, median(s), s
		}
		if (t ~ /^gateway-minio/) {
			s = ratios(t, "minio-put")
			printf "%-32s %.0f%% of plain minio-go PUTs (median of per-round ratios;%s)   target >= 60%%\n", t, 100 * median(s), s
		}
	}
}' "$out/bench.txt" | tee "$out/summary.txt"
grep '^#' "$out/bench.txt" | tee -a "$out/summary.txt"
