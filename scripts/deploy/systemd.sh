#!/bin/bash
# conf/roost.service under a real systemd (Debian bookworm's) as PID 1 of a privileged podman
# container (privileged so that systemd builds the unit's sandbox; otherwise it skips
# ProtectSystem= & co. "assuming containerized execution"): the install steps from the unit's
# header, systemd-analyze verify/security, start, sandbox, traffic, `systemctl reload` (hot
# upgrade, MainPID follows the pid file) under load, `systemctl kill -s HUP`, logrotate,
# Restart=on-failure, stop with a request in flight.
#
#   systemd.sh ROOST_BIN DEMO_BACKEND_BIN
set -uo pipefail
source "$(dirname "$0")/env.sh"
BIN="$(readlink -f "${1:?roost binary}")"
DEMO="$(readlink -f "${2:?roost-demo-backend binary}")"
IMG=localhost/roost-check-systemd
C=roost-check-systemd
P_FP=28193 P_MF=28191 P_EMU=28194 P_ADMIN=29990
B1=28201 B2=28202 B3=28203
pids=()
cleanup() { podman rm -f -t 5 "$C" >/dev/null 2>&1; for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap "exit 1" INT TERM
X() { podman exec "$C" "$@"; }

if ! podman image exists "$IMG"; then
    info "building $IMG (debian:bookworm-slim + systemd)"
    podman build --format docker --network host --isolation chroot -t "$IMG" -f - "$WORK" >"$WORK/systemd-image.log" 2>&1 <<'DF' || { fail "systemd: image build: $(tail -3 "$WORK/systemd-image.log")"; exit 1; }
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends systemd systemd-sysv dbus curl procps logrotate \
    && rm -rf /var/lib/apt/lists/* \
    && systemctl mask systemd-logind.service getty.target console-getty.service systemd-udevd.service \
        systemd-udev-trigger.service systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
        logrotate.timer \
    && systemctl set-default multi-user.target
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
DF
fi
start_local_site "$WORK/test-roost-sd.yaml" systemd sd-
podman rm -f "$C" >/dev/null 2>&1
podman run -d --name "$C" --privileged --network host --systemd=always \
    -v "$BIN:/mnt/roost:ro" -v "$REPO/conf:/mnt/conf:ro" -v "$REPO/deploy:/mnt/deploy:ro" \
    -v "$WORK/test-roost-sd.yaml:/mnt/test-roost.yaml:ro" "$IMG" /sbin/init >/dev/null \
    || { fail "systemd: container with /sbin/init does not start"; exit 1; }
running() { s=$(X systemctl is-system-running 2>/dev/null); [ "$s" = running ] || [ "$s" = degraded ]; }
wait_for 60 running && pass "systemd: $(X systemctl --version | head -1) runs as PID 1 ($(X systemctl is-system-running))" \
    || { fail "systemd: is-system-running: $(X systemctl is-system-running 2>&1)"; exit 1; }

# The install steps from the unit's header, verbatim except for the config (local backends).
X sh -c 'useradd --system --no-create-home --shell /usr/sbin/nologin roost &&
  install -m 0755 /mnt/roost /usr/local/bin/roost &&
  install -D -m 0644 /mnt/test-roost.yaml /etc/roost/roost.yaml &&
  install -m 0644 /mnt/conf/roost.service /etc/systemd/system/roost.service &&
  install -m 0644 /mnt/deploy/logrotate/roost /etc/logrotate.d/roost' || fail "systemd: install steps"
vout=$(X systemd-analyze verify /etc/systemd/system/roost.service 2>&1); vrc=$?
[ $vrc -eq 0 ] && [ -z "$vout" ] && pass "systemd: systemd-analyze verify roost.service: clean" || fail "systemd: systemd-analyze verify rc $vrc: $vout"
X systemd-analyze security roost.service --no-pager >"$WORK/systemd-security.txt" 2>&1
score=$(sed -n 's/.*Overall exposure level for roost.service: \([0-9.]*\).*/\1/p' "$WORK/systemd-security.txt")
[ -n "$score" ] && [ "$(echo "$score <= ${SECURITY_BUDGET:-2.0}" | bc)" = 1 ] \
    && pass "systemd: systemd-analyze security: exposure $score (budget ${SECURITY_BUDGET:-2.0}): $(tail -1 "$WORK/systemd-security.txt")" \
    || fail "systemd: systemd-analyze security: '$score' ($(tail -1 "$WORK/systemd-security.txt"))"

# Timeouts against the config: a stop drains for grace + shutdown timeout, a reload
# (ExecReload runs under TimeoutStartSec) waits for the old process's drain.
grace=$(sed -n 's/^ *grace_period_seconds: *\([0-9]*\).*/\1/p' "$REPO/conf/roost.yaml")
shut=$(sed -n 's/^ *graceful_shutdown_timeout_seconds: *\([0-9]*\).*/\1/p' "$REPO/conf/roost.yaml")
tstop=$(X systemctl show roost -p TimeoutStopUSec --value); tstart=$(X systemctl show roost -p TimeoutStartUSec --value)
secs() { case "$1" in *min*) m=${1%%min*}; s=${1#*min}; s=${s%s}; echo $(( m * 60 + ${s:-0} ));; *s) echo "${1%s}";; *) echo 0;; esac; }
[ "$(secs "$tstop")" -gt $((grace + shut)) ] && [ "$(secs "$tstart")" -gt $((grace + shut)) ] \
    && pass "systemd: TimeoutStopSec $tstop and TimeoutStartSec (ExecReload) $tstart exceed grace $grace s + shutdown $shut s" \
    || fail "systemd: TimeoutStopSec $tstop / TimeoutStartSec $tstart vs grace $grace s + shutdown $shut s"

# Ports and backends through a drop-in (how an operator sets variables for the unit).
X mkdir -p /etc/systemd/system/roost.service.d
X sh -c "printf '[Service]\nEnvironment=FLYINGPIGEON_PORT=$P_FP MALLEEFOWL_PORT=$P_MF EMU_PORT=$P_EMU ROOST_ADMIN_PORT=$P_ADMIN\nEnvironment=DEMO_PORT_1=$B1 DEMO_PORT_2=$B2 DEMO_PORT_3=$B3\n' >/etc/systemd/system/roost.service.d/ports.conf"
hard=$(ulimit -Hn)
if [ "$hard" -lt 65536 ]; then
    # LimitNOFILE=65536 needs a hard limit that high or CAP_SYS_RESOURCE; the CI machine has neither.
    info "NOTE systemd: hard RLIMIT_NOFILE here is $hard: a drop-in lowers the unit's LimitNOFILE=65536 to it"
    X sh -c "printf '[Service]\nLimitNOFILE=$hard\n' >/etc/systemd/system/roost.service.d/nofile-ci.conf"
fi
X systemctl daemon-reload
t0=$(date +%s)
X systemctl enable --now roost >/dev/null 2>&1 && pass "systemd: 'systemctl enable --now roost' ($(( $(date +%s) - t0 )) s)" \
    || { fail "systemd: start: $(X journalctl -u roost --no-pager -n 15)"; exit 1; }
main=$(X systemctl show -p MainPID --value roost); pf=$(X cat /run/roost/roost.pid)
[ "$main" = "$pf" ] && [ "$main" != 0 ] && pass "systemd: MainPID $main = pid file" || fail "systemd: MainPID $main, pid file $pf"
[ "$(X ps -o user= -p "$main" | tr -d ' ')" = roost ] && pass "systemd: roost runs as user roost" || fail "systemd: roost's user is $(X ps -o user= -p "$main")"
mi=$(X cat /proc/$main/mountinfo)
root_ro=$(echo "$mi" | awk '$5=="/"{print $6}' | cut -d, -f1)
run_rw=$(echo "$mi" | awk '$5=="/run/roost"{print $6}' | cut -d, -f1)
log_rw=$(echo "$mi" | awk '$5=="/var/log/roost"{print $6}' | cut -d, -f1)
nnp=$(X sed -n 's/^NoNewPrivs:\t//p' /proc/$main/status); capb=$(X sed -n 's/^CapBnd:\t//p' /proc/$main/status); secc=$(X sed -n 's/^Seccomp:\t//p' /proc/$main/status)
[ "$root_ro" = ro ] && [ "$run_rw" = rw ] && [ "$log_rw" = rw ] && [ "$nnp" = 1 ] && [ "$capb" = 0000000000000400 ] \
    && pass "systemd: sandbox in force (/ $root_ro, /run/roost $run_rw, /var/log/roost $log_rw, NoNewPrivs, CapBnd $capb, Seccomp $secc)" \
    || fail "systemd: sandbox: / $root_ro, /run/roost $run_rw, /var/log/roost $log_rw, NoNewPrivs $nnp, CapBnd $capb"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'machineid: abc' "http://127.0.0.1:$P_FP/")
[ "$code" = 200 ] && pass "systemd: traffic passes (HTTP $code)" || fail "systemd: traffic HTTP $code"
wait_for 10 X sh -c 'test -s /var/log/roost/error.log && test -s /var/log/roost/access.log' \
    && pass "systemd: error.log and access.log written under /var/log/roost" || fail "systemd: logs under /var/log/roost missing or empty"

stopf="$WORK/stop-sd"; rm -f "$stopf"
python3 "$DEPLOY_DIR/loadloop.py" --ports $P_FP,$P_MF,$P_EMU --stopfile "$stopf" --clients 4 >"$WORK/load-sd.json" & lp=$!; pids+=($lp)
sleep 2
prev=$main
t0=$(date +%s); X systemctl reload roost; rc=$?; dt=$(( $(date +%s) - t0 )); echo "systemd-reload:$dt" >>"$WORK/timings"
main=$(X systemctl show -p MainPID --value roost); pf=$(X cat /run/roost/roost.pid); act=$(X systemctl is-active roost)
[ $rc -eq 0 ] && [ "$main" = "$pf" ] && [ "$main" != "$prev" ] && [ "$act" = active ] && ! X kill -0 "$prev" 2>/dev/null \
    && pass "systemd: 'systemctl reload' ($dt s): MainPID $prev -> $main follows the pid file, old process gone, $act" \
    || fail "systemd: reload rc $rc ($dt s): MainPID $main, pid file $pf, previous $prev, $act"
prev=$main
sleep 1
touch "$stopf"; wait $lp
ok=$(json_field "$WORK/load-sd.json" ok); failed=$(json_field "$WORK/load-sd.json" failed)
[ "$failed" = 0 ] && [ "$ok" -gt 100 ] && pass "systemd: requests during the reload: $ok ok, 0 failed" || fail "systemd: requests during the reload: $(cut -c1-600 "$WORK/load-sd.json")"

X systemctl kill -s HUP roost
wait_for 10 X sh -c 'tail -5 /var/log/roost/error.log | grep -q -i reload' && [ "$(X systemctl show -p MainPID --value roost)" = "$prev" ] \
    && pass "systemd: 'systemctl kill -s HUP roost' reloads in place (same MainPID)" || fail "systemd: HUP reload not seen"

before=$(X stat -c %i /var/log/roost/access.log)
X logrotate -f /etc/logrotate.d/roost; lrc=$?
curl -s -o /dev/null -H 'machineid: rot' "http://127.0.0.1:$P_FP/"
[ $lrc -eq 0 ] && X test -e /var/log/roost/access.log.1 && wait_for 5 X grep -q -a 'rot\|GET' /var/log/roost/access.log \
    && [ "$(X stat -c %i /var/log/roost/access.log)" = "$before" ] \
    && pass "systemd: logrotate (deploy/logrotate/roost) rotates, and roost keeps writing to access.log" \
    || fail "systemd: logrotate rc $lrc: $(X ls -l /var/log/roost/)"

X kill -KILL "$prev"
restarted() { m=$(X systemctl show -p MainPID --value roost); [ "$m" != "$prev" ] && [ "$m" != 0 ] && [ "$(X systemctl is-active roost)" = active ]; }
wait_for 20 restarted && pass "systemd: SIGKILLed roost is restarted (Restart=on-failure; NRestarts $(X systemctl show -p NRestarts --value roost))" \
    || fail "systemd: after SIGKILL: $(X systemctl is-active roost), MainPID $(X systemctl show -p MainPID --value roost)"
wait_for 20 curl -fs -o /dev/null -H 'machineid: abc' "http://127.0.0.1:$P_FP/"

curl -s -o /dev/null -w '%{http_code}' -H 'machineid: abc' "http://127.0.0.1:$P_FP/slow?ms=3000" >"$WORK/sd-slow.code" & sp=$!
sleep 0.5
t0=$(date +%s); X systemctl stop roost; rc=$?; dt=$(( $(date +%s) - t0 )); echo "systemd-stop:$dt" >>"$WORK/timings"
wait $sp
left=$(X ps -u roost -o pid= | wc -l); res=$(X systemctl show -p Result --value roost)
[ $rc -eq 0 ] && [ "$left" = 0 ] && [ "$res" = success ] && [ "$(cat "$WORK/sd-slow.code")" = 200 ] \
    && pass "systemd: 'systemctl stop' in $dt s, Result=$res, no roost process left, the request in flight answered 200" \
    || fail "systemd: stop rc $rc in $dt s, Result=$res, $left processes left, request in flight: $(cat "$WORK/sd-slow.code")"

# A WPS host that does not resolve: the unit starts (no `roost -t` before it), serves, and
# /status lists the host as unresolved.
X sh -c "printf '[Service]\nEnvironment=DEMO_HOST_3=wps-stopped.invalid\n' >/etc/systemd/system/roost.service.d/unresolved.conf"
X systemctl daemon-reload
if X systemctl start roost && wait_for 20 curl -fs -o /dev/null -H 'machineid: abc' "http://127.0.0.1:$P_FP/" \
    && wait_for 10 lists_unresolved "$P_ADMIN" wps-stopped.invalid:; then
    pass "systemd: a backend host that does not resolve: the unit starts and serves, /status lists it unresolved"
else
    fail "systemd: with an unresolvable backend host: $(X journalctl -u roost --no-pager -n 10)"
fi
X systemctl stop roost
X rm -f /etc/systemd/system/roost.service.d/unresolved.conf

# A config whose pid file is not the unit's PIDFile=: the start fails at once, saying why,
# instead of systemd waiting TimeoutStartSec for a file nobody writes.
X sh -c "printf '[Service]\nEnvironment=ROOST_PID_FILE=/run/roost/elsewhere.pid\n' >/etc/systemd/system/roost.service.d/pidfile.conf"
X systemctl daemon-reload
t0=$(date +%s); X systemctl start roost; rc=$?; dt=$(( $(date +%s) - t0 ))
X systemctl stop roost >/dev/null 2>&1
if [ $rc -ne 0 ] && [ "$dt" -lt 30 ] && [[ "$(X journalctl -u roost --no-pager -n 30)" == *'the service manager follows /run/roost/roost.pid'* ]]; then
    pass "systemd: a config pid_file other than the unit's PIDFile=: the start fails in $dt s, naming both files"
else
    fail "systemd: pid file mismatch: start rc $rc in $dt s: $(X journalctl -u roost --no-pager -n 10)"
fi
X rm -f /etc/systemd/system/roost.service.d/pidfile.conf
X systemctl daemon-reload
X systemctl reset-failed roost >/dev/null 2>&1
exit 0
