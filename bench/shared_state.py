#!/usr/bin/env python3
"""The shared state's cost per request (`state.redis`, doc/scaling-out.md): Roost sharing its
sticky table through a real `redis-server` against Roost with its local table only, each with
one worker, in front of the same three NGINX backends as bench/run.py (whose helpers it uses),
with the same 1,000 machineids.

- **Redis commands per request** (`INFO commandstats` before and after a window): with every
  key cached (the 1,000 machineids recorded and written to Redis first), a request must add
  no Redis command at all: the only commands in the window are the writer's idle `PING` (one a
  second, whatever the traffic). The run fails when any other command shows up. With new keys
  (every request a machineid not seen before), the write-behind's batching: script calls and
  the commands they run (GET/SET/PUBLISH ... inside the script), per request.
- **Instructions per request** (callgrind, bench/measure.py), keys cached: the same exact count
  of keep-alive requests after a warm-up for both rows; the Redis window of this run (warm-up
  and counted requests) is checked as above.
- **req/s, p99, CPU µs per request** (wrk, rounds interleaved, 50 connections and 1).

Redis listens on a Unix socket in a temporary directory; every process started here is
stopped at the end.

    python3 bench/shared_state.py            # 3 rounds x 10 s, 20,000 counted requests
    python3 bench/shared_state.py --smoke    # `make test`: 1 round x 2 s, 2,000 counted
"""

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import measure
import run as bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("Roost (local table)", "Roost (Redis table)")
SERVICE = "wps"
# Our own look-ups, not Roost's.
OURS = {"info", "dbsize"}
# The writer's idle check of the link: once a second when there is nothing to write.
IDLE = {"ping"}
SCRIPT_CALLS = {"evalsha", "eval", "evalsha_ro", "eval_ro"}


class Redis:
    def __init__(self, tmp):
        self.socket = os.path.join(tmp, "redis.sock")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            sys.exit("bench: redis-server not found; run `make deps`")
        self.proc = bench.start([binary, "--port", "0", "--unixsocket", self.socket,
                                 "--save", "", "--appendonly", "no", "--dir", tmp])
        deadline = time.time() + 15
        while self.cli("PING") != "PONG":
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit("bench: redis-server did not start")
            time.sleep(0.05)

    def cli(self, *args):
        done = subprocess.run(["redis-cli", "-s", self.socket, *args], capture_output=True,
                              text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else None

    def url(self):
        return f"unix://{self.socket}"

    def commands(self):
        """Calls per command name so far (INFO commandstats)."""
        calls = {}
        for line in (self.cli("INFO", "commandstats") or "").splitlines():
            m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
            if m:
                calls[m.group(1)] = int(m.group(2))
        return calls

    def keys(self):
        return int(self.cli("DBSIZE") or 0)


def delta(before, after):
    """Roost's commands between two `Redis.commands()` snapshots (ours left out)."""
    return {k: after[k] - before.get(k, 0) for k in after
            if k not in OURS and after[k] > before.get(k, 0)}


def roost_conf(tmp, tag, port, admin, backends, redis, extra):
    path = os.path.join(tmp, f"{tag}.yaml")
    state = f'state: {{ redis: "{redis.url()}", prefix: "bench:" }}\n' if redis else ""
    with open(path, "w") as f:
        f.write(f"""server:
  threads: 1
  pid_file: {tmp}/{tag}.pid
  upgrade_sock: {tmp}/{tag}.sock
{extra}access_log: {{ enabled: false }}
admin: {{ listen: 127.0.0.1:{admin} }}
{state}services:
  - name: {SERVICE}
    listen: 127.0.0.1:{port}
    backends: [{", ".join(backends)}]
""")
    return path


def specs(tmp, tag, backends, redis, args):
    """Both rows as {name: {port, admin, cmd}}, with fresh ports and files named by `tag`."""
    extra = "".join(f"  {line}\n" for line in args.roost_server.split(";") if line.strip())
    out = {}
    for name, row_tag, shared in ((ROWS[0], "local", None), (ROWS[1], "redis", redis)):
        port, admin = bench.free_port(), bench.free_port()
        conf = roost_conf(tmp, f"{row_tag}{tag}", port, admin, backends, shared, extra)
        out[name] = {"port": port, "admin": admin, "cmd": [args.roost, "-c", conf]}
    return out


def sent(admin):
    return int(bench.metric(admin, f'roost_shared_state_entries_total{{event="sent",service="{SERVICE}"}}'))


def wait_written(redis, admin, keys, limit=120):
    """Until Redis holds `keys` entries and Roost has written them all (none left pending)."""
    deadline = time.time() + limit
    while redis.keys() < keys or sent(admin) < keys:
        if time.time() > deadline:
            sys.exit(f"bench: Redis holds {redis.keys()} of {keys} keys after {limit} s")
        time.sleep(0.05)


def cache_every_key(wrk, redis, s, script, proc):
    """Every one of the 1,000 machineids recorded by Roost and written to Redis."""
    deadline = time.time() + 300
    while redis.keys() < len(measure.IDS):
        if proc.poll() is not None or time.time() > deadline:
            sys.exit(f"bench: only {redis.keys()} keys in Redis")
        subprocess.run([wrk, "-t1", "-c10", "-d1s", "-s", script,
                        f"http://127.0.0.1:{s['port']}/"], capture_output=True, check=True)
    wait_written(redis, s["admin"], len(measure.IDS))


def idle_instructions(pid, out_prefix, seconds):
    """Instructions per second of a proxy under callgrind while no request arrives: its
    background tasks (health checks, and with sharing the writer's 10 ms loop and 1 s PING).
    A rate over time, so this waits a fixed time (there is no condition to wait for)."""
    def control(flag):
        done = subprocess.run(["callgrind_control", flag, str(pid)], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise measure.MeasureError(f"callgrind_control {flag} {pid}: {done.stdout}{done.stderr}")

    def dumps():
        return [p for p in glob.glob(out_prefix + ".*") if p[len(out_prefix) + 1:].isdigit()]

    had = len(dumps())
    control("-z")
    started = time.time()
    time.sleep(seconds)
    control("-d")
    elapsed = time.time() - started
    deadline = time.time() + 60
    while True:
        found = dumps()
        if len(found) > had:
            try:
                newest = max(found, key=lambda p: int(p.rsplit(".", 1)[1]))
                return measure._callgrind_counts(newest)[0] / elapsed
            except measure.MeasureError:
                pass
        if time.time() > deadline:
            raise measure.MeasureError(f"no idle callgrind dump at {out_prefix}.N")
        time.sleep(0.1)


def check_cached(window, what):
    """A window of cached keys: nothing but the idle PING, or the run fails."""
    others = {k: v for k, v in window.items() if k not in IDLE}
    if others:
        sys.exit(f"bench: {what}: Redis commands other than the idle PING with every key "
                 f"cached: {others}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="1 round of 2 s: for `make test`")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--insn-requests", type=int, default=20_000)
    ap.add_argument("--insn-warmup", type=int, default=2_000)
    ap.add_argument("--roost", default=os.path.join(ROOT, "target/release/roost"))
    ap.add_argument("--roost-server", default="work_stealing: false",
                    help="extra keys for Roost's server section (as bench/run.py)")
    ap.add_argument("--no-callgrind", action="store_true", help="no instructions column")
    ap.add_argument("--counted-only", action="store_true", help="only the callgrind counts "
                    "(no wrk rounds, no new-key window)")
    ap.add_argument("--idle-seconds", type=float, default=5.0,
                    help="the idle window under callgrind (background instructions per second)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench/shared_state.md"))
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.seconds = 1, 2
        args.insn_requests = min(args.insn_requests, 2_000)
        args.insn_warmup = min(args.insn_warmup, 500)
        args.idle_seconds = min(args.idle_seconds, 1.0)
    if not os.path.exists(args.roost):
        sys.exit(f"bench: {args.roost} missing; run `make release`")
    nginx = bench.binary("nginx", ["/usr/sbin/nginx", "nginx"])
    wrk = bench.binary("wrk", ["wrk"])
    if not args.no_callgrind:
        try:
            measure.require_valgrind()
        except measure.MeasureError as e:
            sys.exit(f"bench: {e}")

    tmp = tempfile.mkdtemp(prefix="roost-bench-shared-")
    script = os.path.join(tmp, "keys.lua")
    with open(script, "w") as f:
        f.write(bench.LUA)
    fresh = os.path.join(tmp, "fresh.lua")
    with open(fresh, "w") as f:
        f.write(bench.LUA_MANY % 10_000_000)
    results, windows, insn, idle, counted_s = {}, {}, {}, {}, {}
    try:
        redis = Redis(tmp)
        backends = []
        for i in range(1, 4):
            port = bench.free_port()
            conf = bench.nginx_conf(tmp, f"backend{i}", f"""
  server {{ listen 127.0.0.1:{port} reuseport; keepalive_requests 1000000;
           location / {{ return 200 "b{i}\\n"; }} }}""")
            p = bench.start([nginx, "-c", conf, "-p", tmp])
            bench.wait_port(port, p, f"backend {i}")
            backends.append(f"127.0.0.1:{port}")

        if not args.counted_only:
            # Timed: both rows at once, interleaved; the Redis row's keys cached first.
            rows = specs(tmp, "", backends, redis, args)
            procs = {}
            for name, s in rows.items():
                procs[name] = bench.start(s["cmd"], env={**os.environ, "RUST_LOG": "error"})
                bench.wait_port(s["port"], procs[name], name)
                bench.wait_port(s["admin"], procs[name], f"{name} admin")
            cache_every_key(wrk, redis, rows[ROWS[1]], script, procs[ROWS[1]])
            before = redis.commands()
            started = time.time()
            for r in range(args.rounds):
                for conns in (50, 1):
                    for name, s in rows.items():
                        p = procs[name]
                        ticks = bench.cpu_ticks(p.pid)
                        run = bench.run_wrk(wrk, f"http://127.0.0.1:{s['port']}/", conns,
                                            args.seconds, script)
                        run["cpu_us"] = ((bench.cpu_ticks(p.pid) - ticks) / bench.CLK_TCK * 1e6
                                         / max(run["requests"], 1))
                        results.setdefault((name, conns), []).append(run)
                        print(f"bench: round {r + 1} {name:20} c={conns:<2} {run['rps']:9.0f} req/s "
                              f"p99 {run['p99']:.2f} ms errors {run['errors']}", flush=True)
            redis_requests = sum(run["requests"] for (name, _), runs in results.items()
                                 if name == ROWS[1] for run in runs)
            windows["cached (wrk)"] = (delta(before, redis.commands()), redis_requests,
                                       time.time() - started)
            check_cached(windows["cached (wrk)"][0], "the wrk rounds")

            # New keys: every request one the table has not seen; written behind in batches.
            s = rows[ROWS[1]]
            keys_before, before, started = redis.keys(), redis.commands(), time.time()
            run = bench.run_wrk(wrk, f"http://127.0.0.1:{s['port']}/", 50, args.seconds, fresh)
            wait_written(redis, s["admin"], keys_before + run["requests"])
            windows["new keys (wrk)"] = (delta(before, redis.commands()), redis.keys() - keys_before,
                                         time.time() - started)
            for p in procs.values():
                bench.stop(p)

        if not args.no_callgrind:
            # Counted: one row at a time under callgrind, keys cached (the Redis row's also
            # written to Redis) before the count starts.
            redis.cli("FLUSHALL")
            for name, s in specs(tmp, "-cg", backends, redis, args).items():
                out = os.path.join(tmp, f"callgrind.{len(insn)}")
                p = bench.start([*measure.callgrind_prefix(out), *s["cmd"]],
                                env={**os.environ, "RUST_LOG": "error"})
                try:
                    bench.wait_port(s["port"], p, f"{name} under callgrind", timeout=120)
                    bench.wait_port(s["admin"], p, f"{name} admin under callgrind", timeout=120)
                    shared = name == ROWS[1]
                    if shared:
                        cache_every_key(wrk, redis, s, script, p)
                    idle[name] = idle_instructions(p.pid, out, args.idle_seconds)
                    before, started = redis.commands(), time.time()
                    insn[name], _allocs = measure.instructions(p.pid, s["port"], out, 50,
                                                               args.insn_warmup,
                                                               args.insn_requests)
                    counted_s[name] = (time.time() - started) * args.insn_requests / (
                        args.insn_warmup + args.insn_requests)
                    if shared:
                        windows["cached (callgrind)"] = (
                            delta(before, redis.commands()),
                            args.insn_warmup + args.insn_requests, time.time() - started)
                        check_cached(windows["cached (callgrind)"][0], "the counted requests")
                finally:
                    bench.stop(p)
                print(f"bench: {name:20} {insn[name]:9,.0f} instructions/request "
                      f"(callgrind, {args.insn_requests:,} requests)", flush=True)
    except measure.MeasureError as e:
        sys.exit(f"bench: {e}")
    finally:
        bench.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name, conns, key):
        return statistics.median(r[key] for r in results[(name, conns)])

    timed = "callgrind only" if args.counted_only else \
        f"{args.rounds} rounds x {args.seconds} s, wrk -t1"
    lines = [f"# Shared state through Redis ({timed}, 1 worker, Roost server: "
             f"`{args.roost_server}`)", ""]
    local, shared = ROWS
    if results:
        lines += ["| Roost | conns | req/s (median) | p50 ms | p99 ms | CPU µs/req |",
                  "|---|---|---|---|---|---|"]
        for conns in (50, 1):
            for name in ROWS:
                lines.append(f"| {name} | {conns} | {med(name, conns, 'rps'):.0f} | "
                             f"{med(name, conns, 'p50'):.3f} | {med(name, conns, 'p99'):.3f} | "
                             f"{med(name, conns, 'cpu_us'):.1f} |")
        lines.append("")
        lines.append(f"- Redis/local: req/s x{med(shared, 50, 'rps') / med(local, 50, 'rps'):.2f} "
                     f"at 50 conns, x{med(shared, 1, 'rps') / med(local, 1, 'rps'):.2f} at 1; "
                     f"CPU/req x{med(shared, 50, 'cpu_us') / med(local, 50, 'cpu_us'):.2f}")
    if insn:
        lines.append(f"- instructions/request (callgrind, {args.insn_requests:,} keep-alive "
                     f"requests on 50 connections after {args.insn_warmup:,}, keys cached): "
                     f"local {insn[local]:,.0f}, Redis {insn[shared]:,.0f} "
                     f"({insn[shared] - insn[local]:+,.0f}, x{insn[shared] / insn[local]:.3f})")
        extra = idle[shared] - idle[local]
        per_request = extra * counted_s[shared] / args.insn_requests
        lines.append(f"- with no traffic (callgrind, {args.idle_seconds:g} s): local "
                     f"{idle[local]:,.0f}, Redis {idle[shared]:,.0f} instructions/s "
                     f"({extra:+,.0f}/s: the writer's loop and PING); over the counted requests "
                     f"(~{counted_s[shared]:.0f} s under callgrind) that background is "
                     f"{per_request:+,.0f} instructions/request, leaving "
                     f"{insn[shared] - insn[local] - per_request:+,.0f} for the requests themselves")
    lines += ["", "Redis commands (INFO commandstats) over each window:", "",
              "| window | requests | seconds | commands | per request | other than PING, per request "
              "| script calls per request | by command |",
              "|---|---|---|---|---|---|---|---|"]
    for what, (window, requests, seconds) in windows.items():
        total = sum(window.values())
        scripts = sum(v for k, v in window.items() if k in SCRIPT_CALLS)
        busy = sum(v for k, v in window.items() if k not in IDLE)
        by = ", ".join(f"{k} {v:,}" for k, v in sorted(window.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {what} | {requests:,} | {seconds:.1f} | {total:,} | "
                     f"{total / max(requests, 1):.6f} | {busy / max(requests, 1):.6f} | "
                     f"{scripts / max(requests, 1):.6f} | "
                     f"{by or '-'} |")
    lines += ["", "- cached keys: nothing but the writer's idle PING (one a second) reaches "
              "Redis; the run fails otherwise", ""]
    bench.report(lines, results, args.out)


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.stop_all()
