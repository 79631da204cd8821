#!/usr/bin/env bash
# bench/udp.sh - what UDP collection costs `check --json --no-owners`: a baseline binary (TCP
# only, e.g. main before UDP) against this one, side by side on the same namespace, first with
# N TCP sockets and no UDP socket, then with U UDP sockets added (held by a Python helper).
# Rounds are interleaved (A B A B ...); medians in ms and the ratio B/A are printed.
#
# usage: sudo bench/udp.sh BASELINE_BINARY NEW_BINARY [TCP_SOCKETS [UDP_SOCKETS [ROUNDS]]]
# Needs root, cc, python3 and ../shared/tools (netns-run, sockpop).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=${SHARED_TOOLS:-$here/../../shared/tools}
[ -d "$tools" ] || tools=$here/../../shared/tools
if [ "${1:-}" = --inner ]; then
	shift
	a=$1 b=$2 n=$3 u=$4 rounds=$5 sockpop=$6 work=$7
	est=9000; tw=$((n - 2 * est))
	"$sockpop" --ports 20000-20049 --dst 127.0.0.1 --dst ::1 --src 127.0.0.1+4 --src ::1 \
		--established "$est" --time-wait "$tw" --hold 300 --out "$work/truth.json" >/dev/null 2>"$work/sockpop.err" &
	for _ in $(seq 1 3000); do [ -f "$work/truth.json" ] && break; sleep 0.05; done
	[ -f "$work/truth.json" ] || { echo "sockpop did not populate" >&2; cat "$work/sockpop.err" >&2; exit 1; }
	ms() { local t0=$EPOCHREALTIME; "$1" check --json --no-owners >/dev/null 2>&1 || true; local t1=$EPOCHREALTIME; echo $(( (${t1/[.,]/} - ${t0/[.,]/}) / 1000 )); }
	phase() {
		local name=$1; : >"$work/$name.a"; : >"$work/$name.b"
		for _ in $(seq 1 "$rounds"); do ms "$a" >>"$work/$name.a"; ms "$b" >>"$work/$name.b"; done
	}
	phase no_udp
	python3 -c '
import os, socket, sys, time
n, out = int(sys.argv[1]), sys.argv[2]
held = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("127.0.0.1", 7000 + i % 50)); held.append(s)
open(out + ".tmp", "w").write(str(n)); os.rename(out + ".tmp", out)
time.sleep(300)' "$u" "$work/udp.ready" &
	for _ in $(seq 1 1200); do [ -f "$work/udp.ready" ] && break; sleep 0.05; done
	[ -f "$work/udp.ready" ] || { echo "UDP helper not ready" >&2; exit 1; }
	phase with_udp
	echo "tcp_sockets_live $(ss -Htan | wc -l) udp_sockets_live $(ss -Huan | wc -l)"
	exit 0
fi
a=${1:?baseline binary}; b=${2:?new binary}; n=${3:-300000}; u=${4:-10000}; rounds=${5:-7}
sockpop=$("$tools/build" /tmp/shared-tools-$(id -u) sockpop | grep sockpop | head -1)
work=$(mktemp -d)
"$tools/netns-run" --range 1024 65535 --timeout 600 -- bash "$here/udp.sh" --inner "$a" "$b" "$n" "$u" "$rounds" "$sockpop" "$work"
median() { sort -n "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for p in no_udp with_udp; do
	ma=$(median "$work/$p.a"); mb=$(median "$work/$p.b")
	echo "$p: baseline ${ma} ms, new ${mb} ms, ratio $(awk -v a="$ma" -v b="$mb" 'BEGIN{printf "%.3f", b/a}')  (samples a: $(tr '\n' ' ' <"$work/$p.a")| b: $(tr '\n' ' ' <"$work/$p.b"))"
done
rm -rf "$work"
