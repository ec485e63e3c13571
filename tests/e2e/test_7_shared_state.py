"""Scenario 7: two Roost instances in front of the same three machines, sharing their state
through one real ``redis-server`` (``state.redis``, doc/scaling-out.md), as behind keepalived or
a DNS name with one record per instance: each request of an OWSLib session goes to a random
instance (``clients.Instances``), and every fetch → subset and every asynchronous execute →
status polls → output download still happens on one machine.

Two identically configured instances hash a machineid to the same machine anyway, so to show
that the sessions hold *because* of the shared table, instance B's file gives machine 3 weight
2 (a config drift between the two hosts): their rings disagree on some keys, and the sessions
use those keys. Without sharing, a session whose fetch reaches A and whose subset reaches B
then breaks (the file is on A's machine, B sends the subset to its own), and a keyless status
poll or download (a browser, curl, birdy's download) reaching the instance that did not see
the job goes round robin: ``test_without_shared_state_the_instances_break_sessions`` shows
both on two instances without ``state``, with the same drift, on the same machines. With
sharing, whichever instance saw the key first decides, and both route it there.

A key reaches the other instance within the propagation delay (doc/scaling-out.md: ~10-20 ms
on loopback): only a request reaching the other instance within that time of the session's
first one, for a key the two rings disagree on, could miss it. Each session therefore waits,
after its first request (OWSLib's GetCapabilities), until both instances route its key the
same way, a condition on both instances' ``/route``, and checks that this happened in time.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
from owslib.wps import ASYNC, SYNC

import clients
from harness import Redis, Site, http_get, wait_until

SERVICE = "flyingpigeon"
# B's drift from A: machine 3 weighs twice as much in B's file.
DRIFT = {f"{SERVICE}-3": 2}
# Far above the measured propagation delay; a failure here is a failure of sharing.
AGREE_WITHIN = 2.0
SEED = 17


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("redis"))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory, redis):
    """Instances A (which starts the machines) and B (the drift), sharing through `redis`."""
    root = tmp_path_factory.mktemp("shared")
    sites = []
    try:
        sites.append(Site(root / "a", state=redis.state(), health_interval="1s"))
        sites.append(Site(root / "b", machines=sites[0], state=redis.state(), weights=DRIFT,
                          health_interval="1s"))
        for site in sites:
            wait_until("roost_shared_state_up", lambda: site.metric("roost_shared_state_up") == 1)
        yield sites
    finally:
        for site in reversed(sites):
            site.close()


@pytest.fixture
def front(pair, monkeypatch):
    f = clients.Instances(pair, SEED)
    f.install(monkeypatch)
    return f


def disagreeing_keys(sites, count, prefix):
    """`count` new keys that A's and B's rings send to different machines, with A's choice and
    B's (server names), read from each instance's ``/route``."""
    found = {}
    for i in range(10_000):
        key = f"{prefix}-{i}"
        routes = [site.route(SERVICE, key) for site in sites]
        assert not any(r["in_table"] for r in routes), (key, routes)
        owners = [sites[0].backends(SERVICE)[r["backend"]] for r in routes]
        if owners[0] != owners[1]:
            found[key] = owners
            if len(found) == count:
                return found
    raise AssertionError(f"only {len(found)} keys on which the rings disagree")


def agreed(sites, key):
    """The machine both instances send `key` to from their tables, once they agree."""
    routes = [site.route(SERVICE, key) for site in sites]
    backends = {r["table"]["backend"] if r["table"] else None for r in routes}
    if len(backends) == 1 and None not in backends:
        return sites[0].backends(SERVICE)[backends.pop()]
    return None


def start_session(front, key):
    """OWSLib's service object (its GetCapabilities is the session's first request, to a random
    instance); returns it once both instances agree on the key, the instance that saw the key
    first, and the seconds the agreement took from the first request's answer."""
    wps = clients.owslib(front.sites[0].url(SERVICE), key)
    answered = time.monotonic()
    owner = wait_until(f"both instances agreeing on {key}", lambda: agreed(front.sites, key),
                       timeout=10, every=0.005)
    waited = time.monotonic() - answered
    [(first, method, _), *_] = front.of(key)
    assert method == "GET", front.of(key)
    return wps, owner, first, waited


def execute_instances(front, key):
    """The instance of each Execute (a POST) of `key`'s session, in order."""
    return [i for i, method, _ in front.of(key) if method == "POST"]


def test_fetch_then_subset_with_requests_alternating_between_instances(pair, front):
    keys = disagreeing_keys(pair, 16, "shared-fetch")

    def session(key):
        wps, owner, first, waited = start_session(front, key)
        fetched = wps.execute("fetch", inputs=[("dataset", f"tas-{key}")],
                              output=[("key", False), ("server", False)], mode=SYNC)
        assert fetched.isSucceded(), (key, clients.error_text(fetched))
        subset = wps.execute("subset", inputs=[("key", clients.literal(fetched, "key")),
                                               ("end", "4")],
                             output=[("output", True), ("server", False)], mode=SYNC)
        assert subset.isSucceded(), (key, front.of(key), clients.error_text(subset))
        text = clients.reference(subset, "output").retrieveData(headers=wps.headers).decode()
        return (owner, first, waited, clients.literal(fetched, "server"),
                clients.literal(subset, "server"), text)

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(keys, pool.map(session, keys)))
    crossed = 0
    for key, (owner, first, waited, fetch_server, subset_server, text) in results.items():
        # The instance that saw the key first decided, by its own ring; both follow it.
        assert owner == keys[key][first], (key, owner, first, keys[key])
        assert waited < AGREE_WITHIN, (key, waited)
        assert fetch_server == subset_server == owner, (key, fetch_server, subset_server, owner)
        assert text.splitlines() == [f"server={owner}"] + [f"{i},tas-{key},{i * i}" for i in range(4)]
        for site in pair:
            assert site.owner_name(SERVICE, key) == owner, key
        fetch_via, subset_via = execute_instances(front, key)
        # Without sharing, this session's subset would have reached another machine.
        crossed += fetch_via != subset_via
    # The sessions did alternate: each instance served requests, and some sessions' fetch and
    # subset went through different instances (the seeded choices make this the same on
    # every run).
    assert {i for i, *_ in front.sent} == {0, 1}
    assert crossed >= 4, crossed
    for site in pair:
        assert site.metric("roost_shared_state_entries_total", service=SERVICE,
                           event="received") > 0
    # What each instance logged for these keys all went to the key's machine, and succeeded.
    for site in pair:
        site.access_settled()
        for key, (owner, *_) in results.items():
            for entry in site.access(service=SERVICE, machineid=key):
                assert site.backends(SERVICE)[entry["backend"]] == owner, (key, entry)
                assert entry["status"] == 200, entry


def test_async_execute_poll_download_with_requests_alternating_between_instances(
        pair, front, tmp_path):
    keys = disagreeing_keys(pair, 6, "shared-async")
    jobs = []
    for key in keys:
        wps, owner, first, waited = start_session(front, key)
        assert owner == keys[key][first], (key, owner, first)
        execution = wps.execute("sleep", inputs=[("seconds", "2"), ("steps", "2")],
                                output=[("output", True), ("server", False)], mode=ASYNC)
        assert execution.statusLocation, clients.error_text(execution)
        jobs.append((key, owner, execution))
    seen = clients.owslib_wait([execution for *_, execution in jobs])
    polled_by = set()
    for (key, owner, execution), statuses in zip(jobs, seen):
        assert execution.isSucceded(), (key, clients.error_text(execution))
        assert "ProcessStarted" in statuses or "ProcessAccepted" in statuses, statuses
        assert clients.literal(execution, "server") == owner
        path = tmp_path / f"{key}.txt"
        execution.getOutput(str(path), identifier="output")
        job = urlparse(execution.statusLocation).path.rsplit("/", 1)[1].removesuffix(".xml")
        assert path.read_text().splitlines() == [f"server={owner}", f"job={job}"]
        polls = [i for i, method, p in front.of(key) if p == f"/outputs/{job}.xml"]
        assert len(polls) == len(statuses), (polls, statuses)
        polled_by.update(polls)
        for site in pair:
            assert site.owner_name(SERVICE, key) == owner, key
    # The polls alternated between the instances.
    assert polled_by == {0, 1}, polled_by
    for site in pair:
        site.access_settled()
        for key, owner, _ in jobs:
            for entry in site.access(service=SERVICE, machineid=key):
                assert site.backends(SERVICE)[entry["backend"]] == owner, (key, entry)
                assert entry["status"] == 200, entry


def via(site, url):
    """`url` (naming some instance's flyingpigeon listener) through `site`'s."""
    return urlparse(url)._replace(netloc=f"127.0.0.1:{site.ports[SERVICE]}").geturl()


def job_through_a(front, key):
    """An asynchronous job whose every request (execute, polls) went through instance A."""
    with front.only(0):
        wps = clients.owslib(front.sites[0].url(SERVICE), key)
        execution = wps.execute("sleep", inputs=[("seconds", "0.5"), ("steps", "1")],
                                output=[("output", True), ("server", False)], mode=ASYNC)
        clients.owslib_wait([execution])
    assert execution.isSucceded(), clients.error_text(execution)
    assert {i for i, *_ in front.of(key)} == {0}
    return execution


def keyless(site, execution, times=6, status_documents=True):
    """(status, first line) of keyless GETs (no machineid: a browser, curl, birdy's download)
    through `site` of the job's output and, unless told not to, its status document, output
    first: a status document (XML) that reaches the job's machine teaches the instance the job
    by itself, an output (plain text) does not."""
    urls = [clients.reference(execution, "output").reference]
    if status_documents:
        urls.append(execution.statusLocation)
    answers = []
    for _ in range(times):
        for url in urls:
            status, body = http_get(via(site, url))
            answers.append((status, body.decode(errors="replace").split("\n", 1)[0]))
    return answers


def test_a_job_seen_by_one_instance_routes_the_other_ones_keyless_requests(pair, front):
    a, b = pair
    [key] = disagreeing_keys(pair, 1, "shared-job")
    execution = job_through_a(front, key)
    owner = clients.literal(execution, "server")
    routed = b.metric("roost_wps_affinity_total", service=SERVICE, event="routed")
    answers = keyless(b, execution)
    assert all(status == 200 for status, _ in answers), answers
    assert {line for _, line in answers[::2]} == {f"server={owner}"}, answers
    # ...because B knew the job (from A, through Redis), not by chance of the round robin.
    assert b.metric("roost_wps_affinity_total", service=SERVICE, event="routed") == routed + len(answers)


def test_without_shared_state_the_instances_break_sessions(pair, tmp_path, monkeypatch):
    """The same drift and machines, two instances without ``state``: what the tests above
    would see if the sharing did not work."""
    sites = []
    try:
        sites.append(Site(tmp_path / "a", machines=pair[0], health_interval="1s"))
        sites.append(Site(tmp_path / "b", machines=pair[0], weights=DRIFT, health_interval="1s"))
        front = clients.Instances(sites, SEED)
        front.install(monkeypatch)
        [key] = disagreeing_keys(sites, 1, "unshared-fetch")
        with front.only(0):
            wps = clients.owslib(sites[0].url(SERVICE), key)
            fetched = wps.execute("fetch", inputs=[("dataset", "pr")],
                                  output=[("key", False), ("server", False)], mode=SYNC)
        assert fetched.isSucceded(), clients.error_text(fetched)
        # B never hears of the key: its own ring sends the subset to a machine without the file.
        with front.only(1):
            subset = wps.execute("subset", inputs=[("key", clients.literal(fetched, "key"))],
                                 output=[("output", True), ("server", False)], mode=SYNC)
        assert not subset.isSucceded()
        assert "is not in the cache of" in clients.error_text(subset)
        assert sites[1].owner_name(SERVICE, key) != clients.literal(fetched, "server")

        # B does not know A's job either: its keyless downloads go round robin, over every
        # machine (the weights make a cycle of four), and only one has the file.
        [key] = disagreeing_keys(sites, 1, "unshared-job")
        execution = job_through_a(front, key)
        answers = keyless(sites[1], execution, times=4, status_documents=False)
        owner = clients.literal(execution, "server")
        found = 2 if owner == f"{SERVICE}-3" else 1
        statuses = [status for status, _ in answers]
        assert (statuses.count(200), statuses.count(404)) == (found, 4 - found), (owner, answers)
    finally:
        for site in reversed(sites):
            site.close()
