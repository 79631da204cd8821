#!/usr/bin/env bash
# bench/serve.sh - the exporter's cost, measured against `check` in the same namespace:
#   1. one /metrics scrape (fresh collection: --min-interval 0s) vs `check --json --no-owners`,
#      interleaved rounds, medians;
#   2. CPU of an otherwise idle `serve` scraped every 15 s for 60 s (percent of one core);
#   3. RSS after 100 and after 1,000 back-to-back scrapes (growth = a leak).
# The population is N sockets of held ESTABLISHED connections (they do not expire during the
# 60 s idle phase, unlike TIME_WAIT), over 250 pools, in a throwaway namespace.
# Needs root, cc, curl, bash >= 5. Usage: sudo bench/serve.sh [--sockets N] [--rounds R]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
tools=${SHARED_TOOLS:-$repo/../shared/tools}
sockets=100000
rounds=7
pd=""

if [ "${1:-}" = "--inner" ]; then
	shift
	sockets=$1 rounds=$2 pd=$3 sockpop=$4 work=$5
	port=19951
	"$sockpop" --ports 20000-20049 --dst 127.0.0.1 --dst ::1 --src 127.0.0.1+4 --src ::1 \
		--established $((sockets / 2)) --hold 380 --out "$work/truth.json" >/dev/null 2>"$work/sockpop.err" &
	for _ in $(seq 600); do [ -f "$work/truth.json" ] && break; sleep 0.2; done
	[ -f "$work/truth.json" ] || { echo "sockpop did not populate" >&2; cat "$work/sockpop.err" >&2; exit 1; }

	"$pd" serve --listen 127.0.0.1:$port --min-interval 0s >/dev/null 2>"$work/serve.err" &
	serve_pid=$!
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
	ms() { echo "scale=1; ($2 - $1) * 1000 / 1" | bc; }
	scrape=() check=()
	curl -sf "http://127.0.0.1:$port/metrics" >/dev/null # warm-up
	"$pd" check --json --no-owners >/dev/null || true
	for _ in $(seq "$rounds"); do
		t0=$EPOCHREALTIME; curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; t1=$EPOCHREALTIME
		"$pd" check --json --no-owners >/dev/null || true; t2=$EPOCHREALTIME
		scrape+=("$(ms "$t0" "$t1")") check+=("$(ms "$t1" "$t2")")
	done
	median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
	echo "scrape_ms $(median "${scrape[@]}")"
	echo "check_ms $(median "${check[@]}")"
	echo "scrape_samples ${scrape[*]}"
	echo "check_samples ${check[*]}"

	# Idle CPU: 4 scrapes, one every 15 s, over 60 s; utime+stime in clock ticks.
	ticks() { awk '{print $14 + $15}' "/proc/$serve_pid/stat"; }
	hz=$(getconf CLK_TCK)
	c0=$(ticks)
	for _ in 1 2 3 4; do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; sleep 15; done
	c1=$(ticks)
	echo "idle_cpu_percent $(echo "scale=2; ($c1 - $c0) * 100 / $hz / 60" | bc)"

	rss() { awk '/^VmRSS/ {print $2}' "/proc/$serve_pid/status"; }
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; done
	echo "rss_kib_after_100 $(rss)"
	for _ in $(seq 900); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; done
	echo "rss_kib_after_1000 $(rss)"
	echo "live_sockets $(ss -Htan | wc -l)"
	kill "$serve_pid" 2>/dev/null || true
	kill %1 2>/dev/null || true
	exit 0
fi

while [ $# -gt 0 ]; do
	case $1 in
	--sockets) sockets=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--portdoctor) pd=$2; shift 2 ;;
	*) echo "usage: sudo bench/serve.sh [--sockets N] [--rounds R] [--portdoctor PATH]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench/serve.sh: needs root (network namespaces)" >&2; exit 2; }
if [ -z "$pd" ]; then
	(cd "$repo" && cargo build --release -q)
	pd=$repo/target/release/portdoctor
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sockpop=$("$tools/build" "$work/tools" sockpop)
echo "bench/serve.sh: $sockets sockets, $rounds rounds (about 2 minutes)" >&2
"$tools/netns-run" --range 1024 65535 --timeout 400 -- \
	bash "$here/serve.sh" --inner "$sockets" "$rounds" "$pd" "$sockpop" "$work" | tee "$work/out"
