#!/bin/bash
# The check's own dockerd (Debian docker.io): overlay2 storage (vfs where overlay cannot mount), no iptables, no default bridge
# (containers use the host network, or a network namespace of their own for published ports),
# its own data root, exec root and socket, so it never meets a system Docker.
#   dockerd.sh start|stop
set -uo pipefail
source "$(dirname "$0")/env.sh"
D="$WORK/dockerd"; mkdir -p "$D"
case "${1:-start}" in
start)
    docker version >/dev/null 2>&1 && exit 0
    # The machine's hard nofile limit is 20000 and there is no CAP_SYS_RESOURCE: dockerd's
    # default container limit (1048576) would fail.
    driver=$(storage_driver); [ "$driver" = overlay ] && driver=overlay2
    dockerd --storage-driver="$driver" --iptables=false --ip6tables=false --bridge=none --ip-masq=false \
        --host="$DOCKER_HOST" --data-root="$STORE/docker" \
        --exec-root=/run/roost-deploy-check/docker --pidfile="$D/dockerd.pid" \
        --default-ulimit nofile=20000:20000 >"$D/dockerd.log" 2>&1 &
    wait_for 60 docker version || { echo "dockerd did not start: $(tail -3 "$D/dockerd.log")" >&2; exit 1; }
    ;;
stop)
    p=$(cat "$D/dockerd.pid" 2>/dev/null) || exit 0
    kill "$p" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
    ;;
esac
exit 0
