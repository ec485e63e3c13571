"""The WPS processes. ``configure()`` sets this server's name and cache directory before the
service starts; asynchronous jobs run in forked children, which inherit both."""

import os
import time
import uuid

from pywps import ComplexOutput, FORMATS, LiteralInput, LiteralOutput, Process
from pywps.app.exceptions import ProcessError

SERVER = {"name": "?", "cache": "/nonexistent"}


def configure(name, cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    SERVER.update(name=name, cache=cache_dir)


def _cache_path(key):
    # Keys are made here (uuid4 hex); anything else is refused before touching the disk.
    if len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
        raise ProcessError(f"invalid cache key {key}")
    return os.path.join(SERVER["cache"], key + ".csv")


def _server_output():
    return LiteralOutput("server", "Server that ran the job", data_type="string")


class Fetch(Process):
    def __init__(self):
        super().__init__(
            self._handler,
            identifier="fetch",
            title="Fetch a dataset into this server's local cache",
            version="1.0",
            inputs=[
                LiteralInput("dataset", "Dataset name", data_type="string"),
                LiteralInput("rows", "Rows", data_type="integer", default=100, min_occurs=0),
            ],
            outputs=[LiteralOutput("key", "Cache key", data_type="string"), _server_output()],
            store_supported=True,
            status_supported=True,
        )

    def _handler(self, request, response):
        dataset = request.inputs["dataset"][0].data
        rows = request.inputs["rows"][0].data
        key = uuid.uuid4().hex
        with open(_cache_path(key), "w") as f:
            f.write(f"# dataset={dataset} fetched by {SERVER['name']}\n")
            for i in range(rows):
                f.write(f"{i},{dataset},{i * i}\n")
        response.outputs["key"].data = key
        response.outputs["server"].data = SERVER["name"]
        return response


class Subset(Process):
    def __init__(self):
        super().__init__(
            self._handler,
            identifier="subset",
            title="Subset a dataset from this server's local cache",
            version="1.0",
            inputs=[
                LiteralInput("key", "Cache key from fetch", data_type="string"),
                LiteralInput("start", "First row", data_type="integer", default=0, min_occurs=0),
                LiteralInput("end", "Row after the last", data_type="integer", default=10, min_occurs=0),
            ],
            outputs=[
                ComplexOutput("output", "Subset", supported_formats=[FORMATS.TEXT], as_reference=True),
                _server_output(),
            ],
            store_supported=True,
            status_supported=True,
        )

    def _handler(self, request, response):
        key = request.inputs["key"][0].data
        path = _cache_path(key)
        if not os.path.exists(path):
            raise ProcessError(f"key {key} is not in the cache of {SERVER['name']}")
        start = request.inputs["start"][0].data
        end = request.inputs["end"][0].data
        with open(path) as f:
            rows = f.read().splitlines()[1:]
        out = os.path.join(self.workdir, "subset.txt")
        with open(out, "w") as f:
            f.write(f"server={SERVER['name']}\n")
            f.write("\n".join(rows[start:end]) + "\n")
        response.outputs["output"].file = out
        response.outputs["server"].data = SERVER["name"]
        return response


class Sleep(Process):
    def __init__(self):
        super().__init__(
            self._handler,
            identifier="sleep",
            title="A slow job that reports its progress",
            version="1.0",
            inputs=[
                LiteralInput("seconds", "Run time", data_type="float", default=2.0, min_occurs=0),
                LiteralInput("steps", "Status updates", data_type="integer", default=4, min_occurs=0),
            ],
            outputs=[
                ComplexOutput("output", "Report", supported_formats=[FORMATS.TEXT], as_reference=True),
                _server_output(),
            ],
            store_supported=True,
            status_supported=True,
        )

    def _handler(self, request, response):
        seconds = request.inputs["seconds"][0].data
        steps = max(1, request.inputs["steps"][0].data)
        for i in range(steps):
            response.update_status(f"step {i + 1} of {steps}", int(100 * i / steps))
            time.sleep(seconds / steps)
        out = os.path.join(self.workdir, "report.txt")
        with open(out, "w") as f:
            f.write(f"server={SERVER['name']}\njob={self.uuid}\n")
        response.outputs["output"].file = out
        response.outputs["server"].data = SERVER["name"]
        return response


def processes():
    return [Fetch(), Subset(), Sleep()]
