#!/bin/bash
# Roost's deployment check: the Dockerfile, docker-compose.yml, conf/roost.service and the
# monitoring files, exercised for real on a Debian machine without Docker Hub and without
# systemd as PID 1 (CI's kind). Installs what it needs (apt, PyPI), builds the image from the
# Dockerfile as shipped with the check's own dockerd, runs it, runs compose, runs the unit under
# a real systemd in a privileged podman container. What each part verifies: doc/deployment.md.
#
#   scripts/deploy-check.sh                 # everything (needs root: dockerd, podman)
#   PARTS="image compose" scripts/deploy-check.sh
#   PARTS: setup base image compose systemd monitoring (default: all, in that order)
#   DEPLOY_CHECK_WORK=/tmp/roost-deploy-check   work dir (kept: logs, base images)
#   DEPLOY_CHECK_TIMEOUT=4200                   seconds for the whole check (CI: 90 min in all)
#   DEPLOY_CHECK_NEED_MB=...                    free disk it insists on before it starts
#                                               (default: 12000 with overlay storage, 60000 with vfs)
#   scripts/deploy-check.sh clean               delete the check's image store and work dir
#
# Prints PASS/FAIL per check, the time of each part and a summary; exits 1 on any FAIL.
# Every container, dockerd and process it starts is stopped on exit.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/deploy/env.sh
D=scripts/deploy
# Disk: the store's size and the free space, after each part (the summary lists them).
disk() { echo "disk:$1:$(du -sm "$STORE" 2>/dev/null | cut -f1):$(free_mb)" >>"$WORK/timings"; }
PARTS="${PARTS:-setup base image compose systemd monitoring}"
LIMIT="${DEPLOY_CHECK_TIMEOUT:-4200}"
: >"$RESULTS"; : >"$WORK/timings"
[ "$(id -u)" = 0 ] || { echo "deploy-check: needs root (a private dockerd, rootful podman)"; exit 2; }
if [ "${1:-}" = clean ]; then
    $D/dockerd.sh stop; podman rm -af -t 5 >/dev/null 2>&1
    rm -rf "$STORE" "$WORK" /run/roost-deploy-check
    echo "deploy-check: removed $STORE and $WORK"; exit 0
fi

started_dockerd=0
finish() {
    # A part stopped by its time limit may leave containers: every container of the check's
    # own dockerd is the check's, and the systemd container has a fixed name.
    if docker version >/dev/null 2>&1; then docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1; fi
    command -v podman >/dev/null && podman rm -f -t 5 roost-check-systemd >/dev/null 2>&1
    [ $started_dockerd = 1 ] && $D/dockerd.sh stop
}
trap finish EXIT
trap 'echo "deploy-check: interrupted"; exit 1' INT TERM

# The demo WPS backend (std only) next to a release build, else the debug one, else built.
DEMO=""
for b in target/release/roost-demo-backend target/debug/roost-demo-backend; do [ -x "$b" ] && DEMO="$b" && break; done
if [ -z "$DEMO" ]; then cargo build -q --bin roost-demo-backend && DEMO=target/debug/roost-demo-backend; fi

start_all=$(date +%s)
# Enough disk before anything starts, or a clear failure now instead of "no space left on
# device" from deep inside a build.
driver=$(storage_driver)
need=${DEPLOY_CHECK_NEED_MB:-$([ "$driver" = overlay ] && echo 12000 || echo 60000)}
disk start
info "storage: $driver in $STORE ($(du -sm "$STORE" 2>/dev/null | cut -f1) MB), $(free_mb) MB free, $need MB needed"
if [ "$(free_mb)" -lt "$need" ]; then
    fail "disk: $(free_mb) MB free under $STORE, the check needs $need MB with $driver storage" \
        "(its store holds $(du -sm "$STORE" 2>/dev/null | cut -f1) MB: scripts/deploy-check.sh clean empties it)"
    exit 1
fi
part() {  # NAME COMMAND...: run one part within what is left of the time limit
    local name=$1; shift
    case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
    local left=$(( LIMIT - ($(date +%s) - start_all) ))
    if [ $left -le 0 ]; then fail "$name: not run, the check's time limit ($LIMIT s) is used up"; return 0; fi
    echo "==== $name"
    local t0; t0=$(date +%s)
    timeout --kill-after=20 "$left" "$@"; local rc=$?
    local dt=$(( $(date +%s) - t0 ))
    echo "part:$name:$dt" >>"$WORK/timings"
    disk "$name"
    [ $rc = 124 ] && fail "$name: stopped by the time limit after $dt s"
    [ $rc != 0 ] && [ $rc != 124 ] && fail "$name: ended with status $rc after $dt s"
    echo "==== $name: $dt s"
    return 0
}
part setup $D/setup.sh
case " $PARTS " in *" base "*|*" image "*|*" compose "*) $D/dockerd.sh start && started_dockerd=1 ;; esac
part base $D/base-images.sh
part image $D/container.sh "$DEMO"
part compose $D/compose.sh "$DEMO"
BIN="$WORK/roost"     # the binary of the image just built (container.sh copies it out)
[ -x "$BIN" ] || BIN="${ROOST_BIN:-target/release/roost}"
part systemd $D/systemd.sh "$BIN" "$DEMO"
part monitoring $D/monitoring.sh "$BIN" "$DEMO"

echo "================ deploy-check summary"
grep '^part:' "$WORK/timings" | awk -F: '{printf "  %-11s %5d s\n", $2, $3}'
grep -v -e '^part:' -e '^disk:' "$WORK/timings" | awk -F: '{printf "  %-24s %5d s\n", $1, $2}'
echo "  disk ($driver): store MB / free MB after each part"
grep '^disk:' "$WORK/timings" | awk -F: '{printf "  %-11s %7d %8d\n", $2, $3, $4}'
echo "  total       $(( $(date +%s) - start_all )) s"
echo "PASS: $(grep -c '^PASS' "$RESULTS")"
if grep -q '^FAIL' "$RESULTS"; then grep '^FAIL' "$RESULTS"; exit 1; fi
echo "FAIL: 0"
