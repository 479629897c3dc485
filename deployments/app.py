"""The LineGuard application: Ingress -> Preprocessor -> Backbone(s) -> Scorer for images,
Ingress -> SensorScorer for sensor readings, Ingress -> StreamShard(s) for readings of a stream, and
Ingress -> Recorder for the prediction history.

``serve run serve_config.yaml`` imports :func:`build_app` with the config's ``args`` (validated into
:class:`AppArgs`); replica counts, concurrency limits, autoscaling, resources and ``user_config`` come from
the same file, and only from it: the deployments' decorators carry none, and :func:`bind_graph` (tests,
benchmarks, the demo) applies the file's unless told otherwise.
No ``from __future__ import annotations`` here: Serve reads the builder's ``AppArgs`` annotation to
validate the args, and a postponed (string) annotation hides it.
"""

from typing import Any, cast

from ray.serve import Application, Deployment

from lineguard.deployments import config_file
from lineguard.deployments.backbone import Backbone
from lineguard.deployments.config import AppArgs
from lineguard.deployments.ingress import Ingress
from lineguard.deployments.preprocessor import Preprocessor
from lineguard.deployments.recorder import Recorder
from lineguard.deployments.scorer import Scorer
from lineguard.deployments.sensor_scorer import SensorScorer
from lineguard.deployments.streams import StreamShard, shard_name


def backbone_deployment_name(index: int) -> str:
    """``Backbone`` for the first backbone in ``args.backbones``, ``Backbone2``, ... for the others."""
    return "Backbone" if index == 0 else f"Backbone{index + 1}"


def as_deployment(cls: object) -> Deployment:
    """``@serve.deployment`` classes are Deployments at run time; Ray's hints keep the class type."""
    return cast(Deployment, cls)


def bind_graph(args: AppArgs, options: dict[str, dict[str, Any]] | None = None) -> Application:
    """The bound graph; ``options`` maps deployment names to ``.options()``, by default those of the
    repository's ``serve_config.yaml`` (:func:`lineguard.deployments.config_file.deployment_options`)."""
    if options is None:
        options = config_file.deployment_options(config_file.application(config_file.read()))
    preprocessor = as_deployment(Preprocessor).options(**options.get("Preprocessor", {})).bind()
    backbones = [
        as_deployment(Backbone)
        .options(name=backbone_deployment_name(i), **options.get(backbone_deployment_name(i), {}))
        .bind(backbone.model_dump())
        for i, backbone in enumerate(args.backbones)
    ]
    scorer = as_deployment(Scorer).options(**options.get("Scorer", {})).bind(args.store)
    sensor_scorer = as_deployment(SensorScorer).options(**options.get("SensorScorer", {})).bind(args.store)
    recorder = (
        as_deployment(Recorder).options(**options.get("Recorder", {})).bind(args.history.model_dump(), args.store)
        if args.history.enabled
        else None
    )
    shards = [
        as_deployment(StreamShard)
        .options(**{**options.get(shard_name(i), {}), "name": shard_name(i), "num_replicas": 1})
        .bind(args.store, args.streams.model_dump())
        for i in range(args.streams.shards)
    ]
    ingress = as_deployment(Ingress).options(**options.get("Ingress", {}))
    return ingress.bind(preprocessor, backbones, scorer, sensor_scorer, shards, recorder, args.model_dump())


def build_app(args: AppArgs) -> Application:
    """Typed application builder for ``serve run`` / ``serve deploy`` and KubeRay (which apply the config
    file's deployment options themselves)."""
    return bind_graph(args if isinstance(args, AppArgs) else AppArgs(**args), options={})
