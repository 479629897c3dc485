"""One default per setting: the deployments' decorators carry no replica, concurrency or resource numbers
(serve_config.yaml holds them), and their micro-batching starts from the tuning models' defaults, so a
deployment behaves the same with and without a user_config."""

from __future__ import annotations

from typing import Any

import pytest

from lineguard.deployments import config_file
from lineguard.deployments.app import bind_graph
from lineguard.deployments.backbone import Backbone
from lineguard.deployments.config import AppArgs, BackboneTuning, SensorScorerTuning
from lineguard.deployments.ingress import Ingress
from lineguard.deployments.preprocessor import Preprocessor
from lineguard.deployments.recorder import Recorder
from lineguard.deployments.scorer import Scorer
from lineguard.deployments.sensor_scorer import SensorScorer
from lineguard.deployments.streams import StreamShard

DEPLOYMENTS = {"Ingress": Ingress, "Preprocessor": Preprocessor, "Backbone": Backbone, "Scorer": Scorer}
DEPLOYMENTS |= {"Recorder": Recorder, "SensorScorer": SensorScorer, "StreamShard": StreamShard}


def test_the_default_application_fits_two_cpus() -> None:
    """`make demo` and `lineguard serve` on a 2-core machine: every deployment's first replicas must be
    placeable, or one stays pending and the application never starts (it happened when the stream shards
    came)."""
    app = config_file.application(config_file.read())
    args = AppArgs(**app["args"])
    copies = {"StreamShard": args.streams.shards, "Backbone": len(args.backbones)}
    total = 0.0
    for entry in app["deployments"]:
        replicas = entry.get("num_replicas") or entry.get("autoscaling_config", {}).get("min_replicas", 1)
        total += copies.get(entry["name"], 1) * replicas * entry["ray_actor_options"]["num_cpus"]
    assert total <= 2.0, f"the default application asks for {total:.3f} CPUs: lower a num_cpus in serve_config.yaml"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_decorators_set_no_option_the_config_file_holds(name: str) -> None:
    deployment: Any = DEPLOYMENTS[name]
    assert deployment._deployment_config.user_configured_option_names == set()  # ray_actor_options included
    entry = next(d for d in config_file.application(config_file.read())["deployments"] if d["name"] == name)
    assert "ray_actor_options" in entry and ("max_ongoing_requests" in entry or name == "Recorder")


def test_batching_starts_at_the_tuning_defaults() -> None:
    backbone: Any = Backbone.func_or_class.extract_batch  # type: ignore[attr-defined]
    assert backbone._get_max_batch_size() == BackboneTuning().max_batch_size
    assert backbone._get_batch_wait_timeout_s() == BackboneTuning().batch_wait_timeout_s
    sensors: Any = SensorScorer.func_or_class.__call__  # type: ignore[attr-defined]
    assert sensors._get_max_batch_size() == SensorScorerTuning().max_batch_rows
    assert sensors._get_batch_wait_timeout_s() == SensorScorerTuning().batch_wait_timeout_s


def test_bind_graph_applies_the_config_files_options_by_default(tmp_path: Any) -> None:
    graph: Any = bind_graph(AppArgs(store=str(tmp_path)))
    ingress = graph._bound_deployment
    expected = next(d for d in config_file.application(config_file.read())["deployments"] if d["name"] == "Ingress")
    assert ingress.max_ongoing_requests == expected["max_ongoing_requests"]
    assert ingress.ray_actor_options["num_cpus"] == expected["ray_actor_options"]["num_cpus"]


def test_a_backbone_precision_is_one_the_extractor_takes() -> None:
    from pydantic import ValidationError

    from lineguard.deployments.config import BackboneArgs

    assert BackboneArgs().precision == "auto" and BackboneArgs(precision="fp32").precision == "fp32"
    with pytest.raises(ValidationError, match="precision"):
        BackboneArgs(precision="fp64")


def test_every_stream_shard_gets_the_config_files_options() -> None:
    """Serve applies a config file's options by deployment name: StreamShard2 without an entry ran with a
    whole CPU, and `lineguard serve` never became healthy on 2 cores."""
    app = config_file.application(config_file.read())
    app["args"]["streams"] = {"shards": 3}
    expanded = config_file.with_stream_shards(app)
    entries = {e["name"]: e for e in expanded["deployments"]}
    assert {"StreamShard", "StreamShard2", "StreamShard3"} <= set(entries)
    assert entries["StreamShard3"]["ray_actor_options"] == entries["StreamShard"]["ray_actor_options"]
    options = config_file.deployment_options(app)
    assert options["StreamShard2"]["ray_actor_options"]["num_cpus"] < 0.1
