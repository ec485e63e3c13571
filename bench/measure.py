"""Exact-count measurements for bench/run.py, apart from wrk's timed runs:

- `instructions`: a proxy's user-space instructions per request, counted by callgrind (the
  development VM has no hardware counters, and callgrind's count does not depend on how busy
  the machine is). The proxy runs under `valgrind --tool=callgrind`; keep-alive connections are
  opened and warmed up, the counters are zeroed (`callgrind_control -z`), an exact number of
  requests runs on the same connections, and the counters are dumped (`callgrind_control -d`):
  the dump holds the measured requests only, without start-up, connection set-up or warm-up.
- `idle_connection_bytes`: RSS grown per idle keep-alive client connection. N clients each send
  one request, read the answer and stay connected; the RSS difference over N is the cost of a
  connection that waits for its next request (what a site with many idle clients pays).

Both drive the proxy with the same request as wrk's script (GET / with one of 1,000
machineids) through a small asyncio client that reads each answer whole before the next.
"""

import asyncio
import glob
import os
import resource
import shutil
import subprocess
import time

IDS = [f"machine-{i:04d}-6f1c2a44".encode() for i in range(1, 1001)]


class MeasureError(Exception):
    """A column could not be measured: the run must fail, not print a blank."""


async def _request(reader, writer, port, k):
    """One keep-alive request; returns the status. The backends answer with Content-Length."""
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nmachineid: %s\r\n\r\n"
                 % (port, IDS[k % len(IDS)]))
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    i = lower.find(b"content-length:")
    if i < 0:
        raise MeasureError(f"answer without Content-Length: {head[:200]!r}")
    await reader.readexactly(int(lower[i + 15:lower.index(b"\r\n", i)]))
    return int(head[9:12])


async def _phase(conns, port, n, first):
    """`n` requests spread over the open connections, each connection one at a time."""
    left = [n]
    failed = [0]

    async def worker(rw):
        while left[0] > 0:
            left[0] -= 1
            k = first + left[0]
            if await _request(*rw, port, k) != 200:
                failed[0] += 1

    await asyncio.gather(*(worker(rw) for rw in conns))
    if failed[0]:
        raise MeasureError(f"{failed[0]} of {n} requests were not answered 200")


async def _keepalive_load(port, conns, warm, n, between, after):
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(conns)]
    try:
        await _phase(opened, port, warm, 0)
        between()
        await _phase(opened, port, n, warm)
        after()
    finally:
        for _, w in opened:
            w.close()


# The allocator's entry points: mimalloc's (Roost and bare Pingora use it as the global
# allocator) and libc's (NGINX and HAProxy, and any C code in the Rust binaries). A realloc
# counts as one allocation: it may move the block.
ALLOC_FNS = {"mi_malloc", "mi_zalloc", "mi_calloc", "mi_realloc", "mi_reallocf", "mi_malloc_aligned",
             "mi_zalloc_aligned", "mi_calloc_aligned", "mi_realloc_aligned", "mi_malloc_small",
             "mi_heap_malloc", "mi_heap_zalloc", "mi_heap_realloc", "malloc", "calloc", "realloc",
             "posix_memalign", "aligned_alloc", "memalign"}


def _is_allocator(fn):
    """A function inside an allocator: its calls to an entry point (mi_realloc growing a block
    by mi_malloc, ...) are part of one allocation, not another."""
    return fn.startswith(("mi_", "_mi_")) or fn in ALLOC_FNS


def _callgrind_counts(path):
    """The instruction count of one callgrind dump (`totals:`, or `summary:` in older ones) and
    the number of calls into an allocator entry point from outside the allocator: callgrind's
    call counts cover the same window as its instruction count, so no extra run is needed."""
    names = {}  # callgrind compresses names: "(id) name" once, "(id)" after

    def name(rest):
        rest = rest.strip()
        if rest.startswith("("):
            key, _, text = rest[1:].partition(")")
            text = text.strip()
            if text:
                names[key] = text
            return names.get(key, "?")
        return rest

    def bare(fn):
        return fn.split("'", 1)[0]  # "malloc'2": callgrind's mark of a recursion level

    total, allocs, caller, callee = None, 0, "", ""
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                caller = bare(name(line[3:]))
            elif line.startswith("cfn="):
                callee = bare(name(line[4:]))
            elif line.startswith("calls="):
                if callee in ALLOC_FNS and not _is_allocator(caller):
                    allocs += int(line[6:].split()[0])
            elif line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
    if total is None:
        raise MeasureError(f"{path}: no totals line")
    return total, allocs


def require_valgrind():
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise MeasureError(f"{tool} not found; run `make deps` (scripts/deps.sh installs valgrind)")


def callgrind_prefix(out_prefix):
    """The command prefix that runs a proxy under callgrind, its dumps named `out_prefix.N`."""
    for old in glob.glob(out_prefix + "*"):
        os.remove(old)
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_prefix}",
            "--dump-instr=no", "--vgdb=yes", "--fair-sched=try", "-q"]


def instructions(pid, port, out_prefix, conns, warm, n):
    """Instructions and allocations per request of the proxy listening on `port`, running under
    `callgrind_prefix(out_prefix)` as process `pid`: `conns` keep-alive connections, `warm`
    requests, counters zeroed, `n` requests counted."""

    def control(flag):
        done = subprocess.run(["callgrind_control", flag, str(pid)], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise MeasureError(f"callgrind_control {flag} {pid} failed: "
                               f"{(done.stdout + done.stderr).strip()[:300]}")

    asyncio.run(_keepalive_load(port, conns, warm, n, lambda: control("-z"), lambda: control("-d")))
    # The dump is written by the proxy's process: wait for the file, then for its totals.
    deadline = time.time() + 60
    while True:
        dumps = [p for p in glob.glob(out_prefix + ".*") if p[len(out_prefix) + 1:].isdigit()]
        if dumps:
            try:
                total, allocs = _callgrind_counts(max(dumps, key=lambda p: int(p.rsplit(".", 1)[1])))
                break
            except MeasureError:
                pass
        if time.time() > deadline:
            raise MeasureError(f"no callgrind dump at {out_prefix}.N")
        time.sleep(0.1)
    if total <= 0:
        raise MeasureError(f"callgrind counted {total} instructions")
    if allocs <= 0:
        # Every proxy measured here allocates per request (NGINX at least its request pool):
        # none counted means the entry points were not recognized (ALLOC_FNS out of date).
        raise MeasureError(f"no calls into the allocator in {out_prefix}: see ALLOC_FNS")
    return total / n, allocs / n


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise MeasureError(f"no VmRSS for {pid}")


def _settled_rss_kb(pid, limit=5.0):
    """RSS once it stopped moving (two reads 200 ms apart agree), or after `limit` seconds."""
    deadline = time.time() + limit
    last = rss_kb(pid)
    while time.time() < deadline:
        time.sleep(0.2)
        now = rss_kb(pid)
        if now == last:
            return now
        last = now
    return last


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise MeasureError(f"open-file limit {hard} < {needed} needed for the idle connections")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _hold(port, n, batch=50):
    """n connections, each after one answered request, left open."""
    conns = []

    async def one(k):
        rw = await asyncio.open_connection("127.0.0.1", port)
        conns.append(rw)
        if await _request(*rw, port, k) != 200:
            raise MeasureError("idle-connection request not answered 200")

    for s in range(0, n, batch):
        await asyncio.gather(*(one(k) for k in range(s, min(n, s + batch))))
    return conns


async def _idle(pid, port, n):
    warm = await _hold(port, 50)
    for _, w in warm:
        w.close()
    base = _settled_rss_kb(pid)
    conns = await _hold(port, n)
    try:
        held = _settled_rss_kb(pid)
        # Each connection must still be open and usable: a proxy that closed some would look
        # cheaper than it is.
        for s in range(0, n, 50):
            await asyncio.gather(*(_request(*conns[k], port, k) for k in range(s, min(n, s + 50))))
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        raise MeasureError(f"an idle connection was closed by the proxy: {e!r}")
    finally:
        for _, w in conns:
            w.close()
    return base, held


def idle_connection_bytes(pid, port, n):
    """RSS bytes per idle keep-alive connection; also returns the RSS before and with them."""
    base, held = asyncio.run(_idle(pid, port, n))
    return (held - base) * 1024 / n, base, held
