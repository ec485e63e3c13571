"""Scenario 1: fetch writes a file into the server-local cache, subset reads it by key. With
the same machineid both land on the same machine, for 50 machineids spread over all three."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from owslib.wps import SYNC

import clients

KEYS = [f"machine-{i}" for i in range(50)]
RUN = {"owslib": clients.fetch_then_subset_owslib, "birdy": clients.fetch_then_subset_birdy}


@pytest.mark.parametrize("client, service", [("owslib", "flyingpigeon"), ("birdy", "emu")])
def test_fetch_then_subset_with_the_same_machineid(site, client, service):
    url = site.url(service)
    routed_before = site.metric("roost_wps_affinity_total", service=service, event="routed")
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(KEYS, pool.map(lambda k: RUN[client](url, k), KEYS)))
    ran_on = set()
    for key, (fetch_server, subset_server, text) in results.items():
        owner = site.owner_name(service, key)
        assert fetch_server == subset_server == owner, (key, fetch_server, subset_server, owner)
        lines = text.splitlines()
        # The output file was downloaded through Roost from the machine that wrote it.
        assert lines[0] == f"server={owner}", (key, text)
        assert lines[1:] == [f"{i},tas-{key},{i * i}" for i in range(5)], (key, text)
        ran_on.add(owner)
    assert ran_on == set(site.backends(service).values())
    if client == "birdy":
        # birdy downloaded each output without the header; wps_affinity sent it to the machine
        # that ran the job (learned from the synchronous Execute response's output reference).
        routed = site.metric("roost_wps_affinity_total", service=service, event="routed")
        assert routed - routed_before >= len(KEYS)
        keyless = [e for e in site.access(service=service, machineid=None)
                   if e["path"].startswith("/outputs/")]
        assert len(keyless) >= len(KEYS) and all(e["status"] == 200 for e in keyless), keyless


def test_subset_fails_on_a_machine_without_the_file(site):
    """The property Roost exists for, shown directly: the same subset sent with another
    machineid (owned by another backend) fails, because that machine has no such file."""
    service = "flyingpigeon"
    keys = site.keys_by_owner(service, 1, prefix="cache-probe")
    (first, [key_a]), (_, [key_b]) = list(keys.items())[:2]
    wps_a = clients.owslib(site.url(service), key_a)
    fetched = wps_a.execute("fetch", inputs=[("dataset", "pr")], output=[("key", False), ("server", False)], mode=SYNC)
    assert clients.literal(fetched, "server") == first
    wps_b = clients.owslib(site.url(service), key_b)
    subset = wps_b.execute("subset", inputs=[("key", clients.literal(fetched, "key"))],
                           output=[("output", True), ("server", False)], mode=SYNC)
    assert not subset.isSucceded()
    assert "is not in the cache of" in clients.error_text(subset)
