#!/bin/bash
# deploy/prometheus/alerts.yml and deploy/grafana/roost.json against a running Roost: every
# metric they name is in its /metrics (after traffic that makes each family appear: keyed and
# keyless requests, a dead backend, a health transition, a SIGHUP, a malformed request), and
# `promtool check rules` accepts the rules.
#
#   monitoring.sh ROOST_BIN DEMO_BACKEND_BIN
set -uo pipefail
source "$(dirname "$0")/env.sh"
BIN="$(readlink -f "${1:?roost binary}")"
DEMO="$(readlink -f "${2:?roost-demo-backend binary}")"
ALERTS="$REPO/deploy/prometheus/alerts.yml"
DASH="$REPO/deploy/grafana/roost.json"
P_FP=26193 P_ADMIN=26990 B1=26201 B2=26202 DEAD=26203
D="$WORK/monitoring"; rm -rf "$D"; mkdir -p "$D"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap "exit 1" INT TERM

out=$(promtool check rules "$ALERTS" 2>&1) && pass "monitoring: promtool check rules deploy/prometheus/alerts.yml: $(echo "$out" | grep -o 'SUCCESS.*' | head -1)" \
    || fail "monitoring: promtool check rules: $out"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$DASH" && pass "monitoring: deploy/grafana/roost.json is valid JSON" \
    || fail "monitoring: deploy/grafana/roost.json is not valid JSON"

for port in $P_FP $P_ADMIN $B1 $B2 $DEAD; do port_free $port || { fail "monitoring: port $port in use"; exit 1; }; done
"$DEMO" --name b1 --listen 127.0.0.1:$B1 >/dev/null 2>&1 & pids+=($!)
"$DEMO" --name b2 --listen 127.0.0.1:$B2 >/dev/null 2>&1 & pids+=($!)
"$DEMO" --name b3 --listen 127.0.0.1:$DEAD >/dev/null 2>&1 & b3=$!; pids+=($b3)
cat >"$D/roost.yaml" <<YML
server:
  threads: 1
  pid_file: $D/roost.pid
  upgrade_sock: $D/upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
admin:
  listen: 127.0.0.1:$P_ADMIN
access_log:
  path: $D/access.log
services:
  - name: fp
    listen: 127.0.0.1:$P_FP
    hash: { header: machineid, missing: round_robin }
    backends: [127.0.0.1:$B1, 127.0.0.1:$B2, 127.0.0.1:$DEAD]
    health_check: { type: tcp, interval: 1s, timeout: 500ms, rise: 1, fall: 3 }
    when_down: failover
    wps_affinity: true
YML
"$BIN" -c "$D/roost.yaml" >"$D/roost.log" 2>&1 & rp=$!; pids+=($rp)
wait_for 20 curl -fs -o /dev/null "http://127.0.0.1:$P_ADMIN/metrics" || { fail "monitoring: roost does not start: $(tail -5 "$D/roost.log")"; exit 1; }
for i in $(seq 10); do curl -s -o /dev/null -H "machineid: k$i" "http://127.0.0.1:$P_FP/"; done
kill $b3; wait $b3 2>/dev/null    # a backend dies: connect failures until the checks see it
for i in $(seq 30); do curl -s -o /dev/null -H "machineid: k$i" "http://127.0.0.1:$P_FP/"; done
for i in $(seq 5); do curl -s -o /dev/null "http://127.0.0.1:$P_FP/wps?service=WPS&request=GetStatus&jobid=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"; done
printf 'GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n' | timeout 5 python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",'$P_FP')); s.sendall(sys.stdin.buffer.read()); s.recv(100)' 2>/dev/null
kill -HUP $rp
metric() { curl -fs "http://127.0.0.1:$P_ADMIN/metrics" | grep -q "^$1"; }
wait_for 20 metric 'roost_health_transitions_total.*to="down"'
wait_for 10 metric 'roost_config_reloads_total'
curl -fs "http://127.0.0.1:$P_ADMIN/metrics" >"$D/metrics.txt"
have=$(sed -n 's/^# TYPE \([a-z_:]*\) .*/\1/p' "$D/metrics.txt" | sort -u)
info "monitoring: metric families in /metrics: $(echo $have)"
named=$( (cat "$ALERTS"; python3 -c 'import json,sys
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k in ("expr", "query"): print(x)
            else: walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
walk(json.load(open(sys.argv[1])))' "$DASH") | grep -o 'roost_[a-z_]*' | sed -E 's/_(bucket|sum|count)$//' | sort -u)
missing=$(comm -23 <(echo "$named") <(echo "$have") | tr '\n' ' ')
[ -n "$named" ] && [ -z "$missing" ] && pass "monitoring: all $(echo "$named" | wc -l) metrics the alerts and the dashboard name are in /metrics" \
    || fail "monitoring: named in alerts/dashboard but not in /metrics: $missing"
unused=$(comm -13 <(echo "$named") <(echo "$have") | tr '\n' ' ')
[ -n "$unused" ] && info "monitoring: exported but in neither alerts nor dashboard: $unused"
exit 0
