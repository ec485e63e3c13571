"""The two WPS clients our users run, used the way doc/wps-clients.md shows: OWSLib and birdy,
with the ``machineid`` header set on the client so every request of a session carries it."""

import contextlib
import random
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import requests
import requests.adapters
from birdy import WPSClient
from owslib.wps import ASYNC, SYNC, WebProcessingService

POLL_SECONDS = 0.25
JOB_TIMEOUT = 60


def owslib(url, key):
    """OWSLib: headers go to every request the service object makes (GetCapabilities,
    DescribeProcess, Execute, status polls, output downloads)."""
    return WebProcessingService(url, headers={"machineid": key})


def birdy(url, key, progress=False):
    """birdy: ``headers`` is handed to OWSLib. ``progress=True`` runs processes asynchronously
    and polls their status until they finish."""
    return WPSClient(url, headers={"machineid": key}, progress=progress)


def literal(execution, identifier):
    for output in execution.processOutputs:
        if output.identifier == identifier:
            return output.data[0]
    raise KeyError(f"no output {identifier}: {[o.identifier for o in execution.processOutputs]}")


def reference(execution, identifier):
    for output in execution.processOutputs:
        if output.identifier == identifier:
            return output
    raise KeyError(identifier)


def error_text(execution):
    return "; ".join(e.text for e in execution.errors) if execution.errors else execution.statusMessage


def owslib_execute(wps, identifier, inputs, outputs, mode=SYNC):
    execution = wps.execute(identifier, inputs=inputs, output=outputs, mode=mode)
    return execution


def owslib_wait(executions, timeout=JOB_TIMEOUT):
    """Poll the status documents (through Roost, with each client's headers) until every job
    is done; returns the statuses each poll saw, per job. OWSLib ignores a failed poll (it
    logs and keeps the old status), so callers check Roost's access log for failures."""
    deadline = time.monotonic() + timeout
    seen = [[] for _ in executions]
    while not all(e.isComplete() for e in executions):
        assert time.monotonic() < deadline, f"jobs not done after {timeout}s"
        for execution, statuses in zip(executions, seen):
            if not execution.isComplete():
                execution.checkStatus(sleepSecs=0)
                statuses.append(execution.status)
        time.sleep(POLL_SECONDS)
    return seen


def fetch_then_subset_owslib(url, key):
    """fetch → subset → download the subset, all with `key`. Returns (fetch server, subset
    server, downloaded text)."""
    wps = owslib(url, key)
    fetched = wps.execute("fetch", inputs=[("dataset", f"tas-{key}")],
                          output=[("key", False), ("server", False)], mode=SYNC)
    assert fetched.isSucceded(), error_text(fetched)
    subset = wps.execute("subset", inputs=[("key", literal(fetched, "key")), ("end", "5")],
                         output=[("output", True), ("server", False)], mode=SYNC)
    assert subset.isSucceded(), error_text(subset)
    text = reference(subset, "output").retrieveData(headers=wps.headers).decode()
    return literal(fetched, "server"), literal(subset, "server"), text


def fetch_then_subset_birdy(url, key):
    """The same with birdy: ``get(asobj=True)`` downloads the output file (without the
    header: birdy does not pass it on, so this relies on ``wps_affinity``)."""
    wps = birdy(url, key)
    cache_key, fetch_server = wps.fetch(dataset=f"tas-{key}").get()
    output, subset_server = wps.subset(key=cache_key, end=5).get(asobj=True)
    return fetch_server, subset_server, output


class Instances:
    """Several Roost instances behind one name, as clients see them behind a floating address
    (keepalived) or a DNS name with one record per instance: every HTTP request the WPS
    clients make (OWSLib and birdy send theirs through ``requests``) goes to one instance,
    whichever instance its URL names: chosen at random per request, from a generator seeded
    by the request's machineid (so each session's choices are the same on every run, however
    the threads interleave), or always `only(i)` within a ``with``. ``sent`` records
    (instance, machineid, method, path) per request. `install(monkeypatch)` puts it in
    front of ``requests`` for one test."""

    def __init__(self, sites, seed):
        self.sites = sites
        self.seed = seed
        self.services = {port: name for site in sites for name, port in site.ports.items()
                         if name != "admin"}
        self.lock = threading.Lock()
        self.rngs = {}
        self.pinned = threading.local()
        self.sent = []

    def install(self, monkeypatch):
        send = requests.adapters.HTTPAdapter.send
        front = self

        def routed(adapter, request, **kwargs):
            request.url = front.rewrite(request.url, request.headers.get("machineid"),
                                        request.method)
            return send(adapter, request, **kwargs)

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", routed)

    @contextlib.contextmanager
    def only(self, instance):
        """Every request of this thread goes to `instance` meanwhile."""
        self.pinned.instance = instance
        try:
            yield
        finally:
            self.pinned.instance = None

    def rewrite(self, url, machineid, method):
        parts = urlsplit(url)
        service = self.services.get(parts.port) if parts.hostname == "127.0.0.1" else None
        if service is None:
            return url
        with self.lock:
            instance = getattr(self.pinned, "instance", None)
            if instance is None:
                rng = self.rngs.setdefault(machineid, random.Random(f"{self.seed}:{machineid}"))
                instance = rng.randrange(len(self.sites))
            self.sent.append((instance, machineid, method, parts.path))
        port = self.sites[instance].ports[service]
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))

    def of(self, machineid):
        """(instance, method, path) of every request sent with `machineid`, in order."""
        with self.lock:
            return [(i, m, p) for i, k, m, p in self.sent if k == machineid]
