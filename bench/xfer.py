"""Large transfers through one proxy, for bench/run.py's large-transfer rows: a download of
`size` bytes (GET /bytes/N, sent by the backend with sendfile) and an upload (POST of a file
with Content-Length), each by curl, one at a time, with bench/xfer_backend.py behind the proxy.

Per transfer: MB/s as the client saw it (bytes over curl's total time), the proxy's CPU time
(user + system, all threads, from /proc/PID/stat before and after) per 10^9 bytes, and for an
upload when the backend saw the request head, against the client's whole upload time: a proxy
that streams passes the head on at once, one that buffers it only after the last byte.
"""

import json
import os
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
MACHINEID = "machine-0001-6f1c2a44"


class XferError(Exception):
    """A transfer failed or could not be measured: the run must fail, not print a blank."""


def sparse_file(path, size):
    """A file of `size` zero bytes that takes no disk space and reads without disk I/O."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads, dead ones too


def _curl(args, out="/dev/null"):
    done = subprocess.run(
        ["curl", "-sS", "-o", out, "-H", f"machineid: {MACHINEID}",
         "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}", *args],
        capture_output=True, text=True, timeout=600)
    try:
        code, down, up, total = done.stdout.split()
    except ValueError:
        raise XferError(f"curl: {done.stderr.strip()[:300]}")
    return int(code), int(float(down)), int(float(up)), float(total)


def _cpu_s_per_gb(pid, before, nbytes):
    ticks = cpu_ticks(pid) - before
    if ticks <= 0:
        # Below the clock tick (10 ms): a size too small to measure, not a free transfer.
        raise XferError(f"proxy CPU time of a {nbytes >> 20} MiB transfer below one clock tick")
    return ticks / CLK_TCK / (nbytes / 1e9)


def download(pid, port, size):
    """One download of `size` bytes through the proxy `pid` on `port`."""
    before = cpu_ticks(pid)
    code, got, _, total = _curl([f"http://127.0.0.1:{port}/bytes/{size}"])
    if code != 200 or got != size:
        raise XferError(f"download: status {code}, {got} of {size} bytes")
    return {"mbps": size / total / 1e6, "cpu_s_per_gb": _cpu_s_per_gb(pid, before, size)}


def upload(pid, port, path, answer):
    """One upload of the file at `path` through the proxy `pid` on `port`; `answer` is a
    scratch file for the backend's timing line."""
    size = os.path.getsize(path)
    before = cpu_ticks(pid)
    start = time.time()
    # No `Expect: 100-continue`: the body follows the head at once, as most clients send it.
    code, _, sent, total = _curl(["-T", path, "-X", "POST", "-H", "Expect:",
                                  f"http://127.0.0.1:{port}/upload"], out=answer)
    cpu = _cpu_s_per_gb(pid, before, size)
    if code != 200 or sent != size:
        raise XferError(f"upload: status {code}, {sent} of {size} bytes sent")
    with open(answer) as f:
        seen = json.load(f)
    if seen["bytes"] != size:
        raise XferError(f"upload: the backend got {seen['bytes']} of {size} bytes")
    return {"mbps": size / total / 1e6, "cpu_s_per_gb": cpu,
            "head_after_s": seen["head"] - start, "client_s": total}


def streamed(run):
    """An upload is streamed when the backend saw its head within the first half of the
    client's upload time (streaming proxies: a few ms; buffering ones: after the last byte)."""
    return run["head_after_s"] < run["client_s"] / 2
