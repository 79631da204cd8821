#!/usr/bin/env bash
# bench/save.sh - what `check --save` costs: `portdoctor check --json --no-owners` against the
# same with `--save FILE`, and `check --json --load FILE`, on a real population of N TCP sockets
# in a throwaway network namespace (the population of bench/check.sh: 90% client TIME_WAIT, 10%
# held ESTABLISHED over 250 pools). Runs the three interleaved (A B C, A B C, ...) inside the
# namespace and reports median and min wall time, the ratio save/check, the snapshot size and
# bytes per socket, and whether the loaded report is byte-identical to the saved run's.
#
# Needs root (network namespaces), cc, cargo, bash >= 5 (EPOCHREALTIME). See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

POP_ARGS=(--ports 20000-20049 --dst 127.0.0.1 --dst ::1 --src 127.0.0.1+4 --src ::1)
EST_PERCENT=10
TW_WINDOW_S=52          # stop starting rounds this long after populating began (TIME_WAIT = 60 s)
POPULATE_TIMEOUT_S=150
NS_TIMEOUT_S=400

usage() {
	cat <<'USAGE'
usage: sudo bench/save.sh [--sockets N] [--rounds R] [--portdoctor PATH] [--tools DIR] [--no-build]
  --sockets     socket count to populate (default 300000)
  --rounds      interleaved timing rounds (default 7)
  --portdoctor  binary to test (default: target/release/portdoctor, built with cargo)
  --tools DIR   shared tools folder (default: ../shared/tools next to the repository)
  --no-build    do not run `cargo build --release` first
USAGE
}

now_us() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

inner() {
	local n=$1 rounds=$2 work=$3 pd=$4 sockpop=$5
	local truth=$work/truth.json snap=$work/snap.json samples=$work/samples
	: >"$samples"
	local est=$((n * EST_PERCENT / 100 / 2))
	local tw=$((n - 2 * est))
	local t_start
	t_start=$(now_us)
	"$sockpop" "${POP_ARGS[@]}" --established "$est" --time-wait "$tw" \
		--hold $((NS_TIMEOUT_S - 30)) --out "$truth" >/dev/null 2>"$work/sockpop.err" &
	local sp=$!
	while [ ! -f "$truth" ]; do
		kill -0 "$sp" 2>/dev/null || { cat "$work/sockpop.err" >&2; return 1; }
		[ $(( $(now_us) - t_start )) -le $((POPULATE_TIMEOUT_S * 1000000)) ] || return 1
		sleep 0.05
	done
	echo "populated in $(( ($(now_us) - t_start) / 1000 )) ms" >&2

	run_check() { "$pd" check --json --no-owners >/dev/null || [ $? -le 2 ]; }
	run_save() { "$pd" check --json --no-owners --save "$snap" >/dev/null || [ $? -le 2 ]; }
	run_load() { "$pd" check --json --load "$snap" >/dev/null || [ $? -le 2 ]; }
	local names=(check save load) fns=(run_check run_save run_load)

	# Warm-up, and the integrity check: the loaded report equals the saving run's.
	"$pd" check --json --no-owners --save "$snap" >"$work/saved.json" || [ $? -le 2 ]
	"$pd" check --json --load "$snap" >"$work/loaded.json" || [ $? -le 2 ]
	if cmp -s "$work/saved.json" "$work/loaded.json"; then
		echo "identical 1" >"$work/res"
	else
		echo "identical 0" >"$work/res"
	fi
	echo "sockets $(grep -m1 -o '"total": [0-9]*' "$work/saved.json" | awk '{print $2}')" >>"$work/res"
	echo "bytes $(stat -c %s "$snap")" >>"$work/res"

	local r i t0 t1 rs last=0
	for ((r = 1; r <= rounds; r++)); do
		rs=$(now_us)
		if [ "$r" -gt 1 ] && [ $(( rs - t_start + last )) -gt $((TW_WINDOW_S * 1000000)) ]; then
			echo "rounds cut at $((r - 1)): TIME_WAIT would start expiring" >&2
			break
		fi
		for i in 0 1 2; do
			t0=$(now_us)
			"${fns[$i]}"
			t1=$(now_us)
			echo "${names[$i]} $(( t1 - t0 ))" >>"$samples"
		done
		last=$(( $(now_us) - rs ))
	done
	kill "$sp" 2>/dev/null || true
	wait "$sp" || true
}

if [ "${1:-}" = "--inner" ]; then
	shift
	inner "$@"
	exit $?
fi

n=300000
rounds=7
pd=
tools=${SHARED_TOOLS:-}
build=1
while [ $# -gt 0 ]; do
	case "$1" in
	-h|--help) usage; exit 0 ;;
	--sockets) n=${2:?}; shift 2 ;;
	--rounds) rounds=${2:?}; shift 2 ;;
	--portdoctor) pd=${2:?}; build=0; shift 2 ;;
	--tools) tools=${2:?}; shift 2 ;;
	--no-build) build=0; shift ;;
	*) echo "save.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
	esac
done
case "$n" in ''|*[!0-9]*) echo "save.sh: bad --sockets" >&2; exit 2 ;; esac
[ "$n" -ge 1000 ] && [ "$n" -le 1000000 ] || { echo "save.sh: --sockets must be 1000..1000000" >&2; exit 2; }
case "$rounds" in ''|*[!0-9]*|0) echo "save.sh: --rounds must be a positive integer" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "save.sh: needs root (network namespaces)" >&2; exit 2; }
[ "${BASH_VERSINFO[0]}" -ge 5 ] || { echo "save.sh: needs bash >= 5" >&2; exit 2; }

[ -n "$tools" ] || tools=$repo/../shared/tools
tools=$(cd "$tools" && pwd) || { echo "save.sh: no tools folder (use --tools)" >&2; exit 2; }
if [ "$build" = 1 ]; then
	(cd "$repo" && cargo build --release --quiet) || { echo "save.sh: cargo build failed" >&2; exit 1; }
fi
if [ -z "$pd" ]; then
	pd=${CARGO_TARGET_DIR:-$repo/target}/release/portdoctor
fi
[ -x "$pd" ] || { echo "save.sh: no binary $pd" >&2; exit 2; }
pd=$(cd "$(dirname "$pd")" && pwd)/$(basename "$pd")

work=$(mktemp -d "${TMPDIR:-/tmp}/pd-save-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
sockpop=$("$tools/build" "$work/tools" sockpop)

"$tools/netns-run" --timeout "$NS_TIMEOUT_S" -- \
	bash "$here/save.sh" --inner "$n" "$rounds" "$work" "$pd" "$sockpop"

stat_of() { awk -v k="$1" '$1 == k { print $2 }' "$work/samples" | "$2"; }
minimum() { sort -n | head -1; }
ms() { awk '{ printf "%.1f", $1 / 1000 }'; }
c_med=$(stat_of check median); s_med=$(stat_of save median); l_med=$(stat_of load median)
c_min=$(stat_of check minimum); s_min=$(stat_of save minimum); l_min=$(stat_of load minimum)
sockets=$(awk '$1 == "sockets" { print $2 }' "$work/res")
bytes=$(awk '$1 == "bytes" { print $2 }' "$work/res")
identical=$(awk '$1 == "identical" { print $2 }' "$work/res")
rounds_done=$(awk '$1 == "check"' "$work/samples" | wc -l)

echo "| sockets | check --json ms | check --json --save ms | save/check | check --json --load ms | file MiB | bytes/socket | loaded report identical |"
echo "|---|---|---|---|---|---|---|---|"
printf '| %s | %s (min %s) | %s (min %s) | %.2f | %s (min %s) | %.1f | %.1f | %s |\n' \
	"$sockets" "$(echo "$c_med" | ms)" "$(echo "$c_min" | ms)" \
	"$(echo "$s_med" | ms)" "$(echo "$s_min" | ms)" \
	"$(awk -v a="$s_med" -v b="$c_med" 'BEGIN { print a / b }')" \
	"$(echo "$l_med" | ms)" "$(echo "$l_min" | ms)" \
	"$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" \
	"$(awk -v b="$bytes" -v s="$sockets" 'BEGIN { print b / s }')" \
	"$([ "$identical" = 1 ] && echo yes || echo NO)"
echo
echo "medians of $rounds_done interleaved rounds; --no-owners for check and save, as bench/check.sh"
[ "$identical" = 1 ]
