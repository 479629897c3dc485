"""Scorer deployment: the light per-line heads, multiplexed by ``line@version``: anomaly scorers of
image-anomaly lines and the heads (with their tail stages) of image-classifier lines, both on the
shared Backbone's features.

Each replica keeps the most recently used line models (LRU, size from ``user_config.max_models``);
Serve routes a line's requests to replicas that already hold its model. A new version in the store,
or a changed threshold (which is a new version), is a new model id: it is loaded on first use and
the old one ages out of the cache. Nothing restarts. (torch is imported inside the replica, as in
the backbone module, to keep the controller's build of the application light.)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ray import serve

from lineguard.deployments.config import ScorerTuning
from lineguard.deployments.messages import ClassResult, FeatureBatch, ItemError, ScoreResult
from lineguard.registry.card import check_line_name, check_version_name
from lineguard.registry.store import ModelStore, StoreError

if TYPE_CHECKING:
    import torch

    from lineguard.models.classifier import LineClassifier
    from lineguard.models.scoring import AnomalyScorer

    LineModel = AnomalyScorer | LineClassifier


def parse_model_id(model_id: str) -> tuple[str, str]:
    line, sep, version = model_id.partition("@")
    if not sep:
        raise ValueError(f"model id {model_id!r} is not of the form line@version")
    return check_line_name(line), check_version_name(version)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Scorer:
    def __init__(self, store: str) -> None:
        self.store = ModelStore(store)
        self.tuning = ScorerTuning()
        self._get_model = self._loader(self.tuning.max_models)

    def _loader(self, max_models: int) -> Callable[[str], Awaitable[LineModel]]:
        from lineguard.registry.loaders import classifier_from_card, scorer_from_card

        async def load(model_id: str) -> LineModel:
            line, version = parse_model_id(model_id)
            card = self.store.read_card(line, version)
            if card.kind == "image-classifier":
                return classifier_from_card(self.store, card)
            return scorer_from_card(self.store, card).eval()

        return serve.multiplexed(max_num_models_per_replica=max_models)(load)  # type: ignore[no-any-return]

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        import torch

        tuning = ScorerTuning(**user_config)
        if tuning.max_models != self.tuning.max_models:
            self._get_model = self._loader(tuning.max_models)
        torch.set_num_threads(tuning.threads)
        self.tuning = tuning

    async def __call__(
        self, features: FeatureBatch, items: list[int], want_maps: bool
    ) -> list[ScoreResult | ClassResult | ItemError]:
        """Score ``items`` (positions in the batch) of one line; bad items keep their own errors."""
        model_id = serve.get_multiplexed_model_id()
        started = time.perf_counter()
        try:
            model = await self._get_model(model_id)
        except (StoreError, ValueError, OSError) as err:
            error = ItemError(503, f"the model {model_id} cannot be loaded: {err}")
            return [error for _ in items]
        loaded = time.perf_counter()
        good = [i for i in items if features.errors[i] is None]
        results: dict[int, ScoreResult | ClassResult | ItemError] = {}
        for i in items:
            problem = features.errors[i]
            if problem is not None:
                results[i] = problem
        if good:
            import torch

            from lineguard.models.classifier import LineClassifier

            rows = [features.rows[i] for i in good]
            tensors = [torch.from_numpy(layer[rows]).float() for layer in features.layers]
            scored: list[ScoreResult | ClassResult] = []
            try:
                if isinstance(model, LineClassifier):
                    scored += self._classify(model, tensors)
                else:
                    scored += self._anomaly(model, tensors, want_maps)
            except ValueError as err:  # features that do not fit the line's model: retrying will not help
                error = ItemError(409, f"line model {model_id} cannot score these features: {err}")
                return [results.get(i, error) for i in items]
            timings = {
                "load_ms": (loaded - started) * 1000,
                "score_ms": (time.perf_counter() - loaded) * 1000,
                "backbone_ms": features.backbone_ms,
            }
            for i, result in zip(good, scored, strict=True):
                result.timings = timings
                if features.intensity is not None:
                    result.input_stat = float(features.intensity[features.rows[i]])
                results[i] = result
        return [results[i] for i in items]

    @staticmethod
    def _anomaly(scorer: AnomalyScorer, tensors: list[torch.Tensor], want_maps: bool) -> list[ScoreResult]:
        display = scorer.display_range()
        return [
            ScoreResult(p.anomaly_score, p.threshold, p.normalized_score, p.is_anomaly, p.anomaly_map, display)
            for p in scorer.predict(tensors, with_maps=want_maps)
        ]

    @staticmethod
    def _classify(classifier: LineClassifier, tensors: list[torch.Tensor]) -> list[ClassResult]:
        names = classifier.classes
        out = []
        for d in classifier.predict(tensors):
            probabilities = {name: round(float(p), 6) for name, p in zip(names, d.probabilities, strict=True)}
            is_defect = None if classifier.normal_index is None else d.index != classifier.normal_index
            out.append(
                ClassResult(names[d.index], d.confidence, probabilities, d.defect_confidence, d.severity, is_defect)
            )
        return out

    def ping(self) -> str:
        return "ok"
