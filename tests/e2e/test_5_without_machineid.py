"""Scenario 5: requests without the machineid header. birdy downloads outputs with a plain
GET, and a status URL pasted into a browser or curl has no header either.

Without `wps_affinity` (malleefowl here), `hash.missing` decides: round robin spreads such
requests over all machines and only the one that ran the job has the file. With it
(flyingpigeon, emu), Roost has learned from the Execute response (statusLocation, or the
output reference of a synchronous job) which machine ran the job, and sends them there."""

from urllib.parse import urlparse

from owslib.wps import ASYNC

import clients
from harness import http_get

REQUESTS = 6  # two rounds of round robin over three machines


def finished_job(site, service, key, mode=ASYNC):
    wps = clients.owslib(site.url(service), key)
    if mode == ASYNC:
        execution = wps.execute("sleep", inputs=[("seconds", "0.5"), ("steps", "1")],
                                output=[("output", True), ("server", False)], mode=ASYNC)
        clients.owslib_wait([execution])
    else:
        fetched = wps.execute("fetch", inputs=[("dataset", "uas")], output=[("key", False)], mode=mode)
        execution = wps.execute("subset", inputs=[("key", clients.literal(fetched, "key"))],
                                output=[("output", True), ("server", False)], mode=mode)
    assert execution.isSucceded(), clients.error_text(execution)
    return execution


def via(site, service, url):
    """`url` (pointing at Roost's flyingpigeon listener) through another Roost service."""
    parts = urlparse(url)
    return parts._replace(netloc=f"127.0.0.1:{site.ports[service]}").geturl()


def test_with_wps_affinity_keyless_polls_and_downloads_reach_the_job(site):
    service = "flyingpigeon"
    for owner, [key] in site.keys_by_owner(service, 1, prefix="keyless").items():
        execution = finished_job(site, service, key)
        output = clients.reference(execution, "output").reference
        routed = site.metric("roost_wps_affinity_total", service=service, event="routed")
        for _ in range(REQUESTS):
            status, body = http_get(execution.statusLocation)
            assert status == 200 and b"ProcessSucceeded" in body, (status, body)
            status, body = http_get(output)
            assert status == 200 and body.decode().startswith(f"server={owner}\n"), (status, body)
        assert site.metric("roost_wps_affinity_total", service=service,
                           event="routed") == routed + 2 * REQUESTS
        for url in (execution.statusLocation, output):
            entries = site.access_eventually(REQUESTS, service=service, machineid=None,
                                             path=urlparse(url).path)
            assert {site.backends(service)[e["backend"]] for e in entries} == {owner}


def test_with_wps_affinity_a_synchronous_job_is_known_by_its_output(site):
    service = "flyingpigeon"
    for owner, [key] in site.keys_by_owner(service, 1, prefix="keyless-sync").items():
        execution = finished_job(site, service, key, mode="sync")
        assert clients.literal(execution, "server") == owner
        output = clients.reference(execution, "output").reference
        for _ in range(REQUESTS):
            status, body = http_get(output)
            assert status == 200 and body.decode().startswith(f"server={owner}\n"), (status, body)


def test_without_wps_affinity_hash_missing_decides(site):
    """malleefowl fronts the same machines, wps_affinity off, `missing: round_robin`: only
    the requests that happen to reach the job's machine find its files."""
    [key] = site.keys_by_owner("flyingpigeon", 1, prefix="no-affinity")["flyingpigeon-1"]
    execution = finished_job(site, "flyingpigeon", key)
    status_url = via(site, "malleefowl", execution.statusLocation)
    statuses = [http_get(status_url)[0] for _ in range(REQUESTS)]
    assert sorted(statuses) == [200] * (REQUESTS // 3) + [404] * (REQUESTS * 2 // 3), statuses
    # With the header, the same URL through the same service always works.
    assert {http_get(status_url, headers={"machineid": key})[0] for _ in range(REQUESTS)} == {200}


def test_a_keyless_request_for_an_unknown_job_goes_by_hash_missing(site):
    """No false affinity: a job id Roost never saw is spread like any keyless request."""
    unknown = "/outputs/00000000-1111-2222-3333-444444444444.xml"
    before = len(site.access(service="flyingpigeon", path=unknown))
    for _ in range(REQUESTS):
        assert http_get(site.base("flyingpigeon") + unknown)[0] == 404
    entries = site.access_eventually(before + REQUESTS, service="flyingpigeon", path=unknown)
    assert len({e["backend"] for e in entries[before:]}) == 3
