"""A fake KServe V2 server on loopback: an identity model whose answers a test scripts.

Just enough of the protocol for the triton runner (model metadata and config, infer with
binary inputs, JSON outputs), so retries, 4xx/5xx answers and slow answers can be tested
without Triton. ``failures`` is a list of HTTP statuses the next infer requests get;
``hold`` makes infer requests wait until the event is set (the test sets it at the end).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from dicomnode.testing.ports import LOOPBACK

MODEL = "identity"
METADATA = {
    "name": MODEL,
    "versions": ["1"],
    "platform": "fake",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1, -1, 1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1, -1, 1]}],
}


@dataclass
class FakeKServe:
    url: str = ""
    failures: list[int] = field(default_factory=list)
    infer_requests: int = 0
    hold: threading.Event | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on what the runner says."""

    def do_GET(self) -> None:
        if self.path == f"/v2/models/{MODEL}":
            self._json(200, METADATA)
        elif self.path == f"/v2/models/{MODEL}/config":
            self._json(200, {"name": MODEL, "max_batch_size": 64})
        else:
            self._json(400, {"error": f"Request for unknown model: {self.path}"})

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with fake.lock:
            fake.infer_requests += 1
            status = fake.failures.pop(0) if fake.failures else 200
        if fake.hold is not None:
            fake.hold.wait(60)
        if status != 200:
            self._json(status, {"error": f"scripted failure {status}"})
            return
        size = int(self.headers["Inference-Header-Content-Length"])
        header = json.loads(body[:size])
        (tensor,) = header["inputs"]
        data = np.frombuffer(body[size:], np.float32).reshape(tensor["shape"])
        output = {"name": "y", "datatype": "FP32", "shape": tensor["shape"]}
        self._json(
            200, {"model_name": MODEL, "outputs": [{**output, "data": data.ravel().tolist()}]}
        )

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeKServe) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.fake = fake


@contextmanager
def fake_kserve() -> Iterator[FakeKServe]:
    fake = FakeKServe()
    server = _Server(fake)
    fake.url = f"{LOOPBACK}:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-kserve", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        if fake.hold is not None:
            fake.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
