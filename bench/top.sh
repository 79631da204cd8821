#!/usr/bin/env bash
# bench/top.sh - the cost of `portdoctor top` left running: N sockets (held ESTABLISHED
# connections over 250 pools, in a throwaway namespace), top in a detached tmux pane refreshing
# every --interval (default 1 s) with owners scanned (the default), measured for --seconds
# (default 60): CPU of top's process as percent of one core (utime+stime), RSS at the start and
# at the end (growth = a leak or unbounded history).
# Needs root, cc, tmux, bash >= 5. Usage: sudo bench/top.sh [--sockets N] [--seconds S]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
tools=${SHARED_TOOLS:-$repo/../shared/tools}
sockets=100000
seconds=60
interval=1s
pd=""

if [ "${1:-}" = "--inner" ]; then
	shift
	sockets=$1 seconds=$2 interval=$3 pd=$4 sockpop=$5 work=$6
	"$sockpop" --ports 20000-20049 --dst 127.0.0.1 --dst ::1 --src 127.0.0.1+4 --src ::1 \
		--established $((sockets / 2)) --hold $((seconds + 120)) --out "$work/truth.json" >/dev/null 2>"$work/sockpop.err" &
	for _ in $(seq 600); do [ -f "$work/truth.json" ] && break; sleep 0.2; done
	[ -f "$work/truth.json" ] || { echo "sockpop did not populate" >&2; cat "$work/sockpop.err" >&2; exit 1; }
	sock="pd-bench-top-$$"
	trap 'tmux -L "$sock" kill-server 2>/dev/null || true' EXIT
	tmux -L "$sock" new-session -d -x 120 -y 40 "exec $pd top --interval $interval"
	top_pid=$(tmux -L "$sock" display -p '#{pane_pid}')
	sleep 5 # first collections and the owner scan warm up
	ticks() { awk '{print $14 + $15}' "/proc/$top_pid/stat"; }
	rss() { awk '/^VmRSS/ {print $2}' "/proc/$top_pid/status"; }
	hz=$(getconf CLK_TCK)
	echo "rss_kib_start $(rss)"
	c0=$(ticks)
	sleep "$seconds"
	c1=$(ticks)
	echo "rss_kib_end $(rss)"
	echo "cpu_percent_of_one_core $(echo "scale=2; ($c1 - $c0) * 100 / $hz / $seconds" | bc)"
	echo "live_sockets $(ss -Htan | wc -l)"
	tmux -L "$sock" capture-pane -p | head -8 | sed 's/^/screen: /'
	tmux -L "$sock" send-keys q
	sleep 0.5
	kill %1 2>/dev/null || true
	exit 0
fi

while [ $# -gt 0 ]; do
	case $1 in
	--sockets) sockets=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--interval) interval=$2; shift 2 ;;
	--portdoctor) pd=$2; shift 2 ;;
	*) echo "usage: sudo bench/top.sh [--sockets N] [--seconds S] [--interval D] [--portdoctor PATH]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench/top.sh: needs root (network namespaces)" >&2; exit 2; }
if [ -z "$pd" ]; then
	(cd "$repo" && cargo build --release -q)
	pd=$repo/target/release/portdoctor
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sockpop=$("$tools/build" "$work/tools" sockpop)
echo "bench/top.sh: $sockets sockets, top every $interval for $seconds s" >&2
"$tools/netns-run" --range 1024 65535 --timeout $((seconds + 200)) -- \
	bash "$here/top.sh" --inner "$sockets" "$seconds" "$interval" "$pd" "$sockpop" "$work" | tee "$work/out"
