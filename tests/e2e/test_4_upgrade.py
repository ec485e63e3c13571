"""Scenario 4: Roost is hot-upgraded (`roost upgrade`: a new `-u -d` process takes the
listeners, the old one drains) while asynchronous jobs run. Polls and downloads go on working,
on the same machines, with OWSLib (polling throughout) and birdy (polling every 3 s, then
downloading without the header)."""

import threading
import time
from urllib.parse import urlparse

from owslib.wps import ASYNC

import clients
from harness import pid_alive

JOB_SECONDS = "12"  # longer than an upgrade (5 s of Pingora's close timeout, then the drain)


def test_polls_and_downloads_survive_a_hot_upgrade(site):
    service = "flyingpigeon"
    keys = site.keys_by_owner(service, 2, prefix="upgrade")
    jobs = []
    for owner, owned in keys.items():
        for key in owned:
            wps = clients.owslib(site.url(service), key)
            execution = wps.execute("sleep", inputs=[("seconds", JOB_SECONDS), ("steps", "12")],
                                    output=[("output", True), ("server", False)], mode=ASYNC)
            jobs.append((owner, key, wps, execution))

    polled_at = []  # when each round of polls started
    outcome = {}

    def poll():
        executions = [execution for *_, execution in jobs]
        deadline = time.monotonic() + clients.JOB_TIMEOUT
        while not all(e.isComplete() for e in executions) and time.monotonic() < deadline:
            polled_at.append(time.monotonic())
            for e in executions:
                if not e.isComplete():
                    e.checkStatus(sleepSecs=0)
            time.sleep(clients.POLL_SECONDS)
        outcome["downloads"] = [
            clients.reference(execution, "output").retrieveData(headers=wps.headers).decode()
            if execution.isSucceded() else None
            for _, _, wps, execution in jobs
        ]

    def upgrade():
        time.sleep(1.5)
        outcome["upgrade_started"] = time.monotonic()
        outcome["pids"] = site.upgrade()
        outcome["upgrade_done"] = time.monotonic()

    threads = [threading.Thread(target=poll), threading.Thread(target=upgrade)]
    for t in threads:
        t.start()
    # birdy polls from the main thread (it installs a SIGINT handler) while the upgrade runs.
    birdy_service = "emu"
    birdy_keys = site.keys_by_owner(birdy_service, 1, prefix="upgrade-birdy")
    birdy_owner, [birdy_key] = next(iter(birdy_keys.items()))
    result = clients.birdy(site.url(birdy_service), birdy_key, progress=True).sleep(
        seconds=float(JOB_SECONDS), steps=4)
    birdy_report, birdy_server = result.get(asobj=True)
    for t in threads:
        t.join(timeout=clients.JOB_TIMEOUT + 30)
        assert not t.is_alive()

    site.access_settled()
    old, new = outcome["pids"]
    assert old != new and not pid_alive(old)
    started, done = outcome["upgrade_started"], outcome["upgrade_done"]
    assert any(t < started for t in polled_at) and any(t > done for t in polled_at), \
        "the polls should span the upgrade"
    for (owner, key, _, execution), text in zip(jobs, outcome["downloads"]):
        assert execution.isSucceded(), (key, clients.error_text(execution))
        job = urlparse(execution.statusLocation).path.rsplit("/", 1)[1].removesuffix(".xml")
        assert text.splitlines() == [f"server={owner}", f"job={job}"]
        entries = site.access(service=service, machineid=key)
        assert all(e["status"] == 200 for e in entries), entries
        assert {site.backends(service)[e["backend"]] for e in entries} == {owner}

    assert result.isSucceded() and birdy_server == birdy_owner
    assert birdy_report.startswith(f"server={birdy_owner}\n")
    birdy_entries = site.access(service=birdy_service, machineid=birdy_key)
    assert all(e["status"] == 200 for e in birdy_entries), birdy_entries
    assert {site.backends(birdy_service)[e["backend"]] for e in birdy_entries} == {birdy_owner}
    # The new process had learned the job again from birdy's polls (its table starts empty),
    # and routed the keyless download by it.
    download = site.access(service=birdy_service, machineid=None,
                           path=urlparse(clients.reference(result, "output").reference).path)
    assert [site.backends(birdy_service)[e["backend"]] for e in download] == [birdy_owner]
    assert site.metric("roost_wps_affinity_total", service=birdy_service, event="routed") >= 1
