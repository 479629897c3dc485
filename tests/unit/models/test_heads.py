"""Every head: refuses to score before fitting, finds a planted defect, round-trips its state."""

from __future__ import annotations

import pytest
import torch

from lineguard.errors import FeatureMismatchError, NotFittedError
from lineguard.models.heads import HEADS, PatchCore, build_head
from lineguard.models.heads.base import AnomalyHead
from tests.support import normal_features, with_defect


def fitted(kind: str) -> AnomalyHead:
    head = build_head(kind, **({"bank_size": 512} if kind == "patchcore" else {}))
    head.plan(40)
    head.fit([normal_features(20, seed=1), normal_features(20, seed=2)])
    return head


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_unfitted_head_says_to_fit(kind: str) -> None:
    with pytest.raises(NotFittedError, match="fit the line first"):
        build_head(kind)(normal_features(1))


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_planted_defect_scores_higher_where_it_is(kind: str) -> None:
    head = fitted(kind)
    normal = head(normal_features(4, seed=9))
    defect = head(with_defect(normal_features(4, seed=9)))
    assert defect.patch_scores.shape == (4, 16, 16)
    assert (defect.patch_scores.amax((1, 2)) > normal.patch_scores.amax((1, 2))).all()
    peak = defect.patch_scores[0].flatten().argmax()
    row, col = divmod(int(peak), 16)
    assert abs(row - 4) <= 2 and abs(col - 10) <= 2, f"peak at {(row, col)}, defect at (4, 10)"
    if defect.image_scores is not None and normal.image_scores is not None:
        assert (defect.image_scores > normal.image_scores).all()


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_state_round_trip_gives_identical_scores(kind: str) -> None:
    head = fitted(kind)
    clone = build_head(kind, **head.params())
    clone.load_fitted_state(head.fitted_state())
    probe = with_defect(normal_features(2, seed=5))
    assert torch.allclose(head(probe).patch_scores, clone(probe).patch_scores)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_features_from_another_backbone_are_refused(kind: str) -> None:
    head = fitted(kind)
    with pytest.raises(FeatureMismatchError, match="fitted on feature maps with channels"):
        head([torch.randn(1, 13, 16, 16), torch.randn(1, 20, 8, 8)])


def test_summaries_are_per_image_and_split_freely() -> None:
    """Fitting from one batch or from single-image summaries gives the same PaDiM and mean heads."""
    features = normal_features(12, seed=4)
    for kind in ("padim", "mean"):
        whole, parts = build_head(kind), build_head(kind)
        whole.fit([features])
        parts.fit([[f[i : i + 1] for f in features] for i in range(12)])
        probe = normal_features(2, seed=7)
        assert torch.allclose(whole(probe).patch_scores, parts(probe).patch_scores, atol=1e-4)


def test_padim_inverts_all_152_features_of_the_default_backbone() -> None:
    """Cholesky on every one of 152 dims at every position (batched inv failed in this torch build)."""
    g = torch.Generator().manual_seed(0)
    head = build_head("padim", n_features=152)
    head.fit([[torch.randn(60, 40, 8, 8, generator=g), torch.randn(60, 112, 4, 4, generator=g)]])
    assert head.inv_chol.shape == (64, 152, 152)
    scores = head([torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4)]).patch_scores
    assert torch.isfinite(scores).all()


def test_patchcore_bank_respects_its_caps() -> None:
    head = build_head("patchcore", bank_size=100, coreset_ratio=1.0)
    assert isinstance(head, PatchCore)
    head.plan(20)
    head.fit([normal_features(20)])
    assert head.memory_bank.shape == (100, 32)
    small = build_head("patchcore", bank_size=10_000, coreset_ratio=0.05)
    assert isinstance(small, PatchCore)
    small.plan(20)
    small.fit([normal_features(20)])
    assert small.memory_bank.shape[0] == round(0.05 * 20 * 256)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="unknown head 'knn': choose one of"):
        build_head("knn")
    with pytest.raises(ValueError, match="valid parameters are"):
        build_head("patchcore", bank=5)
    with pytest.raises(ValueError, match="metric 'manhattan'"):
        build_head("mean", metric="manhattan")
