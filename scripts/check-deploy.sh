#!/usr/bin/env bash
# Checks deploy/ without a container engine or a cluster (docs/DEPLOY.md#what-is-checked):
#
#   scripts/check-deploy.sh BINARY        e.g. scripts/check-deploy.sh target/debug/realtime-core
#
# - every YAML file under deploy/ parses (each document of it);
# - every environment variable that the compose files, the Dockerfile and the Kubernetes
#   ConfigMap/Secret/Deployment set for realtime-core is one BINARY reads (`[env: NAME` in its
#   --help; OTEL_* are read outside clap and not checked);
# - `haproxy -c` passes on deploy/haproxy.cfg as it is, and with no warning at all once its
#   servers point at 127.0.0.1;
# - HAProxy run with that configuration in front of two stand-in instances routes as intended
#   (PROXY v2 on RTMP, /readyz checks, WebSocket, /metrics refused);
# - haproxy.cfg and compose.cluster.yaml agree (servers, ports, trusted proxy address);
# - terminationGracePeriodSeconds (and compose's stop_grace_period) cover preStop plus the
#   shutdown budget read from src/app/shutdown.rs;
# - the manifests listed in deploy/k8s/kustomization.yaml exist and validate strictly against
#   the Kubernetes API schemas.
#
# Prints one line per check and exits 1 on any failure. Installs what it lacks: PyYAML (pip),
# haproxy (apt-get), kubernetes-validate (pip, into target/deploy-venv). With CI=true a tool
# that cannot be had fails its checks instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BINARY   (the realtime-core binary whose --help names the variables)" >&2
  exit 2
fi
binary=$1
[[ $binary == */* ]] || binary=./$binary

note() { echo "     $*" >&2; }

# PyYAML for the system python3 (the checks run there).
if ! python3 -c 'import yaml' 2>/dev/null; then
  note "installing PyYAML"
  python3 -m pip install --quiet pyyaml >&2 || note "PyYAML could not be installed"
fi

# HAProxy: Debian's package (2.6 on Debian 12; the compose file runs 2.8 and the
# configuration uses nothing newer than 2.6).
if ! command -v haproxy >/dev/null; then
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo -n)
  note "installing haproxy"
  { DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq haproxy >/dev/null 2>&1 ||
    { "${sudo_cmd[@]}" apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq haproxy >/dev/null 2>&1; }; } ||
    note "haproxy could not be installed"
fi
HAPROXY=$(command -v haproxy || true)

# kubernetes-validate (the Kubernetes OpenAPI schemas, offline), pinned, in its own venv.
venv=${CARGO_TARGET_DIR:-target}/deploy-venv
KUBERNETES_VALIDATE=$venv/bin/kubernetes-validate
if [[ ! -x $KUBERNETES_VALIDATE ]]; then
  note "installing kubernetes-validate into $venv"
  { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet kubernetes-validate==1.37.0; } >&2 ||
    note "kubernetes-validate could not be installed"
fi
[[ -x $KUBERNETES_VALIDATE ]] || KUBERNETES_VALIDATE=

HAPROXY=$HAPROXY KUBERNETES_VALIDATE=$KUBERNETES_VALIDATE exec python3 scripts/check-deploy.py "$binary"
