#!/usr/bin/env bash
# Runs every portdoctor test on a fresh Debian/Ubuntu machine: installs what the tests need
# (iproute2 for network namespaces and ss, a C compiler for ../shared/tools, setpriv, python3,
# nftables, iptables and conntrack for the NAT tests, the Kubernetes schema validators from PyPI),
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
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
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

# tests/deploy.rs validates deploy/kubernetes/ offline: the Kubernetes API schemas bundled in
# kubernetes-validate, the Prometheus Operator's CRD models in cloudcoil-models-prometheus-operator.
k8s_pkgs=(kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0)
if ! python3 -c 'import kubernetes_validate, cloudcoil.models.prometheus_operator' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  echo "test.sh: installing ${k8s_pkgs[*]}" >&2
  # A Debian python3 refuses system-wide pip installs unless told (PEP 668).
  python3 -m pip install -q "${k8s_pkgs[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${k8s_pkgs[@]}"
fi

cargo test --locked "$@"
