# Sourced by every deployment-check script: where things live, how results are recorded.
# podman is configured through the two files next to this one only (/etc/containers untouched);
# docker talks to the check's own dockerd (dockerd.sh), never to a system one.
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DEPLOY_DIR/../.." && pwd)"
export CONTAINERS_CONF="$DEPLOY_DIR/containers.conf"
export BUILDAH_ISOLATION=chroot
WORK="${DEPLOY_CHECK_WORK:-/tmp/roost-deploy-check}"
export DEPLOY_CHECK_WORK="$WORK"
mkdir -p "$WORK"
export DOCKER_HOST="unix://$WORK/dockerd/docker.sock"
export DOCKER_BUILDKIT=0   # Debian's docker.io has no buildx; the classic builder builds the file
RESULTS="$WORK/results"
# Everything the check's dockerd and podman store (images, layers, containers) lives here.
STORE=/var/lib/roost-deploy-check

# The storage driver of both engines: overlay where the kernel mounts it on $STORE (each layer
# holds only its changes), else vfs (each layer is a full copy of its parent: the image build
# alone then takes tens of GB). Probed once per run, by mounting one.
storage_driver() {
    if [ ! -s "$WORK/storage-driver" ]; then
        local t="$STORE/.overlay-probe"
        rm -rf "$t"; mkdir -p "$t"/{l,u,w,m}
        if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
            umount "$t/m"; echo overlay >"$WORK/storage-driver"
        else
            echo vfs >"$WORK/storage-driver"
        fi
        rm -rf "$t"
    fi
    cat "$WORK/storage-driver"
}
# podman's store, written from the probe (CONTAINERS_STORAGE_CONF points here).
STORAGE_CONF="$WORK/storage.conf"
export CONTAINERS_STORAGE_CONF="$STORAGE_CONF"
if [ ! -s "$STORAGE_CONF" ] || ! grep -q "\"$(storage_driver)\"" "$STORAGE_CONF"; then
    # One store per driver: podman refuses a store made by another driver.
    d=$(storage_driver)
    printf '[storage]\ndriver = "%s"\nrunroot = "/run/roost-deploy-check/containers-%s"\ngraphroot = "%s/containers-%s"\n' \
        "$d" "$d" "$STORE" "$d" >"$STORAGE_CONF"
fi
# Free space where the engines store, in MB.
free_mb() { mkdir -p "$STORE"; df -Pm "$STORE" | awk 'NR==2 {print $4}'; }

pass() { echo "PASS: $*"; echo "PASS: $*" >>"$RESULTS"; }
fail() { echo "FAIL: $*"; echo "FAIL: $*" >>"$RESULTS"; }
info() { echo "---- $*"; }
# check CONDITION-COMMAND... -- MESSAGE: PASS or FAIL on the command's status.
check() {
    local args=() msg
    while [ "$1" != -- ]; do args+=("$1"); shift; done
    shift; msg="$*"
    if "${args[@]}"; then pass "$msg"; else fail "$msg"; fi
}
# Wait up to $1 seconds for the command after it to succeed.
wait_for() {
    local t=$1; shift
    local end=$(( $(date +%s) + t ))
    until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.3; done
}
# The parts use fixed ports below the kernel's ephemeral range (32768-60999 here), so a
# client connection of anything else running on the machine cannot hold one of them.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Whether the admin listener on port $1 lists a backend whose address starts with $2 as unresolved.
lists_unresolved() {
    curl -fs "http://127.0.0.1:$1/status" | python3 -c 'import json, sys
s = json.load(sys.stdin)
sys.exit(0 if any(u["address"].startswith(sys.argv[1]) for x in s["services"] for u in x.get("unresolved", [])) else 1)' "$2"
}
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# The shipped config with loopback listeners and its backends on the three local demo backends
# (DEMO_PORT_1..3); everything else as shipped.
test_config() {
    sed -e 's/"0\.0\.0\.0:/"127.0.0.1:/' \
        -e 's/\${WPS_HOST_\([123]\):-[0-9.]*}:\${[A-Z]*_BACKEND_PORT:-[0-9]*}/${DEMO_HOST_\1:-127.0.0.1}:${DEMO_PORT_\1}/' \
        "$REPO/conf/roost.yaml" >"$1"
    chmod 0644 "$1"
}
# A part's local site: test_config into $1, every port of the part ($P_FP $P_MF $P_EMU $P_ADMIN
# $B1 $B2 $B3) free (else FAIL "$2: port … in use" and the part stops), and the demo backends
# b1..b3 ($DEMO) on $B1..$B3, logging to $WORK/$3backendN.log, their pids added to pids.
start_local_site() {
    local config=$1 part=$2 logs=$3 port i=0
    test_config "$config"
    for port in $P_FP $P_MF $P_EMU $P_ADMIN $B1 $B2 $B3; do port_free $port || { fail "$part: port $port in use"; exit 1; }; done
    for port in $B1 $B2 $B3; do
        i=$((i + 1)); "$DEMO" --name "b$i" --listen 127.0.0.1:$port >"$WORK/${logs}backend$i.log" 2>&1 & pids+=($!)
    done
}
# Debian's docker.io CLI (matches its dockerd), not whatever else is first on PATH.
docker_cli() { if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else type -P docker; fi; }
docker() { "$(docker_cli)" "$@"; }
