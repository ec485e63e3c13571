#!/usr/bin/env python3
"""Backend of the large-transfer rows (bench/xfer.py): HTTP/1.1 keep-alive on one or more
loopback ports, a thread per connection.

- `GET /bytes/N`: N bytes, sent with sendfile(2) from FILE (a sparse file: zeros, no disk
  I/O), so that the source costs next to nothing and the proxy's work is what the row shows.
- `POST` (Content-Length or chunked): the whole body is read, then the answer is a line of
  JSON: `{"head": T, "last": T, "bytes": N}`, the epoch seconds at which the request head
  arrived and at which the body's last byte did. A proxy that streams the upload passes the
  head on at once; one that buffers it passes it on only after the client's last byte.

    xfer_backend.py FILE PORT [PORT...]
"""

import json
import os
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def read_head(conn, pending):
    """The request head and the bytes after it, or (None, b"") when the client closed."""
    while b"\r\n\r\n" not in pending:
        data = conn.recv(65536)
        if not data:
            return None, b""
        pending += data
    head, rest = pending.split(b"\r\n\r\n", 1)
    return head, rest


def header(head, name):
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def read_fixed(conn, buf, pending, n):
    """Reads a body of n bytes (of which `pending` already arrived); returns what follows it."""
    if len(pending) >= n:
        return pending[n:]
    left = n - len(pending)
    while left > 0:
        got = conn.recv_into(buf, min(left, len(buf)))
        if not got:
            raise ConnectionError("client closed inside the body")
        left -= got
    return b""


def read_chunked(conn, pending):
    """Reads a chunked body; returns (body bytes, what follows it)."""
    total = 0
    while True:
        while b"\r\n" not in pending:
            data = conn.recv(CHUNK)
            if not data:
                raise ConnectionError("client closed inside the body")
            pending += data
        line, pending = pending.split(b"\r\n", 1)
        size = int(line.split(b";")[0], 16)
        while len(pending) < size + 2:
            data = conn.recv(CHUNK)
            if not data:
                raise ConnectionError("client closed inside the body")
            pending += data
        pending = pending[size + 2:]
        total += size
        if size == 0:  # no trailers from the proxies measured here
            return total, pending


def serve(conn, source):
    buf = memoryview(bytearray(CHUNK))
    pending = b""
    with conn:
        while True:
            head, pending = read_head(conn, pending)
            if head is None:
                return
            t_head = time.time()
            method, path = head.split(b" ", 2)[:2]
            if method == b"GET" and path.startswith(b"/bytes/"):
                n = int(path[len(b"/bytes/"):])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                sent = 0
                while sent < n:
                    sent += os.sendfile(conn.fileno(), source, sent, n - sent)
                continue
            length = header(head, b"content-length")
            if length is not None:
                n = int(length)
                pending = read_fixed(conn, buf, pending, n)
            elif (header(head, b"transfer-encoding") or b"").lower() == b"chunked":
                n, pending = read_chunked(conn, pending)
            else:
                n = 0
            body = json.dumps({"head": t_head, "last": time.time(), "bytes": n}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def listen(port, source):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, source), daemon=True).start()


def main():
    source = os.open(sys.argv[1], os.O_RDONLY)
    ports = [int(p) for p in sys.argv[2:]]
    for port in ports[1:]:
        threading.Thread(target=listen, args=(port, source), daemon=True).start()
    listen(ports[0], source)


if __name__ == "__main__":
    main()
