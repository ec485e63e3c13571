"""The e2e site: real PyWPS servers on loopback behind the real ``roost`` binary, like a
birdhouse site behind its proxy.

Three "machines" (backends 1..3), each running a flyingpigeon and an emu PyWPS server with its
own workdir, outputpath and job database. Roost runs as a daemon (``-d``, so ``roost upgrade``
works) with the seed's three services: ``flyingpigeon`` and ``emu`` (``wps_affinity: true``),
and ``malleefowl``, which fronts the flyingpigeon servers with ``wps_affinity`` off, to show
what a keyless request gets without it. Every port is chosen at run time. ``Site.close()``
stops every process it started (PyWPS servers with their job children as a process group,
every Roost pid ever seen), also when a test failed.

Several Roost instances can front the same machines (``Site(dir, machines=other_site)``), and
share their state through a real ``redis-server`` (``Redis``, ``state=redis.state()``): the
scaling-out scenarios (doc/scaling-out.md).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# A PyWPS server imports in about a second; Roost needs a health check round.
START_TIMEOUT = 60
HEALTH_INTERVAL = "500ms"
# The admin listener's token: operator actions (drain, maint) need one.
ADMIN_TOKEN = "e2e-admin-token-0123456789"
# A draining machine is reported safe to stop this long after its last request.
DRAIN_IDLE = "2s"

WPS_SERVICES = ("flyingpigeon", "emu")
MACHINES = (1, 2, 3)


def roost_binary():
    explicit = os.environ.get("ROOST_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return str(target / "debug" / "roost")


def reserve_port():
    """A bound (not listening) socket holding a free port for Roost, which cannot report the
    ports it binds. Held until just before Roost starts, so that the PyWPS servers, which bind
    port 0 meanwhile, cannot be given the same port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def wait_until(what, cond, timeout=START_TIMEOUT, every=0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def http_get(url, headers=None, timeout=10):
    """(status, body) of a plain GET; never raises for an HTTP error status."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class WpsServer:
    """One PyWPS server process (its own session, so its async job children die with it)."""

    def __init__(self, service, machine, directory, url, outputurl):
        self.service = service
        self.machine = machine
        self.name = f"{service}-{machine}"
        self.dir = directory
        directory.mkdir(parents=True)
        self.log = open(directory / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wpsapp.server", "--name", self.name, "--dir", str(directory),
             "--url", url, "--outputurl", outputurl],
            cwd=HERE, stdout=subprocess.PIPE, stderr=self.log, start_new_session=True,
        )
        self.addr = None

    def wait_ready(self):
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"{self.name} did not start: {line!r}\n{self.log_text()}")
        self.addr = line.removeprefix("listening on ")

    def log_text(self):
        return (self.dir / "server.log").read_text(errors="replace")

    def kill(self):
        """Kill the server and every job it forked, at once (a machine going away)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.log.close()


class Redis:
    """A real ``redis-server`` on a Unix socket in `directory` (no port to choose, none to
    collide), without persistence. ``close()`` stops it."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "redis.sock"
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server is not installed: run `make deps`")
        self.log = open(self.dir / "redis.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_until("redis-server answering", lambda: self.command("PING") == "PONG", timeout=20)
        except BaseException:
            self.close()
            raise

    def command(self, *args):
        """One command through ``redis-cli`` (installed with redis-server); its output, or
        None when Redis does not answer."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()}")
        run = subprocess.run(["redis-cli", "-s", str(self.socket), *args],
                             capture_output=True, text=True, timeout=10)
        return run.stdout.strip() if run.returncode == 0 else None

    def state(self, prefix="e2e:"):
        """Roost's ``state`` section for this server."""
        return f'{{ redis: "unix://{self.socket}", prefix: "{prefix}" }}'

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


class Site:
    def __init__(self, directory, machines=None, state=None, weights=None,
                 health_interval=HEALTH_INTERVAL):
        """One Roost instance in front of three machines. `machines`: another site whose PyWPS
        servers this instance fronts too (it starts and stops none; their URLs name that
        site's listeners); `state`: the YAML value of Roost's ``state`` section (shared
        state); `weights`: server name → its weight in this instance's file."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.own_servers = machines is None
        self.state = state
        self.weights = weights or {}
        self.health_interval = health_interval
        reserved = {name: reserve_port() for name in (*WPS_SERVICES, "malleefowl", "admin")}
        self.ports = {name: s.getsockname()[1] for name, s in reserved.items()}
        self.config = self.dir / "roost.yaml"
        self.pid_file = self.dir / "roost.pid"
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "roost.log"
        self.servers = {} if machines is None else machines.servers
        self.roost_pids = set()
        try:
            self._start(reserved)
        except BaseException:
            self.close()
            raise

    # --- addresses -------------------------------------------------------------------------

    def base(self, service):
        return f"http://127.0.0.1:{self.ports[service]}"

    def url(self, service):
        """The WPS endpoint as clients use it: through Roost."""
        return f"{self.base(service)}/wps"

    def backends(self, service):
        """Backend address → server name, for one Roost service."""
        pywps = "flyingpigeon" if service == "malleefowl" else service
        return {s.addr: s.name for s in self.servers.values() if s.service == pywps}

    # --- lifecycle -------------------------------------------------------------------------

    def _start(self, reserved):
        if self.own_servers:
            for service in WPS_SERVICES:
                for machine in MACHINES:
                    server = WpsServer(
                        service, machine, self.dir / f"{service}-{machine}",
                        url=self.url(service), outputurl=f"{self.base(service)}/outputs",
                    )
                    self.servers[server.name] = server
            for server in self.servers.values():
                server.wait_ready()
        self.config.write_text(self._yaml())
        check = subprocess.run([roost_binary(), "-c", str(self.config), "-t"],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        for s in reserved.values():
            s.close()
        run = subprocess.run([roost_binary(), "-c", str(self.config), "-d"],
                             capture_output=True, text=True, env={**os.environ, "RUST_LOG": "info"})
        assert run.returncode == 0, run.stdout + run.stderr + self.roost_log()
        self.roost_pid()
        for port in self.ports.values():
            wait_until(f"roost listening on {port}", lambda: self._connects(port))
        self.wait_healthy()

    def _yaml(self):
        def entry(server):
            weight = self.weights.get(server.name)
            return f"{{ address: {server.addr}, weight: {weight} }}" if weight else server.addr

        def service(name, pywps, affinity):
            backends = "\n".join(f"      - {entry(s)}" for s in self.servers.values()
                                 if s.service == pywps)
            return f"""\
  - name: {name}
    listen: 127.0.0.1:{self.ports[name]}
    hash: {{ header: machineid, missing: round_robin }}
    backends:
{backends}
    health_check:
      path: /wps?service=WPS&request=GetCapabilities
      interval: {self.health_interval}
      timeout: 400ms
      rise: 1
      fall: 2
    when_down: failover
    wps_affinity: {str(affinity).lower()}
    affinity: {{ drain_idle: {DRAIN_IDLE} }}
"""
        return f"""\
server:
  threads: 2
  pid_file: {self.pid_file}
  upgrade_sock: {self.dir}/upgrade.sock
  error_log: {self.error_log}
  grace_period_seconds: 3
  graceful_shutdown_timeout_seconds: 2
admin:
  listen: 127.0.0.1:{self.ports['admin']}
  token: {ADMIN_TOKEN}
access_log:
  format: json
  path: {self.access_log}
{f"state: {self.state}" if self.state else ""}
services:
{service('flyingpigeon', 'flyingpigeon', True)}{service('malleefowl', 'flyingpigeon', False)}\
{service('emu', 'emu', True)}"""

    @staticmethod
    def _connects(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def roost_pid(self):
        """The daemon's pid from the pid file (remembered, so close() can stop it)."""
        pid = wait_until("roost pid file", lambda: self._read_pid())
        self.roost_pids.add(pid)
        return pid

    def _read_pid(self):
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def roost_log(self):
        try:
            return self.error_log.read_text(errors="replace")
        except OSError:
            return ""

    def upgrade(self):
        """``roost upgrade -c FILE``: the whole hot swap; returns (old pid, new pid)."""
        old = self.roost_pid()
        run = subprocess.run([roost_binary(), "upgrade", "-c", str(self.config)],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "RUST_LOG": "info"})
        assert run.returncode == 0, run.stdout + run.stderr + self.roost_log()
        assert "upgrade done" in run.stdout, run.stdout
        new = self.roost_pid()
        return old, new

    def add_machine(self, machine):
        """A new machine running every WPS service joins: its servers start, the config lists
        them, and ``roost reload`` applies it; returns when Roost sees them healthy."""
        added = []
        for service in WPS_SERVICES:
            server = WpsServer(
                service, machine, self.dir / f"{service}-{machine}",
                url=self.url(service), outputurl=f"{self.base(service)}/outputs",
            )
            self.servers[server.name] = server
            added.append(server)
        for server in added:
            server.wait_ready()
        self.config.write_text(self._yaml())
        run = subprocess.run([roost_binary(), "reload", "-c", str(self.config)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        wanted = {(s.service, s.addr) for s in added}
        wait_until("the new machine listed and healthy", lambda: wanted <= {
            (name if name != "malleefowl" else "flyingpigeon", addr)
            for (name, addr), up in self.healthy().items() if up
        })
        return added

    def backend_action(self, action, service, machine):
        """``roost backend ACTION -c FILE SERVICE ADDR`` for `machine`'s server of `service`."""
        addr = self.servers[f"{service}-{machine}"].addr
        run = subprocess.run([roost_binary(), "backend", action, "-c", str(self.config), service, addr],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout

    def backend_status(self, service, machine):
        addr = self.servers[f"{service}-{machine}"].addr
        status = json.loads(self.admin("/status"))
        [entry] = [b for s in status["services"] if s["name"] == service
                   for b in s["backends"] if b["addr"] == addr]
        return entry

    def close(self):
        for pid in self.roost_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGINT)  # fast stop: nothing to drain after a test
        for pid in self.roost_pids:
            try:
                wait_until(f"roost {pid} to exit", lambda: not pid_alive(pid), timeout=10)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
        if self.own_servers:
            for server in self.servers.values():
                server.kill()

    # --- observing Roost ---------------------------------------------------------------------

    def admin(self, path):
        status, body = http_get(f"http://127.0.0.1:{self.ports['admin']}{path}",
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200, (path, status, body)
        return body

    def route(self, service, key):
        """Where Roost sends `key` now: {"backend": "127.0.0.1:P", "role": ...}."""
        return json.loads(self.admin(f"/route?service={service}&key={key}"))

    def owner_name(self, service, key):
        return self.backends(service)[self.route(service, key)["backend"]]

    def healthy(self):
        status = json.loads(self.admin("/status"))
        return {(s["name"], b["addr"]): b["healthy"]
                for s in status["services"] for b in s["backends"]}

    def wait_healthy(self, timeout=START_TIMEOUT):
        wait_until("every backend healthy", lambda: all(self.healthy().values()), timeout)

    def metric(self, name, **labels):
        """The value of one Prometheus series (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.admin("/metrics").decode().splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def access(self, **match):
        """Access log entries (JSON lines) whose fields equal `match`."""
        entries = []
        if self.access_log.exists():
            for line in self.access_log.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line being written right now
                if all(entry.get(k) == v for k, v in match.items()):
                    entries.append(entry)
        return entries

    def access_settled(self):
        """Wait until the access log stops growing (Roost writes it from a background thread),
        so that every request made so far is in it."""
        sizes = []

        def settled():
            sizes.append(self.access_log.stat().st_size if self.access_log.exists() else 0)
            return len(sizes) >= 3 and sizes[-1] == sizes[-2] == sizes[-3]

        wait_until("the access log to settle", settled, timeout=10, every=0.1)

    def access_eventually(self, count, **match):
        """Like access(), waiting (briefly) until at least `count` entries match: Roost writes
        its access log from a background thread."""
        return wait_until(f"{count} access log entries like {match}",
                          lambda: (lambda e: e if len(e) >= count else None)(self.access(**match)),
                          timeout=10)

    def keys_by_owner(self, service, count_per_backend, prefix="key"):
        """`count_per_backend` keys owned by each backend of `service`, by server name."""
        names = sorted(self.backends(service).values())
        found = {name: [] for name in names}
        i = 0
        while any(len(keys) < count_per_backend for keys in found.values()):
            key = f"{prefix}-{i}"
            owner = self.owner_name(service, key)
            if len(found[owner]) < count_per_backend:
                found[owner].append(key)
            i += 1
            assert i < 10_000, found
        return found
