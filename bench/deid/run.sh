#!/usr/bin/env bash
# De-identification benchmark: `consilium deid dicom --profile basic` against
# gdcmanon (GDCM's PS3.15 E.1 Basic Profile) on the same generated 300-slice CT
# series, in the same run. Prints instances/s for both and the ratio, and
# writes hyperfine's JSON and a summary under bench/out/deid/.
#
# Reference timings in the same run say where the time goes: the start-up of
# each program (`consilium --help`, `gdcmanon --version`) and `cp -r` of the
# series, the kernel's cost of copying its 150 MB of pixel data from file to
# file, which both tools pay.
#
# Environment: SLICES (default 300), RUNS (hyperfine runs per round, default
# 10), ROUNDS (rounds of the whole comparison, default 3: the machine is
# shared and its load moves from one minute to the next), BENCH_WORK (scratch
# directory; default a tmpfs one under /dev/shm, so that disk write-back does
# not decide the result).
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$(pwd)
slices=${SLICES:-300}
runs=${RUNS:-10}
rounds=${ROUNDS:-3}
out="$root/bench/out/deid"
if [ -z "${BENCH_WORK:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  work=/dev/shm/consilium-bench-deid
else
  work=${BENCH_WORK:-$out/work}
fi
gen="$root/../shared/tools/gen_dicom.py"

need() { command -v "$1" >/dev/null || { echo "missing $1: $2" >&2; exit 1; }; }
need go "install Go"
need hyperfine "apt-get install hyperfine"
need gdcmanon "apt-get install libgdcm-tools"
need openssl "apt-get install openssl"
need dcmdump "apt-get install dcmtk"
need jq "apt-get install jq"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import pydicom, numpy' ||
  { echo "missing pydicom/numpy for /usr/bin/python3: apt-get install python3-pydicom python3-numpy" >&2; exit 1; }
[ -f "$gen" ] || { echo "missing $gen" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$out" "$work"
trap 'rm -rf "$work"' EXIT

# Built as the Dockerfile builds the shipped binary (static, no cgo).
echo "== building consilium (CGO_ENABLED=0 -trimpath -ldflags='-s -w', as the Dockerfile)"
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$work/consilium" ./cmd/consilium

echo "== generating a $slices-slice CT series (gen_dicom.py, no multi-frame file)"
/usr/bin/python3 "$gen" "$work/gen" --slices "$slices" --skip-multiframe >/dev/null
series="$work/gen/ct"
n=$(find "$series" -name '*.dcm' | wc -l)
[ "$n" -eq "$slices" ] || { echo "generated $n files, want $slices" >&2; exit 1; }

# Pseudonym secret for consilium; a throw-away certificate for gdcmanon,
# whose E.1 mode (-e) needs one to encrypt the original attributes into the
# Encrypted Attributes Sequence (PS3.15 E.1.1). Its --dumb mode only does
# the tag edits given on the command line, which is not the Basic Profile.
head -c 32 /dev/urandom >"$work/secret"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

c_out="$work/consilium-out"
g_out="$work/gdcmanon-out"
cp_out="$work/cp-out"
consilium="$work/consilium deid dicom --profile basic --secret-file $work/secret --out $c_out $series"
consilium1="$work/consilium deid dicom --profile basic --secret-file $work/secret --jobs 1 --out $c_out $series"
gdcmanon="gdcmanon -e -c $work/cert.pem -r -i $series -o $g_out"

echo "== checking both outputs once"
rm -rf "$c_out" "$g_out"; mkdir -p "$g_out"
$consilium >/dev/null
$gdcmanon
[ "$(find "$c_out" -name '*.dcm' | wc -l)" -eq "$slices" ] || { echo "consilium wrote the wrong number of files" >&2; exit 1; }
[ "$(find "$g_out" -name '*.dcm' | wc -l)" -eq "$slices" ] || { echo "gdcmanon wrote the wrong number of files" >&2; exit 1; }
dcmdump -q "$(find "$c_out" -name '*.dcm' | head -1)" >/dev/null
dcmdump -q "$(find "$g_out" -name '*.dcm' | head -1)" >/dev/null

{
  echo "consilium deid dicom --profile basic vs gdcmanon -e, $slices-slice CT (512x512x16 bit, $(du -sm "$series" | cut -f1) MB), $(nproc) CPUs, $(date -u +%F), load average $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/summary.txt"

for round in $(seq "$rounds"); do
  echo "== round $round of $rounds: timing ($runs runs each; outputs removed before every run)"
  json="$out/hyperfine-$round.json"
  hyperfine --warmup 2 --runs "$runs" --export-json "$json" \
    --prepare "rm -rf $c_out $g_out $cp_out; mkdir -p $g_out" \
    -n "consilium (jobs=$(nproc))" "$consilium" \
    -n "consilium (jobs=1)" "$consilium1" \
    -n "gdcmanon -e" "$gdcmanon" \
    -n "cp -r (copy floor)" "cp -r $series $cp_out" \
    -n "consilium --help (start-up)" "$work/consilium --help" \
    -n "gdcmanon --version (start-up)" "gdcmanon --version" >/dev/null

  jq -r --argjson n "$slices" --argjson round "$round" '
    .results as $r
    | ($r[] | select(.command == "gdcmanon -e") | .mean) as $g
    | $r[]
    | if (.command | test("start-up|copy floor")) then
        "round \($round) \(.command): mean \(.mean * 1000 | floor) ms (min \(.min * 1000 | floor)), CPU \((.user + .system) * 1000 | floor) ms"
      else
        "round \($round) \(.command): mean \(.mean * 1000 | floor) ms (min \(.min * 1000 | floor)), \($n / .mean | floor) instances/s, CPU \((.user + .system) * 1000 | floor) ms, \($g / .mean * 100 | floor / 100)x gdcmanon"
      end
  ' "$json" | tee -a "$out/summary.txt"
done
cp "$out/hyperfine-$rounds.json" "$out/hyperfine.json"
