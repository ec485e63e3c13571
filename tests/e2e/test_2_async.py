"""Scenario 2: asynchronous Execute, status polling until done, output download: all through
Roost (statusLocation and output URLs point at Roost), every request on the key's machine."""

from urllib.parse import urlparse

from owslib.wps import ASYNC

import clients


def assert_one_backend(site, service, key, owner):
    """Every request Roost logged for `key` went to `owner`, and got a success."""
    entries = site.access_eventually(1, service=service, machineid=key)
    backends = {site.backends(service)[e["backend"]] for e in entries}
    assert backends == {owner}, (key, entries)
    assert all(e["status"] == 200 for e in entries), entries
    return entries


def test_owslib_async_execute_poll_download(site, tmp_path):
    service = "flyingpigeon"
    keys = site.keys_by_owner(service, 2, prefix="async-owslib")
    jobs = []
    for owner, owned in keys.items():
        for key in owned:
            wps = clients.owslib(site.url(service), key)
            execution = wps.execute("sleep", inputs=[("seconds", "3"), ("steps", "3")],
                                    output=[("output", True), ("server", False)], mode=ASYNC)
            assert execution.statusLocation.startswith(site.base(service) + "/outputs/")
            jobs.append((owner, key, wps, execution))
    seen = clients.owslib_wait([execution for *_, execution in jobs])
    for (owner, key, wps, execution), statuses in zip(jobs, seen):
        assert "ProcessStarted" in statuses, statuses
        assert execution.isSucceded(), clients.error_text(execution)
        assert clients.literal(execution, "server") == owner
        # getOutput() downloads with the client's headers.
        path = tmp_path / f"{key}.txt"
        execution.getOutput(str(path), identifier="output")
        text = path.read_text()
        job = urlparse(execution.statusLocation).path.rsplit("/", 1)[1].removesuffix(".xml")
        assert text.splitlines() == [f"server={owner}", f"job={job}"]
        # The download is the client's last request: once it is logged, all are.
        site.access_eventually(1, service=service, machineid=key, path=f"/outputs/{job}/report.txt")
        entries = assert_one_backend(site, service, key, owner)
        paths = [e["path"] for e in entries]
        assert sum(p == f"/outputs/{job}.xml" for p in paths) == len(statuses)


def test_birdy_async_with_progress(site):
    """birdy with progress=True: asynchronous execution, polled by birdy itself (with the
    header); the output is downloaded by ``get(asobj=True)`` without it."""
    service = "emu"
    keys = site.keys_by_owner(service, 1, prefix="async-birdy")
    for owner, [key] in keys.items():
        routed = site.metric("roost_wps_affinity_total", service=service, event="routed")
        wps = clients.birdy(site.url(service), key, progress=True)
        result = wps.sleep(seconds=1.0, steps=2)
        assert result.isSucceded(), clients.error_text(result)
        report, server = result.get(asobj=True)
        assert server == owner
        assert report.splitlines()[0] == f"server={owner}"
        job = urlparse(result.statusLocation).path.rsplit("/", 1)[1].removesuffix(".xml")
        entries = assert_one_backend(site, service, key, owner)
        assert any(e["path"] == f"/outputs/{job}.xml" for e in entries), "birdy polled"
        downloads = site.access_eventually(1, service=service, machineid=None,
                                           path=f"/outputs/{job}/report.txt")
        assert [site.backends(service)[e["backend"]] for e in downloads] == [owner]
        # ...because wps_affinity knew the job, not by chance of the round robin.
        assert site.metric("roost_wps_affinity_total", service=service,
                           event="routed") == routed + 1
