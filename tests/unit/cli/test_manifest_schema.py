"""Every manifest ``lineguard cluster render`` writes is valid for KubeRay v1.7.0's RayService CRD: its
OpenAPI schema (types, required fields, enums) and its field names (the API server prunes a field the
schema does not know, silently, so a misspelt one would be dropped without a word)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from lineguard.cluster.render import MANIFEST, ClusterOptions, render

# KubeRay's CRD as released (kept beside the checkout; set LINEGUARD_KUBERAY_CRD to use another copy)
CRD = Path(
    os.environ.get(
        "LINEGUARD_KUBERAY_CRD", Path(__file__).resolve().parents[4] / "shared" / "kuberay" / "ray.io_rayservices.yaml"
    )
)
RENDERINGS = {
    "committed": None,
    "cpu-only": ClusterOptions(backbone_gpus=0, gpu_workers=(0, 0)),
    "shared-gpu": ClusterOptions(backbone_gpus=0.5, image="r.io/lg:2", store="gs://b/s", extra_env={"A": "1"}),
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    if not CRD.is_file():
        message = f"KubeRay's RayService CRD is not at {CRD} (set LINEGUARD_KUBERAY_CRD to its path)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 1 MB: libyaml's loader
    assert crd["spec"]["names"]["kind"] == "RayService"
    found: dict[str, Any] = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    return found


def rayservice(name: str) -> dict[str, Any]:
    options = RENDERINGS[name]
    text = MANIFEST.read_text() if options is None else render(options=options)
    documents = [d for d in yaml.safe_load_all(text) if d]
    (found,) = [d for d in documents if d.get("kind") == "RayService"]
    return dict(found)


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of ``value`` that ``schema`` does not name (where it does not keep unknown fields)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is None:
            extra = schema.get("additionalProperties")
            if not isinstance(extra, dict):
                return []
            return [e for k, v in value.items() for e in unknown_fields(v, extra, f"{path}.{k}")]
        found = []
        for key, item in value.items():
            found += (
                [f"{path}.{key}"] if key not in properties else unknown_fields(item, properties[key], f"{path}.{key}")
            )
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [e for i, item in enumerate(value) for e in unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def problems(manifest: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft7Validator(schema).iter_errors(manifest)
    ]
    return sorted(errors) + [f"{f}: not a field of KubeRay's RayService" for f in unknown_fields(manifest, schema)]


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_the_rendered_rayservice_is_valid_for_kuberay(name: str, schema: dict[str, Any]) -> None:
    assert not problems(rayservice(name), schema)


def test_the_check_catches_a_misspelt_field_and_a_wrong_type(schema: dict[str, Any]) -> None:
    manifest = rayservice("committed")
    misspelt = copy.deepcopy(manifest)
    misspelt["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplica"] = 1
    assert problems(misspelt, schema) == [
        ".spec.rayClusterConfig.workerGroupSpecs[0].minReplica: not a field of KubeRay's RayService"
    ]
    wrong = copy.deepcopy(manifest)
    wrong["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert any("replicas" in p and "integer" in p for p in problems(wrong, schema))
