#!/usr/bin/env bash
# FHIR ingest benchmark: the Synthea transaction Bundles of ../shared/testdata
# posted to an in-process gateway over TLS 1.3 with client certificates,
# against the raw github.com/google/fhir R4 unmarshal rate of the same
# Bundles, interleaved pass by pass in the same run (see ingest_test.go).
# Runs the filesystem and the MinIO store, one Bundle at a time and
# GOMAXPROCS at a time, COUNT times each, and prints the mean rates and
# the api/raw ratio per case. Raw output goes to bench/out/fhir/.
#
# Environment: COUNT (default 5), BENCHTIME (default 20x: passes per run),
# CONSILIUM_MINIO_BIN (a minio server binary; default as miniotest finds it).
set -euo pipefail

cd "$(dirname "$0")/../.."
count=${COUNT:-5}
benchtime=${BENCHTIME:-20x}
out=bench/out/fhir
mkdir -p "$out"
if [ -z "${CONSILIUM_MINIO_BIN:-}" ] && [ -x /root/tools/bin/minio ]; then
  export CONSILIUM_MINIO_BIN=/root/tools/bin/minio
fi

echo "== go test -run '^\$' -bench Ingest -benchtime $benchtime -count $count ./bench/fhir/"
go test -run '^$' -bench Ingest -benchtime "$benchtime" -count "$count" ./bench/fhir/ | tee "$out/bench.txt"

awk '
/^BenchmarkIngest\// {
  name = $1; sub(/^BenchmarkIngest\//, "", name); sub(/-[0-9]+$/, "", name)
  for (i = 3; i < NF; i += 2) {
    if ($(i+1) == "api-resources/s") api[name] += $i
    if ($(i+1) == "raw-resources/s") raw[name] += $i
    if ($(i+1) == "api/raw") ratio[name] += $i
  }
  n[name]++
  if (!(name in seen)) { seen[name] = 1; order[++k] = name }
}
END {
  printf "\n%-18s %14s %14s %9s  (mean of %s runs)\n", "case", "api res/s", "raw res/s", "api/raw", n[order[1]]
  for (j = 1; j <= k; j++) {
    c = order[j]
    printf "%-18s %14.0f %14.0f %9.2f  %s\n", c, api[c]/n[c], raw[c]/n[c], ratio[c]/n[c], (ratio[c]/n[c] >= 0.5 ? "target met (>= 0.50)" : "target NOT met (< 0.50)")
  }
}' "$out/bench.txt" | tee "$out/summary.txt"
