"""The KubeRay manifest: generated from serve_config.yaml, valid for Ray's schema and KubeRay, image tag pinned."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from lineguard.cli.main import main
from lineguard.cluster.render import DOCKERFILE, MANIFEST, ClusterOptions, check_image_tag, ray_version, render
from lineguard.cluster.render import serve_config_for_cluster as for_cluster
from lineguard.deployments import config_file
from lineguard.deployments.config import AppArgs
from tests.image import copies


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    (rayservice,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "RayService"]
    return dict(rayservice)


def test_committed_manifest_is_the_rendering_of_serve_config() -> None:
    """Fails when serve_config.yaml changed and `lineguard cluster render` was not run (or the file was edited)."""
    assert MANIFEST.read_text() == render(), "cluster/rayservice.yaml is stale: run `lineguard cluster render`"


def test_serve_config_v2_is_serve_config_with_the_cluster_changes_only(manifest: dict[str, Any]) -> None:
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(served)  # Ray's own schema, as KubeRay's Serve client applies it
    assert served == for_cluster(config_file.read(), ClusterOptions())
    app = config_file.application(served)
    root = config_file.application(config_file.read())
    assert app["import_path"] == root["import_path"] == "lineguard.deployments.app:build_app"
    expanded = config_file.with_stream_shards(root)  # StreamShard2...: the first shard's entry, once per shard
    assert [d["name"] for d in app["deployments"]] == [d["name"] for d in expanded["deployments"]]
    AppArgs(**app["args"])  # the builder's arguments validate
    backbone = next(d for d in app["deployments"] if d["name"] == "Backbone")
    assert backbone["ray_actor_options"]["num_gpus"] >= 1 and backbone["user_config"]["max_batch_size"] == 64
    assert app["args"]["store"].startswith("s3://")


def test_kuberay_required_fields(manifest: dict[str, Any]) -> None:
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    assert manifest["metadata"]["name"]
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray_version() and cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert "rayStartParams" in head and head["template"]["spec"]["containers"][0]["image"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    for group in groups.values():
        assert {"replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["LINEGUARD_STORE"].startswith("s3://")
        assert env["LINEGUARD_HISTORY_URL"] == {"secretKeyRef": {"name": "lineguard-history", "key": "url"}}
    gpu = groups["gpu-workers"]["template"]["spec"]
    resources = gpu["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert groups["gpu-workers"]["rayStartParams"]["num-gpus"] == "1"


def test_dockerfile_builds_on_the_pinned_ray() -> None:
    tag = check_image_tag()
    assert tag.startswith(ray_version() + "-py311")
    text = DOCKERFILE.read_text()
    (copy,) = copies()  # the checkout as one unit, installed as the lineguard package (Serve imports it by name)
    assert f"pip install --no-cache-dir {copy.destination}" in text and f"rm -rf {copy.destination}" in text
    assert "PYTHONPATH" not in text  # nothing is imported from the source folders


def test_render_command_options(tmp_path: Any) -> None:
    out = tmp_path / "rs.yaml"
    argv = ["cluster", "render", "--out", str(out), "--image", "r.io/lg:1", "--store", "gs://b/s"]
    argv += ["--backbone-gpus", "0"]
    assert main(argv) == 0
    rendered = next(d for d in yaml.safe_load_all(out.read_text()) if d["kind"] == "RayService")
    app = config_file.application(yaml.safe_load(rendered["spec"]["serveConfigV2"]))
    assert app["args"]["store"] == "gs://b/s"
    backbone = next(d for d in app["deployments"] if d["name"] == "Backbone")
    assert backbone["ray_actor_options"]["num_gpus"] == 0  # CPU-only clusters keep serve_config's value
    head = rendered["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "r.io/lg:1"


def test_each_worker_group_loses_one_pod_at_most_in_a_disruption(manifest: dict[str, Any]) -> None:
    budgets = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "PodDisruptionBudget"]
    groups = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert {b["spec"]["selector"]["matchLabels"]["ray.io/group"] for b in budgets} == {g["groupName"] for g in groups}
    for budget in budgets:
        assert budget["apiVersion"] == "policy/v1" and budget["spec"]["maxUnavailable"] == 1
        assert budget["metadata"]["namespace"] == manifest["metadata"]["namespace"]
        selected = dict(budget["spec"]["selector"]["matchLabels"])
        name = selected.pop("ray.io/group")  # KubeRay labels every pod with its group
        group = next(g for g in groups if g["groupName"] == name)
        labels = group["template"]["metadata"]["labels"]  # the pods carry the rest of what the budget selects
        assert all(labels.get(k) == v for k, v in selected.items()), (labels, selected)


def test_the_head_keeps_its_state_in_redis(manifest: dict[str, Any]) -> None:
    options = manifest["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"].endswith(":6379")
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": "lineguard-redis", "key": "password"}
    without = next(
        d for d in yaml.safe_load_all(render(options=ClusterOptions(redis_address=""))) if d["kind"] == "RayService"
    )
    assert "gcsFaultToleranceOptions" not in without["spec"]["rayClusterConfig"]
