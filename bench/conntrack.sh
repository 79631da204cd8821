#!/usr/bin/env bash
# bench/conntrack.sh - the conntrack collector and SNAT model (issue 16) against
# `conntrack -L > /dev/null` on N source-NATed conntrack entries, side by side.
#
# Builds pod -> node -> remote namespaces (names pdnatb-<pid>-*, addresses 10.232.1.0/24 and
# 10.232.2.0/24 inside them only; deleted on exit, failure and ctrl-C). The node masquerades
# UDP toward the remote with `to :1024-65535`; the remote drops what arrives. The pod sends one
# datagram per (source port, remote port): N flows over 4 remote ports (4 SNAT pools of N/4),
# no process holds anything afterwards; the node keeps unreplied UDP entries for 600 s.
# Then, interleaved for R rounds: `portdoctor check --netns NODE --json --no-owners` (sockets,
# conntrack dump, NAT rules, model, JSON) and `conntrack -L` in the node, wall time median/min,
# portdoctor's peak RSS (/usr/bin/time -f %M).
#
# Needs root, python3, nft, conntrack, /usr/bin/time, bash >= 5.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
N=100000
ROUNDS=7
PD=""
usage() {
	echo "usage: sudo bench/conntrack.sh [--entries N] [--rounds R] [--portdoctor PATH]" >&2
	echo "  default: 100000 entries, 7 rounds, target/release/portdoctor (cargo build --release)" >&2
}
while [ $# -gt 0 ]; do
	case $1 in
	--entries) N=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--portdoctor) PD=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage; exit 2 ;;
	esac
done
if [ -z "$PD" ]; then
	(cd "$repo" && cargo build --release --quiet)
	PD=${CARGO_TARGET_DIR:-$repo/target}/release/portdoctor
fi

tag=pdnatb-$$
P=$tag-pod NODE=$tag-node R=$tag-rem
cleanup() {
	for ns in "$P" "$NODE" "$R"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
		ip netns del "$ns" 2>/dev/null || true
	done
}
trap cleanup EXIT INT TERM

for ns in "$P" "$NODE" "$R"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$NODE" link add n0 type veth peer name p0 netns "$P"
ip -n "$NODE" link add n1 type veth peer name r0 netns "$R"
ip -n "$P" addr add 10.232.1.2/24 dev p0; ip -n "$P" link set p0 up
ip -n "$NODE" addr add 10.232.1.1/24 dev n0; ip -n "$NODE" link set n0 up
ip -n "$NODE" addr add 10.232.2.1/24 dev n1; ip -n "$NODE" link set n1 up
ip -n "$R" addr add 10.232.2.2/24 dev r0; ip -n "$R" link set r0 up
ip -n "$P" route add default via 10.232.1.1
ip netns exec "$NODE" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$NODE" sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600
ip netns exec "$NODE" nft add table ip pdnatb
ip netns exec "$NODE" nft 'add chain ip pdnatb post { type nat hook postrouting priority srcnat; policy accept; }'
ip netns exec "$NODE" nft add rule ip pdnatb post oifname n1 meta l4proto udp masquerade to :1024-65535
ip netns exec "$R" nft add table ip pdnatb
ip netns exec "$R" nft 'add chain ip pdnatb in { type filter hook input priority 0; policy accept; }'
ip netns exec "$R" nft add rule ip pdnatb in udp dport 9000-9003 drop

echo "populating $N conntrack entries..." >&2
timeout 300 ip netns exec "$P" python3 - "$N" <<'PY'
import socket, sys
n = int(sys.argv[1]); per = (n + 3) // 4; sent = 0
for sport in range(20000, 20000 + per):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.232.1.2", sport))
    for dport in range(9000, 9004):
        if sent < n:
            s.sendto(b"x", ("10.232.2.2", dport)); sent += 1
    s.close()
PY
want=$N
for _ in $(seq 1 100); do
	have=$(ip netns exec "$NODE" cat /proc/sys/net/netfilter/nf_conntrack_count)
	[ "$have" -ge "$want" ] && break
	sleep 0.1
done
echo "node conntrack entries: $have" >&2

now_us() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }
pd_ms=() ct_ms=() rss=()
for i in $(seq 1 "$ROUNDS"); do
	t0=$(now_us)
	/usr/bin/time -f %M -o /tmp/$tag.rss "$PD" check --netns "$NODE" --json --no-owners >/tmp/$tag.json || true
	t1=$(now_us)
	ip netns exec "$NODE" conntrack -L >/dev/null 2>&1
	t2=$(now_us)
	pd_ms+=($(((t1 - t0) / 1000)))
	ct_ms+=($(((t2 - t1) / 1000)))
	rss+=($(cat /tmp/$tag.rss))
done
entries=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d["conntrack"]; print(c["dumped"], c["snat_entries"], len([p for p in d["pools"] if p["scope"]=="snat"]))' /tmp/$tag.json)
rm -f /tmp/$tag.json /tmp/$tag.rss
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mn() { printf '%s\n' "$@" | sort -n | head -1; }
echo
echo "| entries (dumped, SNAT, pools) | portdoctor check ms (median/min) | conntrack -L ms (median/min) | portdoctor peak RSS MiB |"
echo "|---|---|---|---|"
echo "| $entries | $(med "${pd_ms[@]}") / $(mn "${pd_ms[@]}") | $(med "${ct_ms[@]}") / $(mn "${ct_ms[@]}") | $(($(med "${rss[@]}") / 1024)) |"
echo
echo "rounds: $ROUNDS; portdoctor: ${pd_ms[*]} ms; conntrack -L: ${ct_ms[*]} ms; RSS KiB: ${rss[*]}"
