#!/usr/bin/env bash
# bench/failures.sh - overhead of the failure tracer (docs/failures.md) on the traced workload:
# loopback connect() throughput untraced vs traced by `portdoctor check --observe`, interleaved
# (U T U T ...), for (1) successful connects (closed with RST, so no TIME_WAIT piles up) and
# (2) failing connects (range 40000-40009 held full, every connect() fails with EADDRNOTAVAIL).
# Both kinds of run have a companion that wakes every 20 ms (portdoctor's drain timer, or a
# sleeper), so only the tracing differs. Also portdoctor's own CPU while tracing an idle host for 10 s.
#
# Needs root (namespaces, tracepoints), cc, cargo (unless --portdoctor), /usr/bin/time.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ROUNDS=5
SECONDS_PER_RUN=3
PD=""
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) ROUNDS=$2; shift 2 ;;
	--seconds) SECONDS_PER_RUN=$2; shift 2 ;;
	--portdoctor) PD=$2; shift 2 ;;
	*) echo "usage: sudo bench/failures.sh [--rounds R] [--seconds S] [--portdoctor PATH]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench/failures.sh: needs root" >&2; exit 2; }
if [ -z "$PD" ]; then
	(cd "$repo" && cargo build --release --quiet)
	PD="${CARGO_TARGET_DIR:-$repo/target}/release/portdoctor"
fi

work=$(mktemp -d)
ns="pdbench-fail-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

cat >"$work/load.c" <<'EOF'
/* load MODE SECONDS: connects to 127.0.0.3:7001 in a loop; prints connects/s.
   MODE ok: each connect succeeds and is closed with RST (SO_LINGER 0).
   MODE fail: first holds 10 connections (the whole 10-port range), then every connect fails. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static int lfd;
static void *acceptor(void *a) { (void)a; for (;;) { int c = accept(lfd, 0, 0); if (c >= 0) close(c); } return 0; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
	int fail = argc > 1 && !strcmp(argv[1], "fail");
	double secs = argc > 2 ? atof(argv[2]) : 3;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(7001) };
	inet_pton(AF_INET, "127.0.0.3", &a.sin_addr);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1; setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(lfd, (void *)&a, sizeof a) || listen(lfd, 4096)) { perror("listen"); return 1; }
	pthread_t t; pthread_create(&t, 0, acceptor, 0);
	if (fail) for (int i = 0; i < 10; i++) { int s = socket(AF_INET, SOCK_STREAM, 0); if (connect(s, (void *)&a, sizeof a)) { perror("hold"); return 1; } }
	struct linger lg = { 1, 0 };
	long n = 0, bad = 0; double end = now() + secs, start = now();
	while (now() < end) {
		for (int k = 0; k < 64; k++) {
			int s = socket(AF_INET, SOCK_STREAM, 0);
			int r = connect(s, (void *)&a, sizeof a);
			if (fail ? (r == 0 || errno != EADDRNOTAVAIL) : r != 0) bad++;
			setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			close(s); n++;
		}
	}
	printf("%.0f %ld\n", n / (now() - start), bad);
	return bad ? 1 : 0;
}
EOF
cc -O2 -pthread -o "$work/load" "$work/load.c"

ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="40000 40009"

run() { # MODE TRACED -> connects/s
	local mode=$1 traced=$2 out pd=""
	if [ "$traced" = 1 ]; then
		"$PD" check --netns "$ns" --observe "$((SECONDS_PER_RUN + 2))s" --json >"$work/obs.json" &
	else
		# The same 20 ms timer wakeups without tracing: in a VM, a CPU kept out of deep idle
		# alone speeds loopback up, which would flatter the traced runs.
		python3 -c "import time; end = time.time() + $SECONDS_PER_RUN + 2
while time.time() < end: time.sleep(0.02)" &
	fi
	pd=$!
	sleep 0.5
	if [ "$mode" = ok ]; then
		# Successful connects need ports: a wide range for this mode.
		ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
	else
		ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="40000 40009"
	fi
	out=$(ip netns exec "$ns" "$work/load" "$mode" "$SECONDS_PER_RUN")
	wait "$pd" || true
	echo "${out%% *}"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "| workload | untraced connects/s (median of $ROUNDS) | traced | traced / untraced |"
echo "|---|---:|---:|---:|"
for mode in ok fail; do
	: >"$work/u"; : >"$work/t"
	for _ in $(seq "$ROUNDS"); do
		run "$mode" 0 >>"$work/u"
		run "$mode" 1 >>"$work/t"
	done
	u=$(median <"$work/u"); t=$(median <"$work/t")
	label=$([ "$mode" = ok ] && echo "successful loopback connects" || echo "failing connects (EADDRNOTAVAIL)")
	awk -v l="$label" -v u="$u" -v t="$t" 'BEGIN {printf "| %s | %d | %d | %.3f |\n", l, u, t, t/u}'
done

# portdoctor's own CPU while tracing an idle host.
/usr/bin/time -f "%U %S %M" -o "$work/time" "$PD" check --observe 10s --json >/dev/null || true
read -r user sys rss <"$work/time"
awk -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN {printf "\nportdoctor check --observe 10s on an idle host: %.2f s CPU (%.2f %% of a core), peak RSS %d KiB\n", u+s, (u+s)/10*100, r}'
