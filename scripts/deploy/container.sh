#!/bin/bash
# The image, built by the check's dockerd from the Dockerfile as shipped (both stages), and run:
# hygiene (build context, dependency layer, stripped binary, packages, size budget), non-root,
# tini as PID 1, /etc/roost/roost.yaml read, traffic on the three ports, `docker exec roost
# upgrade` under load, HUP, healthcheck states, `docker stop`, and what happens when Roost dies.
#
#   container.sh DEMO_BACKEND_BIN
# Leaves the image tagged roost:check and its binary at $WORK/roost for the later parts.
set -uo pipefail
source "$(dirname "$0")/env.sh"
DEMO="$(readlink -f "${1:?roost-demo-backend binary}")"
TAG="${ROOST_IMAGE:-roost:check}"
C=roost-check
BUDGET_MB="${IMAGE_BUDGET_MB:-110}"
P_FP=18193 P_MF=18191 P_EMU=18194 P_ADMIN=19990
B1=18201 B2=18202 B3=18203
pids=()
cleanup() {
    docker rm -f "$C" "$C-health" "$C-unresolved" >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap "exit 1" INT TERM

# ---------- build ----------
if [ "${BUILD:-1}" = 1 ]; then
t0=$(date +%s)
if docker build --network host -t "$TAG" "$REPO" >"$WORK/build.log" 2>&1; then
    pass "image: 'docker build' of the Dockerfile as shipped, both stages ($(( $(date +%s) - t0 )) s)"
else
    fail "image: docker build: $(grep -E -A3 '^error|^ERROR|error:' "$WORK/build.log" | head -6 | tr '\n' ' ' | cut -c1-400)"
    tail -30 "$WORK/build.log"; exit 1
fi
echo "build:$(( $(date +%s) - t0 ))" >>"$WORK/timings"
ctx=$(tr '\r' '\n' <"$WORK/build.log" | sed -n 's/^Sending build context to Docker daemon *//p' | tail -1)
case "$ctx" in
    *kB|*[0-9]B|[0-9].*MB|[0-9]MB) pass "image: build context is $ctx (.dockerignore keeps target/, .git, fuzz/ out)" ;;
    *) fail "image: build context is $ctx (more than 10 MB: .dockerignore?)" ;;
esac

# A source change must not rebuild the dependencies: the same context with one file touched.
# Only up to the step after the dependency layer: compiling Roost again would prove nothing.
if [ "${CACHE_CHECK:-1}" = 1 ]; then
    cctx="$WORK/ctx-cache"; rm -rf "$cctx"; mkdir -p "$cctx"
    (cd "$REPO" && cp -a Dockerfile .dockerignore Cargo.toml Cargo.lock src benches conf deploy "$cctx/")
    # The patched Pingora crates, without their test build (.dockerignore leaves it out too).
    (cd "$REPO" && tar --exclude=third_party/target -cf - third_party) | tar -xf - -C "$cctx"
    echo "// cache check $(date +%s)" >>"$cctx/src/main.rs"
    t1=$(date +%s)
    # The CLI itself in the background (not the `docker` function of env.sh, whose subshell
    # would die on kill and leave the CLI, and so the build, running): killing it cancels the build.
    "$(docker_cli)" build --network host -t roost:check-cache "$cctx" >"$WORK/build-cache.log" 2>&1 & bp=$!
    # The classic builder prints each step, then " ---> Using cache" when it reuses a layer.
    dep_step() { awk '/^Step .*mkdir -p src benches/{s=1; next} s&&/Using cache/{print "cached"; exit} s&&/^Step /{print "rebuilt"; exit}' "$WORK/build-cache.log"; }
    wait_for 300 sh -c "grep -q '^Step .*COPY benches' '$WORK/build-cache.log' || ! kill -0 $bp"
    dep=$(dep_step); dt=$(( $(date +%s) - t1 ))
    kill $bp 2>/dev/null; wait $bp 2>/dev/null
    [ "$dep" = cached ] && pass "image: after a change in src/ the dependency layer comes from the cache ($dt s to the step after it)" \
        || fail "image: after a change in src/ the dependency layer is ${dep:-not reached} ($dt s)"
    docker rmi roost:check-cache >/dev/null 2>&1
fi
fi   # BUILD (BUILD=0: check an existing ROOST_IMAGE, while working on this script)

# ---------- the image itself ----------
size=$(docker image inspect "$TAG" --format '{{.Size}}')
mb=$(( size / 1000 / 1000 ))
[ "$mb" -gt 0 ] && [ "$mb" -le "$BUDGET_MB" ] && pass "image: size $mb MB (budget $BUDGET_MB MB)" || fail "image: size $mb MB over the budget of $BUDGET_MB MB"
docker history --format '{{.Size}}\t{{.CreatedBy}}' "$TAG" | cut -c1-110 | head -12
docker rm -f "$C" >/dev/null 2>&1
docker create --name "$C" "$TAG" >/dev/null && docker cp "$C:/usr/local/bin/roost" "$WORK/roost" && docker rm "$C" >/dev/null
syms=$(readelf -S "$WORK/roost" | grep -c '\.symtab')
[ "$syms" = 0 ] && pass "image: /usr/local/bin/roost is stripped ($(( $(stat -c %s "$WORK/roost") / 1000 / 1000 )) MB)" || fail "image: roost binary has a symbol table"
manual_base=$(docker run --rm --entrypoint apt-mark debian:bookworm-slim showmanual | sort)
manual=$(docker run --rm --entrypoint apt-mark "$TAG" showmanual | sort)
added=$(comm -13 <(echo "$manual_base") <(echo "$manual") | tr '\n' ' ')
[ "$added" = "curl tini " ] && pass "image: packages added to the base: $added(and their dependencies)" || fail "image: packages added to the base: '$added' (expected curl tini)"
user=$(docker image inspect "$TAG" --format '{{.Config.User}}')
uid=$(docker run --rm --entrypoint id "$TAG" -u)
[ "$user" = roost ] && [ "$uid" != 0 ] && pass "image: USER $user (uid $uid)" || fail "image: USER '$user', uid '$uid'"
hc=$(docker image inspect "$TAG" --format '{{json .Config.Healthcheck.Test}}')
echo "$hc" | grep -q '127.0.0.1' && pass "image: HEALTHCHECK asks the running process: $hc" || fail "image: HEALTHCHECK: $hc"
docker run --rm --entrypoint cat "$TAG" /etc/roost/roost.yaml | cmp -s - "$REPO/conf/roost.yaml" \
    && pass "image: /etc/roost/roost.yaml is conf/roost.yaml" || fail "image: /etc/roost/roost.yaml differs from conf/roost.yaml"
out=$(docker run --rm "$TAG" roost -c /etc/roost/roost.yaml -t 2>&1) \
    && pass "image: baked-in config validates ($out)" || fail "image: roost -t on the baked-in config: $out"

# ---------- run: host network, test config over /etc/roost/roost.yaml ----------
start_local_site "$WORK/test-roost.yaml" container ""
runargs=(--network host -v "$WORK/test-roost.yaml:/etc/roost/roost.yaml:ro"
    -e FLYINGPIGEON_PORT=$P_FP -e MALLEEFOWL_PORT=$P_MF -e EMU_PORT=$P_EMU -e ROOST_ADMIN_PORT=$P_ADMIN
    -e DEMO_PORT_1=$B1 -e DEMO_PORT_2=$B2 -e DEMO_PORT_3=$B3)
# A WPS host that does not resolve (a stopped container) is a down backend, not a refusal to
# start: the entrypoint no longer runs `roost -t` (which stays strict).
docker run -d --name "$C-unresolved" "${runargs[@]}" -e DEMO_HOST_3=wps-stopped.invalid "$TAG" >/dev/null \
    || { fail "container: docker run (unresolvable host)"; exit 1; }
if wait_for 30 curl -fs -o /dev/null -H 'machineid: abc' "http://127.0.0.1:$P_FP/" \
    && wait_for 10 lists_unresolved "$P_ADMIN" wps-stopped.invalid:; then
    pass "container: a backend host that does not resolve: starts, serves, /status lists it unresolved"
else
    fail "container: with an unresolvable backend host: $(docker logs "$C-unresolved" 2>&1 | tail -5)"
fi
docker rm -f "$C-unresolved" >/dev/null 2>&1
wait_for 15 sh -c "! curl -s -o /dev/null http://127.0.0.1:$P_FP/" || { fail "container: the first container still listens"; exit 1; }
docker run -d --name "$C" "${runargs[@]}" "$TAG" >/dev/null || { fail "container: docker run"; exit 1; }
h0=$(docker inspect "$C" --format '{{.State.Health.Status}}')
wait_for 30 curl -fs -o /dev/null -H 'machineid: abc' "http://127.0.0.1:$P_FP/" \
    && pass "container: runs and serves" || { fail "container: not serving: $(docker logs "$C" 2>&1 | tail -5)"; exit 1; }

ps_in() {  # pid uid state cmdline of every process in the container (the image has no ps)
    docker exec "$C" sh -c 'for d in /proc/[0-9]*; do p=${d#/proc/}; c=$(tr "\0" " " <$d/cmdline 2>/dev/null) || continue; [ -n "$c" ] || continue; s=$(sed -n "s/^State:\t\(.\).*/\1/p" $d/status); u=$(sed -n "s/^Uid:\t\([0-9]*\).*/\1/p" $d/status); echo "$p uid=$u $s $c"; done' 2>/dev/null | grep -a -v 'for d in'
}
ps_in | awk '$1==1' | grep -a -q '/usr/bin/tini' && pass "container: PID 1 is tini" || { fail "container: PID 1 is not tini"; ps_in; }
pid0=$(docker exec "$C" cat /run/roost/roost.pid)
line=$(ps_in | awk -v p="$pid0" '$1==p')
echo "$line" | grep -q 'uid=0 ' || [ -z "$line" ] && fail "container: roost ($line) runs as root or not at all" || pass "container: roost runs as non-root: $line"
b1=$(curl -s -D - -o /dev/null -H 'machineid: abc' "http://127.0.0.1:$P_FP/" | tr -d '\r' | sed -n 's/^[Xx]-[Bb]ackend: //p')
b2=$(curl -s -D - -o /dev/null -H 'machineid: abc' "http://127.0.0.1:$P_FP/" | tr -d '\r' | sed -n 's/^[Xx]-[Bb]ackend: //p')
[ -n "$b1" ] && [ "$b1" = "$b2" ] && pass "container: /etc/roost/roost.yaml read: its backends answer, sticky (machineid abc -> $b1 twice)" \
    || fail "container: backends '$b1' '$b2'"
for port in $P_MF $P_EMU; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'machineid: x' "http://127.0.0.1:$port/")
    [ "$code" = 200 ] && pass "container: port $port answers 200" || fail "container: port $port answers $code"
done
wait_for 10 sh -c "docker logs $C 2>&1 | grep -q 'machineid\|GET /'" && pass "container: access log reaches 'docker logs'" || fail "container: no access log line in 'docker logs'"
# (grep on a file: with pipefail, `docker logs | grep -q` fails when grep stops reading first)
wait_for 10 sh -c "docker logs $C >'$WORK/logs-container.txt' 2>&1; grep -q -i 'listen' '$WORK/logs-container.txt'" && pass "container: error log reaches 'docker logs'" || fail "container: no startup lines in 'docker logs'"
[ "$h0" = starting ] && wait_for 40 sh -c "[ \"\$(docker inspect $C --format '{{.State.Health.Status}}')\" = healthy ]" \
    && pass "container: health starting -> healthy (the shipped HEALTHCHECK, by dockerd)" \
    || fail "container: health $h0 -> $(docker inspect "$C" --format '{{.State.Health.Status}}')"
curl -fs "http://127.0.0.1:$P_ADMIN/metrics" >"$WORK/metrics-container.txt"

# ---------- hot swap under load ----------
stopf="$WORK/stop-container"; rm -f "$stopf"
python3 "$DEPLOY_DIR/loadloop.py" --ports $P_FP,$P_MF,$P_EMU --stopfile "$stopf" --clients 4 >"$WORK/load-container.json" & lp=$!; pids+=($lp)
sleep 2
prev=$pid0
for n in $(seq "${UPGRADES:-1}"); do
    t1=$(date +%s)
    out=$(timeout 120 docker exec "$C" roost upgrade -c /etc/roost/roost.yaml 2>&1); rc=$?
    dt=$(( $(date +%s) - t1 ))
    new=$(docker exec "$C" cat /run/roost/roost.pid)
    [ $rc -eq 0 ] && [ "$new" != "$prev" ] && echo "$out" | grep -q "$new" \
        && pass "container: 'docker exec $C roost upgrade' $n: $(echo "$out" | tail -1) ($dt s)" \
        || fail "container: upgrade $n rc $rc ($dt s): $out"
    echo "container-upgrade:$dt" >>"$WORK/timings"
    prev=$new
done
sleep 11   # longer than the entrypoint's 10 s allowance for a pid file naming a gone process
st=$(docker inspect "$C" --format '{{.State.Status}} restarts={{.RestartCount}}')
[[ "$st" == running* ]] && pass "container: still up after the swap ($st; pid $pid0 -> $prev)" || fail "container: $st after the swap"
touch "$stopf"; wait $lp
ok=$(json_field "$WORK/load-container.json" ok); failed=$(json_field "$WORK/load-container.json" failed)
[ "$failed" = 0 ] && [ "$ok" -gt 100 ] && pass "container: requests during the swap: $ok ok, 0 failed" \
    || fail "container: requests during the swap: $(cut -c1-600 "$WORK/load-container.json")"
z=$(ps_in | awk '$3=="Z"' | wc -l)
[ "$z" = 0 ] && pass "container: no zombies after the swap" || { fail "container: $z zombies"; ps_in; }

# ---------- HUP, a broken mounted file, stop ----------
docker kill -s HUP "$C" >/dev/null
wait_for 10 sh -c "docker logs --since 15s $C 2>&1 | grep -q -i 'reload'" && [ "$(docker exec "$C" cat /run/roost/roost.pid)" = "$prev" ] \
    && pass "container: 'docker kill -s HUP' reaches roost through tini and the entrypoint (reload logged, same pid)" \
    || fail "container: HUP: no reload logged"
cp "$WORK/test-roost.yaml" "$WORK/test-roost.yaml.orig"
printf 'bogus_key: 1\n' >>"$WORK/test-roost.yaml"      # same inode: the bind mount sees it
hc_cmd=$(docker image inspect "$TAG" --format '{{index .Config.Healthcheck.Test 1}}')
docker exec "$C" sh -c "$hc_cmd"; hrc=$?
cat "$WORK/test-roost.yaml.orig" >"$WORK/test-roost.yaml"
[ $hrc = 0 ] && pass "container: a typo in the mounted file does not make the serving container unhealthy" \
    || fail "container: healthcheck fails (rc $hrc) with a broken file while Roost serves"
stop_timeout=$(sed -n 's/^ *stop_grace_period: *\([0-9]*\)s.*/\1/p' "$REPO/docker-compose.yml")
curl -s -o /dev/null -w '%{http_code}' -H 'machineid: abc' "http://127.0.0.1:$P_FP/slow?ms=3000" >"$WORK/slow.code" & sp=$!
sleep 0.5
t1=$(date +%s); docker stop -t "$stop_timeout" "$C" >/dev/null; dt=$(( $(date +%s) - t1 ))
wait $sp
ec=$(docker inspect "$C" --format '{{.State.ExitCode}}')
[ "$ec" = 0 ] && [ "$(cat "$WORK/slow.code")" = 200 ] \
    && pass "container: 'docker stop -t $stop_timeout' (compose's stop_grace_period) exits 0 in $dt s, the request in flight answered 200" \
    || fail "container: stop: exit $ec after $dt s, request in flight: $(cat "$WORK/slow.code")"
echo "container-stop:$dt" >>"$WORK/timings"
[ "$dt" -ge 10 ] && info "NOTE container: a stop takes $dt s: plain 'docker stop' (10 s) would SIGKILL; run with --stop-timeout $stop_timeout"
docker rm -f "$C" >/dev/null

# ---------- health states and Roost's death, with short healthcheck intervals ----------
docker run -d --name "$C-health" "${runargs[@]}" --health-interval 1s --health-timeout 1s --health-retries 2 \
    --health-start-period 1s "$TAG" >/dev/null
health() { docker inspect "$C-health" --format '{{.State.Health.Status}}'; }
wait_for 30 sh -c "[ \"\$(docker inspect $C-health --format '{{.State.Health.Status}}')\" = healthy ]"; h1=$(health)
rp=$(docker exec "$C-health" cat /run/roost/roost.pid)
docker exec "$C-health" sh -c "kill -STOP $rp"
wait_for 30 sh -c "[ \"\$(docker inspect $C-health --format '{{.State.Health.Status}}')\" = unhealthy ]"; h2=$(health)
docker exec "$C-health" sh -c "kill -CONT $rp"
wait_for 30 sh -c "[ \"\$(docker inspect $C-health --format '{{.State.Health.Status}}')\" = healthy ]"; h3=$(health)
[ "$h1/$h2/$h3" = healthy/unhealthy/healthy ] && pass "container: health follows the process: healthy, unhealthy while roost is frozen (SIGSTOP), healthy again" \
    || fail "container: health states $h1/$h2/$h3"
docker exec "$C-health" sh -c "kill -KILL $rp"
wait_for 30 sh -c "[ \"\$(docker inspect $C-health --format '{{.State.Status}}')\" = exited ]"
ec=$(docker inspect "$C-health" --format '{{.State.Status}} {{.State.ExitCode}}')
[ "$ec" = "exited 1" ] && pass "container: roost killed -> the container exits 1 (a restart policy can act)" || fail "container: after killing roost: $ec"
exit 0
