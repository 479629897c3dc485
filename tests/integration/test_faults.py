"""Faults, injected into a second application (``/faults``) beside the session's, so nothing else is
disturbed: a Backbone or Scorer replica killed under load, the Recorder killed under load (no history
lost), and a corrupted model version (refused, the previous version keeps serving). Losing a worker node
of a two-node cluster is ``test_multinode.py``. Each test prints what it measured."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lineguard.deployments import config_file
from lineguard.deployments.app import bind_graph
from lineguard.history.db import HistoryDB, HistoryQuery
from lineguard.registry.store import TENSORS_FILE, ModelStore
from tests.integration.conftest import IMAGE_SIZE, Service

PREFIX = "/faults"
LINE = "press-a"


@dataclass
class Fault:
    url: str
    history_url: str
    store: ModelStore


@pytest.fixture(scope="module")
def faults(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fault]:
    """The application again, one replica of each deployment, its own history database."""
    from ray import serve

    folder = tmp_path_factory.mktemp("faults")
    store = ModelStore(folder / "store")  # its own store, with a copy of one of the session's lines
    card = service.store.read_card(LINE)
    store.write_version(card, service.store.read_tensor_bytes(card))
    history_url = f"sqlite:///{folder / 'history.db'}"
    app = config_file.application(config_file.read())
    args = config_file.app_args(
        app,
        store=str(store.root),
        backbones=[{"name": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "image_size": IMAGE_SIZE}],
        history={"url": history_url, "flush_interval_s": 0.05, "write_timeout_s": 5.0},
        line_cache_ttl_s=0.2,
    )
    one = {"num_replicas": 1}
    options = config_file.deployment_options(
        app,
        Ingress=one,
        Preprocessor=one,
        Backbone={"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},  # beside the session's app
        Scorer=one,
        SensorScorer=one,
    )
    serve.run(bind_graph(args, options), name="faults", route_prefix=PREFIX)
    yield Fault(f"{service.url}{PREFIX}", history_url, store)
    serve.delete("faults")


@dataclass
class Outcome:
    started: float
    ended: float
    status: int  # 0: no HTTP answer
    prediction_id: str | None = None


@dataclass
class Load:
    """Clients posting images in a loop; every request's outcome is kept."""

    url: str
    image: bytes
    clients: int = 6
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _client(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post(self.url, files={"file": ("part.png", self.image, "image/png")})
                    status, pid = response.status_code, response.json().get("prediction_id")
                except httpx.HTTPError:
                    status, pid = 0, None  # no answer at all
                except json.JSONDecodeError:
                    status, pid = -response.status_code, None  # an answer that is not the API's JSON
                self.outcomes.append(Outcome(started, time.monotonic(), status, pid))

    def run(self, fault: Callable[[], object], settle_s: float = 3.0, streak_s: float = 4.0) -> dict[str, Any]:
        """Load for ``settle_s``, inject ``fault``, keep loading until answers have been all good for
        ``streak_s`` (at most 90 s); returns the figures."""
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        time.sleep(settle_s)
        at = time.monotonic()
        fault()
        while time.monotonic() - at < 90:
            time.sleep(0.2)
            done = [o for o in list(self.outcomes) if o.started > at]
            bad = [o.ended for o in done if o.status != 200]
            last_bad = max(bad, default=at)
            if any(o.started > last_bad for o in done) and time.monotonic() - last_bad > streak_s:
                break
        self.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        failed = [o for o in self.outcomes if o.status != 200]
        in_flight = sum(1 for o in self.outcomes if o.started <= at <= o.ended)
        resumed = min((o.ended for o in self.outcomes if o.started > at and o.status == 200), default=float("nan"))
        return {
            "requests": len(self.outcomes),
            "failed": len(failed),
            "in_flight_at_fault": in_flight,
            "failed_statuses": sorted({o.status for o in failed}),
            "answers_resumed_after_s": round(resumed - at, 2),
            "last_failure_after_s": round(max((o.ended for o in failed), default=at) - at, 2),
        }


def kill_replica(deployment: str) -> str:
    """Kill the one replica of ``deployment`` in the faults application (Serve starts another)."""
    import ray

    actors = ray.util.list_named_actors(all_namespaces=True)
    names = [a["name"] for a in actors if a["name"].startswith(f"SERVE_REPLICA::faults#{deployment}#")]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    return str(names[0])


def good_image(service: Service) -> bytes:
    return sorted((service.data / "test" / "good").glob("*.png"))[0].read_bytes()


def wait_healthy(fault: Fault) -> None:
    deadline = time.monotonic() + 120
    while httpx.get(f"{fault.url}/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the faults application did not become healthy"
        time.sleep(0.5)


@pytest.mark.parametrize("deployment", ["Backbone", "Scorer"])
def test_replica_killed_under_load(service: Service, faults: Fault, deployment: str) -> None:
    wait_healthy(faults)
    load = Load(f"{faults.url}/v1/lines/{LINE}/predict", good_image(service))
    figures = load.run(lambda: kill_replica(deployment))
    print(f"{deployment} replica killed under load:", json.dumps(figures))
    assert figures["requests"] > 20
    # only requests the dead replica held can fail: new ones wait for (or are retried on) the new replica
    assert figures["failed"] <= figures["in_flight_at_fault"], figures
    assert set(figures["failed_statuses"]) <= {503}, figures  # failures are a clean "retry shortly"
    wait_healthy(faults)


def test_recorder_killed_under_load_loses_no_history(service: Service, faults: Fault) -> None:
    wait_healthy(faults)
    load = Load(f"{faults.url}/v1/lines/{LINE}/predict", good_image(service))
    figures = load.run(lambda: kill_replica("Recorder"))
    answered = {o.prediction_id for o in load.outcomes if o.status == 200 and o.prediction_id}
    db = HistoryDB(faults.history_url)
    deadline = time.monotonic() + 60
    while True:  # the outbox re-sends what the dead Recorder did not acknowledge
        stored = set(db.arrays(HistoryQuery(line=LINE), ("id",), 1_000_000)["id"].tolist())
        if answered <= stored or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    db.close()
    figures |= {"answered": len(answered), "missing_from_history": len(answered - stored)}
    print("Recorder killed under load:", json.dumps(figures))
    assert figures["failed"] == 0, figures  # predictions never wait for the history
    assert answered and answered <= stored, f"{len(answered - stored)} answered predictions missing from history"
    health = httpx.get(f"{faults.url}/healthz", timeout=10).json()
    assert health["history"]["outbox"]["dropped"] == 0, health


def test_corrupted_version_is_refused_and_the_previous_keeps_serving(service: Service, faults: Fault) -> None:
    store = faults.store
    source = store.read_card(LINE)
    good = store.write_version(source.model_copy(update={"line": "press-f"}), store.read_tensor_bytes(source))
    url = f"{faults.url}/v1/lines/press-f/predict"
    image = {"file": ("part.png", good_image(service), "image/png")}
    with httpx.Client(timeout=60) as client:
        first = client.post(url, files=image)
        assert first.status_code == 200 and first.json()["model_version"] == good.version
        bad = store.write_version(good, store.read_tensor_bytes(good))  # a new version in service ...
        path = Path(store.root) / "press-f" / bad.version / TENSORS_FILE
        path.write_bytes(path.read_bytes()[:-100])  # ... whose model file is then damaged
        time.sleep(0.5)  # past the line cache
        answers = [client.post(url, files=image) for _ in range(5)]
        assert all(a.status_code == 200 and a.json()["model_version"] == good.version for a in answers), [
            a.text[:200] for a in answers
        ]
        detail = client.get(f"{faults.url}/v1/lines/press-f").json()
        assert detail["version"] == good.version and detail["refused_version"] == bad.version
        assert "checksum" in detail["refused_reason"]
    logs = _serve_logs("replica_faults_Ingress")
    assert f"line press-f: version {bad.version} is refused" in logs and "keeps serving" in logs


def _serve_logs(prefix: str) -> str:
    import ray

    worker: Any = ray._private.worker.global_worker
    session = worker.node.get_session_dir_path()
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = "".join(p.read_text(errors="replace") for p in Path(session, "logs", "serve").glob(f"{prefix}*"))
        if "refused" in text:
            break
        time.sleep(0.5)
    return text
