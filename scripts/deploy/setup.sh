#!/bin/bash
# Everything the deployment check needs, from Debian bookworm's apt and PyPI only (a fresh CI
# machine has none of it; Docker Hub is not reachable from it). Safe to run again.
set -euo pipefail
source "$(dirname "$0")/env.sh"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
for c in podman debootstrap docker docker-compose dockerd runc curl python3 promtool ss; do
    command -v "$c" >/dev/null || need+=("$c")
done
python3 -c 'import ensurepip, venv, yaml' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing (missing: ${need[*]})"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # docker.io: a real dockerd (run by dockerd.sh); prometheus: promtool; uidmap: podman's
    # newuidmap; python3-yaml: compose file edits.
    $SUDO apt-get install -y -q --no-install-recommends podman debootstrap docker.io docker-compose \
        runc uidmap curl ca-certificates python3-venv python3-yaml prometheus iproute2 bc
fi
# Debian's podman-compose (1.0.3) has no `config`; PyPI's has.
[ -x "$WORK/venv/bin/podman-compose" ] || { python3 -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q podman-compose; }
echo "setup: $(podman --version), $(docker --version), docker-compose $(docker-compose version --short)," \
    "$("$WORK/venv/bin/podman-compose" version 2>/dev/null | grep -m1 podman-compose), $(promtool --version 2>&1 | head -1)"
