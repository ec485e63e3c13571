#!/bin/bash
# docker-compose.yml as shipped: `config` (docker-compose and podman-compose), then `up` with the
# check's dockerd -- the shipped file and conf/roost.yaml, the image from container.sh, ports
# published on 127.0.0.1 only (ROOST_PUBLISH_ADDRESS) through compose's own bridge network,
# and three demo WPS backends as containers named wps1..wps3 (an override file adds them) --
# traffic through the published ports, `exec proxy roost upgrade` under load, `kill -s HUP`,
# the log limit, health, `stop` within stop_grace_period, `down`.
#
#   compose.sh DEMO_BACKEND_BIN
set -uo pipefail
source "$(dirname "$0")/env.sh"
DEMO="$(readlink -f "${1:?roost-demo-backend binary}")"
PC="$WORK/venv/bin/podman-compose"
P=roostcheck
export ROOST_PUBLISH_ADDRESS=127.0.0.1 FLYINGPIGEON_PORT=24193 MALLEEFOWL_PORT=24191 EMU_PORT=24194
export WPS_HOST_1=wps1 WPS_HOST_2=wps2 WPS_HOST_3=wps3
export FLYINGPIGEON_BACKEND_PORT=8080 MALLEEFOWL_BACKEND_PORT=8080 EMU_BACKEND_PORT=8080
OVR="$WORK/compose.check.yml"
DC=(docker-compose -p "$P" --project-directory "$REPO" -f "$REPO/docker-compose.yml" -f "$OVR")
pids=()
cleanup() {
    "${DC[@]}" down -v -t 5 >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap "exit 1" INT TERM
cd "$REPO"

out=$(docker-compose -f docker-compose.yml config 2>&1) \
    && pass "compose: docker-compose $(docker-compose version --short) config" || fail "compose: docker-compose config: $out"
python3 - "$out" <<'PY' && pass "compose: the environment reaches ports (on ROOST_PUBLISH_ADDRESS) and the container" || fail "compose: variables: $out"
import os, sys, yaml
p = yaml.safe_load(sys.argv[1])["services"]["proxy"]
ports = [(x["host_ip"], x["published"], x["target"]) if isinstance(x, dict) else x for x in p["ports"]]
assert ("127.0.0.1", 24193, 24193) in ports or "127.0.0.1:24193:24193/tcp" in ports, ports
assert p["environment"]["WPS_HOST_1"] == "wps1", p["environment"]
PY
pout=$("$PC" -f docker-compose.yml config 2>&1) \
    && pass "compose: podman-compose ($("$PC" version 2>/dev/null | sed -n 's/^podman-compose version //p' | head -1)) config" \
    || fail "compose: podman-compose config: $(echo "$pout" | tail -3)"

docker image inspect "${ROOST_IMAGE:-roost:check}" >/dev/null 2>&1 || { fail "compose: no roost:check image (container.sh)"; exit 1; }
for port in $FLYINGPIGEON_PORT $MALLEEFOWL_PORT $EMU_PORT; do port_free $port || { fail "compose: port $port in use"; exit 1; }; done
{
    echo "services:"
    echo "  proxy:"
    echo "    image: ${ROOST_IMAGE:-roost:check}"
    echo "    depends_on: [wps1, wps2, wps3]"
    for n in 1 2 3; do
        cat <<YML
  wps$n:
    image: debian:bookworm-slim
    volumes: ["$DEMO:/usr/local/bin/roost-demo-backend:ro"]
    command: ["roost-demo-backend", "--name", "wps$n", "--listen", "0.0.0.0:8080"]
    stop_signal: SIGKILL
YML
    done
} >"$OVR"
t0=$(date +%s)
out=$("${DC[@]}" up -d --no-build 2>&1) && pass "compose: up -d (proxy + 3 WPS containers)" || { fail "compose: up: $(echo "$out" | tail -3)"; exit 1; }
cid=$("${DC[@]}" ps -q proxy)
wait_for 30 curl -fs -o /dev/null -H 'machineid: abc' "http://127.0.0.1:$FLYINGPIGEON_PORT/" \
    && pass "compose: serving through the published port 127.0.0.1:$FLYINGPIGEON_PORT ($(( $(date +%s) - t0 )) s from up)" \
    || { fail "compose: not serving on 127.0.0.1:$FLYINGPIGEON_PORT: $(docker logs "$cid" 2>&1 | tail -5)"; exit 1; }
for port in $MALLEEFOWL_PORT $EMU_PORT; do
    b=$(curl -s -D - -o /dev/null -H 'machineid: abc' "http://127.0.0.1:$port/" | tr -d '\r' | sed -n 's/^[Xx]-[Bb]ackend: //p')
    [[ "$b" == wps[123] ]] && pass "compose: 127.0.0.1:$port -> backend container $b (by name)" || fail "compose: port $port: backend '$b'"
done
pub=$(docker port "$cid" | sort | tr '\n' ' ')
echo "$pub" | grep -q '0\.0\.0\.0\|::' && fail "compose: published beyond loopback: $pub" || pass "compose: published on loopback only: $pub"
log=$(docker inspect "$cid" --format '{{.HostConfig.LogConfig.Type}} {{json .HostConfig.LogConfig.Config}}')
echo "$log" | grep -q '"max-size":"50m"' && pass "compose: log limit: $log" || fail "compose: log config: $log"
gp=$(docker inspect "$cid" --format '{{.Config.StopTimeout}}')
want_gp=$(sed -n 's/^ *stop_grace_period: *\([0-9]*\)s.*/\1/p' "$REPO/docker-compose.yml")
[ "$gp" = "$want_gp" ] && pass "compose: stop_grace_period reaches the container (StopTimeout $gp s)" || fail "compose: StopTimeout '$gp' (the file says $want_gp)"
for v in ROOST_ADMIN_PORT ROOST_ACCESS_LOG_FORMAT WPS_HOST_3 MAX_BODY; do
    docker exec "$cid" sh -c "[ -n \"\${$v:-}\" ]" || fail "compose: $v not set in the container"
done
wait_for 40 sh -c "[ \"\$(docker inspect $cid --format '{{.State.Health.Status}}')\" = healthy ]" \
    && pass "compose: proxy healthy" || fail "compose: health $(docker inspect "$cid" --format '{{.State.Health.Status}}')"

stopf="$WORK/stop-compose"; rm -f "$stopf"
python3 "$DEPLOY_DIR/loadloop.py" --ports $FLYINGPIGEON_PORT,$MALLEEFOWL_PORT,$EMU_PORT --stopfile "$stopf" >"$WORK/load-compose.json" & lp=$!; pids+=($lp)
sleep 2
pid0=$(docker exec "$cid" cat /run/roost/roost.pid)
t1=$(date +%s)
out=$(timeout 120 "${DC[@]}" exec -T proxy roost upgrade -c /etc/roost/roost.yaml 2>&1); rc=$?
dt=$(( $(date +%s) - t1 )); echo "compose-upgrade:$dt" >>"$WORK/timings"
pid1=$(docker exec "$cid" cat /run/roost/roost.pid)
[ $rc -eq 0 ] && [ "$pid1" != "$pid0" ] && pass "compose: 'exec proxy roost upgrade': $(echo "$out" | tail -1) ($dt s)" \
    || fail "compose: exec upgrade rc $rc ($dt s): $(echo "$out" | tail -3)"
sleep 11   # longer than the entrypoint's 10 s allowance for a pid file naming a gone process
touch "$stopf"; wait $lp
st=$(docker inspect "$cid" --format '{{.State.Status}} restarts={{.RestartCount}}')
ok=$(json_field "$WORK/load-compose.json" ok); failed=$(json_field "$WORK/load-compose.json" failed)
[ "$failed" = 0 ] && [ "$ok" -gt 100 ] && [[ "$st" == running* ]] \
    && pass "compose: $st after the swap; requests through the published ports: $ok ok, 0 failed" \
    || fail "compose: $st; load $(cut -c1-600 "$WORK/load-compose.json")"
"${DC[@]}" kill -s HUP proxy >/dev/null 2>&1
wait_for 10 sh -c "docker logs --since 15s $cid 2>&1 | grep -q -i reload" && pass "compose: 'kill -s HUP proxy' reloads" || fail "compose: HUP: no reload logged"
t1=$(date +%s); "${DC[@]}" stop proxy >/dev/null 2>&1; dt=$(( $(date +%s) - t1 )); echo "compose-stop:$dt" >>"$WORK/timings"
ec=$(docker inspect "$cid" --format '{{.State.ExitCode}}')
[ "$ec" = 0 ] && pass "compose: 'stop proxy' exits 0 in $dt s (stop_grace_period ${want_gp}s)" || fail "compose: stop: exit code $ec after $dt s"
"${DC[@]}" down -v -t 5 >/dev/null 2>&1 && [ -z "$(docker ps -aq --filter label=com.docker.compose.project=$P)" ] \
    && pass "compose: down removes every container" || fail "compose: containers left after down"
exit 0
