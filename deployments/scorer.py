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
from lineguard.deployments.messages import ClassResult, FeatureBatch, ItemError, Scored, ScoreResult
from lineguard.errors import FeatureMismatchError, LineGuardError, StoreError
from lineguard.registry.names import parse_model_id
from lineguard.registry.store import ModelStore

if TYPE_CHECKING:
    import torch

    from lineguard.registry.image_models import LineModel


@serve.deployment
class Scorer:
    def __init__(self, store: str) -> None:
        from lineguard.models.memory import keep_large_buffers

        keep_large_buffers()  # the heads' distance tiles and maps, as the Backbone's layers (models/memory.py)
        self.store = ModelStore(store)
        self.tuning: ScorerTuning | None = None
        self.reconfigure({})

    def _loader(self, max_models: int, search_precision: str) -> Callable[[str], Awaitable[LineModel]]:
        from lineguard.models.heads.patchcore import PatchCore
        from lineguard.models.scoring import AnomalyScorer
        from lineguard.registry.image_models import line_model

        async def load(model_id: str) -> LineModel:
            line, version = parse_model_id(model_id)
            model = line_model(self.store, self.store.read_card(line, version))
            if search_precision != "card" and isinstance(model, AnomalyScorer) and isinstance(model.head, PatchCore):
                model.head.use_search(search_precision)
            return model

        return serve.multiplexed(max_num_models_per_replica=max_models)(load)  # type: ignore[no-any-return]

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        import torch

        tuning = ScorerTuning(**user_config)
        loading = (tuning.max_models, tuning.search_precision)
        if self.tuning is None or loading != (self.tuning.max_models, self.tuning.search_precision):
            self._get_model = self._loader(*loading)  # a new cache: models load again with the new search
        torch.set_num_threads(tuning.threads)
        self.tuning = tuning

    async def __call__(self, features: FeatureBatch, items: list[int], want_maps: bool) -> list[Scored]:
        """Score ``items`` (positions in the batch) of one line; bad items keep their own errors."""
        model_id = serve.get_multiplexed_model_id()
        started = time.perf_counter()
        try:
            model = await self._get_model(model_id)
        except (LineGuardError, OSError) as err:  # a missing or corrupt version: retrying may find it promoted
            error = ItemError(
                503, f"the model {model_id} cannot be loaded: {err}", 1 if isinstance(err, StoreError) else None
            )
            return [error for _ in items]
        loaded = time.perf_counter()
        good = [i for i in items if features.errors[i] is None]
        results: dict[int, Scored] = {i: problem for i in items if (problem := features.errors[i]) is not None}
        if good:
            import torch

            rows = [features.rows[i] for i in good]
            tensors = [torch.from_numpy(layer[rows]).float() for layer in features.layers]
            try:
                scored = self._score(model, tensors, want_maps)
            except FeatureMismatchError as err:  # features that do not fit the line's model: a retry will not help
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
                if want_maps and features.images is not None and isinstance(result, ScoreResult):
                    result.image = features.images[features.rows[i]]
                results[i] = result
        return [results[i] for i in items]

    @staticmethod
    def _score(model: LineModel, tensors: list[torch.Tensor], want_maps: bool) -> list[ScoreResult | ClassResult]:
        from lineguard.models.classifier import LineClassifier

        if isinstance(model, LineClassifier):
            return [ClassResult(decision) for decision in model.predict(tensors)]
        display = model.display_range()
        return [ScoreResult(decision, display) for decision in model.predict(tensors, with_maps=want_maps)]

    def ping(self) -> str:
        return "ok"
