"""Scenario 3: a machine dies mid-run. Jobs of keys it does not own go on untouched: polls,
results, downloads, cached files. Its own keys fail over (the seed's `when_down: failover`),
where their earlier files are not: the reason stickiness matters."""

from owslib.wps import ASYNC, SYNC

import clients
from harness import http_get, wait_until

SERVICE = "flyingpigeon"


def fetch(wps, dataset):
    fetched = wps.execute("fetch", inputs=[("dataset", dataset)],
                          output=[("key", False), ("server", False)], mode=SYNC)
    assert fetched.isSucceded(), clients.error_text(fetched)
    return clients.literal(fetched, "key"), clients.literal(fetched, "server")


def subset(wps, cache_key):
    return wps.execute("subset", inputs=[("key", cache_key)],
                       output=[("output", True), ("server", False)], mode=SYNC)


def test_a_killed_machine_leaves_the_other_keys_jobs_alone(fresh_site):
    site = fresh_site
    url = site.url(SERVICE)
    keys = site.keys_by_owner(SERVICE, 2, prefix="kill")
    victim = sorted(keys)[1]
    cached = {}
    for owner, owned in keys.items():
        for key in owned:
            wps = clients.owslib(url, key)
            cache_key, server = fetch(wps, f"tasmax-{key}")
            assert server == owner
            cached[key] = (wps, cache_key)
    survivors = [(owner, key) for owner, owned in keys.items() if owner != victim for key in owned]
    jobs = []
    for owner, key in survivors:
        wps = cached[key][0]
        execution = wps.execute("sleep", inputs=[("seconds", "4"), ("steps", "4")],
                                output=[("output", True), ("server", False)], mode=ASYNC)
        jobs.append(execution)
    victim_key = keys[victim][0]
    victim_job = cached[victim_key][0].execute("sleep", inputs=[("seconds", "30")],
                                                output=[("output", True)], mode=ASYNC)

    # The machine goes away with its running job, while the others' jobs run.
    site.servers[victim].kill()
    victim_addr = site.servers[victim].addr
    wait_until("roost to see the machine down",
               lambda: not site.healthy()[(SERVICE, victim_addr)], timeout=15)

    seen = clients.owslib_wait(jobs)
    for (owner, key), execution, statuses in zip(survivors, jobs, seen):
        assert execution.isSucceded(), (key, clients.error_text(execution))
        assert clients.literal(execution, "server") == owner
        text = clients.reference(execution, "output").retrieveData(headers=cached[key][0].headers)
        assert text.decode().startswith(f"server={owner}\n")
        # The file fetched before the outage is still found, by OWSLib and by birdy.
        wps, cache_key = cached[key]
        result = subset(wps, cache_key)
        assert result.isSucceded(), clients.error_text(result)
        assert clients.literal(result, "server") == owner
        output, server = clients.birdy(url, key).subset(key=cache_key, end=3).get(asobj=True)
        assert server == owner and output.startswith(f"server={owner}\n")
    site.access_settled()
    for owner, key in survivors:
        entries = site.access(service=SERVICE, machineid=key)
        assert {site.backends(SERVICE)[e["backend"]] for e in entries} == {owner}, entries
        assert all(e["status"] == 200 for e in entries), entries

    for key in keys[victim]:
        route = site.route(SERVICE, key)
        assert route["role"] == "failover", route
        stand_in = site.backends(SERVICE)[route["backend"]]
        wps, old_cache_key = cached[key]
        # What was fetched on the dead machine is gone with it...
        lost = subset(wps, old_cache_key)
        assert not lost.isSucceded()
        assert f"is not in the cache of {stand_in}" in clients.error_text(lost)
        # ...but the key keeps working: fetch again, subset, on the stand-in.
        fetch_server, subset_server, _ = clients.fetch_then_subset_owslib(url, key)
        assert fetch_server == subset_server == stand_in

    # A keyless request for the dead machine's job: its backend is down, so hash.missing
    # decides (round robin to a machine that does not have it) and Roost counts it.
    unavailable = site.metric("roost_wps_affinity_total", service=SERVICE, event="unavailable")
    status, _ = http_get(victim_job.statusLocation)
    assert status == 404
    assert site.metric("roost_wps_affinity_total", service=SERVICE,
                       event="unavailable") == unavailable + 1
