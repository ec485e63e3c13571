#!/usr/bin/env python3
"""Bounded request loop for the hot-swap checks.

Until STOPFILE exists (or --seconds pass, at most --max-seconds), a few clients send requests to
HOST:PORT... -- half on keep-alive connections, half on a new connection per request, GETs and
small POSTs, each with a machineid header. Prints one JSON line: ok, failed, the first failure
texts and which X-Backend answered.

  loadloop.py --ports 18193,18191 [--host 127.0.0.1] [--stopfile F] [--seconds N] [--clients 4]
"""
import argparse
import http.client
import json
import os
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--ports", required=True)
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--stopfile", default="")
p.add_argument("--seconds", type=float, default=0)
p.add_argument("--max-seconds", type=float, default=600)
p.add_argument("--clients", type=int, default=4)
p.add_argument("--pause", type=float, default=0.005)
a = p.parse_args()
ports = [int(x) for x in a.ports.split(",")]
start = time.time()
lock = threading.Lock()
stats = {"ok": 0, "failed": 0, "errors": [], "backends": {}}


def done():
    if a.stopfile and os.path.exists(a.stopfile):
        return True
    elapsed = time.time() - start
    return (a.seconds and elapsed > a.seconds) or elapsed > a.max_seconds


def client(i):
    keepalive = i % 2 == 0
    conn = None
    n = 0
    while not done():
        port = ports[n % len(ports)]
        body = b"x" * 2048 if n % 5 == 0 else None
        try:
            if conn is None or not keepalive or conn.port != port:
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection(a.host, port, timeout=10)
            conn.request("POST" if body else "GET", "/wps?service=WPS&request=GetCapabilities",
                         body=body, headers={"machineid": f"client{i}-key{n % 17}"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200 or not data:
                raise RuntimeError(f"status {r.status} body {data[:80]!r}")
            if not keepalive or r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
            with lock:
                stats["ok"] += 1
                b = r.getheader("x-backend", "?")
                stats["backends"][b] = stats["backends"].get(b, 0) + 1
        except Exception as e:  # every failure counts
            with lock:
                stats["failed"] += 1
                if len(stats["errors"]) < 10:
                    stats["errors"].append(f"{time.strftime('%H:%M:%S')} port {port} "
                                           f"{'keepalive' if keepalive else 'new-conn'}: "
                                           f"{type(e).__name__}: {e}")
            if conn is not None:
                conn.close()
            conn = None
        n += 1
        time.sleep(a.pause)


threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(stats))
