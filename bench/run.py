#!/usr/bin/env python3
"""Side-by-side benchmark: Roost against NGINX (the seed's `hash $http_machineid`, and
`hash ... consistent` with upstream keepalive) and HAProxy (`balance hdr(machineid)`,
consistent hashing), a bare Pingora proxy (examples/bare_pingora.rs: Pingora's Ketama on the
header and nothing else, the framework's floor) and Roost, each with one worker, in front of the
same three NGINX backends on loopback. NGINX `consistent`, HAProxy and Roost do the same job:
they also add X-Forwarded-For/-Proto/-Host, as Roost always does. Access logs are off for all
of them; one more row, "Roost (access log)", is Roost as shipped, writing its access log to a
file (every request must have its line). The sticky table (on by default) gets two rows of
its own: "Roost (table off)" (`affinity: { enabled: false }`), and "Roost (table, N keys)",
whose table is first filled with N distinct machineids (1,000,000; 20,000 in smoke mode) by
requests, then measured on those keys (every request a hit in a full table); the RSS it grew
by while filling gives the bytes per table entry. wrk runs interleaved (A B C D E F, A B C D E
F, ...) with ~1000 distinct machineids (N for the filled row), at 50 connections and at 1.
Prints a table (median over rounds) and Roost's ratios to each of the others.

Then, per proxy and one at a time (bench/measure.py): user-space instructions per request,
counted by callgrind over an exact number of keep-alive requests after a warm-up (20,000 after
2,000 on 50 connections), and the RSS grown per idle keep-alive connection (5,000 clients
holding their connection open after one request each), with ratios to NGINX `consistent` and
HAProxy; from the same callgrind window, the calls into the allocator per request. Then the
large-transfer rows (bench/xfer.py): a 1 GiB download and a 512 MiB upload through NGINX
(default, and with its body buffering off), HAProxy, bare Pingora and Roost: MB/s, the
proxy's CPU seconds per GB, and whether the upload is streamed. Every wrk row's req/s and CPU
per request are also given as ratios to NGINX `consistent` and HAProxy. Writes everything to
target/bench/results.md and stops every process it started. A column that cannot be measured
(valgrind missing, a closed idle connection, a transfer too short for the CPU clock) fails
the run.

    python3 bench/run.py                 # full run (3 rounds x 10 s per cell)
    python3 bench/run.py --smoke         # CI: 1 round x 2 s, 2,000 counted requests, 200 idle,
                                         #     128 MiB down / 64 MiB up
    python3 bench/run.py --table-keys 200000   # a smaller filled table
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import measure
import xfer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = []

LUA = r"""
local ids = {}
for i = 1, 1000 do ids[i] = string.format("machine-%04d-6f1c2a44", i) end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", {["machineid"] = ids[(n % 1000) + 1]})
end
"""

# N distinct machineids, walked in order from an offset (wrk's first argument after `--`): to
# fill a table (each request a new key) and then to measure it (each request a hit).
LUA_MANY = r"""
local count = %d
local n = 0
init = function(args)
  n = tonumber(args[1] or "0")
end
request = function()
  n = n + 1
  return wrk.format("GET", "/", {["machineid"] = string.format("machine-%%07d", n %% count)})
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name, candidates):
    for c in candidates:
        if shutil.which(c) or os.path.exists(c):
            return shutil.which(c) or c
    sys.exit(f"bench: {name} not found; run `make deps`")


def start(cmd, **kw):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, **kw)
    PROCS.append(p)
    return p


def stop_all():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in PROCS:
        p.wait()
    PROCS.clear()


def stop(p):
    """Stops one process started by `start` (the others keep running)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    PROCS.remove(p)


def wait_port(port, proc, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: {what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {what} did not listen on {port}")


def nginx_conf(tmp, name, body, connections=4096, extra=""):
    path = os.path.join(tmp, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1;
pid {tmp}/{name}.pid; error_log {tmp}/{name}.err warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/{name}.body; proxy_temp_path {tmp}/{name}.proxy;
  fastcgi_temp_path {tmp}/{name}.fcgi; uwsgi_temp_path {tmp}/{name}.uwsgi; scgi_temp_path {tmp}/{name}.scgi;
  {extra}
{body}
}}
""")
    return path


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def check_access_log(path, requests):
    """Lines missing from Roost's access log after a run (each is counted as an error), then
    empty the file so that a full benchmark does not fill the disk."""
    deadline = time.time() + 5  # the writer may still be working through its queue
    while True:
        with open(path, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if lines >= requests or time.time() > deadline:
            break
        time.sleep(0.1)
    os.truncate(path, 0)  # the writer appends (O_APPEND): it goes on at the new end
    missing = max(requests - lines, 0)
    if missing:
        print(f"bench: access log has {lines} lines for {requests} requests", flush=True)
    return missing


def parse_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def metric(port, series):
    """One value from Roost's /metrics on its admin port (0 when absent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


def fill_table(wrk, port, admin, script, keys, limit=600):
    """Send requests with new keys until Roost's table holds `keys` of them; returns the
    seconds it took."""
    start = time.time()
    series = 'roost_affinity_keys{service="wps"}'
    while (have := int(metric(admin, series))) < keys:
        if time.time() - start > limit:
            sys.exit(f"bench: the table holds only {have} of {keys} keys after {limit} s")
        # Every request a key not seen yet: continue from what the table holds.
        subprocess.run([wrk, "-t1", "-c50", "-d5s", "-s", script, f"http://127.0.0.1:{port}/",
                        "--", str(have)], capture_output=True, check=True)
    return time.time() - start


def run_wrk(wrk, url, conns, seconds, script):
    out = subprocess.run(
        [wrk, "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True).stdout
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": parse_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99": parse_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "errors": 0,
    }
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        result["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        result["errors"] += sum(int(x) for x in m.groups())
    return result


def proxy_specs(tmp, tag, backends, nginx, haproxy, args, filled, access_log_path,
                connections=4096, nginx_extra=""):
    """Every proxy of the run as {name: {port, cmd, env, admin}}, with fresh ports and config
    files whose names end in `tag` (so the wrk, instruction and idle-connection phases each
    start their own instances). `connections` is NGINX's `worker_connections` and HAProxy's
    `maxconn` (Roost's default `max_connections` is 10,000); `nginx_extra` goes into both NGINX
    configs' `http` block."""
    specs = {}
    env = {**os.environ, "RUST_LOG": "error"}

    def add(name, port, cmd, admin=None):
        specs[name] = {"port": port, "cmd": cmd, "env": env, "admin": admin}

    servers = "".join(f"    server {b};\n" for b in backends)
    port = free_port()
    conf = nginx_conf(tmp, f"nginx-hash{tag}", f"""
  upstream wps {{ hash $http_machineid;
{servers}  }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://wps; }} }}""", connections,
                      nginx_extra)
    add("NGINX hash", port, [nginx, "-c", conf, "-p", tmp])
    port = free_port()
    conf = nginx_conf(tmp, f"nginx-consistent{tag}", f"""
  upstream wps {{ hash $http_machineid consistent; keepalive 128;
{servers}  }}
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
           location / {{ proxy_pass http://wps; proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                        proxy_set_header X-Forwarded-Proto $scheme;
                        proxy_set_header X-Forwarded-Host $host; }} }}""", connections,
                      nginx_extra)
    add("NGINX consistent", port, [nginx, "-c", conf, "-p", tmp])
    port = free_port()
    hap = os.path.join(tmp, f"haproxy{tag}.cfg")
    with open(hap, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn {connections}
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend wps
  bind 127.0.0.1:{port}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend wps
backend wps
  balance hdr(machineid)
  hash-type consistent
""" + "".join(f"  server b{i} {b}\n" for i, b in enumerate(backends, 1)))
    add("HAProxy", port, [haproxy, "-f", hap, "-db"])
    port = free_port()
    add("Pingora (bare)", port, [args.bare, *args.bare_flags.split(), f"127.0.0.1:{port}", *backends])
    extra = "".join(f"  {line}\n" for line in args.roost_server.split(";") if line.strip())
    # Roost as compared (access log off, like the others; its sticky table on, as by
    # default), Roost as shipped (its access log written to a file by its background
    # thread), and the sticky table's cost: off, and filled with many keys.
    off = "\n    affinity: { enabled: false }"
    for name, name_tag, access_log, service in (
            ("Roost", "roost", "{ enabled: false }", ""),
            ("Roost (access log)", "roost-log", f"{{ path: {access_log_path} }}", ""),
            ("Roost (table off)", "roost-off", "{ enabled: false }", off),
            (filled, "roost-filled", "{ enabled: false }", "")):
        port, admin = free_port(), free_port()
        roost_conf = os.path.join(tmp, f"{name_tag}{tag}.yaml")
        with open(roost_conf, "w") as f:
            f.write(f"""server:
  threads: 1
  pid_file: {tmp}/{name_tag}{tag}.pid
  upgrade_sock: {tmp}/{name_tag}{tag}.sock
{extra}access_log: {access_log}
{f"admin: {{ listen: 127.0.0.1:{admin} }}" if name == filled else ""}
services:
  - name: wps
    listen: 127.0.0.1:{port}
    backends: [{", ".join(backends)}]{service}
""")
        add(name, port, [args.roost, "-c", roost_conf], admin if name == filled else None)
    return specs


# The rows of the instruction and idle-connection columns: every proxy of the run but the
# sticky-table variants (whose cost the wrk rows already isolate).
COUNTED = ("NGINX hash", "NGINX consistent", "HAProxy", "Pingora (bare)", "Roost",
           "Roost (access log)")


def instructions_phase(tmp, backends, nginx, haproxy, args, filled, access_log_path):
    """Instructions per request of each COUNTED proxy, one at a time under callgrind."""
    specs = proxy_specs(tmp, "-cg", backends, nginx, haproxy, args, filled, access_log_path)
    counts, allocs = {}, {}
    for name in args.rows:
        s = specs[name]
        out = os.path.join(tmp, f"callgrind.{len(counts)}")
        p = start([*measure.callgrind_prefix(out), *s["cmd"]], env=s["env"])
        try:
            wait_port(s["port"], p, f"{name} under callgrind", timeout=120)
            counts[name], allocs[name] = measure.instructions(p.pid, s["port"], out, 50, args.insn_warmup,
                                                args.insn_requests)
        finally:
            stop(p)
        print(f"bench: {name:28} {counts[name]:9,.0f} instructions/request, "
              f"{allocs[name]:6.1f} allocations/request "
              f"(callgrind, {args.insn_requests:,} requests)", flush=True)
    return counts, allocs


def idle_phase(tmp, backends, nginx, haproxy, args, filled, access_log_path):
    """RSS bytes per idle keep-alive connection of each COUNTED proxy, one at a time."""
    specs = proxy_specs(tmp, "-idle", backends, nginx, haproxy, args, filled, access_log_path,
                        connections=args.idle + 1000)
    sizes = {}
    for name in args.rows:
        s = specs[name]
        p = start(s["cmd"], env=s["env"])
        try:
            wait_port(s["port"], p, name)
            per, base, held = measure.idle_connection_bytes(p.pid, s["port"], args.idle)
        finally:
            stop(p)
        sizes[name] = per
        print(f"bench: {name:28} {per / 1024:7.2f} KB per idle connection "
              f"(RSS {base / 1024:.1f} -> {held / 1024:.1f} MB with {args.idle:,})", flush=True)
    return sizes


# The rows of the large-transfer phase: NGINX as configured above (it buffers request and
# response bodies by default), NGINX with both buffers off, and the streaming proxies.
XFER = ("NGINX default", "NGINX unbuffered", "HAProxy", "Pingora (bare)", "Roost")


def xfer_specs(tmp, backends, nginx, haproxy, args, filled, access_log_path):
    """The XFER proxies in front of the transfer backends. NGINX is the `consistent` config
    (upstream keep-alive, forwarding headers), without its 1 MB default body limit."""
    no_limit = "client_max_body_size 0;"
    default = proxy_specs(tmp, "-xfer", backends, nginx, haproxy, args, filled,
                          access_log_path, nginx_extra=no_limit)
    unbuffered = proxy_specs(tmp, "-xfer-unbuf", backends, nginx, haproxy, args, filled,
                             access_log_path,
                             nginx_extra=no_limit + " proxy_buffering off; proxy_request_buffering off;")
    return {"NGINX default": default["NGINX consistent"],
            "NGINX unbuffered": unbuffered["NGINX consistent"],
            **{name: default[name] for name in XFER[2:]}}


def xfer_phase(tmp, nginx, haproxy, args, filled, access_log_path):
    """Download and upload rows of each XFER proxy, one at a time, `args.rounds` transfers of
    each kind (medians), in front of three bench/xfer_backend.py backends."""
    down_size, up_size = args.xfer_down << 20, args.xfer_up << 20
    source = xfer.sparse_file(os.path.join(tmp, "source.bin"), down_size)
    ports = [free_port() for _ in range(3)]
    backend = start([sys.executable, os.path.join(ROOT, "bench/xfer_backend.py"), source,
                     *map(str, ports)])
    for port in ports:
        wait_port(port, backend, "transfer backend")
    specs = xfer_specs(tmp, [f"127.0.0.1:{p}" for p in ports], nginx, haproxy, args, filled,
                       access_log_path)
    rows = {}
    try:
        for name in XFER:
            s = specs[name]
            p = start(s["cmd"], env=s["env"])
            try:
                wait_port(s["port"], p, name)
                downs = [xfer.download(p.pid, s["port"], down_size) for _ in range(args.rounds)]
                ups = [xfer.upload(p.pid, s["port"], up_size) for _ in range(args.rounds)]
            finally:
                stop(p)
            row = {f"down_{k}": statistics.median(r[k] for r in downs) for k in downs[0]}
            row.update({f"up_{k}": statistics.median(r[k] for r in ups) for k in ups[0]})
            row["streamed"] = all(xfer.streamed(r) for r in ups)
            rows[name] = row
            print(f"bench: {name:28} down {row['down_mbps']:6.0f} MB/s "
                  f"{row['down_cpu_s_per_gb']:.2f} s/GB, up {row['up_mbps']:6.0f} MB/s "
                  f"{row['up_cpu_s_per_gb']:.2f} s/GB, backend saw the head after "
                  f"{row['up_head_after_s']:.3f} s, the client sent its last byte after "
                  f"{row['up_sent_s']:.3f} s", flush=True)
    finally:
        stop(backend)
    return rows


def mtu_arg(value):
    """--xfer-mtu: an MTU loopback takes (68..65536), or '' for no second transfer run."""
    if value == "":
        return None
    if not value.isdigit() or not 68 <= int(value) <= 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: an MTU from 68 to 65536, or '' for none")
    return int(value)


def xfer_at_mtu(args, mtu):
    """The large-transfer rows again, in a network namespace of their own whose loopback has
    `mtu` (as a real network's path would): this script re-run under `unshare -n` with
    --xfer-only, its rows read back as JSON. Loopback's own MTU is 64 KiB, where the size of
    the pieces a proxy sends matters in a way it does not at 1,500 bytes
    (doc/performance.md)."""
    out = os.path.join(tempfile.mkdtemp(prefix="roost-bench-mtu-"), "rows.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--xfer-only", out,
           "--rounds", str(args.rounds), "--xfer-down", str(args.xfer_down),
           "--xfer-up", str(args.xfer_up), "--roost", args.roost, "--bare", args.bare,
           f"--bare-flags={args.bare_flags}", f"--roost-server={args.roost_server}"]
    setup = f"ip link set lo up && ip link set lo mtu {mtu} && exec \"$0\" \"$@\""
    print(f"bench: the large transfers again, at MTU {mtu} in a network namespace", flush=True)
    try:
        done = subprocess.run(["unshare", "-n", "sh", "-c", setup, *cmd], timeout=3600)
        if done.returncode != 0:
            raise xfer.XferError(f"transfers at MTU {mtu} (unshare -n, needs root; "
                                 f"--xfer-mtu '' skips them): exit {done.returncode}")
        with open(out) as f:
            return json.load(f)
    finally:
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)


def ratio(values, name, other):
    """`xN.NN` of two measured values; "-" for one too small to show (the idle RSS of NGINX
    or HAProxy with the smoke mode's few connections)."""
    if values[name] <= 0 or values[other] <= 0:
        return "-"
    return f"x{values[name] / values[other]:.2f}"


def wrk_table(proxies, med, filled, table):
    """The wrk rows (medians), with every row's req/s and CPU per request at 50 connections
    as ratios to NGINX `consistent` and HAProxy, then Roost against each of the others."""
    refs = ("NGINX consistent", "HAProxy")
    rps = {name: med(name, 50, "rps") for name in proxies}
    cpu = {name: med(name, 50, "cpu_us") for name in proxies}
    lines = ["| proxy | conns | req/s (median) | p50 ms | p99 ms | CPU µs/req | RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for conns in (50, 1):
        for name in proxies:
            lines.append(f"| {name} | {conns} | {med(name, conns, 'rps'):.0f} | "
                         f"{med(name, conns, 'p50'):.3f} | {med(name, conns, 'p99'):.3f} | "
                         f"{med(name, conns, 'cpu_us'):.1f} | {med(name, conns, 'rss'):.1f} |")
    lines += ["", "At 50 connections, as ratios (wall-clock figures: they move with whatever "
              "else runs on the machine):", "",
              "| proxy | req/s | x NGINX consistent | x HAProxy | CPU µs/req | x NGINX consistent "
              "| x HAProxy |", "|---|---|---|---|---|---|---|"]
    for name in proxies:
        lines.append(f"| {name} | {rps[name]:.0f} | {ratio(rps, name, refs[0])} | "
                     f"{ratio(rps, name, refs[1])} | {cpu[name]:.1f} | {ratio(cpu, name, refs[0])} | "
                     f"{ratio(cpu, name, refs[1])} |")
    lines.append("")
    for other in ("NGINX consistent", "NGINX hash", "HAProxy", "Pingora (bare)",
                  "Roost (access log)"):
        lines.append(f"- Roost/{other}: req/s x{rps['Roost'] / rps[other]:.2f} "
                     f"at 50 conns; p99 x{med('Roost', 1, 'p99') / med(other, 1, 'p99'):.2f} at 1 conn; "
                     f"CPU/req x{cpu['Roost'] / cpu[other]:.2f}")
    off = "Roost (table off)"
    for other in ("Roost", filled):
        lines.append(f"- {other}/{off}: req/s x{rps[other] / rps[off]:.2f} at 50 conns; CPU/req "
                     f"{cpu[other] - cpu[off]:+.1f} µs (x{cpu[other] / cpu[off]:.2f})")
    per_key = (table["rss_after"] - table["rss_before"]) * 1024 * 1024 / max(table["keys"], 1)
    lines.append(f"- sticky table: {table['keys']:,} keys filled by requests in "
                 f"{table['fill_s']:.0f} s, RSS {table['rss_before']:.1f} -> "
                 f"{table['rss_after']:.1f} MB: {per_key:.0f} bytes per key, "
                 f"{per_key * 1e6 / 1024 / 1024:.0f} MB per million keys")
    return lines


def counted_table(args, insn, allocs, idle):
    """Instructions and allocations per request (one callgrind window) and KB per idle
    connection, with ratios to NGINX `consistent` and HAProxy."""
    refs = ("NGINX consistent", "HAProxy")
    lines = ["", f"Counted (callgrind: user-space instructions and calls into the allocator over "
             f"{args.insn_requests:,} keep-alive requests on 50 connections, after "
             f"{args.insn_warmup:,}; RSS grown per idle keep-alive connection, {args.idle:,} held "
             f"open after one request each):", "",
             "| proxy | instructions/req | x NGINX consistent | x HAProxy | allocations/req "
             "| x NGINX consistent | x HAProxy | KB per idle conn | x NGINX consistent | x HAProxy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.rows:
        cells = [f"{insn[name]:,.0f}", ratio(insn, name, refs[0]), ratio(insn, name, refs[1]),
                 f"{allocs[name]:.1f}", ratio(allocs, name, refs[0]), ratio(allocs, name, refs[1])]
        if name in idle:
            cells += [f"{idle[name] / 1024:.2f}", ratio(idle, name, refs[0]),
                      ratio(idle, name, refs[1])]
        else:
            cells += ["-", "-", "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def xfer_table(args, rows, where="loopback"):
    """The large-transfer rows, with ratios to NGINX (default) and HAProxy."""
    refs = ("NGINX default", "HAProxy")
    down_mbps = {n: r["down_mbps"] for n, r in rows.items()}
    down_cpu = {n: r["down_cpu_s_per_gb"] for n, r in rows.items()}
    up_mbps = {n: r["up_mbps"] for n, r in rows.items()}
    up_cpu = {n: r["up_cpu_s_per_gb"] for n, r in rows.items()}
    lines = ["", f"Large transfers on {where} (curl, one at a time, median of {args.rounds}; "
             f"{args.xfer_down} MiB download by curl, {args.xfer_up} MiB upload; CPU = the proxy's "
             f"user + system seconds per 10^9 bytes; MB/s is wall-clock; ratios to NGINX default "
             f"and HAProxy):", "",
             "| proxy | down MB/s | x NGINX | x HAProxy | down CPU s/GB | x NGINX | x HAProxy "
             "| up MB/s | x NGINX | x HAProxy | up CPU s/GB | x NGINX | x HAProxy "
             "| upload streamed (backend saw the head / client sent the last byte, after) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        cells = []
        for values, fmt in ((down_mbps, ".0f"), (down_cpu, ".2f"), (up_mbps, ".0f"),
                            (up_cpu, ".2f")):
            cells += [format(values[name], fmt), ratio(values, name, refs[0]),
                      ratio(values, name, refs[1])]
        cells.append(f"{'yes' if r['streamed'] else 'no'} ({r['up_head_after_s']:.3f} s / "
                     f"{r['up_sent_s']:.3f} s)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="1 round of 2 s: for CI")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--roost", default=os.path.join(ROOT, "target/release/roost"))
    ap.add_argument("--bare", default=os.path.join(ROOT, "target/release/examples/bare_pingora"))
    ap.add_argument("--bare-flags", default="--no-header-case",
                    help="flags for bare Pingora (examples/bare_pingora.rs); the default drops the "
                         "case-preserving header map as Roost does by default (patch 0002), '' "
                         "keeps Pingora's default")
    ap.add_argument("--roost-server", default="work_stealing: false",
                    help="extra keys for Roost's server section (levers)")
    ap.add_argument("--table-keys", type=int, default=1_000_000,
                    help="distinct keys in the filled-table row (20,000 in smoke mode)")
    ap.add_argument("--insn-requests", type=int, default=20_000,
                    help="requests counted under callgrind per proxy (2,000 in smoke mode)")
    ap.add_argument("--insn-warmup", type=int, default=2_000,
                    help="requests before the count starts (500 in smoke mode)")
    ap.add_argument("--idle", type=int, default=5_000,
                    help="idle keep-alive connections held for the memory column (200 in smoke mode)")
    ap.add_argument("--counted-only", action="store_true",
                    help="only the instruction and idle-connection columns (no wrk rows)")
    ap.add_argument("--no-idle", action="store_true", help="no idle-connection column")
    ap.add_argument("--xfer-down", type=int, default=1024,
                    help="MiB downloaded per large-transfer run (128 in smoke mode)")
    ap.add_argument("--xfer-up", type=int, default=512,
                    help="MiB uploaded per large-transfer run (64 in smoke mode)")
    ap.add_argument("--no-xfer", action="store_true", help="no large-transfer rows")
    ap.add_argument("--xfer-mtu", default=1500, type=mtu_arg,
                    help="the large-transfer rows again at this loopback MTU, in a network "
                         "namespace of their own (unshare -n, root); '' for none")
    ap.add_argument("--xfer-only", metavar="JSON",
                    help="(internal) only the large-transfer rows, written to JSON")
    ap.add_argument("--rows", default=",".join(COUNTED),
                    help="comma-separated rows of the counted columns (default: all of them)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench/results.md"))
    args = ap.parse_args()
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in args.rows:
        if r not in COUNTED:
            sys.exit(f"bench: --rows: no row {r!r} (rows: {', '.join(COUNTED)})")
    # The ratios need both references.
    args.rows = [r for r in COUNTED if r in args.rows or r in ("NGINX consistent", "HAProxy")]
    if args.smoke:
        args.rounds, args.seconds = 1, 2
        args.table_keys = min(args.table_keys, 20_000)
        args.insn_requests = min(args.insn_requests, 2_000)
        args.insn_warmup = min(args.insn_warmup, 500)
        args.idle = min(args.idle, 200)
        # Big enough for the CPU time of a transfer to be several 10 ms clock ticks.
        args.xfer_down = min(args.xfer_down, 128)
        args.xfer_up = min(args.xfer_up, 64)
    try:
        measure.require_valgrind()
        # The idle phase holds `idle` client sockets here and as many in the proxy.
        measure.raise_fd_limit(args.idle + 1000)
    except measure.MeasureError as e:
        sys.exit(f"bench: {e}")
    nginx = binary("nginx", ["/usr/sbin/nginx", "nginx"])
    haproxy = binary("haproxy", ["/usr/sbin/haproxy", "haproxy"])
    wrk = binary("wrk", ["wrk"])
    for path in (args.roost, args.bare):
        if not os.path.exists(path):
            sys.exit(f"bench: {path} missing; run `make release`")

    tmp = tempfile.mkdtemp(prefix="roost-bench-")
    filled = f"Roost (table, {args.table_keys:,} keys)"
    access_log_path = os.path.join(tmp, "roost-access.log")
    if args.xfer_only:
        try:
            rows = xfer_phase(tmp, nginx, haproxy, args, filled, access_log_path)
        except xfer.XferError as e:
            sys.exit(f"bench: {e}")
        finally:
            stop_all()
            shutil.rmtree(tmp, ignore_errors=True)
        with open(args.xfer_only, "w") as f:
            json.dump(rows, f)
        return
    script = os.path.join(tmp, "keys.lua")
    with open(script, "w") as f:
        f.write(LUA)
    many = os.path.join(tmp, "many.lua")
    with open(many, "w") as f:
        f.write(LUA_MANY % args.table_keys)
    scripts = {filled: many}
    try:
        backends = []
        for i in range(1, 4):
            port = free_port()
            conf = nginx_conf(tmp, f"backend{i}", f"""
  server {{ listen 127.0.0.1:{port} reuseport; keepalive_requests 1000000;
           location / {{ return 200 "b{i}\\n"; }} }}""")
            p = start([nginx, "-c", conf, "-p", tmp])
            wait_port(port, p, f"backend {i}")
            backends.append(f"127.0.0.1:{port}")

        results, table, proxies = {}, None, {}
        if not args.counted_only:
            specs = proxy_specs(tmp, "", backends, nginx, haproxy, args, filled, access_log_path)
            proxies = {name: (s["port"], start(s["cmd"], env=s["env"])) for name, s in specs.items()}
            admins = {name: s["admin"] for name, s in specs.items()}
            for name, (port, p) in proxies.items():
                wait_port(port, p, name)
            wait_port(admins[filled], proxies[filled][1], f"{filled} admin")

            # The filled row: its RSS before and after the keys, and so the bytes per entry.
            port, p = proxies[filled]
            rss_before = rss_mb(p.pid)
            fill_s = fill_table(wrk, port, admins[filled], many, args.table_keys)
            table = {"keys": int(metric(admins[filled], 'roost_affinity_keys{service="wps"}')),
                     "rss_before": rss_before, "rss_after": rss_mb(p.pid), "fill_s": fill_s}
            print(f"bench: {filled}: filled in {fill_s:.0f} s, RSS {rss_before:.1f} -> "
                  f"{table['rss_after']:.1f} MB", flush=True)

            # (name, conns) -> list of runs
            for r in range(args.rounds):
                for conns in (50, 1):
                    for name, (port, p) in proxies.items():
                        before = cpu_ticks(p.pid)
                        run = run_wrk(wrk, f"http://127.0.0.1:{port}/", conns, args.seconds,
                                      scripts.get(name, script))
                        run["cpu_us"] = (cpu_ticks(p.pid) - before) / CLK_TCK * 1e6 / max(run["requests"], 1)
                        run["rss"] = rss_mb(p.pid)
                        if name == "Roost (access log)":
                            run["errors"] += check_access_log(access_log_path, run["requests"])
                        results.setdefault((name, conns), []).append(run)
                        print(f"bench: round {r + 1} {name:28} c={conns:<2} {run['rps']:9.0f} req/s "
                              f"p99 {run['p99']:.2f} ms errors {run['errors']}", flush=True)
            for port, p in proxies.values():
                stop(p)  # the counting runs below get the CPU to themselves
        insn, allocs = instructions_phase(tmp, backends, nginx, haproxy, args, filled, access_log_path)
        idle = {} if args.no_idle else idle_phase(tmp, backends, nginx, haproxy, args, filled,
                                                   access_log_path)
        transfers = {} if args.no_xfer else xfer_phase(tmp, nginx, haproxy, args, filled,
                                                       access_log_path)
        transfers_mtu = {} if args.no_xfer or not args.xfer_mtu else \
            xfer_at_mtu(args, args.xfer_mtu)
    except (measure.MeasureError, xfer.XferError) as e:
        sys.exit(f"bench: {e}")
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name, conns, key):
        return statistics.median(r[key] for r in results[(name, conns)])

    timed = "counted columns only" if args.counted_only else \
        f"{args.rounds} rounds x {args.seconds} s, wrk -t1"
    bare = f", bare Pingora: `{args.bare_flags}`" if args.bare_flags else ""
    lines = [f"# Roost benchmark ({timed}, 1 worker each, Roost server: `{args.roost_server}`{bare})",
             ""]
    if not args.counted_only:
        lines += wrk_table(proxies, med, filled, table)
    lines += counted_table(args, insn, allocs, idle)
    if transfers:
        lines += xfer_table(args, transfers)
    if transfers_mtu:
        lines += xfer_table(args, transfers_mtu,
                            f"a loopback with MTU {args.xfer_mtu:,} (a network namespace "
                            f"of its own)")
    lines.append("")
    report(lines, results, args.out)


def report(lines, results, out):
    """Print `lines` with the error count of every wrk run in `results`, write them to `out`,
    and fail the run when any request failed."""
    errors = sum(r["errors"] for runs in results.values() for r in runs)
    lines.append(f"- errors (non-2xx + socket) over all runs: {errors}")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    if errors:
        sys.exit("bench: some requests failed")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
