#!/usr/bin/env bash
# Decision latency of the embedded policy engine against the same bundle and
# the same inputs through an OPA server, in one run. See README.md here.
#
#   bench/policy/run.sh                  # 20000 decisions per benchmark
#   BENCHTIME=50000x bench/policy/run.sh
#
# It installs OPA v1.22.2 into a cache folder the first time (a few minutes),
# packs policy/builtin (without its tests, as the engine loads it) and
# bench/policy/trivial with `opa build`, starts `opa run --server` with both
# on a free 127.0.0.1 port, checks that the server decides the benchmark's
# inputs exactly as the engine does, runs BenchmarkDecision in package policy
# (10,000 patients, each decision's input carrying its patient's consents)
# and stops the server by its pid on the way out, whatever happens.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cache=${CONSILIUM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consilium}
opa=$cache/opa-v1.22.2/bin/opa
benchtime=${BENCHTIME:-20000x}

if [ ! -x "$opa" ]; then
	echo "installing OPA v1.22.2 into $(dirname "$opa") (takes a few minutes)" >&2
	GOBIN=$(dirname "$opa") go install github.com/open-policy-agent/opa@v1.22.2
fi

work=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$opa" build -b policy/builtin --ignore '*_test.rego' -o "$work/builtin.tar.gz"
"$opa" build -b bench/policy/trivial -o "$work/trivial.tar.gz"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$opa" run --server --addr "127.0.0.1:$port" --log-level error \
	--bundle "$work/builtin.tar.gz" --bundle "$work/trivial.tar.gz" >"$work/opa.log" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
	if curl -fsS "http://127.0.0.1:$port/health?bundles" >/dev/null 2>&1; then
		break
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		cat "$work/opa.log" >&2
		echo "opa server exited" >&2
		exit 1
	fi
	sleep 0.1
done

export CONSILIUM_OPA_URL=http://127.0.0.1:$port
# The server must decide exactly as the engine does, or the comparison means nothing.
go test -count=1 -run '^TestBenchInputsAgree$' ./policy/
go test -count=1 -run '^$' -bench '^BenchmarkDecision$' -benchtime "$benchtime" ./policy/ | tee "$work/bench.txt"

awk '
function metric(name,   i) { for (i = 1; i < NF; i++) if ($(i+1) == name) return $i; return "" }
/interleaved\/latency/ {
	e50 = metric("emb-p50-µs"); e99 = metric("emb-p99-µs"); s50 = metric("srv-p50-µs"); s99 = metric("srv-p99-µs")
	et50 = metric("emb-trivial-p50-µs"); st50 = metric("srv-trivial-p50-µs")
	r50 = metric("emb-reference-p50-µs"); r99 = metric("emb-reference-p99-µs")
}
/embedded\/latency/   { ep50 = metric("p50-µs"); ep99 = metric("p99-µs"); eseq = metric("decisions/s") }
/server\/latency/     { sp50 = metric("p50-µs"); sp99 = metric("p99-µs"); sseq = metric("decisions/s") }
/embedded\/parallel/  { ept = metric("decisions/s") }
/server\/parallel/    { spt = metric("decisions/s") }
END {
	if (e50 == "" || ep50 == "" || sp50 == "") { print "missing results" > "/dev/stderr"; exit 1 }
	printf "\ninterleaved (same load): embedded p50 %.0f µs p99 %.0f µs; server p50 %.0f µs p99 %.0f µs; server/embedded p50 %.1fx p99 %.1fx\n", e50, e99, s50, s99, s50 / e50, s99 / e99
	printf "reference policy, same run: embedded p50 %.0f µs p99 %.0f µs (the rules before their arrangement for speed; %.2fx the builtin'"'"'s p50)\n", r50, r99, r50 / e50
	printf "trivial policy, same run: embedded p50 %.0f µs; server p50 %.0f µs (transport and server alone)\n", et50, st50
	printf "separate runs:           embedded p50 %.0f µs p99 %.0f µs %.0f/s; server p50 %.0f µs p99 %.0f µs %.0f/s; server/embedded p50 %.1fx p99 %.1fx\n", ep50, ep99, eseq, sp50, sp99, sseq, sp50 / ep50, sp99 / ep99
	printf "throughput, 2 callers:   embedded %.0f decisions/s, server %.0f decisions/s (%.1fx)\n", ept, spt, ept / spt
	# The policy costs p = e50 - et50 on both paths; the server path is at
	# least st50 + p and the embedded one et50 + p, so 10x needs
	# st50 + p >= 10 (et50 + p), that is p <= (st50 - 10 et50) / 9.
	budget = (st50 - 10 * et50) / 9
	if (budget < 0)
		printf "10x is out of reach for any policy here: with a policy that decides nothing the server takes %.1fx the engine'"'"'s time; the default policy costs %.0f µs (embedded p50 minus the trivial policy'"'"'s)\n", st50 / et50, e50 - et50
	else
		printf "10x needs the policy to cost at most %.0f µs per decision on this machine; it costs %.0f µs (embedded p50 minus the trivial policy'"'"'s)\n", budget, e50 - et50
	printf "targets: embedded p99 < 1000 µs: %s; server >= 10x embedded latency (interleaved p50 and p99): %s\n", (e99 < 1000 && ep99 < 1000 ? "met" : "NOT met"), (s50 >= 10 * e50 && s99 >= 10 * e99 ? "met" : "NOT met")
}' "$work/bench.txt"
