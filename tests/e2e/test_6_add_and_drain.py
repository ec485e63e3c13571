"""Scenario 6: the operator's day. Sessions have fetched their data (a file in the cache of
the machine that ran the fetch); then a 4th machine joins (``roost reload``) and machine 2 is
drained (``roost backend drain``). Every session's subset still finds its file, on the machine
that fetched it, machine 2 included; new sessions never reach machine 2 and some reach the new
machine; machine 2 is reported "drained: safe to stop" once its sessions are quiet; ``maint``
then takes it out."""

from concurrent.futures import ThreadPoolExecutor

from owslib.wps import SYNC

import clients
from harness import http_get, wait_until

SERVICE = "flyingpigeon"


def fetch(url, key):
    wps = clients.owslib(url, key)
    fetched = wps.execute("fetch", inputs=[("dataset", f"tas-{key}")],
                          output=[("key", False), ("server", False)], mode=SYNC)
    assert fetched.isSucceded(), clients.error_text(fetched)
    return clients.literal(fetched, "key"), clients.literal(fetched, "server")


def subset(url, key, cache_key):
    wps = clients.owslib(url, key)
    result = wps.execute("subset", inputs=[("key", cache_key), ("end", "3")],
                         output=[("output", True), ("server", False)], mode=SYNC)
    assert result.isSucceded(), (key, clients.error_text(result))
    text = clients.reference(result, "output").retrieveData(headers=wps.headers).decode()
    return clients.literal(result, "server"), text


def test_add_a_machine_and_drain_another_without_breaking_a_session(fresh_site):
    site = fresh_site
    url = site.url(SERVICE)
    keys = [f"day-{i}" for i in range(36)]
    with ThreadPoolExecutor(4) as pool:
        fetched = dict(zip(keys, pool.map(lambda k: fetch(url, k), keys)))
    on_2 = [k for k, (_, server) in fetched.items() if server == f"{SERVICE}-2"]
    assert on_2, fetched

    site.add_machine(4)
    out = site.backend_action("drain", SERVICE, 2)
    assert "ready -> drain" in out, out
    assert site.backend_status(SERVICE, 2)["state"] == "drain"

    # Every session's subset reads the file its fetch wrote, where it wrote it.
    with ThreadPoolExecutor(4) as pool:
        done = dict(zip(keys, pool.map(lambda k: subset(url, k, fetched[k][0]), keys)))
    for key, (server, text) in done.items():
        assert server == fetched[key][1], (key, server, fetched[key][1])
        assert text.splitlines()[0] == f"server={server}", (key, text)

    # New sessions: never the draining machine; the new one takes its share.
    fresh = [f"new-{i}" for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        ran = list(pool.map(lambda k: clients.fetch_then_subset_owslib(url, k), fresh))
    servers = [fetch_server for fetch_server, subset_server, _ in ran]
    assert all(f == s for f, s, _ in ran), ran
    assert f"{SERVICE}-2" not in servers, servers
    assert f"{SERVICE}-4" in servers, servers

    # Quiet now: machine 2 is safe to stop. Maintenance then moves its sessions (counted).
    wait_until("machine 2 drained", lambda: site.backend_status(SERVICE, 2)["drained"], timeout=30)
    site.backend_action("maint", SERVICE, 2)
    moved_before = site.metric("roost_affinity_moves_total", service=SERVICE, reason="drained")
    for key in on_2:
        assert site.owner_name(SERVICE, key) != f"{SERVICE}-2", key
        status, _ = http_get(f"{url}?service=WPS&request=GetCapabilities", {"machineid": key})
        assert status == 200, key
    moved = site.metric("roost_affinity_moves_total", service=SERVICE, reason="drained") - moved_before
    assert moved == len(on_2), (moved, on_2)
