#!/bin/sh
# PID 1's child in the Roost container (tini is PID 1 and reaps). Starts Roost as a daemon and
# then stays up for as long as *a* Roost runs, following the pid file rather than a child
# process: `docker compose exec proxy roost upgrade -c /etc/roost/roost.yaml` replaces the
# Roost process and the container keeps running. TERM/INT/HUP are passed to the current one.
set -eu
CONFIG="${ROOST_CONFIG:-/etc/roost/roost.yaml}"
PID_FILE="${ROOST_PID_FILE:-/run/roost/roost.pid}"
# Roost refuses to start when its config writes another pid file than the one followed here.
export ROOST_UNIT_PID_FILE="$PID_FILE"

# No `roost -t` first: it is strict about backend hosts that do not resolve (a stopped WPS
# container), which the server itself runs without. `-d` still refuses an invalid file, with
# every error, before it forks.
roost -c "$CONFIG" -d

stopping=0
forward() {
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [ -n "$pid" ] && kill "-$1" "$pid" 2>/dev/null || true
}
trap 'stopping=1; forward TERM' TERM
trap 'stopping=1; forward INT' INT
trap 'forward HUP' HUP

misses=0
while :; do
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        misses=0
    else
        # During a swap the pid file briefly names the old process: allow a few seconds.
        misses=$((misses + 1))
        if [ "$stopping" = 1 ] || [ "$misses" -ge 10 ]; then
            [ "$stopping" = 1 ] && exit 0
            echo "roost-entrypoint: no running roost (pid file $PID_FILE); exiting" >&2
            exit 1
        fi
    fi
    sleep 1 &
    wait $! || true
done
