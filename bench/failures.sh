#!/usr/bin/env bash
# bench/failures.sh - overhead of the failure tracer (docs/failures.md).
#
# 1. Throughput of a loopback connect() workload, untraced (U) and traced (T) by a running
#    `portdoctor check --observe` (the tracer serve and top run too), in paired runs whose order
#    alternates (U T, T U, U T, ...) so a drift of the machine's speed hits both sides alike; the
#    ratio T/U is taken pair by pair and its median reported, with min and max. Two workloads:
#    - ok:   successful connects at the highest rate the machine sustains (each closed with RST,
#            so no TIME_WAIT piles up), range 1024-65535;
#    - fail: range 40000-40009 held full, every connect() fails with EADDRNOTAVAIL, paced at
#            --fail-rate (default 20,000/s; 0: as fast as it can, ~150,000/s on 2 cores, where
#            the 256 KiB per-CPU buffers overflow between 20 ms drains and `lost` counts the
#            dropped samples); the tracer's count must equal the workload's.
#    Each ratio is given twice: by wall clock (connects/s) and per CPU second of the workload
#    (connects per user+system second, from getrusage: what the tracer adds to each call, and
#    far less moved by other processes competing for the CPUs than the wall-clock rate).
#    Both kinds of run have a companion that wakes every 20 ms (portdoctor's drain timer, or a
#    sleeper), so only the tracing differs.
# 2. portdoctor's own cost while tracing an idle host: `portdoctor serve` (tracer on, nobody
#    scraping) for --idle-seconds; its CPU (utime+stime from /proc/PID/stat) as a share of one
#    core, and its resident memory sampled every 10 s (first, last, max).
#
# Bounded: every run ends on its own (the workload after --seconds, the tracer after its window).
# Needs root (namespaces, tracepoints), cc, python3, cargo (unless --portdoctor).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ROUNDS=10
SECONDS_PER_RUN=3
IDLE_SECONDS=180
FAIL_RATE=20000
PD=""
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) ROUNDS=$2; shift 2 ;;
	--seconds) SECONDS_PER_RUN=$2; shift 2 ;;
	--idle-seconds) IDLE_SECONDS=$2; shift 2 ;;
	--fail-rate) FAIL_RATE=$2; shift 2 ;;
	--portdoctor) PD=$2; shift 2 ;;
	*) echo "usage: sudo bench/failures.sh [--rounds R] [--seconds S] [--idle-seconds W] [--fail-rate N|0] [--portdoctor PATH]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench/failures.sh: needs root" >&2; exit 2; }
if [ -z "$PD" ]; then
	(cd "$repo" && cargo build --release --quiet)
	PD="${CARGO_TARGET_DIR:-$repo/target}/release/portdoctor"
fi

work=$(mktemp -d)
ns="pdbench-fail-$$"
serve_pid=""
cleanup() {
	[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

cat >"$work/load.c" <<'EOF'
/* load MODE SECONDS [RATE]: connects to 127.0.0.3:7001 in a loop for SECONDS (at most RATE
   connects/s when RATE > 0, paced in batches of 64); prints
   "connects/s bad cpu_seconds connects" (cpu: user+system of this process, its acceptor thread
   included, over the loop).
   MODE ok: each connect succeeds and is closed with RST (SO_LINGER 0).
   MODE fail: first holds 10 connections (the whole 10-port range), then every connect fails. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static int lfd;
static void *acceptor(void *a) { (void)a; for (;;) { int c = accept(lfd, 0, 0); if (c >= 0) close(c); } return 0; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu(void) {
	struct rusage r; getrusage(RUSAGE_SELF, &r);
	return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}
int main(int argc, char **argv) {
	int fail = argc > 1 && !strcmp(argv[1], "fail");
	double secs = argc > 2 ? atof(argv[2]) : 3;
	double rate = argc > 3 ? atof(argv[3]) : 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(7001) };
	inet_pton(AF_INET, "127.0.0.3", &a.sin_addr);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1; setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(lfd, (void *)&a, sizeof a) || listen(lfd, 4096)) { perror("listen"); return 1; }
	pthread_t t; pthread_create(&t, 0, acceptor, 0);
	if (fail) for (int i = 0; i < 10; i++) { int s = socket(AF_INET, SOCK_STREAM, 0); if (connect(s, (void *)&a, sizeof a)) { perror("hold"); return 1; } }
	struct linger lg = { 1, 0 };
	long n = 0, bad = 0; double start = now(), end = start + secs, c0 = cpu();
	while (now() < end) {
		for (int k = 0; k < 64; k++) {
			int s = socket(AF_INET, SOCK_STREAM, 0);
			int r = connect(s, (void *)&a, sizeof a);
			if (fail ? (r == 0 || errno != EADDRNOTAVAIL) : r != 0) bad++;
			setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			close(s); n++;
		}
		if (rate > 0) {
			double due = start + n / rate, left = due - now();
			if (left > 0) { struct timespec ts = { (time_t)left, (long)((left - (time_t)left) * 1e9) }; nanosleep(&ts, 0); }
		}
	}
	double wall = now() - start, used = cpu() - c0;
	printf("%.0f %ld %.4f %ld\n", n / wall, bad, used, n);
	return bad ? 1 : 0;
}
EOF
cc -O2 -pthread -o "$work/load" "$work/load.c"

ip netns add "$ns"
ip -n "$ns" link set lo up

# Perf event descriptors PID holds (the tracer is up once it has them).
perf_fds() { find "/proc/$1/fd" -lname '*perf_event*' 2>/dev/null | wc -l; }

run() { # MODE TRACED -> "connects/s bad cpu_seconds connects counted"
	local mode=$1 traced=$2 out pd counted=-
	if [ "$mode" = ok ]; then
		ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
	else
		ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="40000 40009"
	fi
	if [ "$traced" = 1 ]; then
		"$PD" check --netns "$ns" --observe "$((SECONDS_PER_RUN + 3))s" --json >"$work/obs.json" &
		pd=$!
		for _ in $(seq 200); do [ "$(perf_fds "$pd")" -gt 0 ] && break; sleep 0.02; done
	else
		# The same 20 ms timer wakeups without tracing: in a VM, a CPU kept out of deep idle
		# alone speeds loopback up, which would flatter the traced runs.
		python3 -c "import time; end = time.time() + $SECONDS_PER_RUN + 3
while time.time() < end: time.sleep(0.02)" &
		pd=$!
	fi
	sleep 0.3
	out=$(ip netns exec "$ns" "$work/load" "$mode" "$SECONDS_PER_RUN" "$([ "$mode" = fail ] && echo "$FAIL_RATE" || echo 0)")
	wait "$pd" || true
	if [ "$traced" = 1 ]; then
		counted=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['connect_failures']; print(c['by_error']['EADDRNOTAVAIL'] if c else 'null', c['lost'] if c else '')" "$work/obs.json" | tr ' ' '/')
	fi
	echo "$out $counted"
}

# Median, min and max of the numbers on stdin.
stats() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f (%.3f-%.3f)", m, a[1], a[NR]}'; }
median() { sort -g | awk '{a[NR]=$1} END {printf "%d", (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

echo "paired runs: $ROUNDS pairs of $SECONDS_PER_RUN s per workload, order alternating; portdoctor $("$PD" --version 2>/dev/null | head -1)"
echo
echo "| workload | untraced connects/s (median) | traced connects/s (median) | traced / untraced, wall (median, min-max) | traced / untraced, per CPU second (median, min-max) |"
echo "|---|---:|---:|---:|---:|"
for mode in ok fail; do
	: >"$work/u"; : >"$work/t"; : >"$work/rw"; : >"$work/rc"; : >"$work/counts"
	for r in $(seq "$ROUNDS"); do
		if [ $((r % 2)) = 1 ]; then
			u=$(run "$mode" 0); t=$(run "$mode" 1)
		else
			t=$(run "$mode" 1); u=$(run "$mode" 0)
		fi
		read -r ur ub uc un _ <<<"$u"
		read -r tr tb tc tn tcount <<<"$t"
		[ "$ub" = 0 ] && [ "$tb" = 0 ] || { echo "round $r: unexpected connect results ($u / $t)" >&2; exit 1; }
		echo "$ur" >>"$work/u"; echo "$tr" >>"$work/t"
		awk -v a="$tr" -v b="$ur" 'BEGIN {print a/b}' >>"$work/rw"
		awk -v tn="$tn" -v tc="$tc" -v un="$un" -v uc="$uc" 'BEGIN {print (tn/tc)/(un/uc)}' >>"$work/rc"
		[ "$mode" = fail ] && echo "$tn $tcount" >>"$work/counts"
	done
	label=$([ "$mode" = ok ] && echo "successful loopback connects (as fast as it can)" || echo "failing connects (EADDRNOTAVAIL), paced at $FAIL_RATE/s (0: unpaced)")
	echo "| $label | $(median <"$work/u") | $(median <"$work/t") | $(stats <"$work/rw") | $(stats <"$work/rc") |"
done
echo
# Exactness under load: every failing connect of a traced run counted once, nothing lost.
awk '{split($2, c, "/"); made += $1; counted += c[1]; lost += c[2]; if ($1 != c[1]) off++}
	END {printf "tracer under the failing workload: counted %d of %d failures (%d runs off, %d samples lost)\n", counted, made, off, lost}' "$work/counts"

# portdoctor's own cost while tracing an idle host: serve with the tracer on, nobody scraping.
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$PD" serve --listen "127.0.0.1:$port" >/dev/null 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 250); do [ "$(perf_fds "$serve_pid")" -gt 0 ] && break; sleep 0.02; done
grep -q 'connect_failure_tracing 1' <(curl -s "http://127.0.0.1:$port/metrics" || true) ||
	{ echo "serve is not tracing: $(cat "$work/serve.err")" >&2; exit 1; }
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$serve_pid/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$serve_pid/status"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); w0=$(date +%s.%N); rss_list=$(rss)
for _ in $(seq $((IDLE_SECONDS / 10))); do sleep 10; rss_list="$rss_list $(rss)"; done
t1=$(ticks); w1=$(date +%s.%N)
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=""
awk -v t0="$t0" -v t1="$t1" -v w0="$w0" -v w1="$w1" -v hz="$hz" -v r="$rss_list" 'BEGIN {
	n = split(r, a, " "); max = 0; for (i = 1; i <= n; i++) if (a[i] + 0 > max) max = a[i] + 0
	printf "portdoctor serve tracing an idle host for %.0f s: %.2f s CPU = %.3f %% of one core; RSS %d KiB at start, %d KiB at the end, max %d KiB (%d samples, every 10 s)\n",
		w1 - w0, (t1 - t0) / hz, (t1 - t0) / hz / (w1 - w0) * 100, a[1], a[n], max, n
	printf "RSS samples (KiB): %s\n", r }'
