"""The demo's showcase calls against a service whose history is not ready yet: they wait for it, report a
refused call and never stop the service (a 503 from the feedback call once brought the whole demo down)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lineguard.cli import demo


class Service(BaseHTTPRequestHandler):
    """Answers like LineGuard while its Recorder migrates: predictions work, history calls are 503."""

    history = "degraded"

    def log_message(self, *_: object) -> None:
        pass

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, {"status": "ok", "history": {"status": Service.history}})
        else:
            self._answer(503, {"detail": "the history is not reachable: retry shortly"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if "feedback" in self.path:
            self._answer(503, {"detail": "the history is not reachable: retry shortly"})
        else:
            self._answer(200, {"prediction_id": "01M8TXN57V2SQSF1R4YPAZGH4J", "is_anomaly": True})


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_showcase_reports_a_refused_call_and_goes_on(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part = tmp_path / "part.png"
    part.write_bytes(b"\x89PNG not really")
    Service.history = "ok"  # ready, yet the call is refused: shown, not raised
    demo._show(url, [part], [[1.0, 2.0]], part)
    shown = capsys.readouterr().out
    assert "(answered 503: " in shown and "web page:" in shown


def test_the_feedback_calls_wait_for_the_history(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    part = tmp_path / "part.png"
    part.write_bytes(b"\x89PNG not really")
    Service.history = "degraded"
    assert demo._history_ready(url, timeout_s=0.3, poll_s=0.05) is False
    assert "skipping the feedback calls" in capsys.readouterr().out
    threading.Timer(0.2, lambda: setattr(Service, "history", "ok")).start()
    assert demo._history_ready(url, timeout_s=10, poll_s=0.05) is True
