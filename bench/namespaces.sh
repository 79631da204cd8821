#!/usr/bin/env bash
# bench/namespaces.sh - every namespace at once (`check -A`) against the loop users run today
# (`for ns in ...; do ip netns exec $ns ss -tan; done`), side by side on the same namespaces:
#   1. per-namespace overhead: `check -A --json --no-owners` with N empty namespaces minus
#      without them, divided by N;
#   2. N namespaces x S sockets (S/2 held ESTABLISHED connections each, sockpop): interleaved
#      rounds of `check -A --json --no-owners` and the `ip netns exec ... ss -tan` loop, medians;
#      check's peak RSS (/usr/bin/time -f %M);
#   3. one fresh `serve -A` scrape (--min-interval 0s) against `check -A` (medians).
# The namespaces (pdb-<pid>-<i>) and their sockpops are removed on exit, failure and Ctrl-C.
# Needs root, ip, ss, curl, cc (sockpop from ../shared/tools), /usr/bin/time, bash >= 5.
# Usage: sudo bench/namespaces.sh [--namespaces N] [--sockets S] [--rounds R] [--portdoctor PATH]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
tools=${SHARED_TOOLS:-$repo/../shared/tools}
namespaces=100
sockets=1000
rounds=5
pd=""

while [ $# -gt 0 ]; do
	case $1 in
	--namespaces) namespaces=$2; shift 2 ;;
	--sockets) sockets=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--portdoctor) pd=$2; shift 2 ;;
	-h | --help) sed -n '2,13p' "$0"; exit 0 ;;
	*) echo "namespaces.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || { echo "namespaces.sh: needs root (network namespaces)" >&2; exit 1; }
if [ -z "$pd" ]; then
	(cd "$repo" && cargo build --release --quiet)
	pd=${CARGO_TARGET_DIR:-$repo/target}/release/portdoctor
fi
work=$(mktemp -d)
sockpop=$("$tools/build" "$work/tools" sockpop | grep "/sockpop$" | tail -1)
[ -x "$sockpop" ] || { echo "namespaces.sh: could not build sockpop" >&2; exit 1; }

prefix="pdb-$$"
names=()
pids=()
serve_pid=""
cleanup() {
	[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for n in "${names[@]}"; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
trap 'echo "namespaces.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

now_us() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { echo "scale=1; $1 / 1000" | bc; }
check_all() { "$pd" check -A --json --no-owners >/dev/null || [ $? -le 2 ]; }
ss_loop() { for n in "${names[@]}"; do ip netns exec "$n" ss -tan; done >/dev/null; }
time_us() { local t0 t1; t0=$(now_us); "$@"; t1=$(now_us); echo $((t1 - t0)); }

echo "namespaces.sh: $namespaces namespaces x $sockets sockets, $rounds rounds, $pd" >&2
check_all
base=()
for _ in $(seq "$rounds"); do base+=("$(time_us check_all)"); done

for i in $(seq "$namespaces"); do
	n="$prefix-$i"
	ip netns add "$n"
	names+=("$n")
	ip netns exec "$n" ip link set lo up
done
check_all
empty=()
for _ in $(seq "$rounds"); do empty+=("$(time_us check_all)"); done

# Populate: S sockets = S/2 held connections, over 5 pools per namespace.
hold=$((120 + rounds * namespaces / 10))
for n in "${names[@]}"; do
	ip netns exec "$n" "$sockpop" --ports 20000-20004 --dst 127.0.0.1 \
		--established $((sockets / 2)) --hold "$hold" --out "$work/$n.json" >/dev/null 2>"$work/$n.err" &
	pids+=($!)
done
for n in "${names[@]}"; do
	for _ in $(seq 600); do [ -f "$work/$n.json" ] && break; sleep 0.1; done
	[ -f "$work/$n.json" ] || { echo "sockpop in $n did not populate: $(cat "$work/$n.err")" >&2; exit 1; }
done
total=$("$pd" check -A --json --no-owners | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(sum(n["sockets"] for n in r["namespaces"] if (n["netns"]["name"] or "").startswith(sys.argv[1])))' "$prefix") || true

check_all
ss_loop
full=()
loop=()
for _ in $(seq "$rounds"); do
	full+=("$(time_us check_all)")
	loop+=("$(time_us ss_loop)")
done
rss=$( { /usr/bin/time -f %M "$pd" check -A --json --no-owners >/dev/null; } 2>&1 | tail -1)

port=19952
"$pd" serve -A --listen 127.0.0.1:$port --min-interval 0s >/dev/null 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
scrape() { curl -sf "http://127.0.0.1:$port/metrics" >/dev/null; }
scrape
scrapes=()
checks=()
for _ in $(seq "$rounds"); do
	scrapes+=("$(time_us scrape)")
	checks+=("$(time_us check_all)")
done

mb=$(median "${base[@]}") me=$(median "${empty[@]}") mf=$(median "${full[@]}") ml=$(median "${loop[@]}")
msc=$(median "${scrapes[@]}") mc=$(median "${checks[@]}")
echo
echo "| namespaces × sockets | sockets seen | check -A ms | ip netns exec ss loop ms | speed-up | per-namespace overhead ms | check -A peak RSS MiB | serve -A scrape / check -A |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '| %s × %s | %s | %s | %s | %s× | %s | %s | %s ms / %s ms = %s× |\n' \
	"$namespaces" "$sockets" "$total" "$(ms "$mf")" "$(ms "$ml")" \
	"$(echo "scale=1; $ml / $mf" | bc)" \
	"$(echo "scale=3; ($me - $mb) / $namespaces / 1000" | bc)" \
	"$(echo "scale=1; $rss / 1024" | bc)" \
	"$(ms "$msc")" "$(ms "$mc")" "$(echo "scale=2; $msc / $mc" | bc)"
echo
echo "samples (µs): base ${base[*]}; empty ${empty[*]}; check -A ${full[*]}; loop ${loop[*]}; scrape ${scrapes[*]}; check ${checks[*]}"
