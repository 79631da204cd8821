#!/usr/bin/env bash
# bench/check.sh - end-to-end benchmark of `portdoctor check --json --no-owners` against
# `ss -tan`, an `ss | awk | sort | uniq -c` pipeline and the raw C netlink dump (`rawdump`),
# on a real socket population of N TCP sockets in a throwaway network namespace.
#
# For each size N it creates a namespace (../shared/tools/netns-run: lo up, port range
# 1024-65535, tcp_max_tw_buckets 2000000, tcp_tw_reuse 0; deleted on exit, failure and ctrl-C),
# populates it with sockpop (90% client TIME_WAIT, 10% held ESTABLISHED over 250 pools), records
# the live socket count with `rawdump --quiet`, then times the four commands interleaved
# (A B C D, A B C D, ...) inside the namespace and reports median and min wall time, plus
# portdoctor's peak RSS (/usr/bin/time -f %M). See bench/README.md.
#
# Needs root (network namespaces), cc, cargo, ss, awk, sort, uniq, /usr/bin/time. Bash >= 5
# (EPOCHREALTIME, so the timer forks nothing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

# --- fixed population layout -------------------------------------------------------------------
# 50 listener ports on 127.0.0.1 and ::1; sources 127.0.0.1..127.0.0.4 (IPv4) and ::1 (IPv6), so
# 50 x (4 + 1) = 250 outbound pools (IP_BIND_ADDRESS_NO_PORT: ports picked per destination).
# At 300k sockets that is ~1,200 ports per pool out of 64,512: no pool is anywhere near full.
POP_ARGS=(--ports 20000-20049 --dst 127.0.0.1 --dst ::1 --src 127.0.0.1+4 --src ::1)
LISTENERS=100
EST_PERCENT=10          # share of sockets that are held ESTABLISHED (2 sockets per connection)
TW_WINDOW_S=52          # stop starting rounds this long after populating began (TIME_WAIT = 60 s)
POPULATE_TIMEOUT_S=150  # bound on sockpop's populating
NS_TIMEOUT_S=400        # bound on everything done inside one namespace

usage() {
	cat <<'USAGE'
usage: sudo bench/check.sh [--sizes N[,N...]] [--rounds R] [--out FILE]
                           [--portdoctor PATH] [--tools DIR] [--no-build]
  --sizes       socket counts to populate (default 10000,100000,300000)
  --rounds      interleaved timing rounds per size (default 7; use at least 5)
  --out FILE    also write the markdown report to FILE
  --portdoctor  binary to test (default: target/release/portdoctor, built with cargo)
  --tools DIR   shared tools folder with netns-run, build, sockpop.c, rawdump.c
                (default: ../shared/tools next to the repository, or $SHARED_TOOLS)
  --no-build    do not run `cargo build --release` first
Prints a markdown table: sockets | portdoctor ms | ss -tan ms | ss pipeline ms | rawdump ms |
portdoctor/rawdump | portdoctor/ss | portdoctor peak RSS MiB (medians), then details.
USAGE
}

# ------------------------------------------------------------------------------------------------
# Inner part: runs inside the namespace (re-executed by netns-run). Writes key/value results and
# raw samples into $work; prints progress on stderr.
# ------------------------------------------------------------------------------------------------
now_us() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }

inner() {
	local n=$1 rounds=$2 work=$3 pd=$4 sockpop=$5 rawdump=$6
	local res=$work/res.$n samples=$work/samples.$n truth=$work/truth.$n.json
	: >"$res"
	: >"$samples"
	local est=$((n * EST_PERCENT / 100 / 2))
	local tw=$((n - 2 * est))
	log() { echo "check.sh [$n]: $*" >&2; }

	local t_start
	t_start=$(now_us)
	"$sockpop" "${POP_ARGS[@]}" --established "$est" --time-wait "$tw" \
		--hold $((NS_TIMEOUT_S - 30)) --out "$truth" >/dev/null 2>"$work/sockpop.$n.err" &
	local sp=$!
	# sockpop writes --out atomically once populated.
	while [ ! -f "$truth" ]; do
		if ! kill -0 "$sp" 2>/dev/null; then
			wait "$sp" || true
			log "sockpop exited before populating:"; cat "$work/sockpop.$n.err" >&2
			return 1
		fi
		if [ $(( $(now_us) - t_start )) -gt $((POPULATE_TIMEOUT_S * 1000000)) ]; then
			log "populating took more than ${POPULATE_TIMEOUT_S} s; giving up"
			return 1
		fi
		sleep 0.05
	done
	local t_pop
	t_pop=$(now_us)
	if grep -q '"eaddrnotavail":[1-9]' "$truth"; then
		log "a pool ran out of ports (EADDRNOTAVAIL); the layout is too small for $n"
		return 1
	fi
	echo "populate_ms $(( (t_pop - t_start) / 1000 ))" >>"$res"
	echo "requested_established $((2 * est))" >>"$res"
	echo "requested_time_wait $tw" >>"$res"

	count() { "$rawdump" --quiet | awk '$1 == "total" { print $2 }'; }
	echo "live_before $(count)" >>"$res"

	# The four commands. Each runs directly in this namespace, output to /dev/null.
	run_pd() {
		local rc=0
		"$pd" check --json --no-owners >/dev/null || rc=$?
		[ "$rc" -le 2 ] || { log "portdoctor failed (exit $rc)"; return 1; }
	}
	run_ss() { ss -tan >/dev/null; }
	# Per pool: local IP (port stripped), remote address:port; what one would type by hand.
	run_pipe() {
		ss -tan | awk '{ sub(/:[^:]*$/, "", $4); print $4, $5 }' | sort | uniq -c >/dev/null
	}
	run_raw() { "$rawdump" --quiet >/dev/null; }
	local names=(portdoctor ss pipeline rawdump)
	local fns=(run_pd run_ss run_pipe run_raw)

	# One untimed warm-up of each (page cache, lazy binding); portdoctor's output is checked.
	local i rc=0
	"$pd" check --json --no-owners >"$work/pd.$n.json" || rc=$?
	if [ "$rc" -gt 2 ] || ! grep -q '"schema": "portdoctor.check/v1"' "$work/pd.$n.json"; then
		log "portdoctor did not produce a check report (exit $rc)"
		return 1
	fi
	for i in 1 2 3; do "${fns[$i]}"; done

	local r done_rounds=0 cut=0 t0 t1 rs re last_round_us=0
	for ((r = 1; r <= rounds; r++)); do
		rs=$(now_us)
		# Would this round end after the first TIME_WAIT sockets start to expire?
		if [ "$done_rounds" -gt 0 ] &&
			[ $(( rs - t_start + last_round_us )) -gt $((TW_WINDOW_S * 1000000)) ]; then
			cut=1
			break
		fi
		for i in 0 1 2 3; do
			t0=$(now_us)
			"${fns[$i]}"
			t1=$(now_us)
			echo "${names[$i]} $r $(( t1 - t0 ))" >>"$samples"
		done
		re=$(now_us)
		last_round_us=$(( re - rs ))
		done_rounds=$r
	done
	echo "rounds $done_rounds" >>"$res"
	echo "rounds_cut $cut" >>"$res"
	echo "window_end_ms $(( ($(now_us) - t_start) / 1000 ))" >>"$res"

	# Peak RSS and CPU split: 3 portdoctor runs (max RSS kept), one each of ss and rawdump.
	for i in 1 2 3; do
		/usr/bin/time -f "rss_portdoctor %M %e %U %S" -a -o "$res" \
			"$pd" check --json --no-owners >"$work/pd.$n.json" || true
	done
	/usr/bin/time -f "rss_ss %M %e %U %S" -a -o "$res" ss -tan >/dev/null
	/usr/bin/time -f "rss_rawdump %M %e %U %S" -a -o "$res" "$rawdump" --quiet >/dev/null
	echo "pd_total $(grep -m1 -o '"total": [0-9]*' "$work/pd.$n.json" | awk '{print $2}')" >>"$res"

	echo "live_after $(count)" >>"$res"
	echo "measure_end_ms $(( ($(now_us) - t_start) / 1000 ))" >>"$res"
	kill "$sp" 2>/dev/null || true
	wait "$sp" || true
	log "done: $done_rounds rounds"
}

if [ "${1:-}" = "--inner" ]; then
	shift
	inner "$@"
	exit $?
fi

# ------------------------------------------------------------------------------------------------
# Outer part.
# ------------------------------------------------------------------------------------------------
sizes=10000,100000,300000
rounds=7
out=
pd=
tools=${SHARED_TOOLS:-}
build=1
while [ $# -gt 0 ]; do
	case "$1" in
	-h|--help) usage; exit 0 ;;
	--sizes) sizes=${2:?--sizes needs a value}; shift 2 ;;
	--rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
	--out) out=${2:?--out needs a file}; shift 2 ;;
	--portdoctor) pd=${2:?--portdoctor needs a path}; build=0; shift 2 ;;
	--tools) tools=${2:?--tools needs a folder}; shift 2 ;;
	--no-build) build=0; shift ;;
	*) echo "check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done
case "$rounds" in ''|*[!0-9]*|0) echo "check.sh: --rounds must be a positive integer" >&2; exit 2 ;; esac
[ "$rounds" -ge 5 ] || echo "check.sh: warning: fewer than 5 rounds; medians will be noisy" >&2
IFS=, read -r -a size_list <<<"$sizes"
for n in "${size_list[@]}"; do
	case "$n" in ''|*[!0-9]*) echo "check.sh: bad size '$n' in --sizes" >&2; exit 2 ;; esac
	[ "$n" -ge 1000 ] && [ "$n" -le 1000000 ] || { echo "check.sh: sizes must be 1000..1000000" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "check.sh: needs root (network namespaces); try sudo" >&2; exit 2; }
[ "${BASH_VERSINFO[0]}" -ge 5 ] || { echo "check.sh: needs bash >= 5 (EPOCHREALTIME)" >&2; exit 2; }
for c in ss awk sort uniq ip cc /usr/bin/time; do
	command -v "$c" >/dev/null || { echo "check.sh: '$c' not found" >&2; exit 2; }
done

[ -n "$tools" ] || tools=$repo/../shared/tools
tools=$(cd "$tools" && pwd) || { echo "check.sh: no tools folder $tools (use --tools)" >&2; exit 2; }
if [ "$build" = 1 ]; then
	(cd "$repo" && cargo build --release --quiet) || { echo "check.sh: cargo build failed" >&2; exit 1; }
fi
[ -n "$pd" ] || pd=$repo/target/release/portdoctor
pd=$(cd "$(dirname "$pd")" && pwd)/$(basename "$pd")
[ -x "$pd" ] || { echo "check.sh: no portdoctor binary at $pd" >&2; exit 2; }

if [ "$build" = 1 ] || [ "$pd" = "$repo/target/release/portdoctor" ]; then
	build_note="built from the working tree at $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
	if [ -n "$(cd "$repo" && git status --porcelain -- src Cargo.toml 2>/dev/null)" ]; then
		build_note="$build_note with uncommitted changes in src/ or Cargo.toml"
	fi
else
	build_note=$pd
fi
load0=$(cut -d' ' -f1-3 /proc/loadavg)

work=$(mktemp -d "${TMPDIR:-/tmp}/pd-bench.XXXXXX")
ns_current=
nr_pid=
ns_exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }
# Ends what runs inside our namespace (all of it was started by this script: the inner bash,
# sockpop and its helpers, the command being timed), by PID, then lets netns-run finish its own
# cleanup, bounded.
stop_namespace() {
	[ -n "$ns_current" ] || return 0
	local pids i
	pids=$(ip netns pids "$ns_current" 2>/dev/null || true)
	[ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
	if [ -n "$nr_pid" ]; then
		for ((i = 0; i < 100; i++)); do kill -0 "$nr_pid" 2>/dev/null || break; sleep 0.1; done
		pids=$(ip netns pids "$ns_current" 2>/dev/null || true)
		[ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
		wait "$nr_pid" 2>/dev/null || true
	fi
}
cleanup() {
	stop_namespace
	# netns-run deletes its namespace itself; this is the belt to its braces.
	if [ -n "$ns_current" ] && ns_exists "$ns_current"; then
		ip netns del "$ns_current" 2>/dev/null || true
	fi
	rm -rf "$work"
}
on_signal() {
	trap - INT TERM
	echo "check.sh: interrupted; stopping and deleting namespace ${ns_current:-(none)}" >&2
	exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Build the C tools outside the timing (the README asks to call the built binaries directly).
mapfile -t bins < <("$tools/build" "$work/tools" sockpop rawdump)
sockpop=${bins[0]} rawdump=${bins[1]}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minimum() { sort -n | head -1; }
ms() { awk -v us="$1" 'BEGIN { if (us == "") print "-"; else printf "%.1f", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
get() { awk -v k="$2" '$1 == k { print $2; exit }' "$1"; }
samples_of() { awk -v t="$2" '$1 == t { print $3 }' "$1"; }

table=()
details=()
failed=0
for n in "${size_list[@]}"; do
	ns_current=pdbench-$$-$n
	echo "check.sh: populating $n sockets in namespace $ns_current ..." >&2
	rc=0
	# In the background and waited for, so that ctrl-C / SIGTERM run our trap at once (bash
	# defers traps while a foreground child runs, and netns-run's `timeout` child sits in its
	# own process group, out of reach of the terminal's ctrl-C).
	"$tools/netns-run" --name "$ns_current" --range 1024 65535 --tw-buckets 2000000 --tw-reuse 0 \
		--timeout "$NS_TIMEOUT_S" -- \
		bash "$here/check.sh" --inner "$n" "$rounds" "$work" "$pd" "$sockpop" "$rawdump" &
	nr_pid=$!
	wait "$nr_pid" || rc=$?
	nr_pid=
	ns_current=
	res=$work/res.$n smp=$work/samples.$n
	if [ "$rc" != 0 ] || [ ! -s "$smp" ]; then
		echo "check.sh: size $n failed (exit $rc)" >&2
		table+=("| $n | failed (exit $rc) | | | | | | |")
		failed=1
		continue
	fi
	declare -A med=() mn=()
	for t in portdoctor ss pipeline rawdump; do
		med[$t]=$(samples_of "$smp" $t | median)
		mn[$t]=$(samples_of "$smp" $t | minimum)
	done
	rss_kib=$(awk '$1 == "rss_portdoctor" { if ($2 > m) m = $2 } END { print m }' "$res")
	rss_mib=$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')
	live=$(get "$res" live_before)
	table+=("| $live | $(ms "${med[portdoctor]}") | $(ms "${med[ss]}") | $(ms "${med[pipeline]}") | $(ms "${med[rawdump]}") | $(ratio "${med[portdoctor]}" "${med[rawdump]}") | $(ratio "${med[portdoctor]}" "${med[ss]}") | $rss_mib |")
	cpu=$(awk '$1 == "rss_portdoctor" { printf "%s%s s wall, %s s user, %s s sys", sep, $3, $4, $5; sep = "; " }' "$res")
	fmt_samples() { samples_of "$smp" "$1" | awk '{ printf "%s%.1f", s, $1 / 1000; s = " " }'; }
	cut_note=
	[ "$(get "$res" rounds_cut)" = 1 ] && cut_note=" (cut short by the TIME_WAIT window)"
	details+=("- **$n requested** ($(get "$res" requested_time_wait) TIME_WAIT + $(get "$res" requested_established) ESTABLISHED + $LISTENERS LISTEN): live $(get "$res" live_before) before / $(get "$res" live_after) after the measurements (rawdump), portdoctor saw $(get "$res" pd_total); populated in $(get "$res" populate_ms) ms; $(get "$res" rounds) rounds$cut_note, ended $(get "$res" window_end_ms) ms after populating began (TIME_WAIT lives 60 s)."
		"  - min ms: portdoctor $(ms "${mn[portdoctor]}"), ss -tan $(ms "${mn[ss]}"), pipeline $(ms "${mn[pipeline]}"), rawdump $(ms "${mn[rawdump]}"); min ratios: portdoctor/rawdump $(ratio "${mn[portdoctor]}" "${mn[rawdump]}"), portdoctor/ss $(ratio "${mn[portdoctor]}" "${mn[ss]}")"
		"  - peak RSS KiB: portdoctor $rss_kib (max of 3), ss -tan $(get "$res" rss_ss), rawdump $(get "$res" rss_rawdump); portdoctor under /usr/bin/time: $cpu"
		"  - samples ms in round order: portdoctor $(fmt_samples portdoctor) | ss -tan $(fmt_samples ss) | pipeline $(fmt_samples pipeline) | rawdump $(fmt_samples rawdump)")
	unset med mn
done

report() {
	echo "## portdoctor check vs ss vs rawdump ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
	echo
	echo "kernel $(uname -r), $(nproc) CPUs, load average before: $load0; $("$pd" --version 2>/dev/null | head -1) ($build_note);" \
		"$rounds interleaved rounds (portdoctor, ss -tan, ss pipeline, rawdump), medians of wall time:"
	echo
	echo "| sockets | portdoctor ms | ss -tan ms | ss pipeline ms | rawdump ms | portdoctor/rawdump | portdoctor/ss | portdoctor peak RSS MiB |"
	echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
	printf '%s\n' "${table[@]}"
	echo
	echo "Details (sockets = live count from \`rawdump --quiet\` before timing):"
	echo
	printf '%s\n' "${details[@]}"
}
if [ -n "$out" ]; then
	report | tee "$out"
else
	report
fi
exit "$failed"
