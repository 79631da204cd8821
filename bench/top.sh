#!/usr/bin/env bash
# bench/top.sh - the cost of `portdoctor top` left running: N sockets (held ESTABLISHED
# connections over 250 pools, in a throwaway namespace), top in a detached tmux pane refreshing
# every --interval (default 1 s) with owners scanned (the default), measured for --seconds
# (default 60): CPU of top's process as percent of one core (utime+stime), RSS at the start,
# every minute and at the end (growth = a leak or unbounded history).
# --churn R adds R new connections per second (bounded: R x (S + 30) in all) to a loopback
# listener, each closed by the client so it leaves a TIME_WAIT: the table changes every second
# and top has to dump it every refresh, which is its worst case.
# Needs root, cc, tmux, python3, bash >= 5.
# Usage: sudo bench/top.sh [--sockets N] [--seconds S] [--interval D] [--churn R] [--args "..."]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
tools=${SHARED_TOOLS:-$repo/../shared/tools}
sockets=100000
seconds=60
interval=1s
pd=""
churn=0
top_args=""

# Paced connect/accept/close loop to a loopback listener; ends by itself after DURATION s.
CHURN_PY=${CHURN_PY:-'
import socket, sys, time
rate, duration = float(sys.argv[1]), float(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.9", 21000))  # not 127.0.0.1: its ports are all taken by the held population
ls.listen(1024)
start = time.monotonic()
n = 0
while time.monotonic() - start < duration:
    c = socket.create_connection(("127.0.0.9", 21000))
    s, _ = ls.accept()
    c.close()  # the client closes first: its port goes to TIME_WAIT
    s.close()
    n += 1
    lag = start + n / rate - time.monotonic()
    if lag > 0:
        time.sleep(lag)
print(f"{n} connections in {time.monotonic() - start:.1f} s")
'}

if [ "${1:-}" = "--inner" ]; then
	shift
	sockets=$1 seconds=$2 interval=$3 pd=$4 sockpop=$5 work=$6 churn=$7 top_args=$8
	"$sockpop" --ports 20000-20049 --dst 127.0.0.1 --dst ::1 --src 127.0.0.1+4 --src ::1 \
		--established $((sockets / 2)) --hold $((seconds + 120)) --out "$work/truth.json" >/dev/null 2>"$work/sockpop.err" &
	for _ in $(seq 600); do [ -f "$work/truth.json" ] && break; sleep 0.2; done
	[ -f "$work/truth.json" ] || { echo "sockpop did not populate" >&2; cat "$work/sockpop.err" >&2; exit 1; }
	if [ "$churn" != 0 ]; then
		python3 -c "$CHURN_PY" "$churn" $((seconds + 30)) >"$work/churn.out" 2>&1 &
		churn_pid=$!
		sleep 2
		kill -0 "$churn_pid" 2>/dev/null || { echo "churn loop failed:" >&2; cat "$work/churn.out" >&2; exit 1; }
	fi
	sock="pd-bench-top-$$"
	trap 'tmux -L "$sock" kill-server 2>/dev/null || true; [ -n "${churn_pid:-}" ] && kill "$churn_pid" 2>/dev/null || true' EXIT
	tmux -L "$sock" new-session -d -x 120 -y 40 "exec $pd top --interval $interval $top_args"
	top_pid=$(tmux -L "$sock" display -p '#{pane_pid}')
	sleep 5 # first collections and the owner scan warm up
	ticks() { awk '{print $14 + $15}' "/proc/$top_pid/stat"; }
	rss() { awk '/^VmRSS/ {print $2}' "/proc/$top_pid/status"; }
	hz=$(getconf CLK_TCK)
	echo "rss_kib_start $(rss)"
	c0=$(ticks)
	for ((t = 60; t < seconds; t += 60)); do
		sleep 60
		echo "rss_kib_at_${t}s $(rss)"
	done
	sleep $((seconds - (seconds - 1) / 60 * 60))
	c1=$(ticks)
	echo "rss_kib_end $(rss)"
	echo "cpu_percent_of_one_core $(echo "scale=2; ($c1 - $c0) * 100 / $hz / $seconds" | bc)"
	echo "live_sockets $(ss -Htan | wc -l) (TIME_WAIT $(ss -Htan state time-wait | wc -l))"
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
	--churn) churn=$2; shift 2 ;;
	--args) top_args=$2; shift 2 ;;
	*) echo "usage: sudo bench/top.sh [--sockets N] [--seconds S] [--interval D] [--churn R] [--args \"TOP ARGS\"] [--portdoctor PATH]" >&2; exit 2 ;;
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
echo "bench/top.sh: $sockets sockets, churn $churn/s, top every $interval $top_args for $seconds s" >&2
"$tools/netns-run" --range 1024 65535 --timeout $((seconds + 200)) -- \
	env CHURN_PY="$CHURN_PY" bash "$here/top.sh" --inner "$sockets" "$seconds" "$interval" "$pd" "$sockpop" "$work" "$churn" "$top_args" | tee "$work/out"
