#!/usr/bin/env bash
# Case packet benchmark through the gateway: GET /cases/{id}/packet for a
# case with a generated 300-slice CT study (plus a Synthea patient's
# records), on the encrypted filesystem store and on MinIO, over HTTP/2 and
# HTTP/1.1, against
# Debian's age CLI encrypting the same packet's tar, interleaved in every
# iteration (see packet_test.go). Prints per run and as medians the time to
# first byte, the throughput of the first (built while streamed) and of a
# cached download as shares of age's; leaves the raw output under
# bench/out/cases/.
#
# Environment: SLICES (default 300), COUNT (runs, default 5), BENCHTIME
# (iterations per run, default 5x), BENCH_WORK (scratch directory; default
# a tmpfs one under /dev/shm, so that the disk does not decide the result:
# the study, the stores, MinIO's data and the tar all live there),
# CONSILIUM_MINIO_BIN (a minio server; default /root/tools/bin/minio when
# present, else as internal/miniotest finds it).
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$(pwd)
slices=${SLICES:-300}
count=${COUNT:-5}
benchtime=${BENCHTIME:-5x}
out="$root/bench/out/cases"
if [ -z "${BENCH_WORK:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  work=/dev/shm/consilium-bench-cases
else
  work=${BENCH_WORK:-$out/work}
fi
gen="$root/../shared/tools/gen_dicom.py"
if [ -z "${CONSILIUM_MINIO_BIN:-}" ] && [ -x /root/tools/bin/minio ]; then
  export CONSILIUM_MINIO_BIN=/root/tools/bin/minio
fi

need() { command -v "$1" >/dev/null || { echo "missing $1: $2" >&2; exit 1; }; }
need go "install Go"
need age "apt-get install age"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import pydicom, numpy' ||
  { echo "missing pydicom/numpy for /usr/bin/python3: apt-get install python3-pydicom python3-numpy" >&2; exit 1; }
[ -f "$gen" ] || { echo "missing $gen" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$out" "$work/tmp"
trap 'rm -rf "$work"' EXIT

echo "== generating a $slices-slice CT series (gen_dicom.py --skip-multiframe)"
/usr/bin/python3 "$gen" "$work/gen" --slices "$slices" --skip-multiframe >/dev/null
n=$(find "$work/gen" -name '*.dcm' | wc -l)
[ "$n" -eq "$slices" ] || { echo "generated $n files, want $slices" >&2; exit 1; }

echo "== building the test binary"
go test -c -o "$work/cases.test" ./bench/cases/
cmd="go test -run '^\$' -bench Packet -benchtime $benchtime ./bench/cases/"
: >"$out/bench.txt"
for i in $(seq "$count"); do
  echo "== run $i/$count: $cmd  (CONSILIUM_BENCH_STUDY=$work/gen; load: $(cut -d' ' -f1-3 /proc/loadavg))"
  (cd "$root/bench/cases" && CONSILIUM_BENCH_STUDY="$work/gen" TMPDIR="$work/tmp" \
    "$work/cases.test" -test.run '^$' -test.bench Packet -test.benchtime "$benchtime") |
    grep '^Benchmark' | tee -a "$out/bench.txt"
done

awk -v slices="$slices" -v date="$(date -u +%F)" -v cpus="$(nproc)" '
  function field(name,   i) { for (i = 1; i < NF; i++) if ($(i+1) == name) return $i; return "" }
  function median(a, n,   i, j, t, b) {
    for (i = 1; i <= n; i++) b[i] = a[i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
    return n % 2 ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
  }
  /^BenchmarkPacket\/store=.*\/proto=/ {
    s = $1; sub(/^BenchmarkPacket\//, "", s); sub(/-[0-9]+$/, "", s)
    if (!(s in k)) { order[++ns] = s }
    r = ++k[s]
    ttfb[s, r] = field("ttfb-ms"); cttfb[s, r] = field("cached-ttfb-ms")
    fm[s, r] = field("first-MB/s"); cm[s, r] = field("cached-MB/s"); am[s, r] = field("age-MB/s")
    fr[s, r] = field("first/age"); cr[s, r] = field("cached/age"); tar = field("tar-MB")
    fc[s, r] = field("first-cpu-ms"); cc[s, r] = field("cached-cpu-ms"); ac[s, r] = field("age-cpu-ms")
    printf "%-23s run %d: ttfb %.0f ms; first %.0f MB/s = %.2f of age (%.0f MB/s); cached %.0f MB/s = %.2f (ttfb %.0f ms); CPU per packet: first %.0f ms, cached %.0f ms, age %.0f ms\n", s, r, ttfb[s, r], fm[s, r], fr[s, r], am[s, r], cm[s, r], cr[s, r], cttfb[s, r], fc[s, r], cc[s, r], ac[s, r]
  }
  END {
    if (ns == 0) { print "no results"; exit 1 }
    printf "GET /cases/{id}/packet vs age CLI, %d-slice CT (tar %.0f MB), %d CPUs, %s, medians of %d runs:\n", slices, tar, cpus, date, k[order[1]]
    for (j = 1; j <= ns; j++) {
      s = order[j]; n = k[s]
      for (i = 1; i <= n; i++) { a1[i] = ttfb[s, i]; a2[i] = fr[s, i]; a3[i] = cr[s, i]; a4[i] = fm[s, i]; a5[i] = cm[s, i]; a6[i] = am[s, i]; a7[i] = cttfb[s, i]; a8[i] = fc[s, i]; a9[i] = cc[s, i]; a10[i] = ac[s, i] }
      printf "  %-23s ttfb %.0f ms (target < 500); first download %.0f MB/s = %.2f of age; cached %.0f MB/s = %.2f of age (target 0.80); age %.0f MB/s; cached ttfb %.0f ms\n", s, median(a1, n), median(a4, n), median(a2, n), median(a5, n), median(a3, n), median(a6, n), median(a7, n)
      printf "  %-23s CPU per packet: first %.0f ms, cached %.0f ms (gateway and client), age CLI %.0f ms\n", s, median(a8, n), median(a9, n), median(a10, n)
    }
  }' "$out/bench.txt" | tee "$out/summary.txt"
