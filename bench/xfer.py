"""Large transfers through one proxy, for bench/run.py's large-transfer rows: a download of
`size` bytes (GET /bytes/N, sent by the backend with sendfile) by curl, and an upload (a POST
with Content-Length) by a small client here that knows when it sent its last byte; one at a
time, with bench/xfer_backend.py behind the proxy.

Per transfer: MB/s as the client saw it (bytes over curl's total time), the proxy's CPU time
(user + system, all threads, from /proc/PID/stat before and after) per 10^9 bytes, and for an
upload when the backend saw the request head, against when the client had sent the body: a
proxy that streams passes the head on at once, one that buffers it only after the last byte.
"""

import json
import os
import socket
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


def _curl(args):
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", f"machineid: {MACHINEID}",
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


def _post(port, size):
    """POSTs `size` zero bytes (Content-Length, no `Expect: 100-continue`: the body follows the
    head at once, as most clients send it); returns (status, answer body, seconds until the
    last byte was handed to the kernel, seconds until the answer was read), from the start."""
    zeros = memoryview(bytes(1 << 20))
    start = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nmachineid: %s\r\n"
                  b"Content-Length: %d\r\n\r\n" % (port, MACHINEID.encode(), size))
        left = size
        while left > 0:
            n = min(left, len(zeros))
            s.sendall(zeros[:n])
            left -= n
        sent = time.time() - start
        f = s.makefile("rb")
        status = int(f.readline().split()[1])
        length = 0
        while (line := f.readline()) not in (b"\r\n", b""):
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value)
        answer = f.read(length)
    return status, answer, sent, time.time() - start


def upload(pid, port, size):
    """One upload of `size` bytes through the proxy `pid` on `port`."""
    before = cpu_ticks(pid)
    start = time.time()
    status, answer, sent, total = _post(port, size)
    cpu = _cpu_s_per_gb(pid, before, size)
    if status != 200:
        raise XferError(f"upload: status {status}: {answer[:200]!r}")
    seen = json.loads(answer)
    if seen["bytes"] != size:
        raise XferError(f"upload: the backend got {seen['bytes']} of {size} bytes")
    return {"mbps": size / total / 1e6, "cpu_s_per_gb": cpu,
            "head_after_s": seen["head"] - start, "sent_s": sent}


def streamed(run):
    """An upload is streamed when the backend saw its head before the client had sent its
    last byte: a proxy that buffers the body can pass the head on only after that."""
    return run["head_after_s"] < run["sent_s"]
