#!/usr/bin/env bash
# Packet benchmark: packet.Build on a generated 300-slice CT study (plus a
# Synthea bundle), with de-identification on (originals) and off (instances
# de-identified beforehand), against Debian's age CLI encrypting the same
# packet's tar, in the same run. Prints, per run and as medians, each
# builder's throughput as a share of age's, its CPU time per packet, and its
# time to first byte; leaves the raw output under bench/out/packet/.
#
# Environment: SLICES (default 300), COUNT (runs, default 5), BENCHTIME
# (default 10x), BENCH_WORK (scratch directory; default a tmpfs one under
# /dev/shm, so that the disk does not decide the result).
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$(pwd)
slices=${SLICES:-300}
count=${COUNT:-5}
benchtime=${BENCHTIME:-10x}
out="$root/bench/out/packet"
if [ -z "${BENCH_WORK:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  work=/dev/shm/consilium-bench-packet
else
  work=${BENCH_WORK:-$out/work}
fi
gen="$root/../shared/tools/gen_dicom.py"

need() { command -v "$1" >/dev/null || { echo "missing $1: $2" >&2; exit 1; }; }
need go "install Go"
need age "apt-get install age"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import pydicom, numpy' ||
  { echo "missing pydicom/numpy for /usr/bin/python3: apt-get install python3-pydicom python3-numpy" >&2; exit 1; }
[ -f "$gen" ] || { echo "missing $gen" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$out" "$work"
trap 'rm -rf "$work"' EXIT

echo "== generating a $slices-slice CT series (gen_dicom.py, no multi-frame file)"
/usr/bin/python3 "$gen" "$work/gen" --slices "$slices" --skip-multiframe >/dev/null
n=$(find "$work/gen" -name '*.dcm' | wc -l)
[ "$n" -eq "$slices" ] || { echo "generated $n files, want $slices" >&2; exit 1; }

echo "== building the test binary"
go test -c -o "$work/packet.test" ./packet/
cmd="go test -run '^\$' -bench BenchmarkBuild -benchtime $benchtime ./packet/"
: >"$out/bench.txt"
for i in $(seq "$count"); do
  # One process per run: it measures deid=on, deid=off, age-cli and age-lib
  # one after the other, so that the ratios compare neighbours in time.
  echo "== run $i/$count: $cmd  (CONSILIUM_BENCH_STUDY=$work/gen; load: $(cut -d' ' -f1-3 /proc/loadavg))"
  (cd "$root/packet" && CONSILIUM_BENCH_STUDY="$work/gen" TMPDIR="$work" \
    "$work/packet.test" -test.run '^$' -test.bench BenchmarkBuild -test.benchtime "$benchtime") |
    grep '^Benchmark' | tee -a "$out/bench.txt"
done

awk -v slices="$slices" -v date="$(date -u +%F)" -v cpus="$(nproc)" '
  function field(name,   i) { for (i = 1; i < NF; i++) if ($(i+1) == name) return $i; return "" }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  /^BenchmarkBuild\/deid=on/  { on = field("MB/s"); oncpu = field("cpu-ms/op"); onttfb = field("ttfb-ms"); onfc = field("first-chunk-ms") }
  /^BenchmarkBuild\/deid=off/ { off = field("MB/s"); offcpu = field("cpu-ms/op"); offttfb = field("ttfb-ms"); offfc = field("first-chunk-ms") }
  /^BenchmarkBuild\/age-cli/ {
    r++; age = field("MB/s"); agecpu = field("cpu-ms/op")
    ron[r] = on / age; roff[r] = off / age; con[r] = oncpu; coff[r] = offcpu; cage[r] = agecpu
    t1[r] = onttfb; t2[r] = onfc; t3[r] = offttfb; t4[r] = offfc
    printf "run %d: deid=on %.0f MB/s = %.2f of age (%.0f MB/s); deid=off %.0f MB/s = %.2f; CPU per packet: on %.0f ms, off %.0f ms, age %.0f ms\n", r, on, ron[r], age, off, roff[r], oncpu, offcpu, agecpu
  }
  END {
    if (r == 0) { print "no results"; exit 1 }
    printf "packet.Build vs age CLI, %d-slice CT + Synthea bundle, %d CPUs, %s, %d runs (medians):\n", slices, cpus, date, r
    printf "  throughput, share of age: deid=on %.2f, deid=off %.2f (target 0.80)\n", median(ron, r), median(roff, r)
    printf "  CPU per packet: deid=on %.0f ms, deid=off %.0f ms, age CLI %.0f ms\n", median(con, r), median(coff, r), median(cage, r)
    printf "  time to first byte: deid=on %.1f ms (first 64 KiB %.1f ms), deid=off %.1f ms (%.1f ms) (target < 500 ms)\n", median(t1, r), median(t2, r), median(t3, r), median(t4, r)
  }' "$out/bench.txt" | tee "$out/summary.txt"
