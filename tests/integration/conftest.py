"""The integration suites' fixtures: one real Ray for the session, and on it one LineGuard application on a
real Ray Serve (three image-anomaly lines, a sensor line and an image-classifier line). Tests that change a
line's state (a threshold, a version, a key) undo it or use their own line, so no order of tests matters."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from lineguard.cli import launcher
from lineguard.deployments import config_file
from lineguard.deployments.app import bind_graph
from lineguard.deployments.keys import KEYS_FILE, KeyRing
from lineguard.models.anomaly_model import ImageAnomalyModel
from lineguard.models.spec import Runtime
from lineguard.registry.image_models import load_image_model
from lineguard.registry.store import ModelStore
from lineguard.training.fit_classifier import fit_classifier_line
from lineguard.training.fit_image import fit_image_line
from lineguard.training.fit_sensor import fit_sensor_line
from lineguard.training.options import (
    ClassifierFitOptions,
    ClassifierTrainOptions,
    FitOptions,
    SensorFitOptions,
    SensorTrainOptions,
)
from lineguard.training.synthetic import write_class_folders
from lineguard.training.synthetic_sensor import write_csv
from tests.support import free_port, wait_for

LINES = ("press-a", "press-b", "press-c")
SENSOR_LINE = "spindle-1"  # a sensor line beside the image lines
CLASSIFIER_LINE = "sorter-1"  # a classifier line on the same backbone
IMAGE_SIZE = 128
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # as shipped: real camera frames (test_large_inputs)
MAX_REQUEST_BYTES = 72 * 1024 * 1024  # four of the largest frames in one batch
ORIGIN = "http://qa.example.com"  # the one browser origin allowed by CORS


class Webhook:
    """A receiver of the drift webhook: a real HTTP server on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/drift"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@dataclass
class Service:
    url: str
    store: ModelStore
    data: Path
    sensor_data: Path
    class_data: Path
    webhook: Webhook

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def model(self, line: str) -> ImageAnomalyModel:
        return load_image_model(self.store, line, runtime=Runtime(device="cpu"))[1]


@dataclass
class Keys:
    reader: str  # predict, every line
    admin: str
    press_a: str  # predict, line press-a only
    revoked: str


@pytest.fixture(scope="module")
def api_keys(service: Service) -> Iterator[Keys]:
    """Keys in the session's store (the service needs them while they exist); removed afterwards."""
    ring = KeyRing(service.store)
    keys = Keys(
        reader=ring.create("reader")[0],
        admin=ring.create("admin", "admin")[0],
        press_a=ring.create("press-a camera", lines=["press-a"])[0],
        revoked=ring.create("old")[0],
    )
    ring.revoke(keys.revoked.split("_")[1])
    try:
        wait_for(lambda: httpx.get(f"{service.url}/v1/lines", timeout=10).status_code == 401)
        yield keys
    finally:  # whatever happened, the other tests get the open service back
        (Path(service.store.root) / KEYS_FILE).unlink()
    wait_for(lambda: httpx.get(f"{service.url}/v1/lines", timeout=10).status_code == 200)  # open again


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One real Ray for the whole test session, with the serving settings that ship (HAProxy, gRPC)."""
    import ray

    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.update(launcher.haproxy_binary(os.environ))  # HAProxy as `lineguard serve` starts it
    for key, value in config_file.env_vars(config_file.application(config_file.read())).items():
        os.environ.setdefault(key, value)  # the application's runtime_env, as serve run applies it
    metrics_port = free_port()
    os.environ["LINEGUARD_TEST_METRICS_PORT"] = str(metrics_port)  # Prometheus export of Ray's metrics agent
    # logical CPUs: room for the Serve replicas and a Ray Data actor pool side by side
    ray.init(
        address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port
    )
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_session: None) -> str:
    """Ray Serve on the session's Ray, its HTTP proxy on a free port; every application the tests run is
    reached there (Serve keeps the options of its first start, so this is the only start)."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def service(serve_url: str, synthetic_line: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from ray import serve

    store = ModelStore(tmp_path_factory.mktemp("serve") / "store")
    for i, line in enumerate(LINES):  # three lines, each fitted on a different part of the data
        options = FitOptions(
            image_size=IMAGE_SIZE, head_params={"bank_size": 512 + 256 * i}, seed=i, evaluate=False, progress=False
        )
        fit_image_line(line, synthetic_line, options, store)
    sensor_data = write_csv(tmp_path_factory.mktemp("sensor") / "spindle.csv", rows=3000, seed=1)
    sensor_options = SensorFitOptions(train=SensorTrainOptions(epochs=150, workers=0))
    fit_sensor_line(SENSOR_LINE, sensor_data, sensor_options, store)
    class_data = write_class_folders(tmp_path_factory.mktemp("classes") / "parts", seed=4, size=IMAGE_SIZE)
    classifier_options = ClassifierFitOptions(
        image_size=IMAGE_SIZE, views=2, progress=False, train=ClassifierTrainOptions(workers=0)
    )
    fit_classifier_line(CLASSIFIER_LINE, class_data, classifier_options, store)
    webhook = Webhook()
    history = {
        "url": f"sqlite:///{tmp_path_factory.mktemp('history') / 'history.db'}",
        "drift_check_interval_s": 1.0,
        "drift_window": 300,
        "webhook_url": webhook.url,
        "flush_interval_s": 0.05,
    }
    app = config_file.application(config_file.read())
    args = config_file.app_args(
        app,
        store=str(store.root),
        default_line="press-a",
        default_sensor_line=SENSOR_LINE,
        max_image_bytes=MAX_IMAGE_BYTES,
        max_request_bytes=MAX_REQUEST_BYTES,
        history=history,
        security={"keys_refresh_s": 0.3, "cors_origins": [ORIGIN]},
        web={"sample_roots": [str(synthetic_line.parent)]},  # the simulator reads the line's test images
        backbones=[{"name": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "image_size": IMAGE_SIZE}],
    )
    deployments = config_file.deployment_options(
        app,
        Scorer={"user_config": {"max_models": 2}},  # an LRU of two for three lines
        # two ingress replicas (a sensor stream's window must not depend on the replica), in one's CPU share
        Ingress={"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.125}},
        Backbone={"num_replicas": 1},
    )
    serve.run(bind_graph(args, deployments), name="lineguard", route_prefix="/")
    url = serve_url
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    yield Service(url, store, synthetic_line, sensor_data, class_data, webhook)
    serve.delete("lineguard")
    webhook.close()
