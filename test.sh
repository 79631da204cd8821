#!/usr/bin/env bash
# Runs every portdoctor test on a fresh Debian/Ubuntu machine: installs what the tests need
# (iproute2 for network namespaces and ss, a C compiler for ../shared/tools, setpriv, python3),
# then runs the unit, property, snapshot and integration tests.
# The integration tests create network namespaces, so this needs root.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the integration tests create network namespaces: run as root (sudo ./test.sh)" >&2
  exit 1
fi

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v sysctl >/dev/null 2>&1 || need+=(procps)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [[ " ${need[*]} " == *" prometheus "* ]]; then
    # The package may start its own service; tests/serve.rs runs its own instance on a free port.
    if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
    for pid in $(pgrep -x prometheus || true); do kill "$pid" 2>/dev/null || true; done
  fi
fi

cargo test --locked "$@"
