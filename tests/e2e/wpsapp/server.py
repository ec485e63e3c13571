"""Run one PyWPS server: ``python -m wpsapp.server --name fp-1 --dir DIR --url URL
--outputurl URL``. It binds a free loopback port and prints ``listening on 127.0.0.1:PORT``.

``/wps`` is the WPS endpoint; ``/outputs/`` serves this server's outputpath (status documents
and job outputs), like the NGINX in front of a birdhouse WPS. ``url`` and ``outputurl`` point
through Roost, so clients fetch status documents and outputs via the proxy.
"""

import argparse
import os
import signal
import sys
import threading
import time

from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.serving import make_server

from . import processes

CONFIG = """\
[server]
url = {url}
outputurl = {outputurl}
outputpath = {outputpath}
workdir = {workdir}
parallelprocesses = 8
maxprocesses = 30
cleantempdir = true

[processing]
mode = default

[logging]
level = INFO
file = {dir}/pywps.log
database = sqlite:///{dir}/pywps-jobs.sqlite
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--dir", required=True, help="this server's own directory")
    parser.add_argument("--url", required=True, help="WPS URL as clients see it (through Roost)")
    parser.add_argument("--outputurl", required=True, help="outputs URL as clients see it")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    directory = os.path.abspath(args.dir)
    outputpath = os.path.join(directory, "outputs")
    workdir = os.path.join(directory, "work")
    for d in (outputpath, workdir):
        os.makedirs(d, exist_ok=True)
    cfg = os.path.join(directory, "pywps.cfg")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(url=args.url, outputurl=args.outputurl, outputpath=outputpath,
                              workdir=workdir, dir=directory))
    processes.configure(args.name, os.path.join(directory, "cache"))

    # Imported after the processes module so that PyWPS reads our config, not a default one.
    from pywps import Service

    wps = Service(processes.processes(), [cfg])
    outputs = SharedDataMiddleware(not_found, {"/outputs": outputpath})

    # PyWPS keeps its jobs in SQLite and forks asynchronous jobs from the request thread. A
    # fork while another thread is inside an SQLite transaction leaves the child with lock
    # state it does not own ("database is locked"), so WPS requests take turns; status
    # documents and outputs (plain files) are served concurrently.
    wps_turn = threading.Lock()

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") == "/wps":
            with wps_turn:
                return wps(environ, start_response)
        return outputs(environ, start_response)

    server = make_server("127.0.0.1", args.port, app, threaded=True)
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    sys.stdout.close()
    server.serve_forever()


def exit_with_parent(parent):
    """The test run that started this server is gone (killed without cleaning up): take this
    server and its running jobs (our process group) down too, instead of lingering."""
    while os.getppid() == parent:
        time.sleep(1)
    os.killpg(0, signal.SIGKILL)


def not_found(environ, start_response):
    body = b"not found on this server\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


if __name__ == "__main__":
    main()
