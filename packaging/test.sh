#!/usr/bin/env bash
# Tests the artefacts packaging/build.sh wrote to dist/ (root needed: namespaces, dpkg, chroot):
#  1. the musl binary is static, within the size budget, and `check` in a network namespace gives
#     the same report as the glibc build;
#  2. the .deb installs, runs from PATH, its man pages, completions and unit are found where the
#     tools look, and it removes cleanly;
#  3. the .rpm holds the expected files;
#  4. the Windows zip's exe runs `check --json` under Wine (skipped if the zip is absent);
#  5. the container image builds (podman) and its root filesystem runs `check` as nobody
#     (chroot: `podman run` cannot start containers on this CI machine, see README);
#  6. the Kubernetes manifests carry this version's image tag (tests/deploy.rs validates them);
#  7. SHA256SUMS matches.
# Usage: packaging/test.sh [GLIBC_BINARY]  (default: $CARGO_TARGET_DIR/debug/portdoctor, built by
# cargo test; built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dist=$root/dist
target_dir=${CARGO_TARGET_DIR:-$root/target}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
musl=x86_64-unknown-linux-musl

if [ "$(id -u)" -ne 0 ]; then
  echo "packaging/test.sh: needs root (namespaces, dpkg -i, chroot)" >&2
  exit 1
fi
[ -d "$dist" ] || { echo "packaging/test.sh: no dist/: run packaging/build.sh first" >&2; exit 1; }

need=()
command -v file >/dev/null 2>&1 || need+=(file)
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v zsh >/dev/null 2>&1 || need+=(zsh)
command -v fish >/dev/null 2>&1 || need+=(fish)
[ -f /usr/share/bash-completion/bash_completion ] || need+=(bash-completion)
command -v rpm >/dev/null 2>&1 || need+=(rpm)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v podman >/dev/null 2>&1 || need+=(podman)
if [ ${#need[@]} -gt 0 ]; then
  echo "packaging/test.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

fails=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; fails=$((fails + 1)); }
check_that() { # $1: description; rest: command
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

work=$(mktemp -d)
ns=pdpkg-$$
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  if dpkg -s portdoctor >/dev/null 2>&1 && [ -f "$work/installed-by-test" ]; then dpkg -P portdoctor >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- 1. the static binary ---------------------------------------------------------------------
tarball=$dist/portdoctor-$version-$musl.tar.gz
tar -C "$work" -xzf "$tarball"
t=$work/portdoctor-$version-$musl
bin=$t/portdoctor
check_that "tarball has binary, man pages, completions, README, licences" \
  test -x "$bin" -a -f "$t/man/portdoctor.1" -a -f "$t/man/portdoctor-check.1" -a -f "$t/man/portdoctor-tune-apply.1" \
  -a -f "$t/complete/portdoctor.bash" -a -f "$t/complete/_portdoctor" -a -f "$t/complete/portdoctor.fish" \
  -a -f "$t/README.md" -a -f "$t/LICENSE-MIT" -a -f "$t/LICENSE-APACHE"
desc=$(file -b "$bin")
check_that "file: static ($desc)" grep -Eq 'statically linked|static-pie linked' <<<"$desc"
lddout=$(ldd "$bin" 2>&1 || true)
check_that "ldd: no shared libraries ($lddout)" grep -Eq 'statically linked|not a dynamic executable' <<<"$lddout"
size=$(stat -c %s "$bin")
check_that "size $size bytes <= 8 MiB" test "$size" -le $((8 * 1024 * 1024))
vline=$("$bin" --version)
check_that "--version: $vline" grep -Eq "^portdoctor $version \(commit ([0-9a-f]{7,}|unknown), $musl\)$" <<<"$vline"

# The same check, glibc vs musl, in a namespace with 70 TIME_WAIT sockets in a 100-port range
# (tw_reuse off so that they keep blocking for the whole test): a pressured pool (warning or
# critical, depending on the forecast).
glibc=${1:-$target_dir/debug/portdoctor}
[ -x "$glibc" ] || cargo build --locked --bin portdoctor
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="40000 40099" net.ipv4.tcp_tw_reuse=0
ip netns exec "$ns" timeout 30 python3 - <<'EOF'
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 5000))
srv.listen(128)
for _ in range(70):
    c = socket.create_connection(("127.0.0.1", 5000), timeout=5)
    a, _ = srv.accept()
    c.close()  # the client closes first: its port goes to TIME_WAIT
    a.close()
EOF
code_m=0; "$bin" check --netns "$ns" --json >"$work/musl.json" || code_m=$?
code_g=0; "$glibc" check --netns "$ns" --json >"$work/glibc.json" || code_g=$?
check_that "check exit code: musl $code_m = glibc $code_g (1 or 2)" test "$code_m" = "$code_g" -a "$code_m" -ge 1 -a "$code_m" -le 2
normalise() { # drops what differs between two runs a second apart, and host-wide counters
  python3 -c '
import json, re, sys
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items()
                # sockstat is host-wide (tcp.alloc, tcp.mem): other processes move it.
                if k not in ("collected_at_unix_ms", "connect_rate_per_s", "eta_seconds", "sockstat")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    if isinstance(v, str):
        return re.sub(r", full in [^,]*$", "", v)
    return v
d = strip(json.load(open(sys.argv[1])))
assert d["verdict"]["level"] in ("warning", "critical"), d["verdict"]
assert [(p["remote_port"], p["time_wait"], p["capacity"]) for p in d["pools"]] == [(5000, 70, 100)], d["pools"]
assert "pool_near_exhaustion" in [f["code"] for f in d["verdict"]["findings"]], d["verdict"]
print(json.dumps(d, indent=1, sort_keys=True))' "$1"
}
if normalise "$work/musl.json" >"$work/musl.norm" && normalise "$work/glibc.json" >"$work/glibc.norm" &&
  diff -u "$work/glibc.norm" "$work/musl.norm"; then
  ok "check --json in a namespace: musl report = glibc report (one pool, 70 TIME_WAIT of 100 ports)"
else
  fail "check --json in a namespace: musl and glibc reports differ"
fi
ip netns del "$ns"

# --- 2. the .deb --------------------------------------------------------------------------------
deb=$dist/portdoctor_${version}_amd64.deb
if dpkg -s portdoctor >/dev/null 2>&1; then
  fail "portdoctor is already installed with dpkg: not touching it"
else
  touch "$work/installed-by-test"
  check_that "dpkg -i" dpkg -i "$deb"
  check_that "portdoctor on PATH is /usr/bin/portdoctor" test "$(command -v portdoctor)" = /usr/bin/portdoctor
  code=0; (cd / && PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin portdoctor check >"$work/check.txt") || code=$?
  check_that "portdoctor check from PATH: exit $code (0-2 = a verdict)" test "$code" -le 2
  check_that "man -w portdoctor: $(man -w portdoctor 2>&1)" test "$(man -w portdoctor 2>/dev/null)" = /usr/share/man/man1/portdoctor.1.gz
  check_that "man -w portdoctor-tune-apply" test "$(man -w portdoctor-tune-apply 2>/dev/null)" = /usr/share/man/man1/portdoctor-tune-apply.1.gz
  check_that "man renders portdoctor-check" bash -c 'MANWIDTH=100 man portdoctor-check 2>/dev/null | grep -q -- --netns'
  # Completions: ask each shell, from its standard configuration, to complete `portdoctor ch`.
  check_that "bash-completion loads it on demand" bash -c \
    '. /usr/share/bash-completion/bash_completion; _completion_loader portdoctor; complete -p portdoctor >/dev/null'
  check_that "zsh finds _portdoctor on its default fpath" zsh -c \
    'autoload -Uz compinit; compinit -u -D; [[ $_comps[portdoctor] == _portdoctor ]]'
  check_that "fish completes 'portdoctor ch' to check" bash -c \
    "HOME=$work fish -c 'complete -C\"portdoctor ch\"' | grep -q '^check'"
  unit=/usr/lib/systemd/system/portdoctor.service
  check_that "unit runs /usr/bin/portdoctor" grep -q '^ExecStart=/usr/bin/portdoctor serve' "$unit"
  if command -v systemd-analyze >/dev/null 2>&1; then
    # An unknown or misspelt key is only a warning (exit 0): any output fails the test too.
    check_that "systemd-analyze verify $unit: exit 0, no warnings" bash -c \
      "out=\$(systemd-analyze verify '$unit' 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\" >&2; false; }"
  else
    echo "skip systemd-analyze verify: systemd-analyze not installed"
  fi
  check_that "alert rules, dashboard, sysctl.d note under /usr/share/portdoctor" test \
    -f /usr/share/portdoctor/prometheus/portdoctor.rules.yml -a -f /usr/share/portdoctor/grafana/portdoctor.json \
    -a -f /usr/share/portdoctor/sysctl.d-README
  files=$(dpkg -L portdoctor | while read -r f; do [ -f "$f" ] && echo "$f"; done)
  check_that "dpkg -r" dpkg -r portdoctor
  left=$(for f in $files; do [ -e "$f" ] && echo "$f"; done; true)
  check_that "dpkg -r removed every file (left: ${left:-none})" test -z "$left"
  check_that "no portdoctor on PATH after removal" bash -c '! command -v portdoctor'
  check_that "dpkg -r removed /usr/share/portdoctor" test ! -e /usr/share/portdoctor
  dpkg -P portdoctor >/dev/null 2>&1 || true
  check_that "dpkg -P: no package state left" bash -c '! dpkg -s portdoctor >/dev/null 2>&1'
fi

# --- 3. the .rpm --------------------------------------------------------------------------------
rpmfile=$dist/portdoctor-$version.x86_64.rpm
rpm -qlp "$rpmfile" 2>/dev/null | sort >"$work/rpm.list"
for f in /usr/bin/portdoctor /usr/share/man/man1/portdoctor.1.gz /usr/share/man/man1/portdoctor-check.1.gz \
  /usr/share/man/man1/portdoctor-tune-apply.1.gz /usr/share/bash-completion/completions/portdoctor \
  /usr/share/zsh/site-functions/_portdoctor /usr/share/fish/vendor_completions.d/portdoctor.fish \
  /usr/lib/systemd/system/portdoctor.service /usr/share/portdoctor/prometheus/portdoctor.rules.yml \
  /usr/share/portdoctor/grafana/portdoctor.json /usr/share/portdoctor/sysctl.d-README \
  /usr/share/licenses/portdoctor/LICENSE-MIT; do
  grep -qx "$f" "$work/rpm.list" || fail "rpm -qlp lacks $f"
done
ok "rpm -qlp lists binary, $(grep -c 'man1/' "$work/rpm.list") man pages, completions, unit, deploy files"
check_that "rpm: name, version, arch" test "$(rpm -qp --qf '%{NAME} %{VERSION} %{ARCH}' "$rpmfile" 2>/dev/null)" = "portdoctor $version x86_64"
# The scriptlets need /bin/sh; the binary needs nothing (AutoReqProv off, and it is static).
reqs=$(rpm -qp --requires "$rpmfile" 2>/dev/null | grep -v -e '^rpmlib(' -e '^/bin/sh$' | tr '\n' ' ' || true)
check_that "rpm requires nothing but /bin/sh: ${reqs:-ok}" test -z "$reqs"
(cd "$work" && mkdir rpmx && cd rpmx && rpm2cpio "$rpmfile" | cpio -idm --quiet)
check_that "rpm binary = tarball binary" cmp -s "$work/rpmx/usr/bin/portdoctor" "$bin"

# --- 4. the Windows zip -------------------------------------------------------------------------
zip=$dist/portdoctor-$version-x86_64-pc-windows-gnu.zip
if [ -f "$zip" ]; then
  (cd "$work" && python3 -m zipfile -e "$zip" win)
  w=$work/win/portdoctor-$version-x86_64-pc-windows-gnu
  check_that "zip has exe, README, SERVICE.txt, licences" test -f "$w/portdoctor.exe" -a -f "$w/README.md" \
    -a -f "$w/SERVICE.txt" -a -f "$w/LICENSE-MIT"
  eval "$(bash ../shared/ci/windows/setup.sh)"
  code=0; "$CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER" "$w/portdoctor.exe" check --json >"$work/win.json" || code=$?
  check_that "portdoctor.exe check --json under Wine: exit $code, schema portdoctor.check/v1, os windows" \
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["schema"] == "portdoctor.check/v1" and d["os"] == "windows", d["os"]
assert int(sys.argv[2]) == {"ok": 0, "warning": 1, "critical": 2}[d["verdict"]["level"]]' "$work/win.json" "$code"
  wv=$("$CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER" "$w/portdoctor.exe" --version | tr -d '\r')
  check_that "portdoctor.exe --version: $wv" grep -q "x86_64-pc-windows-gnu)$" <<<"$wv"
else
  echo "skip Windows zip: $zip not built (build.sh --no-windows)"
fi

# --- 5. the container image ---------------------------------------------------------------------
image=localhost/portdoctor-test:$$
if podman build -q -t "$image" "$dist/container" >"$work/podman.log" 2>&1; then
  ok "podman build dist/container"
  user=$(podman image inspect --format '{{.Config.User}}' "$image")
  check_that "image user is nobody ($user)" test "$user" = 65534:65534
  cid=$(podman create "$image")
  mkdir "$work/rootfs"
  podman export "$cid" | tar -C "$work/rootfs" -xf -
  podman rm -f "$cid" >/dev/null
  podman rmi -f "$image" >/dev/null
  rootfs_files=$(cd "$work/rootfs" && find . -type f | sort | tr '\n' ' ')
  check_that "image holds the binary only ($rootfs_files)" test "$rootfs_files" = "./usr/bin/portdoctor "
else
  fail "podman build: $(cat "$work/podman.log")"
  # Without podman: the same root filesystem from the Containerfile's COPY line.
  mkdir -p "$work/rootfs/usr/bin" && cp "$dist/container/portdoctor" "$work/rootfs/usr/bin/"
fi
# `podman run` fails here (crun: cgroups v1/v2 hybrid mode, no CAP_SYS_RESOURCE for rlimits), so
# run the image's filesystem the way the runtime would: its own mount namespace with /proc, the
# image user, nothing else in the tree.
mkdir -p "$work/rootfs/proc"
code=0
unshare --mount --fork sh -c "mount -t proc proc '$work/rootfs/proc' && chroot --userspec=65534:65534 '$work/rootfs' /usr/bin/portdoctor check --json" \
  >"$work/container.json" || code=$?
check_that "image root filesystem: check as nobody, exit $code (0-2)" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["schema"] == "portdoctor.check/v1" and int(sys.argv[2]) <= 2' "$work/container.json" "$code"

# --- 6. the Kubernetes manifests ship with the image tag of this version -----------------------
# (their schemas are validated offline by tests/deploy.rs, which ./test.sh runs)
manifest=deploy/kubernetes/daemonset.yaml
check_that "DaemonSet image is portdoctor:$version" grep -q "image: portdoctor:$version\$" "$manifest"

# --- 7. checksums -------------------------------------------------------------------------------
check_that "SHA256SUMS" bash -c "cd '$dist' && sha256sum --quiet -c SHA256SUMS"

if [ "$fails" -gt 0 ]; then
  echo "packaging/test.sh: $fails failed" >&2
  exit 1
fi
echo "packaging/test.sh: all passed"
