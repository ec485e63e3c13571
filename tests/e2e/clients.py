"""The two WPS clients our users run, used the way doc/wps-clients.md shows: OWSLib and birdy,
with the ``machineid`` header set on the client so every request of a session carries it."""

import time

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
